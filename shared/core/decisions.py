"""The orchestrator's decisions, as pure functions of (state, outcome, now) (no I/O, no clock).

The durable layer (shared/durable/orchestrator.py) does the waiting and the calling; what to
make of each outcome, event and moment is decided here, so every decision can be tested with
a table of rows (tests/core/test_decisions.py). Each function applies its decision to the
`RelayState` it is given (the state the orchestrator carries) and returns what the
orchestrator must do next, if anything. Lines worth logging are appended to `notes`: the
orchestrator writes them only when the step is not a replay.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Any, Literal

from ..contract import (
    PHASE_DONE,
    PHASE_POLL,
    PHASE_PUBLISH,
    PHASE_START,
    ErrorInfo,
    Outcome,
    RunRef,
    StartInput,
    ToolOutputsInput,
    error_message,
)
from .report import event_payload, requires_action_event
from .response_chain import (
    add_usage,
    hold_for_confirmation,
    is_responses,
    record_response,
    still_searching,
    uncertain_after,
)
from .run_status import REQUIRES_ACTION, RunPhase, classify_run_status
from .schedule import LOST_RESPONSE_RETRY_POLICY, TRANSIENT_RETRY_POLICY, next_wait_seconds
from .state import RelayState, RequiredAction, awaiting_outputs
from .timefmt import from_iso, to_iso
from .tool_outputs import tool_call_round

# A run the service keeps answering 404 for (after it was created) is gone.
MAX_NOT_FOUND_STREAK = 5
# Looking for a run that may exist before cancelling it: tries before giving up (~30 min; while
# a create whose answer was lost may still show up, longer: response_chain.still_searching).
MAX_FIND_ATTEMPTS = 30
# 401/403 when starting right after a deployment is usually the identity's role assignment
# still propagating (Azure RBAC: changes can take up to 10 minutes to take effect); retry
# that long, with a margin, before failing the submission.
AUTH_PROPAGATION_SECONDS = 900

# (level, message, args): a log line the orchestrator writes when not replaying.
Note = tuple[int, str, tuple[Any, ...]]


def note(notes: list[Note], message: str, *args: Any, level: int = logging.INFO) -> None:
    notes.append((level, message, args))


def internal_error(exc: BaseException) -> ErrorInfo:
    return {"code": "internal_error", "message": f"{type(exc).__name__}: {exc}"[:500]}


# --- the submission's clock ----------------------------------------------------------------


def begin(state: RelayState, now: datetime) -> None:
    """Stamp a new submission (first generation only): submitted now, deadline from it."""
    if state.submitted_at is not None:
        return
    state.submitted_at = to_iso(now)
    deadline_seconds = int(state.submission.get("deadlineSeconds") or 0)
    state.deadline_at = to_iso(now + timedelta(seconds=deadline_seconds))
    if state.final_status:
        state.completed_at = to_iso(now)


def finish(state: RelayState, status: str, at: datetime, error: ErrorInfo | None) -> None:
    """The run is over (or the relay gave up on it): publish `status` next."""
    state.final_status = status
    state.final_error = error
    state.completed_at = state.completed_at or to_iso(at)
    state.phase = PHASE_PUBLISH
    state.next_poll_at = None
    state.poll_due = False
    state.required_action = None


def request_cancel(state: RelayState, reason: str, now: datetime, notes: list[Note]) -> None:
    """Ask for the run to be cancelled (the first reason wins)."""
    if state.cancel_reason is None:
        state.cancel_reason = reason
        state.cancel_requested_at = to_iso(now)
        note(notes, "cancelling: %s", reason)


def restart_schedule(state: RelayState, now: datetime, age_seconds: float = 0.0) -> None:
    state.schedule_anchor = to_iso(now - timedelta(seconds=age_seconds))
    state.schedule_step = 0


# --- activity inputs -----------------------------------------------------------------------


def start_input(state: RelayState) -> StartInput:
    return {
        "submissionId": state.submission_id,
        "submission": state.submission,
        # Cancelled before the run exists: only look for a run an earlier attempt created.
        "findOnly": state.cancel_reason is not None,
        "fastPathSeconds": state.fast_path_seconds,
        "knownThreadId": state.created_thread_id,
        "submittedAt": state.submitted_at,
        "uncertainSince": state.uncertain_since,
    }


def run_ref(state: RelayState) -> RunRef:
    run = state.run_fields
    ref: RunRef = {
        "submissionId": state.submission_id,
        "agentId": state.submission["agentId"],
        "threadId": run.get("threadId"),
        "runId": run.get("runId"),
    }
    if is_responses(state.submission):
        ref["api"] = "responses"
        ref["agentVersion"] = state.submission.get("agentVersion")
    return ref


def set_run(state: RelayState, run: Any) -> None:
    """The run's latest snapshot (for a Foundry agent, a new response joins the chain, and the
    usage the previous one reported is carried)."""
    previous = state.run
    state.run = run
    appended = is_responses(state.submission) and record_response(state.response_chain, run)
    if appended and previous is not None:
        state.earlier_usage = add_usage(state.earlier_usage, previous.get("usage"))


def tool_outputs_input(state: RelayState, find_only: bool = False) -> ToolOutputsInput:
    """The outputs to submit (`find_only`: look for what they started, core.giving_up)."""
    return {
        **run_ref(state),
        "toolOutputs": state.tool_outputs or [],
        "findOnly": find_only,
        "uncertainSince": state.uncertain_since,
    }


# --- starting the run ------------------------------------------------------------------------


def start_deadline_passed(state: RelayState, now: datetime) -> bool:
    """Out of time before the run is known (and no cancel asked yet)."""
    return state.cancel_reason is None and now >= from_iso(str(state.deadline_at))


def give_up_starting(state: RelayState, now: datetime, notes: list[Note]) -> None:
    """Stop starting at the deadline: look for a run an earlier attempt created, cancel it."""
    request_cancel(state, "deadline_exceeded", now, notes)
    state.attempts = 0


@dataclass(frozen=True)
class StartDecision:
    """What follows a start attempt: `started` (poll next), `finished` (publish next),
    `retry` (wait until `retry_at`, then try again), `again` (the attempt prepared the run:
    try again at once) or `stop` (the next step gives up)."""

    kind: Literal["started", "finished", "retry", "again", "stop"]
    retry_at: datetime | None = None


def auth_still_propagating(state: RelayState, outcome: Outcome, now: datetime) -> bool:
    """401/403 at start within AUTH_PROPAGATION_SECONDS of the submission: retry it."""
    if outcome.get("httpStatus") not in (401, 403):
        return False
    submitted = from_iso(str(state.submitted_at))
    return (now - submitted).total_seconds() < AUTH_PROPAGATION_SECONDS


def after_start(
    state: RelayState, outcome: Outcome, now: datetime, find_only: bool, notes: list[Note]
) -> StartDecision:
    if outcome["outcome"] == "ok":
        run = outcome.get("run")
        if run is None and outcome.get("prepared") and not find_only:
            # A Foundry conversation was created: recorded before any response is created on it.
            state.created_thread_id = outcome.get("threadId") or state.created_thread_id
            return StartDecision("again")
        if run is None:
            # Cancelled (or out of time) before any run existed: nothing to stop.
            finish(state, "cancelled", now, state.last_error)
            return StartDecision("finished")
        set_run(state, run)
        state.uncertain_since = None  # the response is known
        state.stream_sequence = outcome.get("streamSequence", state.stream_sequence)
        state.phase, state.attempts, state.last_error = PHASE_POLL, 0, None
        # After a fast path the run is already that old: the schedule goes on from its age.
        followed = float(outcome.get("followedSeconds") or 0.0)
        restart_schedule(state, now, min(max(followed, 0.0), state.fast_path_seconds))
        note(notes, "agent run %s started", run.get("runId"))
        # The fast path may already have seen the run end (or ask for tool outputs).
        absorb_run(state, outcome, now)
        return StartDecision("started")
    state.last_error = outcome.get("error")
    state.created_thread_id = outcome.get("threadId") or state.created_thread_id
    state.uncertain_since = uncertain_after(state, outcome, now, creating=not find_only)
    kind = outcome["outcome"]
    if kind == "permanent" and auth_still_propagating(state, outcome, now):
        kind = "transient"
    if kind in ("permanent", "not_found"):
        finish(state, "failed", now, outcome.get("error"))
        return StartDecision("finished")
    state.attempts += 1
    deadline = from_iso(str(state.deadline_at))
    if not find_only and now >= deadline:
        return StartDecision("stop")  # the next step gives up (see start_deadline_passed)
    searching = find_only and still_searching(state.uncertain_since, now)
    if find_only and state.attempts >= MAX_FIND_ATTEMPTS and not searching:
        message = f"the agent run could not be started: {error_message(outcome.get('error'))}"
        finish(state, "failed", now, {"code": "start_timeout", "message": message})
        return StartDecision("finished")
    policy = LOST_RESPONSE_RETRY_POLICY if searching else TRANSIENT_RETRY_POLICY
    wait = next_wait_seconds(
        policy, state.attempts - 1, state.submission_id, outcome.get("retryAfter")
    )
    retry_at = now + timedelta(seconds=wait)
    if not find_only:
        retry_at = min(retry_at, deadline)
    return StartDecision("retry", retry_at)


# --- the run's progress ------------------------------------------------------------------------


def absorb_run(state: RelayState, outcome: Outcome, now: datetime) -> None:
    """Act on the run's latest snapshot: finish, note a tool-output request, or keep waiting."""
    run = state.run_fields
    status = str(run.get("status"))
    if classify_run_status(status) is RunPhase.TERMINAL:
        if is_responses(state.submission):
            cancel_asked = state.cancel_reason is not None
            state.cancel_check, hold = hold_for_confirmation(
                state.cancel_check, cancel_asked, status, now
            )
            if hold:
                return  # a `cancelled` read after our cancel: one more read confirms it
        state.output_text = outcome.get("outputText")
        state.completed_at = run.get("terminalAt") or to_iso(now)
        finish(state, status, now, run.get("lastError"))
    elif status == REQUIRES_ACTION and run.get("toolCalls"):
        new_required_action(state, now)
    elif status != REQUIRES_ACTION:
        state.required_action, state.tool_outputs = None, None


def new_required_action(state: RelayState, now: datetime) -> None:
    """Record a new round of tool calls: when to give up, and the event announcing it."""
    run = state.run
    assert run is not None
    calls = run.get("toolCalls") or []
    ids = sorted(str(call["id"]) for call in calls)
    round_key = tool_call_round(ids)
    if state.required_action and state.required_action["round"] == round_key:
        return
    give_up = now + timedelta(seconds=state.tool_outputs_timeout_seconds)
    if run.get("expiresAt"):
        give_up = min(give_up, from_iso(str(run["expiresAt"])))
    event = requires_action_event(state, now)
    state.required_action = {
        "round": round_key,
        "ids": ids,
        "toolCalls": [
            {"id": c["id"], "name": c["name"], "arguments": c["arguments"]}
            for c in event.data["toolCalls"]
        ],
        "expiresAt": run.get("expiresAt"),
        "giveUpAt": to_iso(give_up),
        "event": event_payload(event),
        "shown": False,
        "published": False,
    }
    state.tool_outputs = None


def after_poll(state: RelayState, outcome: Outcome, now: datetime, notes: list[Note]) -> None:
    state.polls += 1
    state.schedule_step += 1
    state.retry_after = None
    state.next_poll_at = None
    if outcome["outcome"] == "ok":
        previous = state.run_fields.get("status")
        run = outcome["run"]
        assert run is not None
        set_run(state, run)
        state.not_found_streak, state.last_error = 0, None
        status = str(run["status"])
        if status != previous:
            note(notes, "agent run status %s -> %s", previous, status)
        absorb_run(state, outcome, now)
        return
    state.last_error = outcome.get("error")
    if outcome["outcome"] == "not_found":
        state.not_found_streak += 1
        if state.not_found_streak >= MAX_NOT_FOUND_STREAK:
            finish(
                state, "failed", now, {"code": "run_not_found", "message": "the agent run is gone"}
            )
        return
    # Transient and even "permanent" poll failures keep polling: the run exists and giving up
    # would leave it unobserved. Retry-After stretches the next wait.
    state.retry_after = outcome.get("retryAfter")


def after_cancel(state: RelayState, outcome: Outcome, now: datetime) -> None:
    if outcome["outcome"] == "ok":
        set_run(state, outcome["run"])
    if outcome["outcome"] != "transient":
        # Sent, or refused because the run already ended: either way polling tells the end.
        state.cancel_sent, state.cancel_sent_at = True, to_iso(now)
        restart_schedule(state, now)
    else:
        state.retry_after = outcome.get("retryAfter")


def after_tool_outputs(state: RelayState, outcome: Outcome, now: datetime) -> None:
    state.uncertain_since = uncertain_after(state, outcome, now)
    if outcome["outcome"] == "transient":
        state.retry_after = outcome.get("retryAfter")
        return
    if outcome["outcome"] == "ok":
        set_run(state, outcome["run"])
        state.uncertain_since = None
    # Submitted, or refused because the run no longer waits: polling tells what happened.
    state.required_action, state.tool_outputs = None, None
    restart_schedule(state, now)
    if outcome["outcome"] == "ok" and is_responses(state.submission):
        # A Foundry follow-up is a new response: one found already ended (or asking for the
        # next round) is acted on now, so the status never reads requires_action unexplained.
        absorb_run(state, outcome, now)


def needs_notification(state: RelayState) -> bool:
    action = state.required_action
    return action is not None and not action["published"] and awaiting_outputs(state)


def after_notification(state: RelayState, action: RequiredAction, outcome: Outcome) -> None:
    if outcome["outcome"] == "ok" and state.required_action is action:
        action["published"] = True


# --- caller events ------------------------------------------------------------------------------


def apply_caller_event(
    state: RelayState, round_key: str | None, payload: Any, now: datetime, notes: list[Note]
) -> None:
    """A cancel (`round_key` None) or the tool outputs of a round; late, repeated or
    mismatched events are counted and ignored."""
    if round_key is None:
        if state.phase in (PHASE_START, PHASE_POLL) and state.cancel_reason is None:
            request_cancel(state, "requested", now, notes)
        else:
            state.ignored_events += 1
        return
    outputs = (payload if isinstance(payload, dict) else {}).get("toolOutputs")
    given = [str(o.get("toolCallId")) for o in outputs or [] if isinstance(o, dict)]
    action = state.required_action
    if (
        awaiting_outputs(state)
        and action is not None
        and action["round"] == round_key
        and given
        and sorted(given) == sorted(action["ids"])
        and tool_call_round(given) == round_key
    ):
        state.tool_outputs = [
            {"toolCallId": str(o["toolCallId"]), "output": str(o.get("output", ""))}
            for o in outputs or []
            if isinstance(o, dict)
        ]
        note(notes, "tool outputs received for %d calls", len(given))
    else:
        state.ignored_events += 1


def fail_step(state: RelayState, phase: str, exc: BaseException, now: datetime) -> None:
    """A bug in a step must still end in exactly one event (or, failing that, a visible error)."""
    if phase == PHASE_PUBLISH:
        state.publish_error, state.phase = dict(internal_error(exc)), PHASE_DONE
    else:
        finish(state, "failed", now, internal_error(exc))

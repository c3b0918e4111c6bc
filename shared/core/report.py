"""What the orchestration tells the world about a submission (pure): its custom status, the
AgentRunRequiresAction and AgentRunCompleted events, and its output."""

from __future__ import annotations

from datetime import datetime
from typing import cast

from ..contract import (
    OUTPUT_KIND,
    CustomStatus,
    EventPayload,
    Phase,
    RelayOutput,
    StatusRequiredAction,
)
from .events import RelayEvent, build_completed_event, build_requires_action_event
from .response_chain import add_usage, confirmation_field
from .run_status import REQUIRES_ACTION
from .state import RelayState, awaiting_outputs
from .timefmt import from_iso, to_iso


def event_payload(event: RelayEvent) -> EventPayload:
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
    ended = state.run_fields.get("terminalAt")
    if ended and state.cancel_requested_at:
        asked = from_iso(state.cancel_requested_at).replace(microsecond=0)
        if from_iso(ended) < asked:
            return None
    return state.cancel_reason


def requires_action_event(state: RelayState, now: datetime) -> RelayEvent:
    run = state.run
    assert run is not None
    return build_requires_action_event(
        submission_id=state.submission_id,
        agent_id=state.submission["agentId"],
        run_id=str(run.get("runId")),
        thread_id=run.get("threadId"),
        tool_calls=[dict(call) for call in run.get("toolCalls") or []],
        expires_at=run.get("expiresAt"),
        event_time=to_iso(now),
        metadata=state.submission.get("metadata") or {},
        api=state.submission.get("api") or "agents",
        agent_version=agent_version(state),
    )


def completed_event(state: RelayState) -> EventPayload:
    run = state.run_fields
    event = build_completed_event(
        submission_id=state.submission_id,
        agent_id=state.submission["agentId"],
        run_id=run.get("runId"),
        thread_id=run.get("threadId")
        or state.submission.get("threadId")
        or state.submission.get("conversationId"),
        status=str(state.final_status),
        last_error=dict(state.final_error) if state.final_error else None,
        incomplete_details=run.get("incompleteDetails"),
        usage=add_usage(state.earlier_usage, run.get("usage"))
        if state.earlier_usage
        else run.get("usage"),
        output_text=state.output_text,
        metadata=state.submission.get("metadata") or {},
        submitted_at=str(state.submitted_at),
        completed_at=str(state.completed_at),
        polls=state.polls,
        cancellation_reason=cancellation_reason(state),
        api=state.submission.get("api") or "agents",
        agent_version=agent_version(state),
        cancel_confirmation=confirmation_field(state.cancel_check),
    )
    return event_payload(event)


def agent_version(state: RelayState) -> str | None:
    """A Foundry agent's version: the one the service ran, else the one asked for."""
    return state.run_fields.get("agentVersion") or state.submission.get("agentVersion")


def status_required_action(state: RelayState) -> StatusRequiredAction | None:
    action = state.required_action
    if not action or state.status != REQUIRES_ACTION or not awaiting_outputs(state):
        return None
    return {
        "type": "submit_tool_outputs",
        "toolCalls": action["toolCalls"],
        "expiresAt": action["expiresAt"],
        "giveUpAt": action["giveUpAt"],
        # Read back by the tool-outputs route to name the round's event (not shown to callers).
        "round": action["round"],
    }


def custom_status(state: RelayState) -> CustomStatus:
    """The status the HTTP routes read (before core.custom_status bounds its size)."""
    status: CustomStatus = {
        "status": state.status,
        "phase": cast(Phase, state.phase),
        "agentRun": state.agent_run_view(),
        "polls": state.polls,
        "nextPollAt": state.next_poll_at,
        "submittedAt": state.submitted_at,
        "deadlineAt": state.deadline_at,
        "cancellationReason": state.cancel_reason,
        "requiredAction": status_required_action(state),
        # Who submitted it: the HTTP routes answer only that caller (not shown to callers).
        "caller": state.submission.get("caller"),
    }
    if state.last_error:
        status["lastError"] = state.last_error
    if state.event:
        status["event"] = {"id": state.event["id"], "publishedAt": state.published_at}
    return status


def final_output(state: RelayState) -> RelayOutput:
    event = state.event
    return {
        "kind": OUTPUT_KIND,
        "status": state.status,
        "agentRun": state.agent_run_view(),
        "polls": state.polls,
        "submittedAt": state.submitted_at,
        "completedAt": state.completed_at,
        "cancellationReason": cancellation_reason(state),
        "result": event.get("data") if event else None,
        "event": {"id": event["id"], "publishedAt": state.published_at}
        if event and state.published_at
        else None,
        "publishError": state.publish_error,
    }

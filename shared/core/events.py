"""Building the relay's events (pure: data in, dictionaries out).

The envelope fields are returned as plain values; the publish activity turns them into the
SDK's EventGridEvent or CloudEvent so serialization stays the SDK's job.
"""

from __future__ import annotations

import uuid
from dataclasses import dataclass
from typing import Any

EVENT_TYPE_COMPLETED = "AgentRunCompleted"
EVENT_TYPE_REQUIRES_ACTION = "AgentRunRequiresAction"
TOOL_ARGUMENTS_MAX_CHARS = 16 * 1024
# All the tool calls' arguments of one AgentRunRequiresAction event together (UTF-8): however
# many calls a run asks for, the event stays far below Event Grid's 1 MB limit.
TOOL_ARGUMENTS_TOTAL_MAX_BYTES = 256 * 1024
# 1.1: `api` and the Foundry agent fields (agentName, agentVersion, responseId,
# conversationId, cancelConfirmation) were added; every 1.0 field is still there.
DATA_VERSION = "1.1"
# Keeps a whole event far below Event Grid's 1 MB limit and within one 64 KB billing unit in
# the common case (metadata and errors are bounded separately).
OUTPUT_TEXT_MAX_BYTES = 48 * 1024
ERROR_MESSAGE_MAX_CHARS = 2048
_EVENT_ID_NAMESPACE = uuid.UUID("6f1f3c52-8f0e-4a8e-9d55-3b8f1b6f0a11")


def completed_event_id(submission_id: str) -> str:
    """The same id however often the event is published: subscribers de-duplicate on it."""
    return str(uuid.uuid5(_EVENT_ID_NAMESPACE, f"{submission_id}/{EVENT_TYPE_COMPLETED}"))


def requires_action_event_id(submission_id: str, run_id: str, tool_call_ids: list[str]) -> str:
    """One id per run and required action, so a republished notification de-duplicates."""
    key = "/".join([submission_id, run_id, *sorted(tool_call_ids), EVENT_TYPE_REQUIRES_ACTION])
    return str(uuid.uuid5(_EVENT_ID_NAMESPACE, key))


def event_subject(agent_id: str, run_id: str | None, api: str = "agents") -> str:
    if api == "responses":
        return f"agents/{agent_id}/responses/{run_id or 'none'}"
    return f"agents/{agent_id}/runs/{run_id or 'none'}"


def agent_fields(
    api: str, agent: str, agent_version: str | None, run_id: str | None, thread_id: str | None
) -> dict[str, Any]:
    """Which agent and run an event is about, in one shape for both backends.

    Classic agents fill `agentId`, `runId`, `threadId`; Foundry agents (Responses API) fill
    `agentName`, `agentVersion`, `responseId` (the chain's last response), `conversationId`.
    The other backend's fields are null.
    """
    if api == "responses":
        return {
            "api": "responses",
            "agentId": None,
            "runId": None,
            "threadId": None,
            "agentName": agent,
            "agentVersion": agent_version,
            "responseId": run_id,
            "conversationId": thread_id,
        }
    return {
        "api": "agents",
        "agentId": agent,
        "runId": run_id,
        "threadId": thread_id,
        "agentName": None,
        "agentVersion": None,
        "responseId": None,
        "conversationId": None,
    }


def truncate_utf8(text: str, max_bytes: int) -> tuple[str, bool]:
    # "replace": text from a service could still carry a lone surrogate; never fail on it.
    encoded = text.encode("utf-8", errors="replace")
    if len(encoded) <= max_bytes:
        return encoded.decode("utf-8"), False
    return encoded[:max_bytes].decode("utf-8", errors="ignore"), True


def bounded_error(error: dict[str, Any] | None) -> dict[str, str] | None:
    if not error:
        return None
    message = str(error.get("message") or "")[:ERROR_MESSAGE_MAX_CHARS]
    return {"code": str(error.get("code") or "unknown"), "message": message}


def output_field(text: str | None) -> dict[str, Any] | None:
    if text is None:
        return None
    bounded, truncated = truncate_utf8(text, OUTPUT_TEXT_MAX_BYTES)
    return {"text": bounded, "truncated": truncated}


def usage_field(usage: dict[str, Any] | None) -> dict[str, int] | None:
    if not usage:
        return None
    return {
        "promptTokens": int(usage.get("prompt_tokens") or 0),
        "completionTokens": int(usage.get("completion_tokens") or 0),
        "totalTokens": int(usage.get("total_tokens") or 0),
    }


@dataclass(frozen=True)
class RelayEvent:
    id: str
    event_type: str
    subject: str
    event_time: str
    data_version: str
    data: dict[str, Any]


def build_completed_event(
    *,
    submission_id: str,
    agent_id: str,
    run_id: str | None,
    thread_id: str | None,
    status: str,
    last_error: dict[str, Any] | None,
    incomplete_details: dict[str, Any] | None,
    usage: dict[str, Any] | None,
    output_text: str | None,
    metadata: dict[str, str],
    submitted_at: str,
    completed_at: str,
    polls: int,
    cancellation_reason: str | None,
    api: str = "agents",
    agent_version: str | None = None,
    cancel_confirmation: dict[str, str | None] | None = None,
) -> RelayEvent:
    data = {
        "submissionId": submission_id,
        **agent_fields(api, agent_id, agent_version, run_id, thread_id),
        "status": status,
        "lastError": bounded_error(last_error),
        "incompleteDetails": dict(incomplete_details) if incomplete_details else None,
        "usage": usage_field(usage),
        "output": output_field(output_text),
        "metadata": dict(metadata),
        "submittedAt": submitted_at,
        "completedAt": completed_at,
        "polls": polls,
        "cancellationReason": cancellation_reason,
        # Foundry agents: what the two reads after the relay's cancel saw (else null).
        "cancelConfirmation": cancel_confirmation,
    }
    return RelayEvent(
        id=completed_event_id(submission_id),
        event_type=EVENT_TYPE_COMPLETED,
        subject=event_subject(agent_id, run_id, api),
        event_time=completed_at,
        data_version=DATA_VERSION,
        data=data,
    )


def build_requires_action_event(
    *,
    submission_id: str,
    agent_id: str,
    run_id: str,
    thread_id: str | None,
    tool_calls: list[dict[str, Any]],
    expires_at: str | None,
    event_time: str,
    metadata: dict[str, str],
    api: str = "agents",
    agent_version: str | None = None,
) -> RelayEvent:
    # Each call's arguments are cut at 16 KiB characters and at an equal share of the total.
    share = TOOL_ARGUMENTS_TOTAL_MAX_BYTES // max(len(tool_calls), 1)
    calls: list[dict[str, Any]] = []
    for call in tool_calls:
        raw = str(call.get("arguments") or "")
        arguments, cut = truncate_utf8(raw[:TOOL_ARGUMENTS_MAX_CHARS], share)
        calls.append(
            {
                "id": str(call["id"]),
                "name": str(call.get("name") or ""),
                "arguments": arguments,
                "argumentsTruncated": cut or len(raw) > TOOL_ARGUMENTS_MAX_CHARS,
            }
        )
    data = {
        "submissionId": submission_id,
        **agent_fields(api, agent_id, agent_version, run_id, thread_id),
        "toolCalls": calls,
        "expiresAt": expires_at,
        "metadata": dict(metadata),
    }
    return RelayEvent(
        id=requires_action_event_id(submission_id, run_id, [c["id"] for c in calls]),
        event_type=EVENT_TYPE_REQUIRES_ACTION,
        subject=event_subject(agent_id, run_id, api),
        event_time=event_time,
        data_version=DATA_VERSION,
        data=data,
    )

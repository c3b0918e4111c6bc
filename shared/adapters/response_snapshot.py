"""What the relay keeps of a Foundry response (Responses API): a RunSnapshot, built from the
response's JSON (`Response.to_dict()` / `model_dump(mode="json")`, or the raw body). Pure.

A response has no `requires_action` status: one that asks for function calls ends `completed`
with `function_call` output items (reference note foundry-responses-wire.md §7). The snapshot
reads such a response `requires_action`, so the core treats both services alike.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from ..contract import ErrorInfo, RunSnapshot, ToolCall
from ..core.run_status import REQUIRES_ACTION, normalize_run_status
from ..core.timefmt import unix_to_iso

# The four statuses a response ends in (spec `Response.status`; queued/in_progress wait).
RESPONSE_TERMINAL_STATUSES = frozenset({"completed", "failed", "cancelled", "incomplete"})
# Statuses whose output may hold the agent's answer.
ANSWERED_STATUSES = frozenset({"completed", "incomplete"})


def _mapping(value: Any) -> Mapping[str, Any]:
    return value if isinstance(value, Mapping) else {}


def _output(wire: Mapping[str, Any]) -> list[Mapping[str, Any]]:
    output = wire.get("output")
    return (
        [item for item in output if isinstance(item, Mapping)] if isinstance(output, list) else []
    )


def pending_function_calls(wire: Mapping[str, Any]) -> list[ToolCall]:
    """The output's `function_call` items that no later `function_call_output` answers."""
    pending: dict[str, ToolCall] = {}
    for item in _output(wire):
        kind, call_id = item.get("type"), item.get("call_id")
        if not isinstance(call_id, str):
            continue
        if kind == "function_call":
            arguments = item.get("arguments")
            pending[call_id] = {
                "id": call_id,
                "name": str(item.get("name") or ""),
                "arguments": arguments if isinstance(arguments, str) else "",
            }
        elif kind == "function_call_output":
            pending.pop(call_id, None)
    return list(pending.values())


def _error(value: Any) -> ErrorInfo | None:
    error = _mapping(value)
    if not error:
        return None
    return {"code": str(error.get("code") or "error"), "message": str(error.get("message") or "")}


def _usage(value: Any) -> dict[str, Any] | None:
    """The Responses usage under the classic keys the core reads (`prompt_tokens`, ...)."""
    usage = _mapping(value)
    if not usage:
        return None
    return {
        "prompt_tokens": usage.get("input_tokens"),
        "completion_tokens": usage.get("output_tokens"),
        "total_tokens": usage.get("total_tokens"),
    }


def _conversation_id(value: Any) -> str | None:
    if isinstance(value, str):
        return value or None
    found = _mapping(value).get("id")
    return str(found) if found else None


def response_snapshot(wire: Mapping[str, Any], requested_version: str | None) -> RunSnapshot:
    """Reduce a response to what orchestration decisions and the event need.

    `agentId` is the agent's name from the response's `agent_reference` (None when the wire
    has none: the caller fills it in); `agentVersion` the version the service ran, else the
    one asked for (`requested_version`; None: latest).
    """
    status = normalize_run_status(wire.get("status"))
    calls = pending_function_calls(wire) if status == "completed" else []
    if calls:
        status = REQUIRES_ACTION
    reference = _mapping(wire.get("agent_reference"))
    version = reference.get("version")
    terminal = status in RESPONSE_TERMINAL_STATUSES
    completed_at = wire.get("completed_at")
    return {
        "runId": str(wire["id"]) if wire.get("id") else None,
        "threadId": _conversation_id(wire.get("conversation")),
        "agentId": str(reference["name"]) if reference.get("name") else None,
        "status": status,
        "lastError": _error(wire.get("error")),
        "incompleteDetails": dict(_mapping(wire.get("incomplete_details"))) or None,
        "usage": _usage(wire.get("usage")),
        "terminalAt": unix_to_iso(completed_at)
        if terminal and isinstance(completed_at, int | float)
        else None,
        "toolCalls": calls or None,
        "expiresAt": None,
        "agentVersion": str(version) if version is not None else requested_version,
    }


def response_output_text(wire: Mapping[str, Any]) -> str | None:
    """The answer: the `output_text` parts of the assistant's message items, joined.

    None unless the response ended `completed` or `incomplete` with a message item (a
    response that only asks for function calls has none).
    """
    if normalize_run_status(wire.get("status")) not in ANSWERED_STATUSES:
        return None
    messages = [
        item
        for item in _output(wire)
        if item.get("type") == "message" and item.get("role", "assistant") == "assistant"
    ]
    if not messages:
        return None
    return "".join(
        str(part.get("text") or "")
        for message in messages
        for part in message.get("content") or []
        if isinstance(part, Mapping) and part.get("type") == "output_text"
    )

"""What the relay keeps of an Agents run: a small JSON snapshot built from the wire object."""

from __future__ import annotations

from typing import Any

from ..contract import RunSnapshot, ToolCall
from ..core.run_status import normalize_run_status
from ..core.timefmt import unix_to_iso

_TERMINAL_TIME_FIELDS = ("completed_at", "failed_at", "cancelled_at")


def run_snapshot(wire: dict[str, Any]) -> RunSnapshot:
    """Reduce a run (its REST JSON) to what orchestration decisions and the event need."""
    terminal_at = next((wire[f] for f in _TERMINAL_TIME_FIELDS if wire.get(f)), None)
    status = normalize_run_status(wire.get("status"))
    if terminal_at is None and status == "expired":
        terminal_at = wire.get("expires_at")
    return {
        "runId": wire.get("id"),
        "threadId": wire.get("thread_id"),
        "agentId": wire.get("assistant_id") or wire.get("agent_id"),
        "status": status,
        "lastError": wire.get("last_error") or None,
        "incompleteDetails": wire.get("incomplete_details") or None,
        "usage": wire.get("usage") or None,
        "terminalAt": unix_to_iso(terminal_at),
        "toolCalls": pending_tool_calls(wire),
        "expiresAt": unix_to_iso(wire.get("expires_at")),
    }


def pending_tool_calls(wire: dict[str, Any]) -> list[ToolCall] | None:
    """The function calls a `requires_action` run waits for (None for anything else)."""
    required = wire.get("required_action") or {}
    if required.get("type") != "submit_tool_outputs":
        return None
    calls = (required.get("submit_tool_outputs") or {}).get("tool_calls") or []
    return [
        {
            "id": str(call.get("id")),
            "name": str((call.get("function") or {}).get("name") or ""),
            "arguments": str((call.get("function") or {}).get("arguments") or ""),
        }
        for call in calls
    ]


def assistant_text(messages: list[dict[str, Any]]) -> str | None:
    """The text of the newest assistant message (messages newest first), or None."""
    for message in messages:
        if message.get("role") != "assistant":
            continue
        parts = [
            str(part.get("text", {}).get("value", ""))
            for part in message.get("content") or []
            if part.get("type") == "text"
        ]
        return "".join(parts)
    return None

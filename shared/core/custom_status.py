"""The orchestration's custom status, kept provably under the Durable extension's limit (pure).

The extension refuses a custom status whose compact JSON is over 16 KB of UTF-16
(azure-functions-durable-extension, DurableOrchestrationContext.SetCustomStatus with
MaxCustomStatusPayloadSizeInKB = 16, checked in MessagePayloadDataConverter.Serialize as
`(int)(Encoding.Unicode.GetByteCount(json) / 1024.0) > 16`) and the instance then fails.
Whatever a run asks for (any number of tool calls, any error text), `bounded_custom_status`
returns a status within `CUSTOM_STATUS_BUDGET_BYTES`; the full data travels in the events.
"""

from __future__ import annotations

import json
from typing import Any

# The extension fails at 17 * 1024 UTF-16 bytes; keep a margin for its re-serialization.
CUSTOM_STATUS_LIMIT_BYTES = 17 * 1024
CUSTOM_STATUS_BUDGET_BYTES = 14 * 1024
STATUS_ARGUMENTS_MAX_CHARS = 1024
STATUS_NAME_MAX_CHARS = 256
STATUS_STRING_MAX_CHARS = 256
STATUS_ERROR_MESSAGE_MAX_CHARS = 500
# Characters Newtonsoft's JavaScriptUtils.WriteEscapedString escapes that json.dumps does not.
NEWTONSOFT_ESCAPED = ("\u0085", "\u2028", "\u2029")


def utf16_json_size(value: Any) -> int:
    """Bytes of the compact JSON in UTF-16, as the extension measures it.

    The SDK sends ASCII-escaped JSON; the extension parses it and writes it again with
    Newtonsoft, which keeps non-ASCII characters as they are (two or four bytes each).
    """
    text = json.dumps(value, ensure_ascii=False, separators=(",", ":"))
    # Newtonsoft escapes these three as \uXXXX where Python writes them raw.
    escaped = sum(text.count(c) for c in NEWTONSOFT_ESCAPED) * 5
    return len(text.encode("utf-16-le", errors="surrogatepass")) + 2 * escaped


def _cut(value: Any, limit: int) -> Any:
    return value[:limit] if isinstance(value, str) else value


def _short_strings(view: Any, limit: int) -> Any:
    if isinstance(view, dict):
        return {k: _short_strings(v, limit) for k, v in view.items()}
    if isinstance(view, list):
        return [_short_strings(v, limit) for v in view]
    return _cut(view, limit)


def _status_call(call: dict[str, Any]) -> dict[str, Any]:
    return {
        "id": str(call.get("id", ""))[:STATUS_STRING_MAX_CHARS],
        "name": str(call.get("name", ""))[:STATUS_NAME_MAX_CHARS],
        "arguments": str(call.get("arguments", ""))[:STATUS_ARGUMENTS_MAX_CHARS],
    }


def bounded_custom_status(
    status: dict[str, Any], budget: int = CUSTOM_STATUS_BUDGET_BYTES
) -> dict[str, Any]:
    """`status` with its tool-call list (and, if need be, its strings) cut to fit `budget`.

    `status["requiredAction"]["toolCalls"]` may be any length: every call is listed with its
    arguments cut at 1024 characters, or shorter so that all fit; only when even the ids and
    names do not fit are later calls left out (`truncated`; `toolCallCount` says how many
    there are, and the AgentRunRequiresAction event has them all).
    """
    result = dict(status)
    if isinstance(result.get("lastError"), dict):
        error = result["lastError"]
        result["lastError"] = {
            "code": str(error.get("code", ""))[:STATUS_STRING_MAX_CHARS],
            "message": str(error.get("message", ""))[:STATUS_ERROR_MESSAGE_MAX_CHARS],
        }
    action = result.get("requiredAction")
    calls: list[dict[str, Any]] = []
    if isinstance(action, dict):
        calls = [_status_call(c) for c in action.get("toolCalls") or []]
        action = {**action, "toolCalls": [], "toolCallCount": len(calls), "truncated": False}
        result["requiredAction"] = action
    for shorten in (False, True):
        if shorten:
            # Only strings from outside (service ids, errors) can still be large: cut them all.
            result = _short_strings(result, STATUS_STRING_MAX_CHARS)
            action = result.get("requiredAction") if isinstance(action, dict) else None
        if utf16_json_size(result) <= budget:
            break
    else:
        minimal = ("status", "phase", "caller")
        return {**{k: result.get(k) for k in minimal}, "truncated": True}
    if isinstance(action, dict):
        _fit_calls(result, action, calls, budget)
    return result


def _fit_calls(
    result: dict[str, Any], action: dict[str, Any], calls: list[dict[str, Any]], budget: int
) -> None:
    """Every call with its arguments cut to a fair share; or, failing that, the first calls."""
    share = STATUS_ARGUMENTS_MAX_CHARS
    while share > 0:
        action["toolCalls"] = [{**c, "arguments": c["arguments"][:share]} for c in calls]
        if utf16_json_size(result) <= budget:
            return
        spare = budget - utf16_json_size({**result, "requiredAction": {**action, "toolCalls": []}})
        fair = spare // (4 * max(len(calls), 1))  # four bytes: a character may be astral
        share = min(share // 2, max(fair, 0))
    kept = action["toolCalls"] = []
    for call in calls:
        kept.append({**call, "arguments": ""})
        if utf16_json_size(result) > budget:
            kept.pop()
            action["truncated"] = True
            return

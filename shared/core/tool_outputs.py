"""Validation of `POST /api/runs/{id}/tool-outputs` bodies (pure)."""

from __future__ import annotations

import hashlib
from collections.abc import Iterable
from typing import Any

from ..contract import ToolOutput
from .problems import bad_request

MAX_OUTPUT_CHARS = 128 * 1024


def tool_call_round(call_ids: Iterable[str]) -> str:
    """A key for one set of pending tool calls (order does not matter)."""
    joined = "\x1f".join(sorted(call_ids))
    return hashlib.sha256(joined.encode("utf-8", errors="surrogatepass")).hexdigest()[:24]


def validate_tool_outputs(
    body: Any, pending_ids: list[str], round_key: str | None = None, all_listed: bool = True
) -> list[ToolOutput]:
    """The outputs, exactly one per pending tool call, or a 400 Problem naming the field.

    `pending_ids` are the calls the status lists; when the status could not list them all
    (`all_listed` False), the given ids must hash to the round's key instead.
    """
    if not isinstance(body, dict):
        raise bad_request("body", "request body must be a JSON object")
    unknown = sorted(set(body) - {"toolOutputs"})
    if unknown:
        raise bad_request(unknown[0], f"unknown field {unknown[0]!r}")
    raw = body.get("toolOutputs")
    if not isinstance(raw, list) or not raw:
        raise bad_request("toolOutputs", "toolOutputs must be a non-empty array")
    outputs: list[ToolOutput] = []
    for index, item in enumerate(raw):
        where = f"toolOutputs[{index}]"
        if not isinstance(item, dict):
            raise bad_request(where, f"{where} must be an object")
        extra = sorted(set(item) - {"toolCallId", "output"})
        if extra:
            raise bad_request(f"{where}.{extra[0]}", f"{where} has an unknown field")
        call_id, output = item.get("toolCallId"), item.get("output")
        if not isinstance(call_id, str) or not call_id:
            raise bad_request(f"{where}.toolCallId", "toolCallId must be a non-empty string")
        if not isinstance(output, str):
            raise bad_request(f"{where}.output", "output must be a string")
        if len(output) > MAX_OUTPUT_CHARS:
            raise bad_request(
                f"{where}.output", f"output must be at most {MAX_OUTPUT_CHARS} characters"
            )
        for text, name in ((call_id, f"{where}.toolCallId"), (output, f"{where}.output")):
            try:
                text.encode("utf-8")
            except UnicodeEncodeError:
                raise bad_request(name, f"{name} is not valid Unicode text") from None
        outputs.append({"toolCallId": call_id, "output": output})
    given = [o["toolCallId"] for o in outputs]
    if len(set(given)) != len(given):
        raise bad_request("toolOutputs", "each toolCallId may appear only once")
    if all_listed and sorted(given) != sorted(pending_ids):
        pending = ", ".join(sorted(pending_ids))
        detail = f"toolOutputs must answer exactly the pending tool calls: {pending}"
        raise bad_request("toolOutputs", detail)
    if round_key is not None and tool_call_round(given) != round_key:
        detail = (
            "toolOutputs must answer exactly the pending tool calls (the "
            "AgentRunRequiresAction event lists them all)"
        )
        raise bad_request("toolOutputs", detail)
    return outputs

"""A response's life at a moment: its status, its rendering and its stream events.

All of it is computed from the response's record and the (virtual) clock reading, so reads
never need a background task; the stream events are kept on the record once produced, so their
sequence numbers never change.
"""

from __future__ import annotations

import copy
from collections.abc import Callable
from datetime import datetime, timedelta

from ._models import JSON, TERMINAL_STATUSES, ResponseRecord


def chunks(text: str, size: int = 8) -> list[str]:
    return [text[i : i + size] for i in range(0, len(text), size)] or [""]


def natural_end(record: ResponseRecord) -> datetime:
    script = record.script
    return record.created + timedelta(seconds=script.queued_seconds + script.duration_seconds)


def cancelled_at(record: ResponseRecord) -> datetime | None:
    """When a cancel request takes effect, unless the response ends on its own first."""
    if record.cancel_requested is None:
        return None
    effective = record.cancel_requested + timedelta(seconds=record.script.cancel_delay_seconds)
    return effective if effective < natural_end(record) else None


def status_at(record: ResponseRecord, moment: datetime) -> str:
    script = record.script
    cancelled = cancelled_at(record)
    if cancelled is not None and record.cancel_requested is not None:
        after = script.completed_after_cancel_seconds
        if after is not None and moment >= record.cancel_requested + timedelta(seconds=after):
            return "completed"
        if moment >= cancelled:
            return "cancelled"
    elapsed = (moment - record.created).total_seconds()
    if elapsed < script.queued_seconds:
        return "queued"
    if moment < natural_end(record):
        return "in_progress"
    return script.final_status


def output_at(record: ResponseRecord, status: str | None) -> list[JSON]:
    if status is None:
        status = record.script.final_status
    return copy.deepcopy(record.output) if status in ("completed", "incomplete") else []


def completion_time(record: ResponseRecord) -> datetime:
    after = record.script.completed_after_cancel_seconds
    if cancelled_at(record) is not None and after is not None:
        assert record.cancel_requested is not None
        return record.cancel_requested + timedelta(seconds=after)
    return natural_end(record)


def render(record: ResponseRecord, moment: datetime, status: str | None = None) -> JSON:
    status = status or status_at(record, moment)
    script = record.script
    terminal = status in TERMINAL_STATUSES
    error = None
    if status == "failed":
        error = dict(script.error or {"code": "server_error", "message": "The model failed."})
    usage = None
    if terminal and status != "cancelled":
        given = dict(script.usage or {})
        inputs = int(given.get("input_tokens", 10))
        outputs = int(given.get("output_tokens", 5 if status != "failed" else 0))
        usage = {
            "input_tokens": inputs,
            "input_tokens_details": {"cached_tokens": 0, "cache_write_tokens": 0},
            "output_tokens": outputs,
            "output_tokens_details": {"reasoning_tokens": 0},
            "total_tokens": inputs + outputs,
        }
    completed_at = None
    if status == "completed":
        completed_at = int(completion_time(record).timestamp())
    rendered: JSON = {
        "id": record.id,
        "object": "response",
        "created_at": int(record.created.timestamp()),
        "status": status,
        "background": record.background,
        "completed_at": completed_at,
        "error": error,
        "incomplete_details": {"reason": script.incomplete_reason}
        if status == "incomplete"
        else None,
        "instructions": None,
        "model": record.model,
        "output": output_at(record, status) if terminal else [],
        "parallel_tool_calls": True,
        "previous_response_id": record.previous_response_id,
        "conversation": {"id": record.conversation_id} if record.conversation_id else None,
        "store": record.store,
        "metadata": dict(record.metadata),
        "temperature": 1.0,
        "top_p": 1.0,
        "tool_choice": "auto",
        "tools": [],
        "text": {"format": {"type": "text"}},
        "truncation": "disabled",
        "agent_reference": copy.deepcopy(record.agent_reference),  # Foundry (S4)
    }
    if usage is not None:
        # Spec ResponseUsage is not nullable: omitted (not null) until the response ends.
        rendered["usage"] = usage
    return rendered


def events_until(record: ResponseRecord, moment: datetime) -> list[JSON]:
    """The response's stream events produced by `moment` (kept, so numbers never change)."""
    events = record.events

    def add(event: JSON) -> None:
        events.append({**event, "sequence_number": len(events)})

    if not events:
        add(
            {
                "type": "response.created",
                "response": render(record, record.created, "queued"),
            }
        )
    if events[-1]["type"] in ("response.completed", "response.failed", "response.incomplete"):
        return events
    status = status_at(record, moment)
    started = record.created + timedelta(seconds=record.script.queued_seconds)
    cancelled = cancelled_at(record)
    ran = cancelled is None or cancelled > started  # a cancel while queued skips it
    if len(events) == 1 and (
        status == "in_progress" or (status in TERMINAL_STATUSES and moment >= started and ran)
    ):
        add(
            {
                "type": "response.in_progress",
                "response": render(record, started, "in_progress"),
            }
        )
    if status not in TERMINAL_STATUSES:
        return events
    for index, item in enumerate(output_at(record, status)):
        _item_events(add, index, item)
    final = render(record, moment, status)
    kind = {
        "completed": "response.completed",
        "incomplete": "response.incomplete",
        # No response.cancelled event in the spec; S4 ends a cancelled stream with
        # response.failed whose response.status is "cancelled".
        "cancelled": "response.failed",
        "failed": "response.failed",
    }[status]
    add({"type": kind, "response": final})
    return events


def _item_events(add: Callable[[JSON], None], index: int, item: JSON) -> None:
    if item["type"] == "function_call":
        add(
            {
                "type": "response.output_item.added",
                "output_index": index,
                "item": {**item, "arguments": "", "status": "in_progress"},
            }
        )
        for piece in chunks(item["arguments"]):
            add(
                {
                    "type": "response.function_call_arguments.delta",
                    "item_id": item["id"],
                    "output_index": index,
                    "delta": piece,
                }
            )
        add(
            {
                "type": "response.function_call_arguments.done",
                "item_id": item["id"],
                "name": item["name"],
                "output_index": index,
                "arguments": item["arguments"],
            }
        )
        add({"type": "response.output_item.done", "output_index": index, "item": item})
        return
    text = item["content"][0]["text"]
    ids = {"item_id": item["id"], "output_index": index, "content_index": 0}
    add(
        {
            "type": "response.output_item.added",
            "output_index": index,
            "item": {**item, "status": "in_progress", "content": []},
        }
    )
    empty = {"type": "output_text", "text": "", "annotations": [], "logprobs": []}
    add({"type": "response.content_part.added", **ids, "part": empty})
    for piece in chunks(text):
        add({"type": "response.output_text.delta", **ids, "delta": piece, "logprobs": []})
    add({"type": "response.output_text.done", **ids, "text": text, "logprobs": []})
    add({"type": "response.content_part.done", **ids, "part": item["content"][0]})
    add({"type": "response.output_item.done", "output_index": index, "item": item})

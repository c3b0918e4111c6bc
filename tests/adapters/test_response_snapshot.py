"""A Foundry response (Responses API JSON) reduced to the relay's RunSnapshot, table-tested."""

from __future__ import annotations

from typing import Any

import pytest

from shared.adapters.response_snapshot import (
    pending_function_calls,
    response_output_text,
    response_snapshot,
)

COMPLETED_AT = 1767225600  # 2026-01-01T00:00:00Z


def message(text: str, *parts: str) -> dict[str, Any]:
    return {
        "type": "message",
        "id": "msg_1",
        "role": "assistant",
        "status": "completed",
        "content": [
            {"type": "output_text", "text": t, "annotations": [], "logprobs": []}
            for t in (text, *parts)
        ],
    }


def call(call_id: str, name: str = "lookup", arguments: str = '{"q": "x"}') -> dict[str, Any]:
    return {
        "type": "function_call",
        "id": f"fc_{call_id}",
        "call_id": call_id,
        "name": name,
        "arguments": arguments,
        "status": "completed",
    }


def answer(call_id: str) -> dict[str, Any]:
    return {"type": "function_call_output", "call_id": call_id, "output": "42"}


def response(**fields: Any) -> dict[str, Any]:
    wire: dict[str, Any] = {
        "id": "resp_1",
        "object": "response",
        "created_at": COMPLETED_AT - 5,
        "status": "completed",
        "completed_at": None,
        "error": None,
        "incomplete_details": None,
        "output": [],
        "metadata": {},
        "conversation": {"id": "conv_1"},
        "agent_reference": {"type": "agent_reference", "name": "helper", "version": "3"},
    }
    wire.update(fields)
    return wire


USAGE = {
    "input_tokens": 7,
    "input_tokens_details": {"cached_tokens": 0},
    "output_tokens": 3,
    "output_tokens_details": {"reasoning_tokens": 0},
    "total_tokens": 10,
}


@pytest.mark.parametrize(
    ("wire", "expected"),
    [
        pytest.param(
            response(status="queued"),
            {"status": "queued", "terminalAt": None, "toolCalls": None, "usage": None},
            id="queued",
        ),
        pytest.param(
            response(status="in_progress"),
            {"status": "in_progress", "terminalAt": None},
            id="in_progress",
        ),
        pytest.param(
            response(output=[message("Hi")], completed_at=COMPLETED_AT, usage=USAGE),
            {
                "status": "completed",
                "terminalAt": "2026-01-01T00:00:00.000Z",
                "usage": {"prompt_tokens": 7, "completion_tokens": 3, "total_tokens": 10},
                "toolCalls": None,
                "lastError": None,
            },
            id="completed",
        ),
        pytest.param(
            response(output=[call("call_a"), call("call_b", "other", "{}")]),
            {
                "status": "requires_action",
                "terminalAt": None,
                "toolCalls": [
                    {"id": "call_a", "name": "lookup", "arguments": '{"q": "x"}'},
                    {"id": "call_b", "name": "other", "arguments": "{}"},
                ],
            },
            id="function-calls-ask",
        ),
        pytest.param(
            response(
                output=[call("call_a"), answer("call_a"), message("Done")],
                completed_at=COMPLETED_AT,
            ),
            {"status": "completed", "toolCalls": None},
            id="function-call-answered-in-the-same-output",
        ),
        pytest.param(
            response(output=[call("call_a"), answer("call_a"), call("call_b")]),
            {
                "status": "requires_action",
                "toolCalls": [{"id": "call_b", "name": "lookup", "arguments": '{"q": "x"}'}],
            },
            id="one-of-two-answered",
        ),
        pytest.param(
            response(
                status="failed",
                error={"code": "rate_limit_exceeded", "message": "Quota exhausted."},
                output=[call("call_a")],
            ),
            {
                "status": "failed",
                "lastError": {"code": "rate_limit_exceeded", "message": "Quota exhausted."},
                "toolCalls": None,
                "terminalAt": None,
            },
            id="failed",
        ),
        pytest.param(
            response(status="incomplete", incomplete_details={"reason": "content_filter"}),
            {"status": "incomplete", "incompleteDetails": {"reason": "content_filter"}},
            id="incomplete",
        ),
        pytest.param(
            response(status="cancelled", completed_at=COMPLETED_AT),
            {"status": "cancelled", "terminalAt": "2026-01-01T00:00:00.000Z"},
            id="cancelled",
        ),
        pytest.param(
            response(status="Searching"),
            {"status": "searching", "terminalAt": None},
            id="unknown-status-lowercased",
        ),
    ],
)
def test_statuses_and_fields(wire: dict[str, Any], expected: dict[str, Any]) -> None:
    snapshot = response_snapshot(wire, None)
    assert {key: snapshot[key] for key in expected} == expected  # type: ignore[literal-required]
    assert snapshot["runId"] == "resp_1"
    assert snapshot["threadId"] == "conv_1"
    assert snapshot["expiresAt"] is None


@pytest.mark.parametrize(
    ("reference", "requested", "agent_id", "version"),
    [
        ({"type": "agent_reference", "name": "helper", "version": "3"}, None, "helper", "3"),
        ({"type": "agent_reference", "name": "helper", "version": "3"}, "2", "helper", "3"),
        ({"type": "agent_reference", "name": "helper"}, "2", "helper", "2"),
        (None, "2", None, "2"),
        (None, None, None, None),
    ],
)
def test_agent_name_and_version(
    reference: dict[str, str] | None, requested: str | None, agent_id: str | None, version: str
) -> None:
    snapshot = response_snapshot(response(agent_reference=reference), requested)
    assert snapshot["agentId"] == agent_id
    assert snapshot.get("agentVersion") == version


@pytest.mark.parametrize(
    ("conversation", "thread_id"),
    [({"id": "conv_9"}, "conv_9"), ("conv_8", "conv_8"), (None, None), ({}, None)],
)
def test_conversation_forms(conversation: Any, thread_id: str | None) -> None:
    assert response_snapshot(response(conversation=conversation), None)["threadId"] == thread_id


def test_missing_fields_read_as_none() -> None:
    snapshot = response_snapshot({"status": "in_progress"}, None)
    assert snapshot["runId"] is None
    assert snapshot["threadId"] is None
    assert snapshot["agentId"] is None
    assert snapshot["lastError"] is None
    assert snapshot["usage"] is None
    assert snapshot["incompleteDetails"] is None


@pytest.mark.parametrize(
    ("wire", "text"),
    [
        pytest.param(response(output=[message("Hello, ", "world")]), "Hello, world", id="parts"),
        pytest.param(
            response(output=[message("One. "), call("call_a"), message("Two.")]),
            "One. Two.",
            id="two-messages",
        ),
        pytest.param(
            response(status="incomplete", output=[message("Half")]), "Half", id="incomplete"
        ),
        pytest.param(response(output=[call("call_a")]), None, id="only-calls"),
        pytest.param(response(output=[]), None, id="no-output"),
        pytest.param(response(status="failed", output=[message("x")]), None, id="failed"),
        pytest.param(response(status="in_progress", output=[message("x")]), None, id="running"),
        pytest.param(
            response(
                output=[
                    {
                        "type": "message",
                        "role": "assistant",
                        "content": [{"type": "refusal", "refusal": "No."}],
                    }
                ]
            ),
            "",
            id="message-without-text",
        ),
    ],
)
def test_output_text(wire: dict[str, Any], text: str | None) -> None:
    assert response_output_text(wire) == text


def test_pending_calls_ignore_items_without_a_call_id() -> None:
    wire = response(output=[{"type": "function_call", "name": "x"}, "junk", call("call_z")])
    assert [c["id"] for c in pending_function_calls(wire)] == ["call_z"]

"""The custom status stays under the Durable extension's limit whatever a run asks for."""

from __future__ import annotations

from typing import Any

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from shared.core.custom_status import (
    CUSTOM_STATUS_BUDGET_BYTES,
    CUSTOM_STATUS_LIMIT_BYTES,
    bounded_custom_status,
    utf16_json_size,
)


def status_with(calls: list[dict[str, Any]], **extra: Any) -> dict[str, Any]:
    return {
        "status": "requires_action",
        "phase": "poll",
        "agentRun": {"runId": "run_1", "threadId": "thread_1", "agentId": "asst_1"},
        "polls": 3,
        "requiredAction": {
            "type": "submit_tool_outputs",
            "toolCalls": calls,
            "expiresAt": None,
            "giveUpAt": "2026-12-04T10:00:00Z",
            "round": "abc",
        },
        **extra,
    }


def calls(count: int, arguments: str) -> list[dict[str, Any]]:
    return [{"id": f"call_{i}", "name": f"tool_{i}", "arguments": arguments} for i in range(count)]


def test_the_limit_is_the_extensions() -> None:
    # MessagePayloadDataConverter.Serialize: (int)(UTF-16 bytes / 1024.0) > 16 fails.
    assert CUSTOM_STATUS_LIMIT_BYTES == 17 * 1024
    assert CUSTOM_STATUS_BUDGET_BYTES < CUSTOM_STATUS_LIMIT_BYTES


def test_utf16_counts_astral_characters_twice() -> None:
    assert utf16_json_size("a") == 6  # the quotes count too
    assert utf16_json_size("é") == 6  # written raw, not \\u-escaped
    assert utf16_json_size("😀") == 8  # a surrogate pair
    assert utf16_json_size("\u2028") == 16  # escaped by Newtonsoft: six characters


def test_the_size_agrees_with_the_bed_that_reproduces_the_extension() -> None:
    from devhost.functions_host.durable_engine import custom_status_utf16_bytes

    for value in ["plain", "é😀", "\u2028\u0085\u2029", {"a": ["\n", "\t", 1, None]}]:
        assert utf16_json_size(value) == custom_status_utf16_bytes(value)


@pytest.mark.parametrize(
    ("count", "arguments", "all_listed"),
    [
        (2, "{}", True),
        (8, "x" * 1000, True),
        (12, "x" * 1000, True),
        (64, "x" * 1000, True),
        (64, "{}", True),
        (1000, "{}", False),
        (12, "😀" * 1000, True),
    ],
)
def test_tool_calls_are_listed_while_they_fit(count: int, arguments: str, all_listed: bool) -> None:
    bounded = bounded_custom_status(status_with(calls(count, arguments)))
    action = bounded["requiredAction"]
    assert utf16_json_size(bounded) <= CUSTOM_STATUS_BUDGET_BYTES
    assert action["toolCallCount"] == count
    assert action["truncated"] is not all_listed
    assert (len(action["toolCalls"]) == count) is all_listed
    assert all(len(c["arguments"]) <= 1024 for c in action["toolCalls"])
    if all_listed:
        # Every call keeps a fair share of its arguments.
        assert all(c["arguments"] for c in action["toolCalls"])
    assert action["round"] == "abc"


def test_huge_strings_from_the_service_are_cut() -> None:
    status = status_with(
        calls(3, "{}"),
        lastError={"code": "e" * 10_000, "message": "m" * 100_000},
        agentRun={"runId": "r" * 50_000, "threadId": "t", "agentId": "a"},
    )
    bounded = bounded_custom_status(status)
    assert utf16_json_size(bounded) <= CUSTOM_STATUS_BUDGET_BYTES
    assert bounded["status"] == "requires_action"
    assert bounded["requiredAction"]["toolCallCount"] == 3


@settings(max_examples=200, deadline=None)
@given(
    st.lists(
        st.fixed_dictionaries({"id": st.text(), "name": st.text(), "arguments": st.text()}),
        max_size=80,
    ),
    st.text(max_size=5000),
)
def test_any_status_fits(tool_calls: list[dict[str, Any]], message: str) -> None:
    bounded = bounded_custom_status(
        status_with(tool_calls, lastError={"code": "x", "message": message})
    )
    assert utf16_json_size(bounded) <= CUSTOM_STATUS_BUDGET_BYTES

"""The loopback Foundry service's conversations, driven by the real openai 3.x client on a
virtual clock: the conversation lock, the `response_id` of items a response appended, a tool
turn played by one script (`answer_function_outputs`), and the JSON state file kept across
restarts. Every body is validated against the OpenAI spec (tests/devhost/test_foundry_service.py).
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import openai
import pytest

from devhost.clock import VirtualClock
from devhost.foundry_service import (
    CONVERSATION_LOCKED,
    FoundryService,
    ResponseScript,
    make_openai_client,
)

# Fixtures, aliased as themselves because only pytest uses them (see foundry_fixtures.py).
from tests.devhost.foundry_fixtures import client as client
from tests.devhost.foundry_fixtures import clock as clock
from tests.devhost.foundry_fixtures import service as service
from tests.devhost.test_foundry_service import AGENT, assert_conforms, spec

TOOL_TURN = ResponseScript(
    function_calls=[{"name": "get_weather", "arguments": {"city": "Paris"}}],
    answer_function_outputs=True,
)


@pytest.fixture
def foundry_seed() -> int:
    """The seed of this module's `service` (foundry_fixtures.py)."""
    return 5


def finish(client: openai.OpenAI, clock: VirtualClock, rid: str) -> Any:
    """Retrieve until the response has ended, one virtual second between reads."""
    for _ in range(100):
        response = client.responses.retrieve(rid)
        if response.status not in ("queued", "in_progress"):
            return response
        clock.advance(1)
    raise AssertionError("the response never ended")


def in_conversation(client: openai.OpenAI, conversation: str, **kwargs: Any) -> Any:
    kwargs.setdefault("input", "hello")
    return client.responses.create(
        conversation=conversation,
        background=True,
        extra_body={"agent_reference": AGENT},
        **kwargs,
    )


def extra(item: Any) -> dict[str, Any]:
    return dict(item.model_extra or {})


def as_dict(item: Any) -> dict[str, Any]:
    return dict(item.to_dict())


# ---------------------------------------------------------------------------- the lock


def test_a_conversation_is_locked_while_a_response_on_it_is_queued_or_in_progress(
    service: FoundryService, clock: VirtualClock, client: openai.OpenAI
) -> None:
    conversation = client.conversations.create().id
    other = client.conversations.create().id
    first = in_conversation(client, conversation, input="first")
    assert first.status == "queued"
    refusals = []
    for _ in range(2):  # queued, then (a second later) in progress
        with pytest.raises(openai.BadRequestError) as refused:
            in_conversation(client, conversation, input="second")
        refusals.append(refused.value)
        clock.advance(1)
    assert client.responses.retrieve(first.id).status == "in_progress"
    for error in refusals:
        assert error.status_code == 400
        assert error.code == "conversation_locked"
        assert error.param == "conversation"
        assert error.type == "invalid_request_error"
        assert error.body == {
            "message": CONVERSATION_LOCKED,
            "type": "invalid_request_error",
            "param": "conversation",
            "code": "conversation_locked",
        }
    # Other conversations and responses without one are not held up.
    assert in_conversation(client, other).status == "queued"
    client.responses.create(input="free", background=True, extra_body={"agent_reference": AGENT})
    assert len(service.responses) == 3  # the refused creates made nothing
    assert finish(client, clock, first.id).status == "completed"
    second = in_conversation(client, conversation, input="second")
    assert finish(client, clock, second.id).output_text == "Echo: second"
    assert_conforms(service)


def test_a_cancelled_response_releases_the_lock(
    service: FoundryService, clock: VirtualClock, client: openai.OpenAI
) -> None:
    service.default_script = ResponseScript(duration_seconds=60, cancel_delay_seconds=2)
    conversation = client.conversations.create().id
    running = in_conversation(client, conversation)
    clock.advance(1)
    assert client.responses.cancel(running.id).status == "in_progress"  # takes 2 s
    with pytest.raises(openai.BadRequestError, match="Another process"):
        in_conversation(client, conversation)
    clock.advance(2)
    assert client.responses.retrieve(running.id).status == "cancelled"
    assert in_conversation(client, conversation).status == "queued"
    assert_conforms(service)


# ---------------------------------------------------------------------------- response_id


def test_items_a_response_appended_carry_its_response_id(
    service: FoundryService, clock: VirtualClock, client: openai.OpenAI
) -> None:
    service.default_script = TOOL_TURN
    conversation = client.conversations.create(
        items=[{"type": "message", "role": "user", "content": "I live in Paris."}]
    ).id
    client.conversations.items.create(
        conversation, items=[{"type": "message", "role": "user", "content": "Hi."}]
    )
    asking = in_conversation(client, conversation, input="Weather?")
    asked = finish(client, clock, asking.id)
    call = next(item for item in asked.output if item.type == "function_call")
    assert (call.name, json.loads(call.arguments)) == ("get_weather", {"city": "Paris"})
    output = '{"sky": "clear"}'
    answering = in_conversation(
        client,
        conversation,
        input=[{"type": "function_call_output", "call_id": call.call_id, "output": output}],
    )
    answer = finish(client, clock, answering.id)
    assert answer.output_text == f"Echo: {output}"

    items = list(client.conversations.items.list(conversation, order="desc"))
    assert [(i.type, extra(i).get("response_id")) for i in items] == [
        ("message", answering.id),  # the answer
        ("function_call_output", answering.id),  # its input
        ("function_call", asking.id),  # the first response's output
        ("message", asking.id),  # its input
        ("message", None),  # added through POST /conversations/{id}/items
        ("message", None),  # added at creation
    ]
    for item in items[:4]:
        assert as_dict(item)["response_id"] == extra(item)["response_id"]
    answer_item, output_item, call_item, question = (as_dict(i) for i in items[:4])
    assert answer_item["id"].startswith("msg_")
    assert answer_item["role"] == "assistant"
    assert answer_item["id"] == answer.output[0].id  # the same item as in the response
    assert output_item["id"].startswith("fco_")
    assert (output_item["call_id"], output_item["output"]) == (call.call_id, output)
    assert call_item["id"] == call.id
    assert call_item["id"].startswith("fc_")
    assert question["id"].startswith("msg_")
    assert question["content"] == [{"type": "input_text", "text": "Weather?"}]
    # The items' schemas (Message, FunctionToolCallResource, FunctionToolCallOutputResource)
    # do not forbid additional properties, so the Foundry extension validates as it is.
    listed = service.calls("conversations.items.list")[-1].response
    for raw in listed["data"]:
        assert spec().problems("ConversationItem", raw) == []
    assert spec().problems("ConversationItem", {**listed["data"][0], "status": "lost"})
    # The responses' own items are unchanged (no response_id there).
    assert "response_id" not in service.responses[answering.id]["output"][0]
    assert_conforms(service)


def test_one_script_plays_a_tool_turn_by_previous_response_id(
    service: FoundryService, clock: VirtualClock, client: openai.OpenAI
) -> None:
    service.scripts_by_agent["helper"] = TOOL_TURN
    first = client.responses.create(
        input="Weather?", background=True, extra_body={"agent_reference": AGENT}
    )
    asked = finish(client, clock, first.id)
    assert asked.output_text == ""
    calls = [item for item in asked.output if item.type == "function_call"]
    assert len(calls) == 1
    assert calls[0].call_id.startswith("call_")
    follow_up = client.responses.create(
        input=[{"type": "function_call_output", "call_id": calls[0].call_id, "output": "sunny"}],
        previous_response_id=first.id,
        background=True,
        extra_body={"agent_reference": AGENT},
    )
    assert finish(client, clock, follow_up.id).output_text == "Echo: sunny"
    # Without answer_function_outputs the same script would ask again.
    service.scripts_by_agent["helper"] = ResponseScript(function_calls=[{"name": "f"}])
    again = client.responses.create(
        input=[{"type": "function_call_output", "call_id": calls[0].call_id, "output": "x"}],
        previous_response_id=first.id,
        background=True,
        extra_body={"agent_reference": AGENT},
    )
    assert [item.type for item in finish(client, clock, again.id).output] == ["function_call"]
    assert_conforms(service)


# ---------------------------------------------------------------------------- state file


def test_the_state_file_keeps_responses_conversations_and_agents(
    tmp_path: Path, clock: VirtualClock
) -> None:
    state = tmp_path / "foundry-state.json"
    slow = ResponseScript(duration_seconds=30, output_text="Later.", usage={"input_tokens": 4})
    with FoundryService(clock, seed=1, state_file=state) as first:
        first.create_agent_version("helper", tools=[{"type": "function", "name": "f"}])
        first.scripts_by_agent["helper"] = slow
        with make_openai_client(first) as client:
            conversation = client.conversations.create(metadata={"k": "v"}).id
            done = in_conversation(client, conversation, input="one")
            finish(client, clock, done.id)
            running = in_conversation(client, conversation, input="two")
            clock.advance(5)
            assert client.responses.retrieve(running.id).status == "in_progress"
        before = json.loads(state.read_text())
    assert before["version"] == 1
    assert not list(tmp_path.glob("*.tmp"))  # written through a temporary file, then renamed

    clock.advance(60)  # the service is down while the second response ends
    with FoundryService(clock, seed=2, state_file=state) as second:
        assert second.has_agent("helper")
        with make_openai_client(second) as client:
            resumed = client.responses.retrieve(running.id)
            assert resumed.status == "completed"
            assert resumed.output_text == "Later."  # the script came along
            assert resumed.usage is not None
            assert resumed.usage.input_tokens == 4
            assert client.conversations.retrieve(conversation).metadata == {"k": "v"}
            items = list(client.conversations.items.list(conversation, order="asc"))
            assert [extra(i)["response_id"] for i in items] == [done.id] * 2 + [running.id] * 2
            assert in_conversation(client, conversation, input="three").status == "queued"
            with pytest.raises(openai.NotFoundError):
                client.responses.retrieve("resp_missing")
        assert second.create_agent_version("helper")["version"] == "2"
    after = json.loads(state.read_text())
    assert len(after["responses"]) == 3
    assert [v["version"] for v in after["agents"]["helper"]] == ["1", "2"]


def test_a_state_file_of_another_version_is_ignored(tmp_path: Path, clock: VirtualClock) -> None:
    state = tmp_path / "foundry-state.json"
    state.write_text(json.dumps({"version": 99, "agents": {"x": [{}]}}))
    with FoundryService(clock, state_file=state) as service:
        assert not service.has_agent("x")
        service.create_agent_version("helper")
    assert json.loads(state.read_text())["version"] == 1

"""The loopback Foundry project service, driven by the real openai 3.x (sync and async) and
azure-ai-projects 2.x SDKs. Background responses follow the virtual clock: the tests advance it
between polls; streams and foreground creates make it follow the wall while they are open.
Every body and event the service sends is validated against the OpenAI Responses spec.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import re
import subprocess
import sys
from pathlib import Path
from typing import Any

import openai
import pytest
from azure.ai.projects.models import PromptAgentDefinition
from jsonschema import Draft202012Validator
from referencing import Registry, Resource
from referencing.jsonschema import DRAFT202012

from devhost.clock import VirtualClock
from devhost.foundry_service import (
    FAULT_KINDS,
    FaultRule,
    FoundryService,
    ResponseScript,
    make_async_openai_client,
    make_async_project_client,
    make_openai_client,
    make_project_client,
)

# Fixtures, aliased as themselves because only pytest uses them (see foundry_fixtures.py).
from tests.devhost.foundry_fixtures import client as client
from tests.devhost.foundry_fixtures import clock as clock
from tests.devhost.foundry_fixtures import service as service

ROOT = Path(__file__).resolve().parents[2]
SPEC_PATH = ROOT / "devhost" / "specs" / "openai-responses.openapi.json"
AGENT = {"type": "agent_reference", "name": "helper"}
FAST = ResponseScript(queued_seconds=0.05, duration_seconds=0.1)


@pytest.fixture
def foundry_seed() -> int:
    """The seed of this module's `service` (foundry_fixtures.py)."""
    return 3


# ---------------------------------------------------------------------------- spec validation


class _Spec:
    """The OpenAPI 3.1 schemas as JSON Schema 2020-12, resolved inside the spec document."""

    def __init__(self) -> None:
        document = json.loads(SPEC_PATH.read_text(encoding="utf-8"))
        self.document = document
        resource = Resource.from_contents(document, default_specification=DRAFT202012)
        self._registry: Registry[Any] = Registry().with_resource("urn:spec", resource)
        self._validators: dict[str, Draft202012Validator] = {}
        # Stream event type -> the component that describes it.
        self.event_schemas: dict[str, str] = {}
        for ref in document["components"]["schemas"]["ResponseStreamEvent"]["anyOf"]:
            name = ref["$ref"].rsplit("/", 1)[1]
            schema = document["components"]["schemas"][name]
            for kind in schema.get("properties", {}).get("type", {}).get("enum", []):
                self.event_schemas[kind] = name

    def validator(self, component: str) -> Draft202012Validator:
        if component not in self._validators:
            schema = {"$ref": f"urn:spec#/components/schemas/{component}"}
            self._validators[component] = Draft202012Validator(schema, registry=self._registry)
        return self._validators[component]

    def problems(self, component: str, instance: Any) -> list[str]:
        return [
            f"{component} at /{'/'.join(map(str, e.absolute_path))}: {e.message[:300]}"
            for e in self.validator(component).iter_errors(instance)
        ]

    def response_schema(self, method: str, path: str, status: int) -> str | None:
        """The component a documented answer of the spec's path refers to."""
        answer = self.document["paths"][path][method.lower()]["responses"].get(str(status))
        if answer is None or "content" not in answer:
            return None
        ref = next(iter(answer["content"].values()))["schema"].get("$ref")
        return ref.rsplit("/", 1)[1] if ref else None


_SPEC: _Spec | None = None


def spec() -> _Spec:
    global _SPEC
    if _SPEC is None:
        _SPEC = _Spec()
    return _SPEC


_SPEC_PATHS = {
    "responses.create": ("POST", "/responses"),
    "responses.retrieve": ("GET", "/responses/{response_id}"),
    "responses.cancel": ("POST", "/responses/{response_id}/cancel"),
    "conversations.create": ("POST", "/conversations"),
    "conversations.retrieve": ("GET", "/conversations/{conversation_id}"),
    "conversations.delete": ("DELETE", "/conversations/{conversation_id}"),
    "conversations.items.create": ("POST", "/conversations/{conversation_id}/items"),
    "conversations.items.list": ("GET", "/conversations/{conversation_id}/items"),
}


def spec_problems(service: FoundryService) -> tuple[int, list[str]]:
    """Validate every recorded body and streamed event; (how many were checked, problems)."""
    checked, problems = 0, []
    for record in service.requests:
        for event in record.events:
            component = spec().event_schemas.get(event["type"])
            if component is None:
                problems.append(f"event type {event['type']!r} is not in the spec")
                continue
            checked += 1
            problems += spec().problems(component, event)
        if record.response is None or record.operation not in _SPEC_PATHS:
            continue
        assert record.status is not None
        if record.status >= 400:
            checked += 1
            problems += spec().problems("ErrorResponse", record.response)
            continue
        method, path = _SPEC_PATHS[record.operation]
        component = spec().response_schema(method, path, record.status)
        if component is not None:
            checked += 1
            problems += spec().problems(component, record.response)
    return checked, problems


def assert_conforms(service: FoundryService) -> None:
    checked, problems = spec_problems(service)
    assert not problems, "\n".join(problems)
    assert checked > 0


def _poll(client: openai.OpenAI, clock: VirtualClock, rid: str, step: float = 1.0) -> Any:
    for _ in range(1000):
        response = client.responses.retrieve(rid)
        if response.status not in ("queued", "in_progress"):
            return response
        clock.advance(step)
    raise AssertionError("the response never ended")


# ---------------------------------------------------------------------------- lifecycle


def test_background_response_through_the_project_client(
    service: FoundryService, clock: VirtualClock
) -> None:
    with make_project_client(service) as project:
        agent = project.agents.create_version(
            agent_name="writer",
            definition=PromptAgentDefinition(model="gpt-4.1", instructions="Be brief."),
            metadata={"team": "relay"},
        )
        assert agent.version == "1"
        assert project.agents.get("writer").versions["latest"]["version"] == "1"
        assert project.agents.get_version("writer", "1").definition["model"] == "gpt-4.1"
        client = project.get_openai_client(max_retries=0)
        created = client.responses.create(
            input="Summarise the report",
            background=True,
            metadata={"ticket": "INC-42"},
            extra_body={"agent_reference": {"type": "agent_reference", "name": "writer"}},
        )
        assert created.status == "queued"
        assert created.background is True
        clock.advance(1)
        assert client.responses.retrieve(created.id).status == "in_progress"
        clock.advance(5)
        done = client.responses.retrieve(created.id)
    assert done.status == "completed"
    assert done.output_text == "Echo: Summarise the report"
    assert done.model == "gpt-4.1"
    assert done.metadata == {"ticket": "INC-42"}
    assert done.usage is not None
    assert done.usage.total_tokens == 15
    extra = done.model_extra or {}
    assert extra["agent_reference"] == {
        "type": "agent_reference",
        "name": "writer",
        "version": "1",
    }
    create = service.calls("responses.create")[0]
    assert create.path == "/openai/v1/responses"
    assert create.query == {}  # get_openai_client adds no api-version
    assert create.user_agent is not None
    assert "AIProjectClient" in create.user_agent
    assert service.calls("agents.create_version")[0].query == {"api-version": "v1"}
    assert all(r.bearer for r in service.requests)
    assert_conforms(service)


def test_agent_endpoint_and_old_beta_paths(service: FoundryService, clock: VirtualClock) -> None:
    with make_project_client(service, allow_preview=True) as project:
        client = project.get_openai_client(agent_name="helper", max_retries=0)
        created = client.responses.create(input="via the agent endpoint", background=True)
        clock.advance(10)
        assert client.responses.retrieve(created.id).output_text == "Echo: via the agent endpoint"
    first = service.calls("responses.create")[0]
    assert first.path == "/agents/helper/endpoint/protocols/openai/responses"
    assert first.query == {"api-version": "v1"}
    assert "agent_reference" not in first.body
    assert (created.model_extra or {})["agent_reference"]["name"] == "helper"
    # azure-ai-projects 2.0.0b1: `{endpoint}/openai` with a preview api-version.
    with openai.OpenAI(
        base_url=service.endpoint + "/openai",
        api_key="t",
        default_query={"api-version": "2025-11-15-preview"},
        max_retries=0,
    ) as beta:
        assert beta.responses.retrieve(created.id).status == "completed"
    assert_conforms(service)


def test_no_token_is_refused_and_tokens_are_never_recorded(service: FoundryService) -> None:
    with make_openai_client(service) as client:
        with pytest.raises(openai.AuthenticationError) as refused:
            client.responses.retrieve("resp_x", extra_headers={"Authorization": "Basic eDp5"})
        assert refused.value.status_code == 401
    with make_openai_client(service) as client, pytest.raises(openai.NotFoundError):
        client.responses.retrieve("resp_missing")
    assert "dummy-token" not in repr(service.requests)


def test_async_client_create_cancel_and_status_scripts(
    service: FoundryService, clock: VirtualClock
) -> None:
    scripts = {
        "failed": ResponseScript(
            final_status="failed",
            error={"code": "rate_limit_exceeded", "message": "Quota exhausted."},
        ),
        "incomplete": ResponseScript(final_status="incomplete", incomplete_reason="content_filter"),
        "cancelled": ResponseScript(final_status="cancelled"),
        "completed": ResponseScript(
            output_text="Done.", usage={"input_tokens": 7, "output_tokens": 3}
        ),
    }
    service.script_for = lambda body: scripts.get(body["metadata"].get("case", ""))

    async def scenario() -> dict[str, Any]:
        async with make_async_openai_client(service) as client:
            ids = {
                case: (
                    await client.responses.create(
                        input="go",
                        background=True,
                        metadata={"case": case},
                        extra_body={"agent_reference": AGENT},
                    )
                ).id
                for case in [*scripts, "to_cancel"]
            }
            clock.advance(1)
            cancelled = await client.responses.cancel(ids["to_cancel"])
            again = await client.responses.cancel(ids["to_cancel"])  # idempotent (S4)
            clock.advance(10)
            out: dict[str, Any] = {
                case: await client.responses.retrieve(rid) for case, rid in ids.items()
            }
            out["cancel_reply"], out["cancel_again"] = cancelled, again
            with pytest.raises(openai.BadRequestError) as refused:
                await client.responses.cancel(ids["completed"])
            out["refused"] = refused.value
            return out

    got = asyncio.run(scenario())
    assert got["cancel_reply"].status == "cancelled"
    assert got["cancel_again"].status == "cancelled"
    assert got["to_cancel"].status == "cancelled"
    assert got["to_cancel"].output == []
    assert got["failed"].status == "failed"
    assert got["failed"].error.code == "rate_limit_exceeded"
    assert got["incomplete"].incomplete_details.reason == "content_filter"
    assert got["cancelled"].status == "cancelled"
    assert got["completed"].output_text == "Done."
    assert got["completed"].usage.input_tokens == 7
    assert got["completed"].usage.output_tokens == 3
    assert got["refused"].status_code == 400
    assert got["refused"].param == "response_id"
    assert_conforms(service)


def test_cancel_reports_cancelled_then_later_completed(
    service: FoundryService, clock: VirtualClock, client: openai.OpenAI
) -> None:
    """Reported for Azure OpenAI background responses (reference note §5, S11)."""
    service.default_script = ResponseScript(
        duration_seconds=30, output_text="Finished anyway.", completed_after_cancel_seconds=20
    )
    rid = client.responses.create(
        input="x", background=True, extra_body={"agent_reference": AGENT}
    ).id
    clock.advance(2)
    assert client.responses.cancel(rid).status == "cancelled"
    clock.advance(10)
    assert client.responses.retrieve(rid).status == "cancelled"
    clock.advance(15)
    late = client.responses.retrieve(rid)
    assert late.status == "completed"
    assert late.output_text == "Finished anyway."
    assert_conforms(service)


def test_a_delayed_cancel_and_one_that_comes_too_late(
    service: FoundryService, clock: VirtualClock, client: openai.OpenAI
) -> None:
    service.default_script = ResponseScript(duration_seconds=10, cancel_delay_seconds=4)
    early = client.responses.create(
        input="x", background=True, extra_body={"agent_reference": AGENT}
    ).id
    late = client.responses.create(
        input="y", background=True, extra_body={"agent_reference": AGENT}
    ).id
    clock.advance(1)
    assert client.responses.cancel(early).status == "in_progress"  # not yet taken effect
    clock.advance(4)
    assert client.responses.retrieve(early).status == "cancelled"
    clock.advance(4)  # 9 s: `late` still runs; its cancel would take effect after its end
    assert client.responses.cancel(late).status == "in_progress"
    clock.advance(10)
    assert client.responses.retrieve(late).status == "completed"
    assert client.responses.retrieve(early).status == "cancelled"
    assert [e["type"] for e in service.events(early)] == [
        "response.created",
        "response.in_progress",
        "response.failed",
    ]
    assert_conforms(service)


def test_foreground_create_waits_for_the_answer(
    service: FoundryService, client: openai.OpenAI
) -> None:
    service.default_script = FAST
    response = client.responses.create(input="hi", extra_body={"agent_reference": AGENT})
    assert response.status == "completed"
    assert response.background is False
    assert response.output_text == "Echo: hi"
    with pytest.raises(openai.BadRequestError, match="synchronous"):
        client.responses.cancel(response.id)
    with pytest.raises(openai.BadRequestError) as not_streamed:
        client.responses.retrieve(response.id, stream=True, starting_after=0)
    assert not_streamed.value.param == "stream"
    assert_conforms(service)


# ---------------------------------------------------------------------------- streams


def test_stream_drop_then_resume_with_starting_after(
    service: FoundryService, client: openai.OpenAI
) -> None:
    service.default_script = ResponseScript(
        queued_seconds=0.05,
        duration_seconds=0.1,
        output_text="A streamed answer.",
        stream_drop_after=3,
    )
    seen: list[Any] = []
    stream = client.responses.create(
        input="stream it", background=True, stream=True, extra_body={"agent_reference": AGENT}
    )
    with pytest.raises(openai.APIConnectionError):  # the connection was cut mid-stream
        seen.extend(stream)
    assert [e.sequence_number for e in seen] == [0, 1, 2, 3]
    assert seen[0].type == "response.created"
    assert seen[1].type == "response.in_progress"
    rid = seen[0].response.id
    resumed = list(client.responses.retrieve(rid, stream=True, starting_after=3))
    numbers = [e.sequence_number for e in resumed]
    assert numbers == list(range(4, 4 + len(numbers)))
    assert resumed[-1].type == "response.completed"
    text = "".join(e.delta for e in seen + resumed if e.type == "response.output_text.delta")
    assert text == "A streamed answer."
    # A full replay from the start, once it has ended.
    replay = list(client.responses.retrieve(rid, stream=True))
    assert [e.sequence_number for e in replay] == list(range(len(replay)))
    assert client.responses.retrieve(rid).output_text == "A streamed answer."
    with pytest.raises(openai.BadRequestError) as bad:
        client.get(
            f"/responses/{rid}",
            cast_to=object,
            options={"params": {"stream": "true", "starting_after": "x"}},
        )
    assert bad.value.param == "starting_after"
    assert_conforms(service)


def test_streamed_function_calls_and_a_cancelled_stream(
    service: FoundryService, client: openai.OpenAI
) -> None:
    service.script_for = lambda body: (
        ResponseScript(
            queued_seconds=0.02,
            duration_seconds=0.05,
            function_calls=[{"name": "lookup", "arguments": {"q": "weather in Paris"}}],
        )
        if body["metadata"]["case"] == "calls"
        else ResponseScript(queued_seconds=0.02, duration_seconds=0.05, final_status="cancelled")
    )
    calls = list(
        client.responses.create(
            input="?",
            stream=True,
            background=True,
            metadata={"case": "calls"},
            extra_body={"agent_reference": AGENT},
        )
    )
    kinds = [e.type for e in calls]
    assert "response.function_call_arguments.delta" in kinds
    done = next(e for e in calls if e.type == "response.function_call_arguments.done")
    assert json.loads(done.arguments) == {"q": "weather in Paris"}
    assert kinds[-1] == "response.completed"
    cancelled = list(
        client.responses.create(
            input="?",
            stream=True,
            metadata={"case": "cancel"},
            extra_body={"agent_reference": AGENT},
        )
    )
    # No response.cancelled event in the spec: S4 ends with response.failed, status cancelled.
    assert cancelled[-1].type == "response.failed"
    assert cancelled[-1].response.status == "cancelled"
    assert_conforms(service)


# ---------------------------------------------------------------------------- function calls


def test_function_calls_then_outputs_with_previous_response_id(
    service: FoundryService, clock: VirtualClock, client: openai.OpenAI
) -> None:
    def script(body: dict[str, Any]) -> ResponseScript:
        items = body["input"] if isinstance(body["input"], list) else []
        if any(i.get("type") == "function_call_output" for i in items):
            return ResponseScript(output_text="It is sunny in Paris.")
        return ResponseScript(
            function_calls=[
                {"name": "get_weather", "arguments": {"city": "Paris"}, "call_id": "call_1"},
                {"name": "get_time", "arguments": "{}", "call_id": "call_2"},
            ]
        )

    service.script_for = script
    first = client.responses.create(
        input="Weather?", background=True, extra_body={"agent_reference": AGENT}
    )
    asked = _poll(client, clock, first.id)
    assert asked.status == "completed"
    assert asked.output_text == ""
    calls = [item for item in asked.output if item.type == "function_call"]
    assert [(c.name, c.call_id, json.loads(c.arguments)) for c in calls] == [
        ("get_weather", "call_1", {"city": "Paris"}),
        ("get_time", "call_2", {}),
    ]
    with pytest.raises(openai.BadRequestError, match="call_9"):
        client.responses.create(
            input=[{"type": "function_call_output", "call_id": "call_9", "output": "?"}],
            previous_response_id=first.id,
            background=True,
            extra_body={"agent_reference": AGENT},
        )
    follow_up = client.responses.create(
        input=[
            {"type": "function_call_output", "call_id": "call_1", "output": '{"sky": "clear"}'},
            {"type": "function_call_output", "call_id": "call_2", "output": "12:00"},
        ],
        previous_response_id=first.id,
        background=True,
        extra_body={"agent_reference": AGENT},
    )
    answer = _poll(client, clock, follow_up.id)
    assert answer.previous_response_id == first.id
    assert answer.output_text == "It is sunny in Paris."
    body = service.calls("responses.create")[-1].body
    assert body["agent_reference"] == AGENT
    assert "model" not in body
    assert_conforms(service)


# ---------------------------------------------------------------------------- conversations


def test_conversations_items_and_responses_in_a_conversation(
    service: FoundryService, clock: VirtualClock, client: openai.OpenAI
) -> None:
    conversation = client.conversations.create(
        items=[{"type": "message", "role": "user", "content": "My name is Ada."}],
        metadata={"caller": "relay"},
    )
    assert conversation.id.startswith("conv_")
    assert client.conversations.retrieve(conversation.id).metadata == {"caller": "relay"}
    added = client.conversations.items.create(
        conversation.id,
        items=[{"type": "message", "role": "user", "content": "I live in Paris."}],
    )
    assert len(added.data) == 1
    response = client.responses.create(
        input="What do you know?",
        conversation=conversation.id,
        background=True,
        extra_body={"agent_reference": AGENT},
    )
    assert response.conversation is not None
    assert response.conversation.id == conversation.id
    # The items are appended once the response has ended.
    assert len(service.conversation_items(conversation.id)) == 2
    _poll(client, clock, response.id)
    ordered = list(client.conversations.items.list(conversation.id, order="asc", limit=1))
    assert len(ordered) == 4  # the pager followed has_more / last_id
    assert ordered[-1].type == "message"
    assert ordered[-1].model_dump()["role"] == "assistant"
    newest = client.conversations.items.list(conversation.id, limit=2)
    assert newest.has_more is True
    assert newest.data[0].model_dump()["role"] == "assistant"
    with pytest.raises(openai.BadRequestError):
        client.responses.create(
            input="x",
            conversation=conversation.id,
            previous_response_id=response.id,
            extra_body={"agent_reference": AGENT},
        )
    with pytest.raises(openai.NotFoundError):
        client.conversations.items.list("conv_missing")
    assert client.conversations.delete(conversation.id).deleted is True
    assert_conforms(service)


# ---------------------------------------------------------------------------- request checks


@pytest.mark.parametrize(
    ("kwargs", "param"),
    [
        ({"metadata": {f"k{i}": "v" for i in range(17)}}, "metadata"),
        ({"metadata": {"k" * 65: "v"}}, "metadata"),
        ({"metadata": {"k": "v" * 513}}, "metadata"),
        ({"store": False, "background": True}, "background"),
        ({"extra_body": {"agent": {"type": "agent_reference", "name": "helper"}}}, "agent"),
        ({"text": {"format": {"type": "text"}}}, "text"),
    ],
)
def test_invalid_creates_are_refused(
    service: FoundryService, client: openai.OpenAI, kwargs: dict[str, Any], param: str
) -> None:
    extra = kwargs.pop("extra_body", {"agent_reference": AGENT})
    with pytest.raises(openai.BadRequestError) as refused:
        client.responses.create(input="x", extra_body=extra, **kwargs)
    assert refused.value.param == param
    assert service.responses == {}
    assert_conforms(service)


def test_metadata_at_the_limits_is_accepted(service: FoundryService, client: openai.OpenAI) -> None:
    metadata = {f"{i:02d}" + "k" * 62: "v" * 512 for i in range(16)}
    created = client.responses.create(
        input="x", background=True, metadata=metadata, extra_body={"agent_reference": AGENT}
    )
    assert created.metadata == metadata


def test_unknown_agent_is_not_found(client: openai.OpenAI) -> None:
    with pytest.raises(openai.NotFoundError):
        client.responses.create(
            input="x", extra_body={"agent_reference": {"type": "agent_reference", "name": "nobody"}}
        )


# ---------------------------------------------------------------------------- faults


def test_429_retry_headers_as_the_sdk_sees_them(
    service: FoundryService, client: openai.OpenAI
) -> None:
    service.faults.append(
        FaultRule(operation="responses.retrieve", kind="429_retry_after", retry_after=7, count=1)
    )
    service.faults.append(
        FaultRule(
            operation="responses.retrieve", kind="429_retry_after_ms", retry_after=0.25, count=1
        )
    )
    service.faults.append(FaultRule(operation="responses.retrieve", kind="429", count=1))
    rid = client.responses.create(
        input="x", background=True, extra_body={"agent_reference": AGENT}
    ).id
    seen = []
    for _ in range(3):
        with pytest.raises(openai.RateLimitError) as limited:
            client.responses.retrieve(rid)
        seen.append(limited.value)
    assert seen[0].response.headers["retry-after"] == "7"
    assert seen[1].response.headers["retry-after-ms"] == "250"
    assert "retry-after" not in seen[2].response.headers
    assert all(e.code == "rate_limit_exceeded" and e.request_id for e in seen)
    assert client.responses.retrieve(rid).id == rid
    assert service.fault_counts == {"429_retry_after": 1, "429_retry_after_ms": 1, "429": 1}
    assert_conforms(service)


def test_sdk_retries_honour_retry_after_ms(service: FoundryService) -> None:
    service.faults.append(
        FaultRule(
            operation="responses.create", kind="429_retry_after_ms", retry_after=0.01, count=2
        )
    )
    with make_openai_client(service, max_retries=2) as client:
        created = client.responses.create(
            input="x", background=True, extra_body={"agent_reference": AGENT}
        )
    attempts = service.calls("responses.create")
    assert [r.status for r in attempts] == [429, 429, 200]
    assert [r.retry_count for r in attempts] == ["0", "1", "2"]
    assert created.id in service.responses


def test_server_errors_timeouts_and_malformed_bodies(
    service: FoundryService, client: openai.OpenAI
) -> None:
    rid = client.responses.create(
        input="x", background=True, extra_body={"agent_reference": AGENT}
    ).id
    service.faults.append(FaultRule(operation="responses.retrieve", kind="500", count=1))
    with pytest.raises(openai.InternalServerError) as failed:
        client.responses.retrieve(rid)
    assert failed.value.status_code == 500
    service.faults.append(FaultRule(operation="responses.retrieve", kind="503", count=1))
    with pytest.raises(openai.InternalServerError):
        client.responses.retrieve(rid)
    service.faults.append(
        FaultRule(operation="responses.retrieve", kind="timeout", delay_seconds=2, count=1)
    )
    with pytest.raises(openai.APITimeoutError):
        client.with_options(timeout=0.3).responses.retrieve(rid)
    service.faults.append(FaultRule(operation="responses.retrieve", kind="malformed_json", count=1))
    # openai 3.60 lets the JSONDecodeError of a cut-short 200 body through (not an APIError).
    with pytest.raises(json.JSONDecodeError):
        client.responses.retrieve(rid)
    service.faults.append(FaultRule(operation="responses.create", kind="500_after_apply", count=1))
    with pytest.raises(openai.InternalServerError):
        client.responses.create(input="y", background=True, extra_body={"agent_reference": AGENT})
    assert len(service.responses) == 2  # applied despite the 500: no idempotency key
    assert client.responses.retrieve(rid).id == rid


def test_fault_rule_validation() -> None:
    assert "429_retry_after_ms" in FAULT_KINDS
    with pytest.raises(ValueError, match="unknown fault kind"):
        FaultRule(kind="teapot")
    with pytest.raises(ValueError, match="final_status"):
        ResponseScript(final_status="expired")
    with pytest.raises(ValueError, match="incomplete_reason"):
        ResponseScript(final_status="incomplete", incomplete_reason="tired")


# ---------------------------------------------------------------------------- the spec itself


def test_many_scenarios_conform_to_the_spec(service: FoundryService, clock: VirtualClock) -> None:
    """Every body and every event of a mix of scenarios, against the matching spec schema."""
    variants = [
        ResponseScript(queued_seconds=0.02, duration_seconds=0.05, final_status=status)
        for status in ("completed", "failed", "incomplete", "cancelled")
    ] + [
        ResponseScript(queued_seconds=0.02, duration_seconds=0.05, function_calls=[{"name": "f"}]),
        ResponseScript(queued_seconds=0, duration_seconds=0.05, output_text="é" * 40),
    ]
    count = 0

    def rotate(body: dict[str, Any]) -> ResponseScript:
        nonlocal count
        count += 1
        return variants[count % len(variants)]

    service.script_for = rotate
    with make_openai_client(service) as client:
        for index in range(len(variants) * 2):
            if index % 2:
                list(
                    client.responses.create(
                        input=f"n{index}",
                        stream=True,
                        background=True,
                        extra_body={"agent_reference": AGENT},
                    )
                )
            else:
                rid = client.responses.create(
                    input=f"n{index}", background=True, extra_body={"agent_reference": AGENT}
                ).id
                clock.advance(0.03)
                client.responses.retrieve(rid)
                with contextlib.suppress(openai.BadRequestError):
                    client.responses.cancel(rid)
                clock.advance(1)
                client.responses.retrieve(rid)
        conversation = client.conversations.create()
        client.conversations.items.create(
            conversation.id, items=[{"type": "message", "role": "assistant", "content": "hello"}]
        )
        client.conversations.items.list(conversation.id)
        for rid in list(service.responses):
            if service.responses[rid]["background"]:
                with pytest.raises(openai.BadRequestError):
                    list(client.responses.retrieve(rid, stream=True, starting_after=0))
                break
    checked, problems = spec_problems(service)
    assert not problems, "\n".join(problems)
    assert checked > 50


def test_validator_catches_a_wrong_body() -> None:
    good = {
        "type": "response.output_text.delta",
        "item_id": "m",
        "output_index": 0,
        "content_index": 0,
        "delta": "x",
        "logprobs": [],
        "sequence_number": 1,
    }
    assert spec().problems("ResponseTextDeltaEvent", good) == []
    assert spec().problems("ResponseTextDeltaEvent", {**good, "sequence_number": "1"})
    assert spec().problems("Response", {"id": "resp_1", "object": "response"})


# ---------------------------------------------------------------------------- standalone


def test_standalone_module_serves_on_the_wall_clock() -> None:
    process = subprocess.Popen(
        [sys.executable, "-m", "devhost.foundry_service", "--port", "0", "--agent", "helper"],
        cwd=ROOT,
        stdout=subprocess.PIPE,
        text=True,
    )
    try:
        assert process.stdout is not None
        line = process.stdout.readline()
        match = re.search(r"(http://127\.0\.0\.1:\d+/api/projects/local)", line)
        assert match, line
        with openai.OpenAI(
            base_url=match.group(1) + "/openai/v1", api_key="t", max_retries=0
        ) as client:
            created = client.responses.create(
                input="hi", background=True, extra_body={"agent_reference": AGENT}
            )
            assert created.status == "queued"
    finally:
        process.terminate()
        process.wait(timeout=10)


def test_async_project_client_openai_client(service: FoundryService, clock: VirtualClock) -> None:
    async def scenario() -> tuple[str, str | None, str]:
        async with make_async_project_client(service) as project:
            agent = await project.agents.create_version(
                agent_name="async-writer", definition=PromptAgentDefinition(model="gpt-4.1")
            )
            client = project.get_openai_client(max_retries=0)
            async with client:
                created = await client.responses.create(
                    input="hello",
                    background=True,
                    extra_body={
                        "agent_reference": {
                            "type": "agent_reference",
                            "name": "async-writer",
                            "version": agent.version,
                        }
                    },
                )
                clock.advance(10)
                done = await client.responses.retrieve(created.id)
                return agent.version, done.status, done.output_text

    assert asyncio.run(scenario()) == ("1", "completed", "Echo: hello")
    assert service.calls("responses.create")[0].body["agent_reference"]["version"] == "1"
    assert_conforms(service)

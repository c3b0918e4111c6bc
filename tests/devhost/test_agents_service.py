"""The loopback Agents service, driven by the real azure-ai-agents SDK (sync and aio).

Run progress follows the virtual clock, so every lifecycle here takes no wall time: the tests
advance the clock between polls instead of sleeping.
"""

from __future__ import annotations

import asyncio
import json
import os
import re
import time
import urllib.error
import urllib.request
from collections.abc import Callable, Iterator
from datetime import timedelta
from pathlib import Path
from typing import Any, cast

import pytest
from azure.ai.agents import AgentsClient
from azure.ai.agents.models import (
    AgentThreadCreationOptions,
    FunctionDefinition,
    FunctionToolDefinition,
    MessageInputTextBlock,
    RequiredFunctionToolCall,
    RunStepMessageCreationDetails,
    RunStepToolCallDetails,
    SubmitToolOutputsAction,
    ThreadMessageOptions,
    ThreadRun,
    ToolOutput,
)
from azure.core.credentials import AccessToken
from azure.core.exceptions import (
    ClientAuthenticationError,
    DecodeError,
    HttpResponseError,
    ResourceNotFoundError,
    ServiceResponseError,
)
from hypothesis import given, settings
from hypothesis import strategies as st
from jsonschema import Draft7Validator, validators

from devhost.agents_service import (
    OPERATIONS,
    AgentsService,
    AllowHttpPolicy,
    FaultRule,
    RunScript,
    WallClock,
    make_async_client,
    make_sync_client,
)
from devhost.agents_service._store import paginate
from devhost.clock import VirtualClock

TERMINAL = {"completed", "failed", "cancelled", "expired", "incomplete"}


@pytest.fixture
def clock() -> VirtualClock:
    return VirtualClock()


@pytest.fixture
def service(clock: VirtualClock) -> Iterator[AgentsService]:
    with AgentsService(clock, seed=7) as svc:
        yield svc


@pytest.fixture
def client(service: AgentsService) -> Iterator[AgentsClient]:
    # No SDK retries by default, so that each test sees exactly what the service answered.
    with make_sync_client(service, retry_total=0) as c:
        yield c


def _status(run: ThreadRun) -> str:
    # The SDK's RunStatus enum lacks "incomplete"; compare plain strings.
    return str(run.status.value if hasattr(run.status, "value") else run.status)


def _start(client: AgentsClient, text: str = "hello") -> tuple[str, str, ThreadRun]:
    agent = client.create_agent(model="gpt-4o", name="relay-test", instructions="Be brief.")
    thread = client.threads.create()
    client.messages.create(thread.id, role="user", content=text)
    run = client.runs.create(thread.id, agent_id=agent.id)
    return agent.id, thread.id, run


def _poll(
    client: AgentsClient, clock: VirtualClock, run: ThreadRun, step: float = 0.5, limit: int = 400
) -> tuple[ThreadRun, list[str]]:
    """Poll until a terminal status (or requires_action), returning the distinct statuses seen."""
    seen = [_status(run)]
    for _ in range(limit):
        if seen[-1] in TERMINAL | {"requires_action"}:
            return run, seen
        clock.advance(step)
        run = client.runs.get(run.thread_id, run.id)
        if _status(run) != seen[-1]:
            seen.append(_status(run))
    raise AssertionError(f"run never settled: {seen}")


def _required_calls(run: ThreadRun) -> list[RequiredFunctionToolCall]:
    action = run.required_action
    assert isinstance(action, SubmitToolOutputsAction), action
    calls = action.submit_tool_outputs.tool_calls
    assert all(isinstance(call, RequiredFunctionToolCall) for call in calls)
    return [call for call in calls if isinstance(call, RequiredFunctionToolCall)]


def _headers(error: HttpResponseError) -> Any:
    assert error.response is not None
    return cast(Any, error.response).headers


def _http(
    service: AgentsService,
    method: str,
    path: str,
    *,
    bearer: bool = True,
    body: Any = None,
) -> tuple[int, Any]:
    """A hand-made request, for what the SDK cannot send (no bearer, no api-version)."""
    data = None if body is None else json.dumps(body).encode()
    url = service.endpoint + path  # always http://127.0.0.1
    request = urllib.request.Request(url, data=data, method=method)  # noqa: S310
    if bearer:
        request.add_header("Authorization", "Bearer opaque")
    if data is not None:
        request.add_header("Content-Type", "application/json")
    try:
        with urllib.request.urlopen(request, timeout=5) as response:  # noqa: S310
            return response.status, json.loads(response.read())
    except urllib.error.HTTPError as error:
        return error.code, json.loads(error.read())


# ---------------------------------------------------------------------------- lifecycles


@pytest.mark.parametrize("final_status", sorted(TERMINAL))
def test_run_reaches_each_final_status(
    service: AgentsService, client: AgentsClient, clock: VirtualClock, final_status: str
) -> None:
    service.default_script = RunScript(
        queued_seconds=1,
        duration_seconds=4,
        final_status=final_status,
        last_error={"code": "rate_limit_exceeded", "message": "quota"}
        if final_status == "failed"
        else None,
        output_text="forty-two",
    )
    agent_id, thread_id, run = _start(client)
    created = int(run.created_at.timestamp())
    assert _status(run) == "queued"
    assert run.started_at is None
    assert run.usage is None

    run, seen = _poll(client, clock, run)

    assert seen == ["queued", "in_progress", final_status]
    assert int(run.started_at.timestamp()) == created + 1
    assert run.usage is not None
    assert run.usage.total_tokens > 0
    stamps = {
        "completed": run.completed_at,
        "failed": run.failed_at,
        "cancelled": run.cancelled_at,
    }
    for name, value in stamps.items():
        if name == final_status:
            assert value is not None
            assert int(value.timestamp()) == created + 5
        else:
            assert value is None
    if final_status == "failed":
        assert run.last_error is not None
        assert (run.last_error.code, run.last_error.message) == ("rate_limit_exceeded", "quota")
    if final_status == "incomplete":
        assert run.incomplete_details is not None
        assert run.incomplete_details.reason == "max_completion_tokens"

    messages = list(client.messages.list(thread_id))
    if final_status == "completed":
        assert [m.role for m in messages] == ["assistant", "user"]
        output = messages[0]
        assert output.text_messages[0].text.value == "forty-two"
        assert (output.run_id, output.agent_id) == (run.id, agent_id)
        assert int(output.created_at.timestamp()) == created + 5
    else:
        assert [m.role for m in messages] == ["user"]


def test_output_message_appears_only_once_completed(
    service: AgentsService, client: AgentsClient, clock: VirtualClock
) -> None:
    _, thread_id, run = _start(client, "ping")
    clock.advance(2)
    assert [m.role for m in client.messages.list(thread_id)] == ["user"]
    # Not polled in between: the completion is still stamped with the time it was due.
    clock.advance(60)
    messages = list(client.messages.list(thread_id, run_id=run.id))
    assert len(messages) == 1
    assert messages[0].text_messages[0].text.value == "echo: ping"
    done = client.runs.get(thread_id, run.id)
    assert done.completed_at == run.created_at + timedelta(seconds=3)  # 3.5 s, whole seconds


def test_requires_action_then_submit_tool_outputs_completes(
    service: AgentsService, client: AgentsClient, clock: VirtualClock
) -> None:
    service.default_script = RunScript(
        queued_seconds=0,
        duration_seconds=3,
        requires_action=[{"name": "get_weather", "arguments": {"city": "Paris"}}],
        requires_action_after_seconds=1,
    )
    _, thread_id, run = _start(client)
    created = int(run.created_at.timestamp())
    run, seen = _poll(client, clock, run)
    assert seen == ["in_progress", "requires_action"]
    calls = _required_calls(run)
    assert [(c.function.name, json.loads(c.function.arguments)) for c in calls] == [
        ("get_weather", {"city": "Paris"})
    ]
    assert calls[0].id.startswith("call_")
    assert int(run.expires_at.timestamp()) == created + 1 + 600

    with pytest.raises(HttpResponseError) as wrong:
        client.runs.submit_tool_outputs(
            thread_id, run.id, tool_outputs=[ToolOutput(tool_call_id="call_other", output="x")]
        )
    assert wrong.value.status_code == 400

    clock.advance(10)  # waiting for outputs does not use up the run's in-progress time
    resumed = client.runs.submit_tool_outputs(
        thread_id, run.id, tool_outputs=[ToolOutput(tool_call_id=calls[0].id, output="18C")]
    )
    assert _status(resumed) == "in_progress"
    assert resumed.required_action is None
    clock.advance(1.9)
    assert _status(client.runs.get(thread_id, run.id)) == "in_progress"
    clock.advance(0.1)
    done = client.runs.get(thread_id, run.id)
    assert _status(done) == "completed"
    assert int(done.completed_at.timestamp()) == created + 1 + 10 + 2

    steps = list(client.run_steps.list(thread_id, run.id, order="asc"))
    assert [(s.type, s.status) for s in steps] == [
        ("tool_calls", "completed"),
        ("message_creation", "completed"),
    ]
    tool_details, message_details = (step.step_details for step in steps)
    assert isinstance(tool_details, RunStepToolCallDetails)
    assert isinstance(message_details, RunStepMessageCreationDetails)
    tool_call = tool_details.tool_calls[0]
    assert tool_call.id == calls[0].id
    assert tool_call["function"]["output"] == "18C"
    message_id = message_details.message_creation.message_id
    assert client.messages.get(thread_id, message_id).run_id == run.id
    assert client.run_steps.get(thread_id, run.id, steps[0].id).id == steps[0].id


def test_tool_outputs_never_submitted_expire(
    service: AgentsService, client: AgentsClient, clock: VirtualClock
) -> None:
    service.default_script = RunScript(
        requires_action=[{"id": "call_fixed", "name": "lookup", "arguments": "{}"}],
        tool_outputs_expire_seconds=60,
    )
    _, thread_id, run = _start(client)
    run, _ = _poll(client, clock, run)
    assert _status(run) == "requires_action"
    assert _required_calls(run)[0].id == "call_fixed"
    clock.advance(59)
    assert _status(client.runs.get(thread_id, run.id)) == "requires_action"
    clock.advance(1)
    expired = client.runs.get(thread_id, run.id)
    assert _status(expired) == "expired"
    assert expired.required_action is None
    assert [s.status for s in client.run_steps.list(thread_id, run.id)] == ["expired"]
    with pytest.raises(HttpResponseError) as late:
        client.runs.submit_tool_outputs(
            thread_id, run.id, tool_outputs=[ToolOutput(tool_call_id="call_fixed", output="x")]
        )
    assert late.value.status_code == 400


def test_cancel_moves_through_cancelling_to_cancelled(
    service: AgentsService, client: AgentsClient, clock: VirtualClock
) -> None:
    service.default_script = RunScript(duration_seconds=100, cancel_delay_seconds=2)
    _, thread_id, run = _start(client)
    clock.advance(5)
    cancelling = client.runs.cancel(thread_id, run.id)
    asked = clock.now()
    assert _status(cancelling) == "cancelling"
    clock.advance(1.5)
    assert _status(client.runs.get(thread_id, run.id)) == "cancelling"
    clock.advance(0.5)
    cancelled = client.runs.get(thread_id, run.id)
    assert _status(cancelled) == "cancelled"
    assert cancelled.cancelled_at == asked + timedelta(seconds=2)

    with pytest.raises(HttpResponseError) as again:
        client.runs.cancel(thread_id, run.id)
    assert again.value.status_code == 400
    assert again.value.error is not None
    assert again.value.error.code == "invalid_request_error"
    assert again.value.error.message == "Cannot cancel run with status 'cancelled'."


def test_cancel_of_a_completed_run_is_rejected_like_the_service(
    client: AgentsClient, clock: VirtualClock
) -> None:
    _, thread_id, run = _start(client)
    clock.advance(10)
    with pytest.raises(HttpResponseError) as rejected:
        client.runs.cancel(thread_id, run.id)
    assert rejected.value.status_code == 400
    assert rejected.value.error is not None
    assert rejected.value.error.message == "Cannot cancel run with status 'completed'."


def test_cancel_while_waiting_for_tool_outputs(
    service: AgentsService, client: AgentsClient, clock: VirtualClock
) -> None:
    service.default_script = RunScript(requires_action=[{"name": "f"}], cancel_delay_seconds=0)
    _, thread_id, run = _start(client)
    run, _ = _poll(client, clock, run)
    assert _status(client.runs.cancel(thread_id, run.id)) == "cancelled"
    assert [s.status for s in client.run_steps.list(thread_id, run.id)] == ["cancelled"]


def test_create_thread_and_run_with_the_aio_client(
    service: AgentsService, clock: VirtualClock
) -> None:
    async def scenario() -> tuple[list[str], list[str], str]:
        async with make_async_client(service, retry_total=0) as client:
            agent = await client.create_agent(model="gpt-4o", name="aio")
            run = await client.create_thread_and_run(
                agent_id=agent.id,
                thread=AgentThreadCreationOptions(
                    messages=[ThreadMessageOptions(role="user", content="from aio")],
                    metadata={"source": "test"},
                ),
                metadata={"submission": "s-1"},
            )
            seen = [_status(run)]
            while seen[-1] not in TERMINAL:
                clock.advance(0.5)
                run = await client.runs.get(run.thread_id, run.id)
                if _status(run) != seen[-1]:
                    seen.append(_status(run))
            texts = [
                m.text_messages[0].text.value async for m in client.messages.list(run.thread_id)
            ]
            thread = await client.threads.get(run.thread_id)
            return seen, texts, thread.metadata["source"]

    seen, texts, source = asyncio.run(scenario())
    assert seen == ["queued", "in_progress", "completed"]
    assert texts == ["echo: from aio", "from aio"]
    assert source == "test"
    (call,) = service.calls("threads.create_and_run")
    assert call.body["stream"] is False
    assert call.body["metadata"] == {"submission": "s-1"}
    assert next(iter(service.runs.values()))["metadata"] == {"submission": "s-1"}


def test_runs_create_overrides_and_additional_messages(
    service: AgentsService, client: AgentsClient, clock: VirtualClock
) -> None:
    agent = client.create_agent(model="gpt-4o", instructions="Base.")
    thread = client.threads.create(messages=[ThreadMessageOptions(role="user", content="first")])
    run = client.runs.create(
        thread.id,
        agent_id=agent.id,
        additional_instructions="Extra.",
        additional_messages=[ThreadMessageOptions(role="user", content="second")],
        metadata={"k": "v"},
    )
    assert run.instructions == "Base.\nExtra."
    assert run.metadata == {"k": "v"}
    clock.advance(10)
    texts = [m.text_messages[0].text.value for m in client.messages.list(thread.id, order="asc")]
    assert texts == ["first", "second", "echo: second"]
    runs = list(client.runs.list(thread.id))
    assert [r.id for r in runs] == [run.id]


# ---------------------------------------------------------------------------- listing


def test_messages_list_pages_terminate_newest_first(
    service: AgentsService, client: AgentsClient, clock: VirtualClock
) -> None:
    thread = client.threads.create()
    ids = []
    for i in range(5):
        ids.append(client.messages.create(thread.id, role="user", content=f"m{i}").id)
        clock.advance(1)

    listed = [m.id for m in client.messages.list(thread.id, limit=2)]
    assert listed == ids[::-1]
    calls = service.calls("messages.list")
    assert len(calls) == 3  # pages of 2, 2, 1; the last says last_id null so the pager stops
    assert calls[1].query["after"] == ids[3]
    assert [c.response["last_id"] for c in calls] == [ids[3], ids[1], None]
    assert [c.response["has_more"] for c in calls] == [True, True, False]

    assert [m.id for m in client.messages.list(thread.id, order="asc", limit=4)] == ids
    first_page = next(iter(client.messages.list(thread.id, limit=2, before=ids[2]).by_page()))
    assert [m.id for m in first_page] == [ids[4], ids[3]]


@settings(max_examples=60, deadline=None)
@given(
    count=st.integers(min_value=0, max_value=12),
    limit=st.integers(min_value=1, max_value=5),
    order=st.sampled_from(["asc", "desc"]),
)
def test_pagination_follows_after_cursors_to_the_end(count: int, limit: int, order: str) -> None:
    """What the SDK pager does: ask with after=last_id until last_id is null."""
    items = [{"id": f"msg_{i:02d}"} for i in range(count)]
    seen: list[str] = []
    after: str | None = None
    pages = 0
    while True:
        query = {"limit": str(limit), "order": order, **({"after": after} if after else {})}
        page = paginate(items, query)
        pages += 1
        seen += [item["id"] for item in page["data"]]
        assert page["has_more"] == (page["last_id"] is not None)
        if page["last_id"] is None:
            break
        after = page["last_id"]
    expected = [item["id"] for item in items]
    assert seen == (expected if order == "asc" else expected[::-1])
    assert pages == max(1, -(-count // limit))


def test_list_agents_threads_and_runs_paginate(
    service: AgentsService, client: AgentsClient, clock: VirtualClock
) -> None:
    agents = [client.create_agent(model="m", name=f"a{i}").id for i in range(3)]
    assert [a.id for a in client.list_agents(limit=1)] == agents[::-1]
    thread = client.threads.create()
    service.default_script = RunScript(queued_seconds=0, duration_seconds=0)
    runs = [client.runs.create(thread.id, agent_id=a).id for a in agents]
    assert [r.id for r in client.runs.list(thread.id, limit=2, order="asc")] == runs
    assert [t.id for t in client.threads.list(limit=1)] == [thread.id]


# ---------------------------------------------------------------------------- errors


def test_unknown_agent_thread_and_run_are_404(client: AgentsClient) -> None:
    thread = client.threads.create()
    with pytest.raises(ResourceNotFoundError) as agent_missing:
        client.runs.create(thread.id, agent_id="asst_missing")
    assert agent_missing.value.error is not None
    assert agent_missing.value.error.code == "not_found"
    with pytest.raises(ResourceNotFoundError):
        client.runs.get(thread.id, "run_missing")
    with pytest.raises(ResourceNotFoundError):
        client.runs.get("thread_missing", "run_missing")
    with pytest.raises(ResourceNotFoundError):
        client.get_agent("asst_missing")
    client.threads.delete(thread.id)
    with pytest.raises(ResourceNotFoundError):
        client.threads.get(thread.id)


class _EmptyTokenCredential:
    def get_token(self, *scopes: str, **kwargs: Any) -> AccessToken:
        return AccessToken("", 4102444800)


def test_requests_without_a_bearer_token_are_401(service: AgentsService) -> None:
    with (
        AgentsClient(
            service.endpoint,
            _EmptyTokenCredential(),
            per_call_policies=[AllowHttpPolicy()],
            retry_total=0,
        ) as anonymous,
        pytest.raises(ClientAuthenticationError) as denied,
    ):
        anonymous.create_agent(model="gpt-4o")
    assert denied.value.status_code == 401
    status, body = _http(service, "GET", "/assistants?api-version=v1", bearer=False)
    assert status == 401
    assert body["error"]["code"] == "unauthorized"
    assert [r.bearer for r in service.requests] == [False, False]
    assert service.calls("assistants.create")[0].status == 401


def test_api_version_is_required(service: AgentsService) -> None:
    status, body = _http(service, "GET", "/assistants")
    assert status == 400
    assert body["error"]["param"] == "api-version"
    status, _ = _http(service, "GET", "/assistants?api-version=2024-01-01")
    assert status == 400
    status, body = _http(service, "GET", "/nowhere?api-version=v1")
    assert status == 404
    assert body["error"]["code"] == "not_found"
    status, body = _http(service, "PUT", "/assistants?api-version=v1", body={})
    assert status == 405
    assert "error" in body


def _stream_events(client: AgentsClient, thread_id: str, agent_id: str) -> list[tuple[str, Any]]:
    with client.runs.stream(thread_id, agent_id=agent_id) as stream:
        return [(event_type, data) for event_type, data, _ in stream]


def test_streamed_runs_progress_on_the_wall_clock_and_end_with_done(
    service: AgentsService, client: AgentsClient, clock: VirtualClock
) -> None:
    service.default_script = RunScript(queued_seconds=0.05, duration_seconds=0.2, output_text="hi")
    agent = client.create_agent(model="gpt-4o")
    thread = client.threads.create()
    client.messages.create(thread.id, role="user", content="hello")
    before = clock.now()
    events = _stream_events(client, thread.id, agent.id)
    kinds = [kind for kind, _ in events]
    assert kinds[0] == "thread.run.created"
    assert "thread.run.in_progress" in kinds
    assert kinds.index("thread.message.completed") < kinds.index("thread.run.completed")
    assert kinds[-1] == "done"
    completed = dict(events)["thread.run.completed"]
    assert isinstance(completed, ThreadRun)
    assert completed.status == "completed"
    assert clock.now() - before >= timedelta(seconds=0.25)  # time moved with the stream
    (recorded,) = service.calls("runs.create")
    assert recorded.body["stream"] is True


def test_a_stream_stops_at_requires_action(service: AgentsService, client: AgentsClient) -> None:
    service.default_script = RunScript(
        queued_seconds=0,
        duration_seconds=5,
        requires_action=[{"name": "f", "arguments": "{}"}],
        requires_action_after_seconds=0.05,
    )
    agent = client.create_agent(model="gpt-4o")
    thread = client.threads.create()
    kinds = [kind for kind, _ in _stream_events(client, thread.id, agent.id)]
    assert kinds[-2:] == ["thread.run.requires_action", "done"]


def test_stream_faults_cut_or_end_the_stream_early(
    service: AgentsService, client: AgentsClient
) -> None:
    service.default_script = RunScript(queued_seconds=0, duration_seconds=60)
    agent = client.create_agent(model="gpt-4o")
    service.faults.append(FaultRule(operation="runs.create", kind="stream_end_early", count=1))
    early = client.threads.create()
    kinds = [kind for kind, _ in _stream_events(client, early.id, agent.id)]
    assert kinds == ["thread.run.created", "done"]
    service.faults.append(FaultRule(operation="runs.create", kind="stream_drop", count=1))
    dropped = client.threads.create()
    with pytest.raises((HttpResponseError, ServiceResponseError)):  # requests: ended prematurely
        _stream_events(client, dropped.id, agent.id)
    assert len(service.runs) == 2  # both runs exist although their streams failed


@pytest.mark.parametrize(
    ("metadata", "ok"),
    [
        ({f"k{i}": "v" for i in range(16)}, True),
        ({f"k{i}": "v" for i in range(17)}, False),
        ({"k" * 64: "v"}, True),
        ({"k" * 65: "v"}, False),
        ({"k": "v" * 512}, True),
        ({"k": "v" * 513}, False),
    ],
)
def test_metadata_limits(client: AgentsClient, metadata: dict[str, str], ok: bool) -> None:
    agent = client.create_agent(model="gpt-4o")
    thread = client.threads.create()
    attempts: list[Callable[[], object]] = [
        lambda: client.create_agent(model="gpt-4o", metadata=metadata),
        lambda: client.threads.create(metadata=metadata),
        lambda: client.messages.create(thread.id, role="user", content="x", metadata=metadata),
        lambda: client.runs.create(thread.id, agent_id=agent.id, metadata=metadata),
    ]
    for attempt in attempts:
        if ok:
            attempt()
        else:
            with pytest.raises(HttpResponseError) as rejected:
                attempt()
            assert rejected.value.status_code == 400


def test_one_active_run_per_thread(client: AgentsClient, clock: VirtualClock) -> None:
    agent_id, thread_id, run = _start(client)
    with pytest.raises(HttpResponseError) as busy:
        client.runs.create(thread_id, agent_id=agent_id)
    assert busy.value.status_code == 400
    with pytest.raises(HttpResponseError):
        client.messages.create(thread_id, role="user", content="more")
    clock.advance(10)
    client.messages.create(thread_id, role="user", content="more")
    assert client.runs.create(thread_id, agent_id=agent_id).id != run.id


# ---------------------------------------------------------------------------- scripts


def test_script_selection_order(
    service: AgentsService, client: AgentsClient, clock: VirtualClock
) -> None:
    plain = client.create_agent(model="m").id
    special = client.create_agent(model="m").id
    service.default_script = RunScript(final_status="failed")
    service.scripts_by_agent[special] = RunScript(final_status="expired")

    def script_for(body: dict[str, Any], thread_id: str) -> RunScript | None:
        assert thread_id.startswith("thread_")
        wanted = body.get("metadata", {}).get("script")
        return RunScript(final_status="incomplete") if wanted else None

    service.script_for = script_for
    for agent_id, metadata in [(plain, {}), (special, {}), (special, {"script": "x"})]:
        client.runs.create(client.threads.create().id, agent_id=agent_id, metadata=metadata)
    clock.advance(10)
    finals = [run["status"] for run in service.runs.values()]
    assert finals == ["failed", "expired", "incomplete"]


def test_set_run_script_changes_only_the_future(
    service: AgentsService, client: AgentsClient, clock: VirtualClock
) -> None:
    service.default_script = RunScript(queued_seconds=1, duration_seconds=100)
    _, thread_id, run = _start(client)
    clock.advance(11)  # 10 s in progress
    before = client.runs.get(thread_id, run.id)
    service.set_run_script(
        run.id, RunScript(queued_seconds=50, duration_seconds=12, final_status="failed")
    )
    clock.advance(1.5)
    assert _status(client.runs.get(thread_id, run.id)) == "in_progress"
    clock.advance(0.5)
    after = client.runs.get(thread_id, run.id)
    assert _status(after) == "failed"
    assert after.started_at == before.started_at
    assert after.failed_at == run.created_at + timedelta(seconds=13)


def test_ids_are_prefixed_and_deterministic_per_seed(clock: VirtualClock) -> None:
    def session(seed: int) -> list[str]:
        with AgentsService(clock, seed=seed) as svc, make_sync_client(svc) as c:
            svc.default_script = RunScript(
                queued_seconds=0, duration_seconds=0, requires_action=[{"name": "f"}]
            )
            agent, thread, run = _start(c)
            message = next(iter(c.messages.list(thread)))
            step = next(iter(c.run_steps.list(thread, run.id)))
            call = _required_calls(run)[0].id
            return [agent, thread, message.id, run.id, step.id, call]

    first, again, other = session(1), session(1), session(2)
    assert first == again
    assert first != other
    prefixes = ["asst_", "thread_", "msg_", "run_", "step_", "call_"]
    assert all(i.startswith(p) for i, p in zip(first, prefixes, strict=True))


# ---------------------------------------------------------------------------- faults


_RAW_FAULTS: list[tuple[str, type[Exception], int | None]] = [
    ("429", HttpResponseError, 429),
    ("429_retry_after", HttpResponseError, 429),
    ("500", HttpResponseError, 500),
    ("503", HttpResponseError, 503),
    ("404", ResourceNotFoundError, 404),
    ("401", ClientAuthenticationError, 401),
    ("malformed_json", DecodeError, 200),
]


@pytest.mark.parametrize(("kind", "error", "status"), _RAW_FAULTS)
def test_each_fault_kind_is_seen_by_the_sdk(
    service: AgentsService,
    client: AgentsClient,
    kind: str,
    error: type[Exception],
    status: int,
) -> None:
    _, thread_id, run = _start(client)
    service.faults.append(FaultRule(operation="runs.get", kind=kind, count=1, retry_after=7))
    with pytest.raises(error) as raised:
        client.runs.get(thread_id, run.id)
    assert isinstance(raised.value, HttpResponseError)
    assert raised.value.status_code == status
    if kind == "429_retry_after":
        assert raised.value.response is not None
        assert _headers(raised.value)["Retry-After"] == "7"
    elif kind == "429":
        assert raised.value.response is not None
        assert "Retry-After" not in _headers(raised.value)
    assert service.fault_counts == {kind: 1}
    (faulted,) = [r for r in service.requests if r.fault]
    assert (faulted.operation, faulted.fault, faulted.status) == ("runs.get", kind, status)
    assert _status(client.runs.get(thread_id, run.id)) == "queued"  # count=1: fired once


def test_faulted_writes_are_not_applied(service: AgentsService, client: AgentsClient) -> None:
    agent = client.create_agent(model="gpt-4o")
    thread = client.threads.create()
    for kind in ("429", "500", "503", "404", "401", "malformed_json"):
        service.faults[:] = [FaultRule(operation="runs.create", kind=kind)]
        with pytest.raises(HttpResponseError):
            client.runs.create(thread.id, agent_id=agent.id)
    assert service.runs == {}
    service.faults.clear()
    client.runs.create(thread.id, agent_id=agent.id)
    assert len(service.runs) == 1


def test_500_after_apply_applies_then_fails(service: AgentsService, client: AgentsClient) -> None:
    agent = client.create_agent(model="gpt-4o")
    thread = client.threads.create()
    service.faults.append(FaultRule(operation="runs.create", kind="500_after_apply", count=1))
    with pytest.raises(HttpResponseError) as failed:
        client.runs.create(thread.id, agent_id=agent.id)
    assert failed.value.status_code == 500
    assert len(service.runs) == 1  # the run exists although the caller saw an error
    with pytest.raises(HttpResponseError) as retried:  # a blind retry now hits the active run
        client.runs.create(thread.id, agent_id=agent.id)
    assert retried.value.status_code == 400


def test_timeout_fault_outlasts_the_client_then_applies(service: AgentsService) -> None:
    service.faults.append(
        FaultRule(operation="threads.create", kind="timeout", count=1, delay_seconds=0.3)
    )
    with make_sync_client(service, retry_total=0, read_timeout=0.1) as impatient:
        with pytest.raises(ServiceResponseError):
            impatient.threads.create(metadata={"attempt": "1"})
        (held,) = service.calls("threads.create")
        assert held.fault == "timeout"
        assert held.status is None
        deadline = time.monotonic() + 3
        while held.status is None and time.monotonic() < deadline:
            time.sleep(0.02)
        assert held.status == 200
        assert [t.metadata for t in impatient.threads.list()] == [{"attempt": "1"}]
    assert service.fault_counts == {"timeout": 1}


def test_sdk_retries_honour_retry_after_and_retry_gets(service: AgentsService) -> None:
    with make_sync_client(service, retry_backoff_factor=0.01) as patient:
        agent = patient.create_agent(model="gpt-4o")
        thread = patient.threads.create()
        service.faults.append(
            FaultRule(operation="runs.create", kind="429_retry_after", retry_after=0.05, count=1)
        )
        run = patient.runs.create(thread.id, agent_id=agent.id)  # a POST, retried on Retry-After
        service.faults.append(FaultRule(operation="runs.get", kind="500", count=2))
        assert patient.runs.get(thread.id, run.id).id == run.id
    assert [c.status for c in service.calls("runs.create")] == [429, 200]
    assert [c.status for c in service.calls("runs.get")] == [500, 500, 200]
    assert len(service.runs) == 1
    assert service.fault_counts == {"429_retry_after": 1, "500": 2}


def test_fault_rates_are_reproducible_per_seed(clock: VirtualClock) -> None:
    def pattern(seed: int) -> list[bool]:
        with AgentsService(clock, seed=seed) as svc, make_sync_client(svc, retry_total=0) as c:
            agent = c.create_agent(model="m")
            svc.faults.append(FaultRule(operation="assistants.get", kind="503", rate=0.5))
            outcomes = []
            for _ in range(24):
                try:
                    c.get_agent(agent.id)
                    outcomes.append(False)
                except HttpResponseError:
                    outcomes.append(True)
            assert svc.fault_counts.get("503", 0) == sum(outcomes)
            return outcomes

    first = pattern(5)
    assert first == pattern(5)
    assert first != pattern(6)
    assert 0 < sum(first) < len(first)


def test_fault_count_and_wildcard(service: AgentsService, client: AgentsClient) -> None:
    service.faults.append(FaultRule(kind="503", count=2))  # operation "*": any operation
    for _ in range(2):
        with pytest.raises(HttpResponseError):
            client.threads.create()
    client.threads.create()
    assert service.fault_counts == {"503": 2}
    assert [r.operation for r in service.requests] == ["threads.create"] * 3


def test_aio_client_sees_faults_too(service: AgentsService) -> None:
    service.faults.append(FaultRule(operation="assistants.create", kind="429", count=1))

    async def scenario() -> int:
        async with make_async_client(service, retry_total=0) as client:
            try:
                await client.create_agent(model="gpt-4o")
            except HttpResponseError as error:
                return int(error.status_code or 0)
        return 0

    assert asyncio.run(scenario()) == 429


# ---------------------------------------------------------------------------- recording


def test_requests_are_recorded_without_the_token(
    service: AgentsService, client: AgentsClient, clock: VirtualClock
) -> None:
    agent = client.create_agent(model="gpt-4o")
    clock.advance(30)
    thread = client.threads.create(metadata={"a": "b"})
    client.threads.get(thread.id)
    created, made, fetched = service.requests
    assert (created.method, created.path, created.operation) == (
        "POST",
        "/assistants",
        "assistants.create",
    )
    assert created.query == {"api-version": "v1"}
    assert created.body == {"model": "gpt-4o"}
    assert created.status == 200
    assert created.fault is None
    assert created.bearer
    assert created.response["id"] == agent.id
    assert made.body == {"metadata": {"a": "b"}}
    assert made.time == created.time + timedelta(seconds=30) == clock.now()
    assert (fetched.method, fetched.path, fetched.body) == ("GET", f"/threads/{thread.id}", None)
    assert fetched.client_request_id
    assert "dummy-token" not in repr(service.requests)


def test_wall_clock_service_for_local_dev() -> None:
    with AgentsService(WallClock()) as svc, make_sync_client(svc) as c:
        assert svc.endpoint.endswith("/api/projects/local")
        agent = c.create_agent(model="gpt-4o")
        assert abs(agent.created_at.timestamp() - time.time()) < 5


# ---------------------------------------------------------------------------- schema


SWAGGER_OPERATIONS: dict[str, tuple[str, str]] = {
    "assistants.create": ("post", "/assistants"),
    "assistants.list": ("get", "/assistants"),
    "assistants.get": ("get", "/assistants/{assistantId}"),
    "assistants.delete": ("delete", "/assistants/{assistantId}"),
    "threads.create": ("post", "/threads"),
    "threads.list": ("get", "/threads"),
    "threads.get": ("get", "/threads/{threadId}"),
    "threads.delete": ("delete", "/threads/{threadId}"),
    "threads.create_and_run": ("post", "/threads/runs"),
    "messages.create": ("post", "/threads/{threadId}/messages"),
    "messages.list": ("get", "/threads/{threadId}/messages"),
    "messages.get": ("get", "/threads/{threadId}/messages/{messageId}"),
    "runs.create": ("post", "/threads/{threadId}/runs"),
    "runs.list": ("get", "/threads/{threadId}/runs"),
    "runs.get": ("get", "/threads/{threadId}/runs/{runId}"),
    "runs.cancel": ("post", "/threads/{threadId}/runs/{runId}/cancel"),
    "runs.submit_tool_outputs": ("post", "/threads/{threadId}/runs/{runId}/submit_tool_outputs"),
    "run_steps.list": ("get", "/threads/{threadId}/runs/{runId}/steps"),
    "run_steps.get": ("get", "/threads/{threadId}/runs/{runId}/steps/{stepId}"),
}

# Where the service knowingly departs from the swagger, each with its reason. A mismatch not
# listed here fails the test. Entries: (instance path regex, failing keyword, offending value).
KNOWN_DEVIATIONS: list[tuple[str, str, Any, str]] = [
    (
        r"last_id",
        "type",
        None,
        "list pages end with last_id null: the SDK pager ignores has_more (wire reference)",
    ),
    (
        r"(data/\d+/)?status",
        "enum",
        "incomplete",
        "the service reports 'incomplete' runs; RunStatus is an extensible enum (modelAsString)",
    ),
]

_SWAGGER_CANDIDATES = [
    os.environ.get("AGENTS_SWAGGER", ""),
    "devhost/specs/azure-ai-agents.v1.swagger.json",
]
_SCHEMA_KEYWORDS_TO_DROP = {"discriminator", "readOnly", "format", "example", "description"}


def _load_swagger() -> dict[str, Any]:
    root = Path(__file__).resolve().parents[2]
    for candidate in filter(None, _SWAGGER_CANDIDATES):
        path = Path(candidate) if Path(candidate).is_absolute() else root / candidate
        if path.is_file():
            loaded: dict[str, Any] = json.loads(path.read_text())
            return loaded
    raise AssertionError(f"Agents swagger not found; looked in {_SWAGGER_CANDIDATES}")


class _SwaggerSchemas:
    """Swagger 2.0 schemas as JSON Schema draft 7, for validating responses.

    x-* keys are dropped after reading x-nullable (which allows null). Polymorphic bases (with
    a `discriminator`) are referenced through "<Base>__poly", which requires a known
    discriminator value and validates the matching subtype; a subtype's own allOf keeps
    pointing at the plain base, so there is no cycle. Integers must be JSON integers.
    """

    def __init__(self, swagger: dict[str, Any]) -> None:
        self.swagger = swagger
        source = swagger["definitions"]
        self._subtypes: dict[str, dict[str, str]] = {}
        for name, definition in source.items():
            value = definition.get("x-ms-discriminator-value")
            for parent in definition.get("allOf", []):
                if value and "$ref" in parent:
                    base = parent["$ref"].rsplit("/", 1)[1]
                    self._subtypes.setdefault(base, {})[value] = name
        self.definitions = {name: self.convert(schema) for name, schema in source.items()}
        for base, values in self._subtypes.items():
            field = source[base]["discriminator"]
            self.definitions[f"{base}__poly"] = {
                "allOf": [
                    {"$ref": f"#/definitions/{base}"},
                    {"properties": {field: {"enum": sorted(values)}}, "required": [field]},
                    *(
                        {
                            "if": {"properties": {field: {"const": value}}},
                            "then": {"$ref": f"#/definitions/{subtype}"},
                        }
                        for value, subtype in sorted(values.items())
                    ),
                ]
            }
        checker = Draft7Validator.TYPE_CHECKER.redefine(
            "integer", lambda _c, value: isinstance(value, int) and not isinstance(value, bool)
        )
        self._validator_class = validators.extend(Draft7Validator, type_checker=checker)

    def convert(self, node: Any, plain_refs: bool = False) -> Any:
        if isinstance(node, list):
            return [self.convert(item) for item in node]
        if not isinstance(node, dict):
            return node
        out: dict[str, Any] = {}
        for key, value in node.items():
            if key.startswith("x-") or key in _SCHEMA_KEYWORDS_TO_DROP:
                continue
            if key == "$ref":
                target = value.rsplit("/", 1)[1]
                poly = target in self._subtypes and not plain_refs
                out[key] = f"#/definitions/{target}{'__poly' if poly else ''}"
            elif key == "allOf":
                out[key] = [self.convert(item, plain_refs=True) for item in value]
            elif key == "properties":
                out[key] = {prop: self.convert(schema) for prop, schema in value.items()}
            else:
                out[key] = self.convert(value)
        if node.get("x-nullable") is True:
            return {"anyOf": [{"type": "null"}, out]}
        return out

    def validator(self, schema: Any) -> Any:
        root = {"definitions": self.definitions, "allOf": [self.convert(schema)]}
        self._validator_class.check_schema(root)
        return self._validator_class(root)

    def for_operation(self, operation: str) -> Any:
        method, path = SWAGGER_OPERATIONS[operation]
        return self.validator(self.swagger["paths"][path][method]["responses"]["200"]["schema"])


def _unexplained(validator: Any, instance: Any) -> list[str]:
    problems = []
    for error in validator.iter_errors(instance):
        where = "/".join(str(p) for p in error.absolute_path)
        if any(
            re.fullmatch(pattern, where) and error.validator == keyword and error.instance == value
            for pattern, keyword, value, _ in KNOWN_DEVIATIONS
        ):
            continue
        problems.append(f"{where or '<root>'}: {error.message} [{error.validator}]")
    return problems


def _scripted_session(service: AgentsService, client: AgentsClient, clock: VirtualClock) -> None:
    """Exercise every operation, with runs in every status the service can report."""
    tool = FunctionToolDefinition(
        function=FunctionDefinition(
            name="lookup", description="Look it up.", parameters={"type": "object"}
        )
    )
    agent = client.create_agent(
        model="gpt-4o", name="schema", description="d", tools=[tool], metadata={"k": "v"}
    )
    client.get_agent(agent.id)
    list(client.list_agents(limit=1))
    scripts = {
        "completed": RunScript(),
        "failed": RunScript(final_status="failed"),
        "incomplete": RunScript(final_status="incomplete"),
        "expired": RunScript(final_status="expired"),
        "cancelled": RunScript(final_status="cancelled"),
        "tools": RunScript(requires_action=[{"name": "lookup", "arguments": {"q": 1}}]),
        "waiting": RunScript(requires_action=[{"name": "lookup"}], tool_outputs_expire_seconds=5),
        "cancel": RunScript(duration_seconds=30),
    }
    service.script_for = lambda body, thread_id: scripts[body["metadata"]["script"]]
    runs: dict[str, tuple[str, str]] = {}
    for name in scripts:
        thread = client.threads.create(
            messages=[ThreadMessageOptions(role="user", content=f"for {name}")],
            metadata={"script": name},
        )
        client.messages.create(thread.id, role="user", content=[MessageInputTextBlock(text="+")])
        run = client.runs.create(thread.id, agent_id=agent.id, metadata={"script": name})
        runs[name] = (thread.id, run.id)
        client.threads.get(thread.id)
    threaded = client.create_thread_and_run(
        agent_id=agent.id,
        thread=AgentThreadCreationOptions(
            messages=[ThreadMessageOptions(role="user", content="x")]
        ),
        metadata={"script": "completed"},
    )
    runs["threaded"] = (threaded.thread_id, threaded.id)
    list(client.threads.list())
    for tick in range(10):  # observe each run in every status it passes through
        for thread_id, run_id in runs.values():
            client.runs.get(thread_id, run_id)
        if tick == 2:
            client.runs.cancel(*runs["cancel"])
        clock.advance(0.5)
    thread_id, run_id = runs["tools"]
    waiting = client.runs.get(thread_id, run_id)
    call_id = _required_calls(waiting)[0].id
    client.runs.submit_tool_outputs(
        thread_id, run_id, tool_outputs=[ToolOutput(tool_call_id=call_id, output="ok")]
    )
    clock.advance(10)
    for thread_id, run_id in runs.values():
        client.runs.get(thread_id, run_id)
        list(client.runs.list(thread_id))
        list(client.messages.list(thread_id, limit=1))
        for step in client.run_steps.list(thread_id, run_id):
            client.run_steps.get(thread_id, run_id, step.id)
    thread_id, run_id = runs["completed"]
    for message in client.messages.list(thread_id):
        client.messages.get(thread_id, message.id)
    # Error bodies too.
    service.faults.append(FaultRule(operation="runs.get", kind="503", count=1))
    for attempt in (
        lambda: client.runs.get(thread_id, run_id),
        lambda: client.runs.get(thread_id, "run_missing"),
        lambda: client.runs.cancel(thread_id, run_id),
        lambda: client.threads.create(metadata={str(i): "" for i in range(17)}),
    ):
        with pytest.raises(HttpResponseError):
            attempt()
    client.threads.delete(thread_id)
    client.delete_agent(agent.id)


def test_responses_conform_to_the_swagger(
    service: AgentsService, client: AgentsClient, clock: VirtualClock
) -> None:
    assert set(SWAGGER_OPERATIONS) == set(OPERATIONS)
    schemas = _SwaggerSchemas(_load_swagger())
    _scripted_session(service, client, clock)

    error_validator = schemas.validator({"$ref": "#/definitions/AgentV1Error"})
    validators_by_op: dict[str, Any] = {}
    checked: dict[str, int] = {}
    statuses_seen: set[str] = set()
    problems: list[str] = []
    for record in service.requests:
        if record.status != 200:
            assert record.response is not None, f"{record.operation}: error body is not JSON"
            found = _unexplained(error_validator, record.response)
            problems += [f"{record.operation} error {record.status}: {p}" for p in found]
            checked["error"] = checked.get("error", 0) + 1
            continue
        if record.operation not in validators_by_op:
            validators_by_op[record.operation] = schemas.for_operation(record.operation)
        found = _unexplained(validators_by_op[record.operation], record.response)
        problems += [f"{record.operation}: {p}" for p in found]
        checked[record.operation] = checked.get(record.operation, 0) + 1
        if record.response.get("object") == "thread.run":
            statuses_seen.add(record.response["status"])

    assert not problems, "responses that do not match the swagger:\n" + "\n".join(problems)
    missing = (set(OPERATIONS) | {"error"}) - set(checked)
    assert not missing, f"not exercised: {missing}"
    assert statuses_seen == {
        "queued",
        "in_progress",
        "requires_action",
        "cancelling",
        "cancelled",
        "completed",
        "failed",
        "expired",
        "incomplete",
    }


def test_schema_check_catches_mismatches(
    service: AgentsService, client: AgentsClient, clock: VirtualClock
) -> None:
    """The conformance test is only as good as its validator: show that it does bite."""
    service.default_script = RunScript(requires_action=[{"name": "lookup"}])
    tool = FunctionToolDefinition(function=FunctionDefinition(name="lookup", parameters={}))
    agent = client.create_agent(model="gpt-4o", tools=[tool])
    thread = client.threads.create()
    run = client.runs.create(thread.id, agent_id=agent.id)
    clock.advance(5)
    good = service.runs[run.id]
    assert good["status"] == "requires_action"
    validator = _SwaggerSchemas(_load_swagger()).validator({"$ref": "#/definitions/ThreadRun"})
    assert _unexplained(validator, good) == []
    mutations: list[tuple[str, Any]] = [
        ("created_at", 1.5),  # timestamps are integers
        ("status", "running"),  # not a run status
        ("thread_id", None),  # not nullable
        ("required_action", {"type": "submit_tool_outputs"}),  # subtype fields missing
        ("required_action", {"type": "other"}),  # unknown discriminator value
        ("tools", [{"type": "function"}]),  # a function tool needs its function
        ("usage", {"prompt_tokens": 1}),  # required fields
    ]
    for key, value in mutations:
        broken = {**good, key: value}
        assert _unexplained(validator, broken), (key, value)
    assert _unexplained(validator, {k: v for k, v in good.items() if k != "model"})

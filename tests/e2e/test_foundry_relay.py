"""Foundry agents (Responses API) end to end: every guarantee of the classic backend holds.

Each test submits `{"agent": {"name": ...}}` through the HTTP route, drives the orchestration
on the bed's virtual clock against the loopback Foundry project service, and asserts what
callers see: the status route, the events the topic received (validated against the
published schema), and the requests the service recorded (one response per submission and
round, nothing left running).
"""

from __future__ import annotations

import json
from typing import Any

import jsonschema
import pytest
from azure.eventgrid import EventGridEvent

from devhost.foundry_service import FaultRule, ResponseScript
from tests.e2e.test_openapi_conformance import wait_for_requires_action
from tests.relay_bed import EVENT_DATA_SCHEMA, FOUNDRY_TERMINAL_SCRIPTS, RelayBed, relay_bed

LONG_RESPONSE = ResponseScript(duration_seconds=3600)
WEATHER_CALLS = [
    {"name": "get_weather", "arguments": '{"city": "Oslo"}'},
    {"name": "get_time", "arguments": "{}"},
]


def completed_events(bed: RelayBed, submission_id: str) -> list[dict[str, Any]]:
    return [e for e in bed.events_for(submission_id) if e["eventType"] == "AgentRunCompleted"]


def the_event(bed: RelayBed, submission_id: str) -> dict[str, Any]:
    """The one AgentRunCompleted of a submission (however often it was delivered), validated."""
    events = completed_events(bed, submission_id)
    assert len({e["id"] for e in events}) == 1, events
    data: dict[str, Any] = events[0]["data"]
    jsonschema.validate(data, EVENT_DATA_SCHEMA)
    return events[0]


def post(bed: RelayBed, path: str, body: Any = None) -> Any:
    return bed.host.http(
        "POST",
        path,
        body=json.dumps(body) if body is not None else b"",
        headers={"Content-Type": "application/json"},
    )


def created_responses(bed: RelayBed) -> list[dict[str, Any]]:
    return [
        r.response
        for r in bed.foundry.calls("responses.create")
        if r.status == 200 and r.response is not None
    ]


def responses_still_running(bed: RelayBed) -> list[str]:
    return [
        rid
        for rid, body in bed.foundry.responses.items()
        if body["status"] in ("queued", "in_progress")
    ]


def two_rounds_then_answer(body: dict[str, Any]) -> ResponseScript:
    """Round 1 asks for two calls, round 2 (after their outputs) for one more, then answers."""
    outputs = [i for i in body.get("input") or [] if i.get("type") == "function_call_output"]
    if not outputs:
        return ResponseScript(duration_seconds=20, function_calls=WEATHER_CALLS)
    if len(outputs) == 2:
        return ResponseScript(duration_seconds=10, function_calls=[{"name": "get_date"}])
    return ResponseScript(duration_seconds=10, output_text="it is 12C in Oslo")


# Endings -------------------------------------------------------------------------------------


@pytest.mark.parametrize("ending", sorted(FOUNDRY_TERMINAL_SCRIPTS))
def test_each_ending_publishes_one_event_in_the_shared_contract(ending: str) -> None:
    with relay_bed() as bed:
        bed.foundry.default_script = FOUNDRY_TERMINAL_SCRIPTS[ending]
        submission_id = bed.submit_foundry(metadata={"order": "42"})
        view = bed.complete(submission_id)
        assert view["status"] == ending
        event = the_event(bed, submission_id)
        data = event["data"]
        (response,) = created_responses(bed)
        assert data["api"] == "responses"
        assert data["agentName"] == bed.foundry_agent
        assert data["responseId"] == response["id"]
        assert data["conversationId"] == response["conversation"]["id"]
        assert (data["agentId"], data["runId"], data["threadId"]) == (None, None, None)
        assert event["subject"] == f"agents/{bed.foundry_agent}/responses/{response['id']}"
        assert data["status"] == ending
        assert data["metadata"] == {"order": "42"}
        assert view["agentRun"]["responseIds"] == [response["id"]]
        assert view["agentRun"]["conversationId"] == data["conversationId"]
        if ending == "completed":
            assert data["output"] == {"text": "the answer", "truncated": False}
            assert data["usage"] == {"promptTokens": 12, "completionTokens": 30, "totalTokens": 42}
        if ending == "failed":
            assert data["lastError"] == {"code": "server_error", "message": "model crashed"}
        if ending == "incomplete":
            assert data["incompleteDetails"] == {"reason": "max_output_tokens"}
        # What the relay sent: the agent by reference, background, stored, its marker.
        (create,) = bed.foundry.calls("responses.create")
        assert create.body["agent_reference"] == {
            "type": "agent_reference",
            "name": bed.foundry_agent,
        }
        assert create.body["background"] is True
        assert create.body["store"] is True
        assert create.body["metadata"]["relay_submission_id"] == submission_id
        assert not {"model", "instructions", "tools", "agent", "previous_response_id"} & set(
            create.body
        )


def test_a_version_and_a_conversation_are_honoured_and_callers_kept_apart() -> None:
    with relay_bed() as bed:
        bed.foundry.default_script = FOUNDRY_TERMINAL_SCRIPTS["completed"]
        first = bed.submit_foundry(agent={"name": bed.foundry_agent, "version": "1"})
        bed.complete(first)
        conversation = the_event(bed, first)["data"]["conversationId"]
        assert the_event(bed, first)["data"]["agentVersion"] == "1"
        follow_up = bed.submit_foundry(conversationId=conversation, input="and tomorrow?")
        bed.complete(follow_up)
        data = the_event(bed, follow_up)["data"]
        assert data["status"] == "completed"
        assert data["conversationId"] == conversation
        assert len(bed.foundry.calls("conversations.create")) == 1
        # Another caller (another key) may not continue this caller's conversation.
        other = bed.host.http(
            "POST",
            "/api/runs",
            body=json.dumps(
                {
                    "agent": {"name": bed.foundry_agent},
                    "input": "hi",
                    "conversationId": conversation,
                }
            ),
            headers={"Content-Type": "application/json"},
            key=bed.host.keys.master_key,
        )
        assert other.status_code == 202
        stolen = json.loads(other.get_body())["id"]
        bed.host.run_until_complete(stolen)
        (refused,) = bed.events_for(stolen)
        assert refused["data"]["status"] == "failed"
        assert refused["data"]["lastError"]["code"] == "conversation_not_allowed"
        assert len(created_responses(bed)) == 2


# Tool calls ------------------------------------------------------------------------------------


def test_several_rounds_of_tool_calls_chain_responses_in_one_conversation() -> None:
    with relay_bed() as bed:
        bed.foundry.script_for = two_rounds_then_answer
        submission_id = bed.submit_foundry()
        view = wait_for_requires_action(bed, submission_id)
        calls = view["requiredAction"]["toolCalls"]
        assert sorted(c["name"] for c in calls) == ["get_time", "get_weather"]
        (announced,) = [
            e for e in bed.events_for(submission_id) if e["eventType"] == "AgentRunRequiresAction"
        ]
        parsed = EventGridEvent.from_dict(announced)
        assert parsed.data["api"] == "responses"
        assert parsed.data["agentName"] == bed.foundry_agent
        assert parsed.data["responseId"] == view["agentRun"]["responseIds"][-1]
        answer = {"toolOutputs": [{"toolCallId": c["id"], "output": "12C"} for c in calls]}
        assert post(bed, f"/api/runs/{submission_id}/tool-outputs", answer).status_code == 202
        second = wait_for_requires_action(bed, submission_id)
        (call,) = second["requiredAction"]["toolCalls"]
        assert call["name"] == "get_date"
        answer = {"toolOutputs": [{"toolCallId": call["id"], "output": "Friday"}]}
        assert post(bed, f"/api/runs/{submission_id}/tool-outputs", answer).status_code == 202
        final = bed.complete(submission_id)
        assert final["status"] == "completed"
        data = the_event(bed, submission_id)["data"]
        assert data["output"]["text"] == "it is 12C in Oslo"
        responses = created_responses(bed)
        assert len(responses) == 3
        assert final["agentRun"]["responseIds"] == [r["id"] for r in responses]
        assert data["responseId"] == responses[-1]["id"]
        assert {r["conversation"]["id"] for r in responses} == {data["conversationId"]}
        follow_ups = bed.foundry.calls("responses.create")[1:]
        assert [sorted(i["call_id"] for i in r.body["input"]) for r in follow_ups] == [
            sorted(c["id"] for c in calls),
            [call["id"]],
        ]
        assert all(r.body["agent_reference"]["name"] == bed.foundry_agent for r in follow_ups)


def test_tool_outputs_submitted_twice_by_a_duplicated_activity_start_one_response() -> None:
    with relay_bed() as bed:
        bed.foundry.script_for = two_rounds_then_answer
        bed.host.duplicate_activities = True
        submission_id = bed.submit_foundry()
        view = wait_for_requires_action(bed, submission_id)
        calls = view["requiredAction"]["toolCalls"]
        answer = {"toolOutputs": [{"toolCallId": c["id"], "output": "12C"} for c in calls]}
        post(bed, f"/api/runs/{submission_id}/tool-outputs", answer)
        (call,) = wait_for_requires_action(bed, submission_id)["requiredAction"]["toolCalls"]
        answer = {"toolOutputs": [{"toolCallId": call["id"], "output": "Friday"}]}
        post(bed, f"/api/runs/{submission_id}/tool-outputs", answer)
        assert bed.complete(submission_id)["status"] == "completed"
        assert bed.host.stats.duplicate_executions > 0
        assert len(created_responses(bed)) == 3
        assert len(completed_events(bed, submission_id)) >= 1
        the_event(bed, submission_id)


# Cancel and deadline -------------------------------------------------------------------------


def test_cancel_is_confirmed_by_a_second_read_before_publishing() -> None:
    with relay_bed() as bed:
        bed.foundry.default_script = LONG_RESPONSE
        submission_id = bed.submit_foundry()
        bed.host.run_until_idle()
        bed.host.advance_to_next_timer()
        assert post(bed, f"/api/runs/{submission_id}/cancel").status_code == 202
        view = bed.complete(submission_id)
        assert view["status"] == "cancelled"
        data = the_event(bed, submission_id)["data"]
        assert data["cancellationReason"] == "requested"
        assert data["cancelConfirmation"] == {"firstRead": "cancelled", "secondRead": "cancelled"}
        reads = [r.time for r in bed.foundry.calls("responses.retrieve")]
        assert (reads[-1] - reads[-2]).total_seconds() >= 5
        assert len(bed.foundry.calls("responses.cancel")) == 1
        assert responses_still_running(bed) == []


def test_a_response_that_reads_cancelled_then_completed_is_published_completed() -> None:
    with relay_bed() as bed:
        bed.foundry.default_script = ResponseScript(
            duration_seconds=3600, output_text="done anyway", completed_after_cancel_seconds=3
        )
        submission_id = bed.submit_foundry()
        bed.host.run_until_idle()
        bed.host.advance_to_next_timer()
        post(bed, f"/api/runs/{submission_id}/cancel")
        view = bed.complete(submission_id)
        data = the_event(bed, submission_id)["data"]
        assert view["status"] == data["status"] == "completed"
        assert data["cancelConfirmation"] == {"firstRead": "cancelled", "secondRead": "completed"}
        assert data["output"]["text"] == "done anyway"
        assert data["cancellationReason"] is None


def test_the_deadline_cancels_the_response_and_leaves_nothing_running() -> None:
    with relay_bed() as bed:
        bed.foundry.default_script = LONG_RESPONSE
        submission_id = bed.submit_foundry(deadlineSeconds=120)
        view = bed.complete(submission_id)
        assert view["status"] == "cancelled"
        assert the_event(bed, submission_id)["data"]["cancellationReason"] == "deadline_exceeded"
        assert responses_still_running(bed) == []


# Idempotency, crashes, faults ------------------------------------------------------------------


def test_the_same_idempotency_key_starts_one_response() -> None:
    with relay_bed() as bed:
        bed.foundry.default_script = FOUNDRY_TERMINAL_SCRIPTS["completed"]
        body = json.dumps({"agent": {"name": bed.foundry_agent}, "input": "hello"})
        headers = {"Content-Type": "application/json", "Idempotency-Key": "order-7"}
        first = bed.host.http("POST", "/api/runs", body=body, headers=headers)
        again = bed.host.http("POST", "/api/runs", body=body, headers=headers)
        assert first.status_code == again.status_code == 202
        submission_id = json.loads(first.get_body())["id"]
        assert json.loads(again.get_body())["id"] == submission_id
        bed.complete(submission_id)
        assert len(created_responses(bed)) == 1
        the_event(bed, submission_id)


@pytest.mark.parametrize(
    "kind", ["before_episode", "after_activity_before_commit", "after_timer_fired"]
)
def test_a_crash_at_any_step_keeps_one_response_and_one_event(kind: str) -> None:
    with relay_bed() as bed:
        bed.foundry.script_for = two_rounds_then_answer
        crashed = bed.crash_every_third(kind)
        submission_id = bed.submit_foundry()
        for _ in range(2):
            calls = wait_for_requires_action(bed, submission_id)["requiredAction"]["toolCalls"]
            answer = {"toolOutputs": [{"toolCallId": c["id"], "output": "x"} for c in calls]}
            assert post(bed, f"/api/runs/{submission_id}/tool-outputs", answer).status_code == 202
        assert bed.complete(submission_id)["status"] == "completed"
        assert crashed
        assert len(created_responses(bed)) == 3
        conversation = the_event(bed, submission_id)["data"]["conversationId"]
        assert {r["conversation"]["id"] for r in created_responses(bed)} == {conversation}
        # A re-run first step may leave an empty conversation behind, never a response.
        for created in bed.foundry.calls("conversations.create"):
            if created.response["id"] != conversation:
                assert bed.foundry.conversation_items(created.response["id"]) == []


def test_a_create_applied_but_answered_500_is_found_not_repeated() -> None:
    with relay_bed() as bed:
        bed.foundry.default_script = ResponseScript(duration_seconds=300, output_text="once")
        bed.foundry.faults.append(
            FaultRule(operation="responses.create", kind="500_after_apply", count=1)
        )
        submission_id = bed.submit_foundry()
        view = bed.complete(submission_id)
        assert view["status"] == "completed"
        assert len(bed.foundry.responses) == 1
        data = the_event(bed, submission_id)["data"]
        assert data["responseId"] == next(iter(bed.foundry.responses))
        assert data["output"]["text"] == "once"


def test_a_cancel_before_a_lost_create_is_seen_still_cancels_that_response() -> None:
    with relay_bed() as bed:
        bed.foundry.default_script = ResponseScript(duration_seconds=600)
        bed.foundry.faults.append(
            FaultRule(operation="responses.create", kind="500_after_apply", count=1)
        )
        submission_id = bed.submit_foundry()
        bed.host.run_until_idle()
        assert post(bed, f"/api/runs/{submission_id}/cancel").status_code == 202
        bed.complete(submission_id)
        assert len(bed.foundry.responses) == 1
        assert responses_still_running(bed) == []
        the_event(bed, submission_id)


def test_throttling_is_waited_out_on_durable_timers_with_the_service_hint() -> None:
    with relay_bed() as bed:
        bed.foundry.default_script = FOUNDRY_TERMINAL_SCRIPTS["completed"]
        bed.foundry.faults.append(
            FaultRule(
                operation="responses.retrieve", kind="429_retry_after_ms", count=2, retry_after=40
            )
        )
        submission_id = bed.submit_foundry()
        assert bed.complete(submission_id)["status"] == "completed"
        throttled = [r for r in bed.foundry.calls("responses.retrieve") if r.status == 429]
        assert len(throttled) == 2
        after = [r for r in bed.foundry.calls("responses.retrieve") if r.time > throttled[0].time]
        assert (after[0].time - throttled[0].time).total_seconds() >= 40
        assert all(r.retry_count == "0" for r in bed.foundry.calls("responses.retrieve"))
        the_event(bed, submission_id)


# Request validation ----------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("body", "field"),
    [
        ({"agent": {"name": "a"}, "agentId": "asst_1", "input": "x"}, "agentId"),
        ({"agent": {"name": "a"}, "input": "x", "model": "gpt-4o"}, "model"),
        ({"agent": {"name": "a"}, "input": "x", "tools": []}, "tools"),
        ({"agent": {"name": "a"}, "input": "x", "instructions": "be brief"}, "instructions"),
        ({"agent": {"name": "a"}, "input": "x", "text": {}}, "text"),
        ({"agent": {"name": "a"}, "input": "x", "threadId": "thread_1"}, "threadId"),
        ({"agent": {"name": ""}, "input": "x"}, "agent.name"),
        ({"agent": {"name": "a/b"}, "input": "x"}, "agent.name"),
        ({"agent": {"name": "a", "version": 3}, "input": "x"}, "agent.version"),
        ({"agent": {"name": "a", "kind": "prompt"}, "input": "x"}, "agent.kind"),
        ({"agent": "a", "input": "x"}, "agent"),
        ({"agent": {"name": "a"}}, "input"),
        ({"agentId": "asst_1", "input": "x", "conversationId": "conv_1"}, "conversationId"),
        ({"agent": {"name": "a"}, "input": "x", "metadata": {"relay_x": "1"}}, "metadata.relay_x"),
        (
            {"agent": {"name": "a"}, "input": "x", "metadata": {f"k{i}": "v" for i in range(16)}},
            "metadata",
        ),
        ({"agent": {"name": "a"}, "input": "x", "metadata": {"k": "v" * 513}}, "metadata.k"),
        ({"input": "x"}, "agentId"),
    ],
)
def test_bad_foundry_submissions_are_400_naming_the_field(body: dict[str, Any], field: str) -> None:
    with relay_bed() as bed:
        response = bed.post_run(body)
        assert response.status_code == 400, response.get_body()
        problem = json.loads(response.get_body())
        assert response.headers["Content-Type"] == "application/problem+json"
        assert problem["field"] == field


def test_allowed_agents_applies_to_foundry_agent_names() -> None:
    with relay_bed(settings={"ALLOWED_AGENTS": "relay-foundry-test"}) as bed:
        allowed = bed.post_run({"agent": {"name": "relay-foundry-test"}, "input": "x"})
        assert allowed.status_code == 202
        refused = bed.post_run({"agent": {"name": "someone-else"}, "input": "x"})
        assert refused.status_code == 403
        assert json.loads(refused.get_body())["field"] == "agent.name"


# Fast path ---------------------------------------------------------------------------------------
# Streams hold real time (the service's clock follows the wall while one is open): short runs.


def test_a_quick_response_on_a_dropped_stream_is_resumed_and_published_with_zero_polls() -> None:
    with relay_bed(settings={"FAST_PATH_SECONDS": "3"}) as bed:
        bed.foundry.default_script = ResponseScript(
            queued_seconds=0.02, duration_seconds=0.2, output_text="fast", stream_drop_after=2
        )
        submission_id = bed.submit_foundry()
        bed.host.run_until_idle()  # no timer fires: the start activity saw the end
        view = bed.status(submission_id)
        assert view["status"] == "completed"
        assert view["polls"] == 0
        (resume,) = bed.foundry.calls("responses.retrieve")
        assert resume.query == {"stream": "true", "starting_after": "2"}
        data = the_event(bed, submission_id)["data"]
        assert data["output"]["text"] == "fast"
        assert data["polls"] == 0
        assert len(bed.foundry.responses) == 1


def test_a_longer_response_falls_back_to_the_durable_schedule() -> None:
    with relay_bed(settings={"FAST_PATH_SECONDS": "0.3"}) as bed:
        bed.foundry.default_script = ResponseScript(queued_seconds=0.02, duration_seconds=120)
        submission_id = bed.submit_foundry()
        bed.host.run_until_idle()
        assert bed.status(submission_id)["status"] == "running"
        final = bed.complete(submission_id)
        assert final["status"] == "completed"
        assert final["polls"] > 0
        assert len(bed.foundry.responses) == 1
        (create,) = bed.foundry.calls("responses.create")
        assert create.body["stream"] is True

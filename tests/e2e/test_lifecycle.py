"""The full run lifecycle end to end: cancel, tool calls, idempotent submit, publish retries,
crashes and internal errors. Public surfaces only (HTTP, events received, Agents requests)."""

from __future__ import annotations

import json
from datetime import timedelta
from typing import Any

import pytest
from azure.eventgrid import EventGridEvent

from devhost.agents_service import FaultRule, RunScript
from shared.core.timefmt import from_iso
from tests.relay_bed import RelayBed, relay_bed

LONG_RUN = RunScript(duration_seconds=3600, final_status="completed")
TOOL_RUN = RunScript(
    duration_seconds=120,
    final_status="completed",
    requires_action=[
        {"id": "call_weather", "name": "get_weather", "arguments": '{"city": "Oslo"}'},
        {"id": "call_time", "name": "get_time", "arguments": "{}"},
    ],
    requires_action_after_seconds=20,
    tool_outputs_expire_seconds=600,
)


def completed_events(bed: RelayBed, submission_id: str) -> list[dict[str, Any]]:
    return [e for e in bed.events_for(submission_id) if e["eventType"] == "AgentRunCompleted"]


def post(bed: RelayBed, path: str, body: Any = None) -> Any:
    return bed.host.http(
        "POST",
        path,
        body=json.dumps(body) if body is not None else b"",
        headers={"Content-Type": "application/json"},
    )


# Cancel -------------------------------------------------------------------------------------


def test_cancel_acts_at_once_and_publishes_cancelled_requested() -> None:
    with relay_bed() as bed:
        bed.agents.default_script = LONG_RUN
        submission_id = bed.submit()
        bed.host.run_until_idle()
        for _ in range(6):
            bed.host.advance_to_next_timer()
        asked_at = bed.clock.now()
        response = post(bed, f"/api/runs/{submission_id}/cancel")
        assert response.status_code == 202
        assert json.loads(response.get_body())["status"] == "cancelling"
        bed.host.run_until_idle()  # no virtual time passes: the wait is cut short by the event
        (cancel,) = bed.agents.calls("runs.cancel")
        assert cancel.time == asked_at
        view = bed.complete(submission_id)
        assert view["status"] == "cancelled"
        assert view["cancellationReason"] == "requested"
        (event,) = completed_events(bed, submission_id)
        assert event["data"]["cancellationReason"] == "requested"
        assert bed.agents.runs[event["data"]["runId"]]["status"] == "cancelled"
        again = post(bed, f"/api/runs/{submission_id}/cancel")
        assert again.status_code == 409
        assert again.headers["Content-Type"] == "application/problem+json"


def test_cancel_of_an_unknown_submission_is_404() -> None:
    with relay_bed() as bed:
        assert post(bed, f"/api/runs/{'a' * 32}/cancel").status_code == 404


def test_cancel_twice_is_harmless() -> None:
    with relay_bed() as bed:
        bed.agents.default_script = LONG_RUN
        submission_id = bed.submit()
        bed.host.run_until_idle()
        bed.host.advance_to_next_timer()
        assert post(bed, f"/api/runs/{submission_id}/cancel").status_code == 202
        second = post(bed, f"/api/runs/{submission_id}/cancel")
        assert second.status_code in (202, 409)
        bed.complete(submission_id)
        assert len(bed.agents.calls("runs.cancel")) == 1
        assert len(completed_events(bed, submission_id)) == 1


def test_cancel_before_the_run_is_known_finds_and_cancels_it() -> None:
    with relay_bed() as bed:
        bed.agents.default_script = LONG_RUN
        # The service creates the run but answers 500: the relay does not know the run yet.
        bed.agents.faults.append(
            FaultRule(operation="runs.create", kind="500_after_apply", count=1)
        )
        submission_id = bed.submit()
        bed.host.run_until_idle()
        assert post(bed, f"/api/runs/{submission_id}/cancel").status_code == 202
        view = bed.complete(submission_id)
        assert len(bed.agents.runs) == 1
        (run,) = bed.agents.runs.values()
        assert run["status"] == "cancelled"
        assert view["status"] == "cancelled"
        assert view["agentRun"]["runId"] == run["id"]


# Function tools ------------------------------------------------------------------------------


def wait_for_requires_action(bed: RelayBed, submission_id: str) -> dict[str, Any]:
    bed.host.run_until_idle()
    for _ in range(50):
        view = bed.status(submission_id)
        if view["status"] == "requires_action":
            return view
        bed.host.advance_to_next_timer()
    raise AssertionError("the run never asked for tool outputs")


def test_tool_calls_are_announced_answered_and_resumed() -> None:
    with relay_bed() as bed:
        bed.agents.default_script = TOOL_RUN
        submission_id = bed.submit()
        view = wait_for_requires_action(bed, submission_id)
        calls = view["requiredAction"]["toolCalls"]
        assert {c["name"] for c in calls} == {"get_weather", "get_time"}
        announced = [
            e for e in bed.events_for(submission_id) if e["eventType"] == "AgentRunRequiresAction"
        ]
        assert len(announced) == 1
        parsed = EventGridEvent.from_dict(announced[0])
        assert [
            {k: c[k] for k in ("id", "name", "arguments")} for c in parsed.data["toolCalls"]
        ] == calls
        assert view["requiredAction"]["toolCallCount"] == len(calls) == 2
        assert view["requiredAction"]["truncated"] is False
        assert parsed.data["expiresAt"] == view["requiredAction"]["expiresAt"]
        ids = [c["id"] for c in calls]

        wrong = post(
            bed,
            f"/api/runs/{submission_id}/tool-outputs",
            {"toolOutputs": [{"toolCallId": ids[0], "output": "12C"}]},
        )
        assert wrong.status_code == 400
        assert json.loads(wrong.get_body())["field"] == "toolOutputs"
        answer = {"toolOutputs": [{"toolCallId": i, "output": f"out-{i}"} for i in ids]}
        assert post(bed, f"/api/runs/{submission_id}/tool-outputs", answer).status_code == 202
        bed.host.run_until_idle()
        (submitted,) = bed.agents.calls("runs.submit_tool_outputs")
        assert {o["tool_call_id"] for o in submitted.body["tool_outputs"]} == set(ids)
        final = bed.complete(submission_id)
        assert final["status"] == "completed"
        late = post(bed, f"/api/runs/{submission_id}/tool-outputs", answer)
        assert late.status_code == 409
        assert len(completed_events(bed, submission_id)) == 1


def test_tool_outputs_when_not_waiting_are_409() -> None:
    with relay_bed() as bed:
        bed.agents.default_script = LONG_RUN
        submission_id = bed.submit()
        bed.host.run_until_idle()
        body = {"toolOutputs": [{"toolCallId": "call_x", "output": "x"}]}
        response = post(bed, f"/api/runs/{submission_id}/tool-outputs", body)
        assert response.status_code == 409


def test_unanswered_tool_calls_cancel_the_run() -> None:
    with relay_bed(settings={"TOOL_OUTPUTS_TIMEOUT_SECONDS": "120"}) as bed:
        bed.agents.default_script = TOOL_RUN
        submission_id = bed.submit()
        view = wait_for_requires_action(bed, submission_id)
        final = bed.complete(submission_id)
        (cancel,) = bed.agents.calls("runs.cancel")
        asked = bed.agents.calls("runs.get")
        first_seen = next(
            r.time for r in asked if r.response and r.response.get("status") == "requires_action"
        )
        assert cancel.time - first_seen <= timedelta(seconds=120)
        assert cancel.time - first_seen >= timedelta(seconds=119)
        assert final["status"] == "cancelled"
        assert final["cancellationReason"] == "tool_outputs_timeout"
        assert view["requiredAction"]["giveUpAt"]


# Idempotent submit ---------------------------------------------------------------------------


def test_the_same_idempotency_key_and_body_returns_the_same_submission() -> None:
    with relay_bed() as bed:
        body = {"agentId": bed.agent_id, "input": "once"}
        first = bed.post_run(body, headers={"Idempotency-Key": "order-42"})
        bed.host.run_until_idle()
        second = bed.post_run(body, headers={"Idempotency-Key": "order-42"})
        assert first.status_code == second.status_code == 202
        assert json.loads(first.get_body()) == json.loads(second.get_body())
        other_body = bed.post_run(
            {**body, "input": "twice"}, headers={"Idempotency-Key": "order-42"}
        )
        assert other_body.status_code == 409
        assert json.loads(other_body.get_body())["field"] == "Idempotency-Key"
        submission_id = json.loads(first.get_body())["id"]
        bed.complete(submission_id)
        assert len(bed.agents.runs) == 1
        assert len(bed.host.instances()) == 1
        after = bed.post_run(body, headers={"Idempotency-Key": "order-42"})
        assert json.loads(after.get_body())["id"] == submission_id
        assert len(completed_events(bed, submission_id)) == 1


def test_without_a_key_every_post_is_new_and_bad_keys_are_400() -> None:
    with relay_bed() as bed:
        body = {"agentId": bed.agent_id, "input": "x"}
        ids = {json.loads(bed.post_run(body).get_body())["id"] for _ in range(3)}
        assert len(ids) == 3
        bad = bed.post_run(body, headers={"Idempotency-Key": " "})
        assert bad.status_code == 400
        assert json.loads(bad.get_body())["field"] == "Idempotency-Key"


# Nothing lost --------------------------------------------------------------------------------


def test_event_grid_refusing_for_30_minutes_delays_but_does_not_lose_the_event() -> None:
    with relay_bed() as bed:
        bed.agents.default_script = RunScript(duration_seconds=30, final_status="completed")
        bed.topic.refuse_until(bed.clock.now() + timedelta(minutes=30))
        submission_id = bed.submit()
        view = bed.complete(submission_id)
        (event,) = completed_events(bed, submission_id)
        assert view["event"]["id"] == event["id"]
        refused = [r for r in bed.topic.publish_requests if r.status != 200]
        assert len(refused) >= 3
        assert view["status"] == "completed"


def test_publishing_gives_up_loudly_after_the_window() -> None:
    with relay_bed(settings={"PUBLISH_RETRY_WINDOW_SECONDS": "600"}) as bed:
        bed.agents.default_script = RunScript(duration_seconds=30, final_status="completed")
        bed.topic.refuse_until(bed.clock.now() + timedelta(hours=2))
        submission_id = bed.submit()
        view = bed.complete(submission_id)
        assert completed_events(bed, submission_id) == []
        assert view["publishError"]["code"] == "publish_failed"
        assert view["event"] is None
        assert view["result"]["status"] == "completed"


def test_an_unreadable_orchestration_input_still_ends_in_a_failed_event() -> None:
    with relay_bed() as bed:
        instance_id = "b" * 32
        bed.host.start_orchestration("agent_run_orchestrator", {"unexpected": True}, instance_id)
        view = bed.complete(instance_id)
        (event,) = completed_events(bed, instance_id)
        assert event["data"]["status"] == "failed"
        assert event["data"]["lastError"]["code"] == "internal_error"
        assert view["status"] == "failed"


@pytest.mark.parametrize(
    "kind",
    [
        "before_episode",
        "after_episode_before_commit",
        "after_activity_before_commit",
        "after_timer_fired",
    ],
)
def test_a_crash_at_any_step_keeps_one_run_and_one_event(kind: str) -> None:
    with relay_bed() as bed:
        bed.agents.default_script = RunScript(duration_seconds=90, final_status="completed")
        crashed = bed.crash_every_third(kind)
        submission_id = bed.submit()
        view = bed.complete(submission_id)
        assert crashed
        assert view["status"] == "completed"
        assert len(bed.agents.runs) == 1
        events = completed_events(bed, submission_id)
        assert len({e["id"] for e in events}) == 1


# Giving up never leaves a run behind ------------------------------------------------------


def test_a_deadline_during_start_retries_finds_and_cancels_the_run_created_meanwhile() -> None:
    with relay_bed() as bed:
        bed.agents.default_script = LONG_RUN
        # The first create is applied but answered 500; lookups then fail for a while.
        bed.agents.faults.append(
            FaultRule(operation="runs.create", kind="500_after_apply", count=1)
        )
        bed.agents.faults.append(FaultRule(operation="runs.list", kind="503", count=6))
        submission_id = bed.submit(deadlineSeconds=30)
        view = bed.complete(submission_id)
        assert len(bed.agents.runs) == 1
        (run,) = bed.agents.runs.values()
        assert run["status"] == "cancelled"
        assert view["status"] == "cancelled"
        assert view["cancellationReason"] == "deadline_exceeded"
        assert view["agentRun"]["runId"] == run["id"]


def test_a_cancel_the_service_never_confirms_ends_the_submission_after_the_grace() -> None:
    with relay_bed() as bed:
        bed.agents.default_script = RunScript(duration_seconds=7200, cancel_delay_seconds=86400)
        submission_id = bed.submit(deadlineSeconds=60)
        view = bed.complete(submission_id)
        assert view["status"] == "failed"
        (event,) = completed_events(bed, submission_id)
        assert event["data"]["lastError"]["code"] == "cancel_unconfirmed"
        (cancel,) = bed.agents.calls("runs.cancel")
        gave_up = from_iso(view["result"]["completedAt"])
        assert gave_up - cancel.time >= timedelta(hours=1)

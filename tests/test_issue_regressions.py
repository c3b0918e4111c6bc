"""Regression tests for runtime rules the relay once broke (each failed before its fix).

Custom status size, role propagation at start, busy caller threads, slow polls while waiting
for tool outputs. Public surfaces only, plus the size of the custom status the bed reports
(what the Durable extension would check).
"""

from __future__ import annotations

import json
from datetime import timedelta
from typing import Any

import pytest

from shared.custom_status import CUSTOM_STATUS_LIMIT_BYTES, utf16_json_size
from shared.timefmt import from_iso
from tests.relay_bed import RelayBed, relay_bed
from tests.test_lifecycle import completed_events, post, wait_for_requires_action
from tests.testbed.agents_service import FaultRule, RunScript, make_sync_client


def requires_action_events(bed: RelayBed, submission_id: str) -> list[dict[str, Any]]:
    return [e for e in bed.events_for(submission_id) if e["eventType"] == "AgentRunRequiresAction"]


def tool_script(count: int, argument_chars: int = 1000) -> RunScript:
    calls = [
        {
            "id": f"call_{i:03d}",
            "name": f"lookup_{i}",
            "arguments": json.dumps({"query": "q" * argument_chars}),
        }
        for i in range(count)
    ]
    return RunScript(
        duration_seconds=120,
        final_status="completed",
        requires_action=calls,
        requires_action_after_seconds=20,
        tool_outputs_expire_seconds=600,
    )


@pytest.mark.parametrize("count", [8, 12, 64])
def test_many_tool_calls_keep_the_custom_status_under_the_limit(count: int) -> None:
    with relay_bed() as bed:
        bed.agents.default_script = tool_script(count)
        submission_id = bed.submit()
        view = wait_for_requires_action(bed, submission_id)
        action = view["requiredAction"]
        assert action["toolCallCount"] == count
        shown = action["toolCalls"]
        assert 1 <= len(shown) <= count
        assert action["truncated"] is (len(shown) < count)
        instance = bed.host.instance(submission_id)
        assert instance is not None
        assert utf16_json_size(instance.custom_status) < CUSTOM_STATUS_LIMIT_BYTES
        (announced,) = requires_action_events(bed, submission_id)
        calls = announced["data"]["toolCalls"]
        assert len(calls) == count
        assert all(not c["argumentsTruncated"] for c in calls)
        # The caller answers from the event, which lists every call.
        answer = {"toolOutputs": [{"toolCallId": c["id"], "output": "ok"} for c in calls]}
        partial = {"toolOutputs": answer["toolOutputs"][:-1]}
        assert post(bed, f"/api/runs/{submission_id}/tool-outputs", partial).status_code == 400
        assert post(bed, f"/api/runs/{submission_id}/tool-outputs", answer).status_code == 202
        final = bed.complete(submission_id)
        assert final["status"] == "completed"
        (submitted,) = bed.agents.calls("runs.submit_tool_outputs")
        assert len(submitted.body["tool_outputs"]) == count
        assert len(completed_events(bed, submission_id)) == 1


def test_a_requires_action_event_stays_far_below_event_grids_limit() -> None:
    with relay_bed() as bed:
        bed.agents.default_script = tool_script(64, argument_chars=16_000)
        submission_id = bed.submit()
        wait_for_requires_action(bed, submission_id)
        (announced,) = requires_action_events(bed, submission_id)
        assert len(json.dumps(announced).encode()) < 512 * 1024
        calls = announced["data"]["toolCalls"]
        assert len(calls) == 64
        assert all(c["argumentsTruncated"] for c in calls)


@pytest.mark.parametrize("kind", ["401", "403"])
def test_auth_refusals_right_after_a_deployment_are_retried(kind: str) -> None:
    with relay_bed() as bed:
        bed.agents.default_script = RunScript(duration_seconds=30, final_status="completed")
        bed.agents.faults.append(FaultRule(operation="threads.create", kind=kind, count=6))
        submission_id = bed.submit()
        view = bed.complete(submission_id)
        assert view["status"] == "completed"
        refused = [r for r in bed.agents.calls("threads.create") if r.status == int(kind)]
        assert len(refused) == 6
        assert len(bed.agents.runs) == 1


def test_auth_refusals_that_outlast_role_propagation_fail_the_submission() -> None:
    with relay_bed() as bed:
        bed.agents.faults.append(FaultRule(operation="threads.create", kind="403"))
        submission_id = bed.submit()
        view = bed.complete(submission_id)
        assert view["status"] == "failed"
        (event,) = completed_events(bed, submission_id)
        assert event["data"]["lastError"]["code"] == "PermissionDenied"
        took = from_iso(view["result"]["completedAt"]) - from_iso(view["result"]["submittedAt"])
        # AUTH_PROPAGATION_SECONDS (15 min), then the next attempt's refusal ends it.
        assert timedelta(minutes=15) <= took <= timedelta(minutes=20)
        assert bed.agents.runs == {}


def test_a_retried_start_on_a_busy_thread_finds_its_run_beyond_the_first_page() -> None:
    with relay_bed(settings={"ALLOW_CALLER_THREADS": "true"}) as bed:
        bed.agents.default_script = RunScript(
            queued_seconds=0.0, duration_seconds=0.5, final_status="completed"
        )
        with make_sync_client(bed.agents) as admin:
            other = admin.create_agent(model="gpt-4o-mini", name="busy-neighbour").id
            thread_id = admin.threads.create().id
            bed.agents.scripts_by_agent[other] = RunScript(
                queued_seconds=0.0, duration_seconds=0.0, final_status="completed"
            )
            # The first create is applied, but answered 500: the activity retries later.
            bed.agents.faults.append(
                FaultRule(operation="runs.create", kind="500_after_apply", count=1)
            )
            submission_id = bed.submit(threadId=thread_id)
            bed.host.run_until_idle()
            bed.clock.advance(1)
            # Meanwhile another client runs 150 runs on the same thread.
            for _ in range(150):
                admin.runs.create(thread_id, agent_id=other)
        view = bed.complete(submission_id)
        ours = [r for r in bed.agents.runs.values() if r["assistant_id"] == bed.agent_id]
        assert len(ours) == 1
        assert view["status"] == "completed"
        assert view["agentRun"]["runId"] == ours[0]["id"]


def test_polls_slow_down_while_the_relay_waits_for_tool_outputs() -> None:
    settings = {"TOOL_OUTPUTS_TIMEOUT_SECONDS": "3600"}
    with relay_bed(settings=settings) as bed:
        script = tool_script(2)
        bed.agents.default_script = RunScript(
            duration_seconds=120,
            final_status="completed",
            requires_action=script.requires_action,
            requires_action_after_seconds=20,
            tool_outputs_expire_seconds=7200,
        )
        submission_id = bed.submit()
        wait_for_requires_action(bed, submission_id)
        final = bed.complete(submission_id)
        assert final["cancellationReason"] == "tool_outputs_timeout"
        gets = bed.agents.calls("runs.get")
        waiting = [r for r in gets if r.response and r.response.get("status") == "requires_action"]
        # An hour of waiting: a poll every 5 minutes, not every 30 s (120 polls).
        assert 10 <= len(waiting) <= 15
        (cancel,) = bed.agents.calls("runs.cancel")
        assert cancel.time - waiting[0].time <= timedelta(seconds=3600)

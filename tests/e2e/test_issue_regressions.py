"""Regression tests for runtime rules the relay once broke (each failed before its fix).

Custom status size, role propagation at start, busy caller threads, slow polls while waiting
for tool outputs. Public surfaces only, plus the size of the custom status the bed reports
(what the Durable extension would check).
"""

from __future__ import annotations

import itertools
import json
from datetime import timedelta
from typing import Any

import pytest

from devhost.agents_service import FaultRule, RunScript, make_sync_client
from devhost.functions_host import CrashPoint
from shared.core.custom_status import CUSTOM_STATUS_LIMIT_BYTES, utf16_json_size
from shared.core.timefmt import from_iso
from tests.e2e.test_lifecycle import completed_events, post, wait_for_requires_action
from tests.relay_bed import RelayBed, relay_bed


def requires_action_events(bed: RelayBed, submission_id: str) -> list[dict[str, Any]]:
    return [e for e in bed.events_for(submission_id) if e["eventType"] == "AgentRunRequiresAction"]


def tool_script(count: int, argument_chars: int = 1000, expire: float = 600) -> RunScript:
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
        tool_outputs_expire_seconds=expire,
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


# Events while activities run ----------------------------------------------------------------

LONG_RUN = RunScript(duration_seconds=3600, final_status="completed")


@pytest.mark.parametrize("during_poll", range(1, 9))
def test_a_cancel_during_any_poll_is_never_lost_across_generations(during_poll: int) -> None:
    """With 5 steps per generation, one of these polls is a generation's last activity."""
    with relay_bed(settings={"POLLS_PER_GENERATION": "5"}) as bed:
        bed.agents.default_script = LONG_RUN
        submission_id = bed.submit()
        polls: list[int] = []
        answers: list[int] = []

        def cancel_inside(name: str, _payload: Any) -> None:
            if name == "poll_agent_run":
                polls.append(1)
                if len(polls) == during_poll:
                    answers.append(post(bed, f"/api/runs/{submission_id}/cancel").status_code)

        bed.host.during_activity = cancel_inside
        view = bed.complete(submission_id)
        assert answers == [202]
        assert len(bed.agents.calls("runs.cancel")) == 1
        assert view["status"] == "cancelled"
        assert view["cancellationReason"] == "requested"
        instance = bed.host.instance(submission_id)
        assert instance is not None
        # From the fourth poll on the cancel came in a later generation than the run's start.
        assert instance.generation >= (1 if during_poll >= 4 else 0)


@pytest.mark.parametrize("during_poll", range(1, 7))
def test_tool_outputs_during_any_poll_are_never_lost(during_poll: int) -> None:
    # Polls every 5 minutes while the relay waits for the outputs: give it an hour.
    settings = {"POLLS_PER_GENERATION": "5", "TOOL_OUTPUTS_TIMEOUT_SECONDS": "3600"}
    with relay_bed(settings=settings) as bed:
        bed.agents.default_script = tool_script(2, expire=7200)
        submission_id = bed.submit()
        view = wait_for_requires_action(bed, submission_id)
        ids = [c["id"] for c in view["requiredAction"]["toolCalls"]]
        answer = {"toolOutputs": [{"toolCallId": i, "output": "ok"} for i in ids]}
        polls: list[int] = []
        answers: list[int] = []

        def answer_inside(name: str, _payload: Any) -> None:
            if name == "poll_agent_run":
                polls.append(1)
                if len(polls) == during_poll:
                    path = f"/api/runs/{submission_id}/tool-outputs"
                    answers.append(post(bed, path, answer).status_code)

        bed.host.during_activity = answer_inside
        final = bed.complete(submission_id)
        assert answers == [202]
        assert final["status"] == "completed"
        (submitted,) = bed.agents.calls("runs.submit_tool_outputs")
        assert len(submitted.body["tool_outputs"]) == 2


def test_a_cancel_during_the_start_neither_spins_nor_hurries_retries() -> None:
    with relay_bed() as bed:
        bed.agents.default_script = LONG_RUN
        bed.agents.faults.append(
            FaultRule(operation="runs.cancel", kind="429_retry_after", retry_after=60, count=3)
        )
        submission_id = bed.submit()

        def cancel_inside(name: str, _payload: Any) -> None:
            if name == "start_agent_run":
                assert post(bed, f"/api/runs/{submission_id}/cancel").status_code == 202

        bed.host.during_activity = cancel_inside
        view = bed.complete(submission_id)
        assert view["status"] == "cancelled"
        assert view["cancellationReason"] == "requested"
        cancels = bed.agents.calls("runs.cancel")
        assert len(cancels) == 4
        gaps = [later.time - earlier.time for earlier, later in itertools.pairwise(cancels)]
        assert all(gap >= timedelta(seconds=60) for gap in gaps), gaps
        instance = bed.host.instance(submission_id)
        assert instance is not None
        # A handful of waits: cancel retries, then polls until the run confirms.
        assert instance.timers_created <= 12, instance.timers_by_generation


def test_the_status_invites_tool_outputs_before_the_event_does() -> None:
    with relay_bed() as bed:
        bed.agents.default_script = tool_script(2)
        submission_id = bed.submit()
        seen: list[dict[str, Any]] = []
        answers: list[int] = []

        def answer_on_notification(name: str, payload: Any) -> None:
            if name != "publish_run_event" or payload.get("event_type") != "AgentRunRequiresAction":
                return
            view = bed.status(submission_id)
            seen.append(view)
            ids = [c["id"] for c in payload["data"]["toolCalls"]]
            answer = {"toolOutputs": [{"toolCallId": i, "output": "fast"} for i in ids]}
            answers.append(post(bed, f"/api/runs/{submission_id}/tool-outputs", answer).status_code)

        bed.host.during_activity = answer_on_notification
        final = bed.complete(submission_id)
        (view,) = seen
        assert view["status"] == "requires_action"
        assert view["requiredAction"]["toolCallCount"] == 2
        assert answers == [202]
        assert final["status"] == "completed"
        assert len(bed.agents.calls("runs.submit_tool_outputs")) == 1


def test_outputs_accepted_as_the_give_up_timer_fires_still_win() -> None:
    """Outputs that share a batch with the give-up timer (after it) are applied, not lost to
    the timeout: the orchestration applies received events before judging its limits."""
    with relay_bed(settings={"TOOL_OUTPUTS_TIMEOUT_SECONDS": "600"}) as bed:
        bed.agents.default_script = tool_script(2, expire=7200)
        submission_id = bed.submit()
        view = wait_for_requires_action(bed, submission_id)
        give_up = from_iso(view["requiredAction"]["giveUpAt"])
        ids = [c["id"] for c in view["requiredAction"]["toolCalls"]]
        answer = {"toolOutputs": [{"toolCallId": i, "output": "just in time"} for i in ids]}
        answers: list[int] = []

        def answer_as_it_fires(point: CrashPoint) -> bool:
            if point.kind == "after_timer_fired" and from_iso(point.detail) == give_up:
                answers.append(
                    post(bed, f"/api/runs/{submission_id}/tool-outputs", answer).status_code
                )
            return False

        bed.host.crash_when = answer_as_it_fires
        final = bed.complete(submission_id)
        assert answers == [202]
        assert final["status"] == "completed"
        assert final["cancellationReason"] is None
        assert bed.agents.calls("runs.cancel") == []
        assert len(bed.agents.calls("runs.submit_tool_outputs")) == 1

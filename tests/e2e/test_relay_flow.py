"""The core flow end to end: HTTP function -> real DurableOrchestrationClient -> orchestrator
replayed by the emulated host -> activities with the real aio SDK clients -> loopback services.
"""

from __future__ import annotations

import json
from datetime import timedelta
from typing import Any, Literal

import jsonschema
import pytest
from azure.core.messaging import CloudEvent
from azure.eventgrid import EventGridEvent

from devhost.agents_service import FaultRule, RunScript
from shared.adapters.settings import get_settings
from shared.core.schedule import PollingPolicy, poll_wait_seconds
from shared.core.timefmt import from_iso
from tests.relay_bed import EVENT_DATA_SCHEMA, TERMINAL_SCRIPTS, relay_bed


def assert_valid_event(event: dict[str, Any], schema: str) -> dict[str, Any]:
    """The event parses with the SDK's own model and its data matches the published schema."""
    if schema == "eventgrid":
        parsed = EventGridEvent.from_dict(event)
        assert parsed.event_type == "AgentRunCompleted"
        assert parsed.data_version == "1.1"
        data: Any = parsed.data
    else:
        cloud: CloudEvent[Any] = CloudEvent.from_dict(event)
        assert cloud.type == "AgentRunCompleted"
        assert cloud.source == "/agent-runs"
        assert cloud.datacontenttype == "application/json"
        data = cloud.data
    assert isinstance(data, dict)
    jsonschema.validate(data, EVENT_DATA_SCHEMA, format_checker=jsonschema.FormatChecker())
    return data


@pytest.mark.parametrize("schema", ["eventgrid", "cloudevents"])
@pytest.mark.parametrize("final_status", sorted(TERMINAL_SCRIPTS))
def test_each_terminal_status_publishes_exactly_one_event(
    schema: Literal["eventgrid", "cloudevents"], final_status: str
) -> None:
    with relay_bed(event_schema=schema) as bed:
        bed.agents.default_script = TERMINAL_SCRIPTS[final_status]
        submission_id = bed.submit(metadata={"ticket": "INC-1"})
        view = bed.complete(submission_id)

        events = bed.events_for(submission_id)
        assert len(events) == 1
        data = assert_valid_event(events[0], schema)
        run = bed.agents.runs[data["runId"]]
        assert data["status"] == final_status == run["status"] == view["status"]
        assert data["agentId"] == bed.agent_id
        assert data["threadId"] == run["thread_id"]
        assert data["metadata"] == {"ticket": "INC-1"}
        assert data["polls"] == len(bed.agents.calls("runs.get")) == view["polls"]
        assert data["cancellationReason"] is None
        subject = events[0]["subject"]
        assert subject == f"agents/{bed.agent_id}/runs/{data['runId']}"
        event_time = events[0].get("eventTime") or events[0].get("time")
        terminal_at = max(
            run.get(f) or 0 for f in ("completed_at", "failed_at", "cancelled_at", "expires_at")
        )
        if terminal_at:
            assert from_iso(str(event_time)).timestamp() == pytest.approx(terminal_at, abs=1)
        else:
            # No terminal timestamp from the service: the poll that saw the end is the time.
            assert from_iso(str(event_time)) == bed.agents.calls("runs.get")[-1].time
        if final_status == "completed":
            assert data["output"] == {"text": "the answer", "truncated": False}
            assert data["usage"]["totalTokens"] == run["usage"]["total_tokens"]
        if final_status == "failed":
            assert data["lastError"] == {"code": "server_error", "message": "model crashed"}
        if final_status == "incomplete":
            assert data["incompleteDetails"] == {"reason": "max_tokens"}
        assert view["result"] == data
        assert view["event"]["id"] == events[0]["id"]


def test_a_republished_event_keeps_its_id() -> None:
    with relay_bed() as bed:
        bed.host.duplicate_activities = lambda name, _input: name == "publish_run_event"
        submission_id = bed.submit()
        bed.complete(submission_id)
        events = bed.events_for(submission_id)
        assert len(events) == 2
        assert events[0]["id"] == events[1]["id"]
        assert events[0] == events[1]


def test_a_restarted_start_activity_creates_one_thread_and_one_run() -> None:
    with relay_bed() as bed:
        bed.host.duplicate_activities = lambda name, _input: name == "start_agent_run"
        submission_id = bed.submit()
        view = bed.complete(submission_id)
        assert view["status"] == "completed"
        assert len(bed.agents.calls("runs.create")) == 1
        assert len(bed.agents.calls("threads.create")) == 1


def expected_polls(policy: PollingPolicy, seed: str, run_ends_after: float) -> int:
    """Replays the documented schedule: how many polls until one sees the run finished."""
    elapsed, polls = 0.0, 0
    while True:
        elapsed += poll_wait_seconds(policy, elapsed, polls, seed)
        polls += 1
        if elapsed >= run_ends_after:
            return polls


def test_a_three_hour_run_has_bounded_history_and_the_scheduled_polls() -> None:
    with relay_bed(settings={"POLLS_PER_GENERATION": "40"}) as bed:
        script = RunScript(queued_seconds=0, duration_seconds=3 * 3600, final_status="completed")
        bed.agents.default_script = script
        submission_id = bed.submit(deadlineSeconds=4 * 3600)
        bed.host.run_until_idle()
        seen_polls = []
        while (instance := bed.host.instance(submission_id)) and instance.runtime_status not in (
            "Completed",
            "Failed",
        ):
            view = bed.status(submission_id)
            assert view["status"] in ("running", "pending")
            if view["status"] == "running":
                assert from_iso(view["nextPollAt"]) > bed.clock.now()
                seen_polls.append(view["polls"])
            assert bed.host.advance_to_next_timer()
        view = bed.status(submission_id)
        policy = get_settings().polling
        assert view["polls"] == expected_polls(policy, submission_id, 3 * 3600)
        assert seen_polls == sorted(seen_polls)
        assert len(set(seen_polls)) >= view["polls"] - 1
        instance = bed.host.instance(submission_id)
        assert instance is not None
        assert instance.generation >= view["polls"] // 40
        # Each generation's history stays bounded by the generation size, not the run length.
        assert max(instance.history_lengths) <= 40 * 12


def test_the_deadline_cancels_the_agent_run() -> None:
    with relay_bed() as bed:
        bed.agents.default_script = RunScript(duration_seconds=7200, final_status="completed")
        submission_id = bed.submit(deadlineSeconds=600)
        view = bed.complete(submission_id)
        cancels = bed.agents.calls("runs.cancel")
        assert len(cancels) == 1
        submitted = from_iso(view["createdAt"])
        assert cancels[0].time >= submitted + timedelta(seconds=600)
        assert cancels[0].time <= submitted + timedelta(seconds=600 + 5)
        (event,) = bed.events_for(submission_id)
        assert event["data"]["status"] == "cancelled"
        assert event["data"]["cancellationReason"] == "deadline_exceeded"
        assert bed.agents.runs[event["data"]["runId"]]["status"] == "cancelled"


def test_retry_after_from_a_429_stretches_the_next_wait() -> None:
    with relay_bed() as bed:
        bed.agents.default_script = RunScript(duration_seconds=600, final_status="completed")
        bed.agents.faults.append(
            FaultRule(operation="runs.get", kind="429_retry_after", retry_after=120, count=1)
        )
        submission_id = bed.submit()
        view = bed.complete(submission_id)
        assert view["status"] == "completed"
        gets = bed.agents.calls("runs.get")
        throttled = [i for i, r in enumerate(gets) if r.status == 429]
        assert len(throttled) == 1
        gap = gets[throttled[0] + 1].time - gets[throttled[0]].time
        assert gap >= timedelta(seconds=120)


def test_transient_errors_do_not_fail_the_submission() -> None:
    with relay_bed() as bed:
        bed.agents.default_script = RunScript(duration_seconds=300, final_status="completed")
        for kind in ("500", "503", "timeout", "malformed_json"):
            bed.agents.faults.append(
                FaultRule(operation="*", kind=kind, rate=0.15, delay_seconds=0.2)
            )
        submission_id = bed.submit()
        view = bed.complete(submission_id)
        assert view["status"] == "completed"
        assert sum(bed.agents.fault_counts.values()) > 0
        assert len(bed.agents.runs) == 1
        assert len(bed.events_for(submission_id)) == 1


def test_an_unknown_agent_fails_the_submission_and_still_publishes() -> None:
    with relay_bed() as bed:
        response = bed.post_run({"agentId": "asst_does_not_exist", "input": "hi"})
        assert response.status_code == 202
        submission_id = json.loads(response.get_body())["id"]
        view = bed.complete(submission_id)
        assert view["status"] == "failed"
        (event,) = bed.events_for(submission_id)
        assert event["data"]["runId"] is None
        assert event["data"]["lastError"]["code"]
        assert_valid_event(event, "eventgrid")


def test_continuing_an_existing_thread_adds_the_messages_to_it() -> None:
    with relay_bed(settings={"ALLOW_CALLER_THREADS": "true"}) as bed:
        first = bed.submit(input="first question")
        thread_id = bed.complete(first)["agentRun"]["threadId"]
        second = bed.submit(threadId=thread_id, input="follow-up")
        view = bed.complete(second)
        assert view["agentRun"]["threadId"] == thread_id
        assert len(bed.agents.calls("threads.create")) == 1
        posted = [r.body for r in bed.agents.calls("messages.create")]
        assert posted
        assert posted[-1]["content"] == "follow-up"


@pytest.mark.parametrize(("topic_key_setting", "auth"), [(None, "key"), ("", "bearer")])
def test_publishing_uses_the_key_when_set_and_a_token_otherwise(
    topic_key_setting: str | None, auth: str
) -> None:
    overrides = {} if topic_key_setting is None else {"EVENTGRID_TOPIC_KEY": topic_key_setting}
    with relay_bed(settings=overrides) as bed:
        submission_id = bed.submit()
        bed.complete(submission_id)
        received = [r for r in bed.topic.events if r.event["data"]["submissionId"] == submission_id]
        assert [r.auth for r in received] == [auth]

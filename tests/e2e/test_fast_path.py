"""The fast path: the start activity follows the new run's event stream for FAST_PATH_SECONDS.

Streams hold real time (the loopback service's clock follows the wall while one is open), so
windows and runs here are short.
"""

from __future__ import annotations

from datetime import timedelta

import pytest

from devhost.agents_service import FaultRule, RunScript
from shared.core.timefmt import from_iso
from tests.relay_bed import relay_bed

QUICK_RUN = RunScript(queued_seconds=0.02, duration_seconds=0.15, output_text="fast answer")
SLOW_RUN = RunScript(queued_seconds=0.02, duration_seconds=120, output_text="slow answer")


def test_a_run_that_ends_inside_the_window_is_published_with_zero_polls() -> None:
    with relay_bed(settings={"FAST_PATH_SECONDS": "2"}) as bed:
        bed.agents.default_script = QUICK_RUN
        submission_id = bed.submit()
        bed.host.run_until_idle()  # no timer fires: the start activity saw the end
        view = bed.status(submission_id)
        assert view["status"] == "completed"
        assert view["polls"] == 0
        assert bed.agents.calls("runs.get") == []
        (event,) = bed.events_for(submission_id)
        assert event["data"]["output"]["text"] == "fast answer"
        run = bed.agents.runs[event["data"]["runId"]]
        published = next(r.received_at for r in bed.topic.events if r.event["id"] == event["id"])
        delay = published.timestamp() - run["completed_at"]
        assert delay < 0.5


def test_a_longer_run_falls_back_to_the_durable_schedule_from_its_current_state() -> None:
    with relay_bed(settings={"FAST_PATH_SECONDS": "0.3"}) as bed:
        bed.agents.default_script = SLOW_RUN
        submission_id = bed.submit()
        bed.host.run_until_idle()
        view = bed.status(submission_id)
        assert view["status"] == "running"
        assert view["agentRun"]["status"] == "in_progress"  # seen on the stream, not polled
        final = bed.complete(submission_id)
        assert final["status"] == "completed"
        assert final["polls"] > 0
        assert len(bed.agents.runs) == 1
        (stream_call,) = bed.agents.calls("runs.create")
        assert stream_call.body["stream"] is True


def test_after_a_fallback_the_schedule_goes_on_from_the_runs_age() -> None:
    # Initial wait 1 s, multiplier 4, no jitter: restarted from zero the first wait would be
    # 1 s; going on from a run already ~1 s old it is (4 - 1) x its age.
    settings = {
        "FAST_PATH_SECONDS": "1",
        "POLL_INITIAL_SECONDS": "1",
        "POLL_MULTIPLIER": "4",
        "POLL_JITTER": "0",
    }
    with relay_bed(settings=settings) as bed:
        bed.agents.default_script = RunScript(queued_seconds=0.02, duration_seconds=60)
        submission_id = bed.submit()
        final = bed.complete(submission_id)
        assert final["status"] == "completed"
        (run,) = bed.agents.runs.values()
        first_poll = bed.agents.calls("runs.get")[0].time.timestamp()
        assert first_poll - run["created_at"] >= 1.0 + 3 * 0.9


@pytest.mark.parametrize("fault", ["stream_drop", "stream_end_early"])
def test_a_broken_stream_falls_back_to_polling_with_one_run(fault: str) -> None:
    with relay_bed(settings={"FAST_PATH_SECONDS": "1"}) as bed:
        bed.agents.default_script = RunScript(queued_seconds=0.02, duration_seconds=30)
        bed.agents.faults.append(FaultRule(operation="runs.create", kind=fault, count=1))
        submission_id = bed.submit()
        final = bed.complete(submission_id)
        assert final["status"] == "completed"
        assert final["polls"] > 0
        assert len(bed.agents.runs) == 1
        assert len(bed.events_for(submission_id)) == 1


def test_a_start_activity_that_runs_twice_streams_once_and_keeps_one_run() -> None:
    with relay_bed(settings={"FAST_PATH_SECONDS": "0.3"}) as bed:
        bed.agents.default_script = RunScript(queued_seconds=0.02, duration_seconds=20)
        bed.host.duplicate_activities = lambda name, _input: name == "start_agent_run"
        submission_id = bed.submit()
        final = bed.complete(submission_id)
        assert final["status"] == "completed"
        assert len(bed.agents.runs) == 1
        assert len(bed.agents.calls("runs.create")) == 1
        assert len({e["id"] for e in bed.events_for(submission_id)}) == 1


def test_a_stream_that_stops_for_tool_outputs_hands_over_to_the_tool_flow() -> None:
    with relay_bed(settings={"FAST_PATH_SECONDS": "2"}) as bed:
        bed.agents.default_script = RunScript(
            queued_seconds=0.02,
            duration_seconds=0.2,
            requires_action=[{"id": "call_a", "name": "lookup", "arguments": "{}"}],
            requires_action_after_seconds=0.05,
        )
        submission_id = bed.submit()
        bed.host.run_until_idle()
        view = bed.status(submission_id)
        assert view["status"] == "requires_action"
        assert [c["id"] for c in view["requiredAction"]["toolCalls"]] == ["call_a"]
        assert bed.agents.calls("runs.get") == []
        announced = [
            e for e in bed.events_for(submission_id) if e["eventType"] == "AgentRunRequiresAction"
        ]
        assert len(announced) == 1
        assert from_iso(view["requiredAction"]["giveUpAt"]) > bed.clock.now() + timedelta(
            seconds=60
        )

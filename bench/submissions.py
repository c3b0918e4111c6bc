"""What the classic runner (relay_runs.py) and the Foundry runner (foundry_runs.py) share:
submitting a workload run through POST /api/runs on the test bed, and reading the finished
submission back from the services' own records.

The backends differ in the body's agent field and metadata and in which requests are the
create and the polls; each runner picks those out and hands them here.
"""

from __future__ import annotations

import json
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Any

from devhost.eventgrid_topic import ReceivedEvent
from devhost.functions_host import InstanceView
from tests.relay_bed import RelayBed

from .schedules import MICROS, submission_id_for, to_micros
from .workload import WorkloadRun, idempotency_key

DURATION_KEY = "benchDurationSeconds"
# Long enough for every workload run; the deadline only caps timers.
DEADLINE_SECONDS = 7 * 24 * 3600


@dataclass(frozen=True)
class BedRun:
    """What the services saw of one submission, on either backend."""

    index: int
    duration: float  # the run ends this long after its create
    group: str
    submission_id: str
    status: str
    polls: int  # status polls of the agent run (streams left out)
    detected_us: int  # the last poll, us after the create (0: no poll)
    delay: float  # topic receipt - terminal time, seconds
    event_polls: int  # the event's data.polls
    history_lengths: tuple[int, ...]  # events per Durable generation

    @property
    def max_history(self) -> int:
        return max(self.history_lengths)


def submit_run(
    bed: RelayBed,
    run: WorkloadRun,
    agent: Mapping[str, Any],
    metadata: Mapping[str, str],
    **fields: Any,
) -> str:
    """POST the run for `agent` (the body's agent field) under the run's Idempotency-Key.

    Returns the submission id, which must be the one the key derives (the simulator's jitter
    is seeded by it).
    """
    key = idempotency_key(run.index)
    body = {
        **agent,
        "input": "benchmark run",
        "metadata": dict(metadata),
        "deadlineSeconds": DEADLINE_SECONDS,
        **fields,
    }
    response = bed.post_run(body, headers={"Idempotency-Key": key})
    if response.status_code != 202:
        raise RuntimeError(
            f"POST /api/runs answered {response.status_code}: {response.get_body()!r}"
        )
    submission_id = str(json.loads(response.get_body())["id"])
    if submission_id != submission_id_for(key):
        raise AssertionError("the app no longer derives submission ids from Idempotency-Key")
    return submission_id


def run_all(
    bed: RelayBed, runs: Sequence[WorkloadRun], submit: Callable[[RelayBed, WorkloadRun], str]
) -> list[tuple[WorkloadRun, str]]:
    """Submit every run at once, then drive the host until all are done.

    Returns each run with its submission id.
    """
    submitted = [(run, submit(bed, run)) for run in runs]
    bed.host.run_all_until_complete(max_steps=10_000_000)
    return submitted


def finished_instance(bed: RelayBed, submission_id: str) -> InstanceView:
    instance = bed.host.instance(submission_id)
    assert instance is not None
    return instance


def _published_event(bed: RelayBed, submission_id: str) -> ReceivedEvent:
    """The submission's one event on the topic (more or none is a relay bug)."""
    events = [
        received
        for received in bed.topic.events
        if received.event.get("data", {}).get("submissionId") == submission_id
    ]
    if len(events) != 1:
        raise AssertionError(f"{submission_id}: {len(events)} events published, expected 1")
    return events[0]


def _micros(delta: timedelta) -> int:
    return delta // timedelta(microseconds=1)


def read_back(
    bed: RelayBed,
    run: WorkloadRun,
    submission_id: str,
    view: Mapping[str, Any],
    instance: InstanceView,
    created_at: datetime,
    poll_times: Sequence[datetime],
) -> BedRun:
    """The part of a finished submission both backends measure alike.

    `view`: the submission's status (GET /api/runs/{id}); `created_at`: when the service
    recorded the agent run's create; `poll_times`: when it recorded each status poll of it.
    """
    published = _published_event(bed, submission_id)
    delay_us = _micros(published.received_at - created_at) - to_micros(run.duration)
    return BedRun(
        index=run.index,
        duration=run.duration,
        group=run.group,
        submission_id=submission_id,
        status=str(view["status"]),
        polls=len(poll_times),
        detected_us=_micros(poll_times[-1] - created_at) if poll_times else 0,
        delay=delay_us / MICROS,
        event_polls=int(published.event["data"]["polls"]),
        history_lengths=tuple(instance.history_lengths),
    )

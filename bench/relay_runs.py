"""Our orchestrator, for real: workload runs submitted through POST /api/runs on the test bed.

Everything runs in virtual time on the emulated Functions host with the real app
(`function_app`), the loopback Agents service and the local Event Grid topic. Polls are the
`runs.get` calls the service recorded for each run; the detection delay is the virtual time
at which the topic received the run's event minus the run's terminal time (its `runs.create`
time plus its duration, as the scripts have no queued time).
"""

from __future__ import annotations

import json
from collections import Counter
from collections.abc import Iterator, Mapping, Sequence
from contextlib import contextmanager
from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Any

from devhost.agents_service import RunScript
from tests.relay_bed import RelayBed, relay_bed

from .schedules import MICROS, submission_id_for, to_micros
from .workload import WorkloadRun, idempotency_key

DURATION_KEY = "benchDurationSeconds"
# Long enough for every workload run; the deadline only caps timers.
DEADLINE_SECONDS = 7 * 24 * 3600


@dataclass(frozen=True)
class RelayRun:
    """What the services saw of one submission."""

    index: int
    duration: float
    group: str
    submission_id: str
    status: str
    polls: int  # runs.get calls for this run
    detected_us: int  # last runs.get, us after runs.create
    delay: float  # topic receipt - terminal time, seconds
    event_polls: int  # the event's data.polls
    generations: int
    history_lengths: tuple[int, ...]  # events per generation

    @property
    def max_history(self) -> int:
        return max(self.history_lengths)


@dataclass(frozen=True)
class ShardResult:
    runs: list[RelayRun]
    agents_calls: dict[str, int]  # every operation the Agents service saw, by name
    episodes: int
    replayed_events: int
    activity_executions: dict[str, int]


def _script_for(body: Any, _thread_id: str) -> RunScript | None:
    metadata = body.get("metadata") if isinstance(body, dict) else None
    if not isinstance(metadata, dict) or DURATION_KEY not in metadata:
        return None
    return RunScript(queued_seconds=0, duration_seconds=float(metadata[DURATION_KEY]))


@contextmanager
def bench_bed(settings: Mapping[str, str] | None = None) -> Iterator[RelayBed]:
    """The product's test bed, with run durations read from each submission's metadata."""
    with relay_bed(settings={"FAST_PATH_SECONDS": "0", **(settings or {})}) as bed:
        bed.agents.script_for = _script_for
        yield bed


def submit(bed: RelayBed, run: WorkloadRun, **fields: Any) -> str:
    key = idempotency_key(run.index)
    body = {
        "agentId": bed.agent_id,
        "input": "benchmark run",
        "metadata": {DURATION_KEY: repr(run.duration)},
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


def _micros_between(later: datetime, earlier: datetime) -> int:
    return (later - earlier) // timedelta(microseconds=1)


def collect(bed: RelayBed, run: WorkloadRun, submission_id: str) -> RelayRun:
    """Read one finished submission back from the services' own records."""
    view = bed.status(submission_id)
    run_id = view["agentRun"]["runId"]
    requests = [r for r in bed.agents.requests if f"/runs/{run_id}" in r.path]
    (create,) = [
        r
        for r in bed.agents.calls("runs.create")
        if isinstance(r.response, dict) and r.response.get("id") == run_id
    ]
    gets = [r for r in requests if r.operation == "runs.get"]
    terminal_us = to_micros(run.duration)
    events = [
        received
        for received in bed.topic.events
        if received.event.get("data", {}).get("submissionId") == submission_id
    ]
    if len(events) != 1:
        raise AssertionError(f"{submission_id}: {len(events)} events published, expected 1")
    published = events[0]
    delay_us = _micros_between(published.received_at, create.time) - terminal_us
    instance = bed.host.instance(submission_id)
    assert instance is not None
    return RelayRun(
        index=run.index,
        duration=run.duration,
        group=run.group,
        submission_id=submission_id,
        status=str(view["status"]),
        polls=len(gets),
        detected_us=_micros_between(gets[-1].time, create.time) if gets else 0,
        delay=delay_us / MICROS,
        event_polls=int(published.event["data"]["polls"]),
        generations=instance.generation + 1,
        history_lengths=tuple(instance.history_lengths),
    )


def run_workload(
    runs: Sequence[WorkloadRun], settings: Mapping[str, str] | None = None
) -> ShardResult:
    """Submit every run at once, drive the host until all are done, read the results back."""
    with bench_bed(settings) as bed:
        ids = [(run, submit(bed, run)) for run in runs]
        bed.host.run_all_until_complete(max_steps=10_000_000)
        measured = [collect(bed, run, submission_id) for run, submission_id in ids]
        stats = bed.host.stats
        return ShardResult(
            runs=measured,
            agents_calls=dict(Counter(r.operation for r in bed.agents.requests)),
            episodes=stats.episodes,
            replayed_events=stats.replayed_events,
            activity_executions=dict(stats.activity_executions),
        )

"""Our orchestrator, for real: workload runs submitted through POST /api/runs on the test bed.

Everything runs in virtual time on the emulated Functions host with the real app
(`function_app`), the loopback Agents service and the local Event Grid topic. Polls are the
`runs.get` calls the service recorded for each run; the detection delay is the virtual time
at which the topic received the run's event minus the run's terminal time (its `runs.create`
time plus its duration, as the scripts have no queued time).
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Iterator, Mapping, Sequence
from contextlib import contextmanager
from dataclasses import dataclass
from typing import Any

from devhost.agents_service import RunScript
from tests.relay_bed import RelayBed, relay_bed

from .submissions import DURATION_KEY, BedRun, finished_instance, read_back, run_all, submit_run
from .workload import WorkloadRun


@dataclass(frozen=True)
class RelayRun(BedRun):
    """What the services saw of one submission; its polls are the run's runs.get calls."""

    generations: int


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
    agent = {"agentId": bed.agent_id}
    return submit_run(bed, run, agent, {DURATION_KEY: repr(run.duration)}, **fields)


def collect(bed: RelayBed, run: WorkloadRun, submission_id: str) -> RelayRun:
    """Read one finished submission back from the services' own records."""
    view = bed.status(submission_id)
    run_id = view["agentRun"]["runId"]
    (create,) = [
        r
        for r in bed.agents.calls("runs.create")
        if isinstance(r.response, dict) and r.response.get("id") == run_id
    ]
    gets = [
        r for r in bed.agents.requests if f"/runs/{run_id}" in r.path and r.operation == "runs.get"
    ]
    instance = finished_instance(bed, submission_id)
    seen = read_back(bed, run, submission_id, view, instance, create.time, [r.time for r in gets])
    # The shared reading's fields, as read_back typed them, plus the classic-only ones.
    return RelayRun(**vars(seen), generations=instance.generation + 1)


def run_workload(
    runs: Sequence[WorkloadRun], settings: Mapping[str, str] | None = None
) -> ShardResult:
    """Submit every run at once, drive the host until all are done, read the results back."""
    with bench_bed(settings) as bed:
        submitted = run_all(bed, runs, submit)
        measured = [collect(bed, run, submission_id) for run, submission_id in submitted]
        stats = bed.host.stats
        return ShardResult(
            runs=measured,
            agents_calls=dict(Counter(r.operation for r in bed.agents.requests)),
            episodes=stats.episodes,
            replayed_events=stats.replayed_events,
            activity_executions=dict(stats.activity_executions),
        )

"""Wall-clock measurements: the SDK's own `runs.create_and_process`, and our fast path.

- `create_and_process` (sync `azure.ai.agents`) against a loopback Agents service on the
  wall clock (`WallClock`): its GET count and how long after the run's end it returned.
- The relay with its default `FAST_PATH_SECONDS=10` on the test bed: the start activity
  streams the run, and the loopback service's clock follows the wall while a stream is open.
"""

from __future__ import annotations

import threading
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import datetime, timedelta

from devhost.agents_service import AgentsService, RunScript, make_sync_client
from devhost.clock import WallClock
from shared.adapters.settings import DEFAULT_FAST_PATH_SECONDS

from .relay_runs import bench_bed, collect, submit
from .workload import WorkloadRun

FAST_PATH_INDEX_BASE = 200_000


@dataclass(frozen=True)
class WallRun:
    duration: float
    gets: int
    delay: float  # seconds from the run's end to the GET that saw it (create_and_process)
    status: str


@dataclass(frozen=True)
class FastPathRun:
    duration: float
    polls: int
    delay: float
    status: str
    submission_id: str
    detected_us: int  # the last GET, us after the run's creation (0: no GET)


def _seconds(later: datetime, earlier: datetime) -> float:
    return (later - earlier) / timedelta(seconds=1)


def measure_create_and_process(durations: Sequence[float]) -> list[WallRun]:
    """Run `create_and_process` for each duration at once (one thread each), in real time."""
    results: dict[float, WallRun] = {}
    with AgentsService(WallClock()) as service, make_sync_client(service) as client:
        agents = {}
        for duration in durations:
            agent = client.create_agent(model="gpt-4o-mini", name=f"wall-{duration:g}")
            service.scripts_by_agent[agent.id] = RunScript(
                queued_seconds=0, duration_seconds=duration
            )
            agents[duration] = agent.id
        errors: list[BaseException] = []

        def one(duration: float) -> None:
            try:
                thread = client.threads.create()
                run = client.runs.create_and_process(thread.id, agent_id=agents[duration])
                (create,) = [
                    r
                    for r in service.calls("runs.create")
                    if isinstance(r.response, dict) and r.response.get("id") == run.id
                ]
                gets = [r for r in service.calls("runs.get") if r.path.endswith(f"/runs/{run.id}")]
                terminal = create.time + timedelta(seconds=duration)
                results[duration] = WallRun(
                    duration=duration,
                    gets=len(gets),
                    delay=_seconds(gets[-1].time, terminal),
                    status=str(getattr(run.status, "value", run.status)),
                )
            except BaseException as exc:  # reported by the caller's thread
                errors.append(exc)

        threads = [threading.Thread(target=one, args=(d,)) for d in durations]
        for worker in threads:
            worker.start()
        for worker in threads:
            worker.join()
        if errors:
            raise errors[0]
    return [results[d] for d in durations]


def measure_fast_path(
    durations: Sequence[float], window_seconds: float = DEFAULT_FAST_PATH_SECONDS
) -> list[FastPathRun]:
    """Our app with the fast path on (the default window), on the test bed.

    One submission at a time: the emulated host runs activities one after another, so a
    second stream would hold the first run's publish back (the Functions host runs them
    concurrently).
    """
    measured = []
    with bench_bed({"FAST_PATH_SECONDS": f"{window_seconds:g}"}) as bed:
        for i, duration in enumerate(durations):
            run = WorkloadRun(FAST_PATH_INDEX_BASE + i, duration, "fast-path")
            submission_id = submit(bed, run)
            bed.host.run_until_complete(submission_id, max_steps=1_000_000)
            measured.append(collect(bed, run, submission_id))
    return [
        FastPathRun(m.duration, m.polls, m.delay, m.status, m.submission_id, m.detected_us)
        for m in measured
    ]

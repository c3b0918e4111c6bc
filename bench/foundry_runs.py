"""The Foundry backend (OpenAI Responses API in background mode), measured as relay_runs.py
measures the classic one.

Submissions `{"agent": {"name": ...}, "input": ...}` go through POST /api/runs on the test bed
(the real `function_app` on the emulated host, the loopback Foundry project service, the local
Event Grid topic). Each response is scripted from the submission's metadata (which the relay
copies onto the response): `queued_seconds`, `duration_seconds` and, for the fast path, the
event after which the service cuts the first stream (`stream_drop_after`). Polls are the
`responses.retrieve` calls the service recorded for the response (streams left out); resumes are
the `GET /responses/{id}?stream=true&starting_after=N` calls; the delay is the time at which
the topic received the event minus the response's terminal time (its create time + queued +
duration).
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Iterator, Mapping, Sequence
from contextlib import contextmanager
from dataclasses import dataclass
from typing import Any

from devhost.foundry_service import RecordedRequest, ResponseScript
from tests.relay_bed import RelayBed

from .relay_runs import bench_bed
from .submissions import DURATION_KEY, BedRun, finished_instance, read_back, run_all, submit_run
from .workload import WorkloadRun

QUEUED_KEY = "benchQueuedSeconds"
DROP_KEY = "benchStreamDropAfter"


@dataclass(frozen=True)
class FoundryRun(BedRun):
    """What the services saw of one Foundry submission.

    `duration` is queued + in progress; its polls are the response's responses.retrieve calls,
    streams left out.
    """

    queued: float  # the script's queued_seconds (the rest of `duration` in progress)
    drop_after: int | None  # the event after which the first stream was cut (None: never)
    resumes: int  # GET /responses/{id}?stream=true&starting_after=N calls
    last_sequence: int | None  # the last stream event the relay was sent (None: no stream)
    final_sequence: int  # the response's last event (its terminal event's number)
    responses: int  # responses the submission made (1: no duplicate create)


@dataclass(frozen=True)
class FoundryShard:
    runs: list[FoundryRun]
    calls: dict[str, int]  # every operation the Foundry service saw, by name


def _script_for(body: Any) -> ResponseScript | None:
    metadata = body.get("metadata") if isinstance(body, dict) else None
    if not isinstance(metadata, dict) or DURATION_KEY not in metadata:
        return None
    total = float(metadata[DURATION_KEY])
    queued = float(metadata.get(QUEUED_KEY, 0.0))
    drop = metadata.get(DROP_KEY)
    return ResponseScript(
        queued_seconds=queued,
        duration_seconds=total - queued,
        output_text="benchmark answer",
        stream_drop_after=None if drop is None else int(drop),
    )


@contextmanager
def foundry_bed(settings: Mapping[str, str] | None = None) -> Iterator[RelayBed]:
    """The bench's test bed, with response scripts read from each submission's metadata."""
    with bench_bed(settings) as bed:
        bed.foundry.script_for = _script_for
        yield bed


def submit_foundry(
    bed: RelayBed, run: WorkloadRun, queued: float = 0.0, drop_after: int | None = None
) -> str:
    metadata = {DURATION_KEY: repr(run.duration), QUEUED_KEY: repr(queued)}
    if drop_after is not None:
        metadata[DROP_KEY] = str(drop_after)
    return submit_run(bed, run, {"agent": {"name": bed.foundry_agent}}, metadata)


def _created_id(request: RecordedRequest) -> str | None:
    """The response a create made: from its JSON answer, or its stream's first event."""
    if isinstance(request.response, dict):
        return str(request.response.get("id"))
    for event in request.events:
        response = event.get("response")
        if isinstance(response, dict):
            return str(response.get("id"))
    return None


def collect_foundry(
    bed: RelayBed,
    run: WorkloadRun,
    submission_id: str,
    creates: Mapping[str, RecordedRequest],
    queued: float = 0.0,
    drop_after: int | None = None,
) -> FoundryRun:
    """Read one finished Foundry submission back from the services' own records.

    `creates`: the service's responses.create requests by the response they made.
    """
    view = bed.status(submission_id)
    response_ids = list(view["agentRun"].get("responseIds") or [])
    if not response_ids:
        raise AssertionError(f"{submission_id}: no response ({view['status']})")
    response_id = str(response_ids[-1])
    create = creates[response_id]
    retrieves = [
        r
        for r in bed.foundry.requests
        if r.operation == "responses.retrieve" and r.path.endswith(f"/responses/{response_id}")
    ]
    polls = [r for r in retrieves if r.query.get("stream") != "true"]
    resumes = [r for r in retrieves if r.query.get("stream") == "true"]
    if any("starting_after" not in r.query for r in resumes):
        raise AssertionError(f"{submission_id}: a stream was reopened from its start")
    sequences = [e["sequence_number"] for r in (create, *resumes) for e in r.events]
    instance = finished_instance(bed, submission_id)
    seen = read_back(bed, run, submission_id, view, instance, create.time, [r.time for r in polls])
    # The shared reading's fields, as read_back typed them, plus the Foundry-only ones.
    return FoundryRun(
        **vars(seen),
        queued=queued,
        drop_after=drop_after,
        resumes=len(resumes),
        last_sequence=max(sequences) if sequences else None,
        final_sequence=int(bed.foundry.events(response_id)[-1]["sequence_number"]),
        responses=len(response_ids),
    )


def creates_by_response(bed: RelayBed) -> dict[str, RecordedRequest]:
    found: dict[str, RecordedRequest] = {}
    for request in bed.foundry.calls("responses.create"):
        response_id = _created_id(request)
        if response_id is not None:
            found[response_id] = request
    return found


def run_foundry_workload(
    runs: Sequence[WorkloadRun], settings: Mapping[str, str] | None = None
) -> FoundryShard:
    """Submit every run at once for the Foundry agent, drive the host until all are done."""
    with foundry_bed(settings) as bed:
        submitted = run_all(bed, runs, submit_foundry)
        creates = creates_by_response(bed)
        measured = [collect_foundry(bed, run, sid, creates) for run, sid in submitted]
        return FoundryShard(
            runs=measured, calls=dict(Counter(r.operation for r in bed.foundry.requests))
        )


def measure_foundry_fast_path(
    runs: Sequence[WorkloadRun], window_seconds: float, drop_after: int | None = None
) -> list[FoundryRun]:
    """Foundry responses on the fast path (wall clock), one submission at a time.

    Each response is queued for the first half of its duration and in progress for the
    second: `response.in_progress` (event 1) comes half-way, so `drop_after=1` cuts the
    create's stream there and the relay resumes it after event 1.
    """
    measured = []
    with foundry_bed({"FAST_PATH_SECONDS": f"{window_seconds:g}"}) as bed:
        for run in runs:
            queued = round(run.duration / 2, 3)
            submission_id = submit_foundry(bed, run, queued, drop_after)
            bed.host.run_until_complete(submission_id, max_steps=1_000_000)
            measured.append(
                collect_foundry(
                    bed, run, submission_id, creates_by_response(bed), queued, drop_after
                )
            )
    return measured

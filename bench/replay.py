"""Replay cost: CPU time to replay the orchestrator at the end of long runs.

A run is driven on the test bed; the emulated host keeps, per instance, the exact JSON it last
sent to the SDK (`InstanceView.last_context`). That context is then replayed through the
orchestrator's entry point the way the host (and the Python worker) invokes it:
OrchestrationTriggerConverter.decode -> the registered user function -> encode, timed with
`time.process_time`. The emulated host memoizes the SDK's timestamp parser for speed; the
measurement puts the original parser back, as in a real worker.
"""

from __future__ import annotations

import gc
import importlib
import json
import statistics
import time
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass
from typing import Any

from azure.functions.durable_functions import OrchestrationTriggerConverter
from azure.functions.meta import Datum

from .relay_runs import bench_bed, submit
from .workload import WorkloadRun

REPLAY_INDEX_BASE = 100_000  # keeps these submissions' ids apart from the workload's
MAX_POLLS_PER_GENERATION = 1000  # the setting's upper bound


@dataclass(frozen=True)
class ReplayContext:
    duration: float
    polls_per_generation: int
    polls: int
    generations: int
    end_events: int
    end_context: str  # the JSON the host last sent to the SDK, at the run's end
    peak_events: int
    peak_context: str  # the largest context seen during the run


@dataclass(frozen=True)
class ReplayCost:
    median_ms: float
    min_ms: float
    repeats: int


def capture_contexts(
    durations: Sequence[float], polls_per_generation: int, *, track_peak: bool
) -> list[ReplayContext]:
    """Run one submission per duration to its end and keep the contexts to replay."""
    settings = {"POLLS_PER_GENERATION": str(polls_per_generation)}
    with bench_bed(settings) as bed:
        # The same submission ids whatever the generation size: only continue-as-new differs.
        runs = [WorkloadRun(REPLAY_INDEX_BASE + i, d, "replay") for i, d in enumerate(durations)]
        ids = [submit(bed, run) for run in runs]
        peaks: dict[str, tuple[int, str]] = {}
        if track_peak:
            bed.host.run_until_idle()
            while True:
                views = [bed.host.instance(i) for i in ids]
                for view in views:
                    if view is not None and view.last_context is not None:
                        size = len(view.last_context["history"])
                        if size > peaks.get(view.instance_id, (-1, ""))[0]:
                            peaks[view.instance_id] = (size, json.dumps(view.last_context))
                if all(v is not None and v.is_finished for v in views):
                    break
                if not bed.host.advance_to_next_timer():
                    raise RuntimeError("replay runs stalled")
        else:
            bed.host.run_all_until_complete(max_steps=10_000_000)
        captured = []
        for run, submission_id in zip(runs, ids, strict=True):
            view = bed.host.instance(submission_id)
            assert view is not None
            assert view.last_context is not None
            if view.runtime_status != "Completed":
                raise RuntimeError(f"replay run {submission_id}: {view.runtime_status}")
            end = json.dumps(view.last_context)
            end_events = len(view.last_context["history"])
            peak_events, peak = peaks.get(submission_id, (end_events, end))
            status = bed.status(submission_id)
            captured.append(
                ReplayContext(
                    duration=run.duration,
                    polls_per_generation=polls_per_generation,
                    polls=int(status["polls"]),
                    generations=view.generation + 1,
                    end_events=end_events,
                    end_context=end,
                    peak_events=max(peak_events, end_events),
                    peak_context=peak if peak_events > end_events else end,
                )
            )
        return captured


@contextmanager
def sdk_timestamp_parser_unmemoized() -> Iterator[None]:
    """Undo the emulated host's memoization of the SDK's dateutil parser, for the timing."""
    module: Any = importlib.import_module("azure.durable_functions.models.history.HistoryEvent")
    memoized = module.dt_parse
    original = getattr(memoized, "__wrapped__", None)
    if original is not None:
        module.dt_parse = original
    try:
        yield
    finally:
        module.dt_parse = memoized


def replay_once(function: Any, context_json: str) -> Any:
    """One orchestrator invocation as the worker performs it (decode, call, encode)."""
    context = OrchestrationTriggerConverter.decode(
        Datum(context_json, "json"), trigger_metadata=None
    )
    returned = function.user_function(**{function.trigger_binding_name: context})
    return OrchestrationTriggerConverter.encode(returned, expected_type=None)


def measure_replay(
    function: Any, context_json: str, *, budget_seconds: float = 0.4, max_repeats: int = 200
) -> ReplayCost:
    """CPU time of one replay (repeats within a CPU budget, at least 5; min and median).

    The garbage collector is paused while timing (as `timeit` does), so a collection
    triggered by earlier allocations is not charged to one replay.
    """
    samples: list[float] = []
    gc.collect()
    was_enabled = gc.isenabled()
    gc.disable()
    try:
        return _measure(function, context_json, samples, budget_seconds, max_repeats)
    finally:
        if was_enabled:
            gc.enable()


def _measure(
    function: Any,
    context_json: str,
    samples: list[float],
    budget_seconds: float,
    max_repeats: int,
) -> ReplayCost:
    with sdk_timestamp_parser_unmemoized():
        replay_once(function, context_json)  # warm imports and caches unrelated to the history
        spent = 0.0
        while len(samples) < 5 or (spent < budget_seconds and len(samples) < max_repeats):
            started = time.process_time()
            replay_once(function, context_json)
            elapsed = time.process_time() - started
            samples.append(elapsed)
            spent += elapsed
    return ReplayCost(
        median_ms=statistics.median(samples) * 1000,
        min_ms=min(samples) * 1000,
        repeats=len(samples),
    )

"""Run every benchmark, check the results against each other and the targets, write the doc."""

from __future__ import annotations

import multiprocessing
import os
import time
from collections import Counter
from collections.abc import Callable, Sequence
from concurrent.futures import Future, ProcessPoolExecutor
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any, TypeVar

from shared.settings import DEFAULT_FAST_PATH_SECONDS, DEFAULT_POLLS_PER_GENERATION

from .baseline_runs import HostBaselineRun, run_baselines_on_host
from .client_reuse import ClientReuseResult, measure_client_reuse
from .frontier import (
    GRID_FAST_PATH,
    GRID_INITIAL,
    GRID_JITTER,
    GRID_MAX,
    GRID_MULTIPLIER,
    Dominance,
    Point,
    WindowRow,
    compare,
    evaluate,
    grid,
    neighbourhood,
    schedule_of,
    sweep,
    window_sweep,
)
from .relay_runs import RelayRun, ShardResult, bench_bed, run_workload
from .replay import (
    MAX_POLLS_PER_GENERATION,
    REPLAY_INDEX_BASE,
    ReplayContext,
    ReplayCost,
    capture_contexts,
    measure_replay,
)
from .schedules import (
    DEFAULT_POLICY,
    Deployment,
    Outcome,
    RelaySchedule,
    Strategy,
    baselines,
    simulate,
    submission_id_for,
    tenacity_available,
    tenacity_detects,
    to_micros,
)
from .targets import TargetCheck, check_exact, check_runs
from .wallclock import FastPathRun, WallRun, measure_create_and_process, measure_fast_path
from .workload import HeavyTail, Workload, WorkloadRun, idempotency_key

T = TypeVar("T")
ROOT = Path(__file__).resolve().parents[1]
DOCS = ROOT / "docs"

# Baselines run through the emulated host, up to these durations (longer ones follow the
# same validated shape; a fixed 1 s loop over 2 h would be a 57 600-event history).
HOST_BASELINE_MAX_DURATION = {"fixed-1s": 60.0, "tenacity": 1800.0, "monitor-60s": 7200.0}


@dataclass(frozen=True)
class BenchConfig:
    workload: Workload = field(default_factory=Workload)
    shards: int = 6
    workers: int = 2  # processes for the virtual-time jobs; 0 runs everything in-process
    replay_durations: tuple[float, ...] = (60.0, 3600.0, 6 * 3600.0)
    replay_polls_per_generation: int = DEFAULT_POLLS_PER_GENERATION
    wall_durations: tuple[float, ...] = (3.0, 15.0)
    fast_path_durations: tuple[float, ...] = (3.0, 15.0, 60.0)
    fast_path_windows: tuple[float, ...] = (0.0, 2.0, 5.0, 10.0, 20.0, 30.0, 60.0)
    client_reuse_calls: int = 150
    client_reuse_rounds: int = 3
    grid_initial: tuple[float, ...] = GRID_INITIAL
    grid_max: tuple[float, ...] = GRID_MAX
    grid_multiplier: tuple[float, ...] = GRID_MULTIPLIER
    grid_jitter: tuple[float, ...] = GRID_JITTER
    grid_fast_path: tuple[float, ...] = GRID_FAST_PATH
    exact_seeds: int = 300  # submission ids for the exact all-durations target check
    exact_horizon: float = 6 * 3600.0


QUICK = BenchConfig(
    workload=Workload(
        round_durations=(3.0, 15.0, 60.0, 300.0),
        round_replicas=1,
        heavy_tail=HeavyTail(count=4, max_seconds=600.0),
    ),
    shards=1,
    workers=0,
    replay_durations=(60.0, 600.0),
    replay_polls_per_generation=5,
    wall_durations=(),
    fast_path_durations=(),
    client_reuse_calls=10,
    client_reuse_rounds=1,
    grid_initial=(1.0, 2.0),
    grid_max=(10.0, 30.0),
    grid_multiplier=(1.5, 2.0),
    grid_jitter=(0.1,),
    exact_seeds=5,
    exact_horizon=3600.0,
)


@dataclass(frozen=True)
class StrategyResult:
    key: str
    label: str
    deployment: Deployment
    first_us: int  # when the first check is due (0: no timer before it)
    outcomes: list[Outcome]  # aligned with Results.runs


@dataclass(frozen=True)
class ReplayRow:
    duration: float
    continue_as_new: bool
    polls_per_generation: int
    polls: int
    generations: int
    end_events: int
    end: ReplayCost
    peak_events: int
    peak: ReplayCost


@dataclass(frozen=True)
class FrontierResult:
    family: list[Point]
    default: Point  # the app's defaults: DEFAULT_POLICY with the fast path on
    durable_default: Point  # the same schedule with FAST_PATH_SECONDS=0 (measured for real)
    baselines: list[Point]
    dominance: list[Dominance]
    neighbours: list[Point]  # the default with each parameter 5 % lower/higher
    no_jitter: Point  # the default with POLL_JITTER=0


@dataclass(frozen=True)
class FastPathCheck:
    """A wall-clock fast-path run of the real app next to the simulator's prediction."""

    run: FastPathRun
    simulated: Outcome


@dataclass
class Results:
    config: BenchConfig
    runs: list[WorkloadRun]
    seeds: list[str]
    measured: list[RelayRun]
    agents_calls: dict[str, int]
    episodes: int
    replayed_events: int
    strategies: list[StrategyResult]
    host_baselines: list[HostBaselineRun]
    replay: list[ReplayRow]
    client_reuse: ClientReuseResult | None
    wall: list[WallRun]
    fast_path: list[FastPathRun]
    frontier: FrontierResult
    targets_workload: TargetCheck
    targets_exact: TargetCheck
    targets_exact_fast_path: TargetCheck
    fast_path_checks: list[FastPathCheck]
    fast_path_windows: list[WindowRow]
    with_tenacity: bool
    timings: dict[str, float] = field(default_factory=dict)
    cpu_count: int = 0


# ------------------------------------------------------------------------------ jobs


def _shards(runs: Sequence[WorkloadRun], count: int) -> list[list[WorkloadRun]]:
    """Spread runs over shards so that each gets a similar number of polls."""
    ordered = sorted(runs, key=lambda r: r.duration, reverse=True)
    shards: list[list[WorkloadRun]] = [[] for _ in range(max(1, count))]
    for i, run in enumerate(ordered):
        lap, slot = divmod(i, len(shards))
        shards[slot if lap % 2 == 0 else len(shards) - 1 - slot].append(run)
    return [sorted(s, key=lambda r: r.index) for s in shards if s]


def _host_cases(
    config: BenchConfig, strategies: Sequence[Strategy]
) -> list[tuple[Strategy, float]]:
    return [
        (strategy, duration)
        for strategy in strategies
        for duration in config.workload.round_durations
        if duration <= HOST_BASELINE_MAX_DURATION.get(strategy.key, 0.0)
    ]


def _wall_job(config: BenchConfig) -> tuple[list[WallRun], list[FastPathRun]]:
    wall = measure_create_and_process(config.wall_durations) if config.wall_durations else []
    fast = measure_fast_path(config.fast_path_durations) if config.fast_path_durations else []
    return wall, fast


def _frontier_job(
    config: BenchConfig, runs: list[tuple[float, str]], fast_path: float
) -> list[Point]:
    schedules = grid(
        config.grid_initial,
        config.grid_max,
        config.grid_multiplier,
        config.grid_jitter,
        (fast_path,),
    )
    return sweep(schedules, runs)


def _neighbourhood_job(
    config: BenchConfig, runs: list[tuple[float, str]]
) -> tuple[list[Point], Point]:
    """The default's neighbours and the default without jitter: their runs-missing-a-target
    count covers the workload and the exact all-durations check (fewer ids)."""
    no_jitter = replace(DEFAULT_POLICY, jitter=0.0)
    policies = [*neighbourhood(DEFAULT_POLICY), no_jitter]
    schedules = [schedule_of(p, DEFAULT_FAST_PATH_SECONDS, "neighbour") for p in policies]
    seeds = _exact_seeds(max(1, config.exact_seeds // 5))
    points = []
    for policy, point in zip(policies, sweep(schedules, runs), strict=True):
        exact = check_exact(
            seeds, policy, config.exact_horizon, fast_path_seconds=DEFAULT_FAST_PATH_SECONDS
        )
        points.append(replace(point, target_misses=point.target_misses + len(exact.violations)))
    return points[:-1], points[-1]


def _exact_seeds(count: int) -> list[str]:
    return [submission_id_for(f"bench-exact-{i}") for i in range(count)]


def _exact_job(config: BenchConfig, fast_path: float = 0.0) -> TargetCheck:
    return check_exact(
        _exact_seeds(config.exact_seeds),
        horizon=config.exact_horizon,
        fast_path_seconds=fast_path,
    )


class _Runner:
    """Submit jobs to a process pool, or run them here when there is none."""

    def __init__(self, pool: ProcessPoolExecutor | None) -> None:
        self.pool = pool

    def submit(self, fn: Callable[..., T], *args: Any, **kwargs: Any) -> Future[T]:
        if self.pool is not None:
            return self.pool.submit(fn, *args, **kwargs)
        future: Future[T] = Future()
        future.set_result(fn(*args, **kwargs))
        return future


# ------------------------------------------------------------------------------ checks


def _check_ours(
    runs: Sequence[WorkloadRun], measured: Sequence[RelayRun], ours: StrategyResult
) -> None:
    """The simulator must reproduce the real orchestrator's polls and detection times."""
    for run, real, sim in zip(runs, measured, ours.outcomes, strict=True):
        problems = []
        if real.status != "completed":
            problems.append(f"status {real.status}")
        if real.polls != sim.polls or real.event_polls != real.polls:
            problems.append(
                f"polls {real.polls} (event {real.event_polls}) vs simulated {sim.polls}"
            )
        if real.detected_us != sim.detected_us:
            problems.append(f"detected at {real.detected_us} us vs simulated {sim.detected_us}")
        if abs(real.delay - (sim.delay(run.duration) or 0.0)) > 1e-6:
            problems.append(f"delay {real.delay} vs simulated {sim.delay(run.duration)}")
        if problems:
            raise AssertionError(f"run {run.index} ({run.duration} s): " + "; ".join(problems))


def _check_tenacity(runs: Sequence[WorkloadRun], result: StrategyResult) -> None:
    """The simulated recipe must equal tenacity's own Retrying loop on every duration."""
    for run, outcome in zip(runs, result.outcomes, strict=True):
        polls, detected = tenacity_detects(run.duration)
        expected = None if outcome.detected_us is None else outcome.detected_us / 1_000_000
        if polls != outcome.polls or detected != expected:
            raise AssertionError(f"tenacity on {run.duration} s: {polls}/{detected} vs {outcome}")


# How far a wall-clock stream may overrun its window before the fallback (asyncio timeout,
# closing the response, the orchestrator's next episode).
FAST_PATH_SLACK_US = 250_000


def _check_fast_path(runs: Sequence[FastPathRun]) -> list[FastPathCheck]:
    """The simulator's fast path must predict the real app's wall-clock runs.

    Streams run on the wall clock, so the fallback lands a few ms after the window: the
    detection instant may differ by that much, and the poll count must match unless a
    simulated check falls within that slack of the run's end.
    """
    schedule = RelaySchedule(fast_path_seconds=DEFAULT_FAST_PATH_SECONDS)
    checks = []
    for run in runs:
        simulated = simulate(schedule, run.duration, run.submission_id)
        checks.append(FastPathCheck(run, simulated))
        if run.status != "completed":
            raise AssertionError(f"fast path run {run.duration} s ended {run.status}")
        end_us = to_micros(run.duration)
        near = False
        for at in schedule.poll_offsets(run.submission_id):
            if at >= end_us + FAST_PATH_SLACK_US:
                break
            near = near or abs(at - end_us) < FAST_PATH_SLACK_US
        detected = simulated.detected_us or 0
        if not near and (
            run.polls != simulated.polls
            or (run.polls and abs(run.detected_us - detected) > FAST_PATH_SLACK_US)
        ):
            raise AssertionError(f"fast path run {run} vs simulated {simulated}")
    return checks


def _check_host_baselines(results: Sequence[HostBaselineRun]) -> None:
    for r in results:
        if (r.polls, r.detected_us) != (r.simulated_polls, r.simulated_detected_us):
            raise AssertionError(f"host vs simulator differ for {r}")
        if r.history_events != r.analytic_history:
            raise AssertionError(f"history events differ from the DTFx shape for {r}")


# ------------------------------------------------------------------------------ run


def run(config: BenchConfig = BenchConfig(), log: Callable[[str], None] = print) -> Results:
    started = time.perf_counter()
    timings: dict[str, float] = {}
    workload = config.workload
    runs = workload.runs()
    seeds = [submission_id_for(idempotency_key(r.index)) for r in runs]
    with_tenacity = tenacity_available()
    base = baselines(with_tenacity=with_tenacity)
    # One generation must hold a whole replay run: start + polls + publish steps.
    steps_needed = 2 + max(
        simulate(
            RelaySchedule(), d, submission_id_for(idempotency_key(REPLAY_INDEX_BASE + i))
        ).polls
        for i, d in enumerate(config.replay_durations)
    )
    if steps_needed > MAX_POLLS_PER_GENERATION:
        raise RuntimeError(
            f"a no-continue-as-new replay run needs {steps_needed} steps in one generation, "
            f"more than POLLS_PER_GENERATION allows ({MAX_POLLS_PER_GENERATION})"
        )

    context = multiprocessing.get_context("spawn")
    pool = ProcessPoolExecutor(config.workers, mp_context=context) if config.workers else None
    wall_pool = ProcessPoolExecutor(1, mp_context=context) if config.workers else None
    try:
        runner, wall_runner = _Runner(pool), _Runner(wall_pool)
        log(f"bench: {len(runs)} workload runs, {config.workers or 'no'} worker processes")
        wall_future = wall_runner.submit(_wall_job, config)
        no_can_future = runner.submit(
            capture_contexts, config.replay_durations, MAX_POLLS_PER_GENERATION, track_peak=False
        )
        shard_futures = [
            runner.submit(run_workload, shard) for shard in _shards(runs, config.shards)
        ]
        can_future = runner.submit(
            capture_contexts,
            config.replay_durations,
            config.replay_polls_per_generation,
            track_peak=True,
        )
        host_future = runner.submit(run_baselines_on_host, _host_cases(config, base))
        pairs = [(r.duration, s) for r, s in zip(runs, seeds, strict=True)]
        frontier_futures = [
            runner.submit(_frontier_job, config, pairs, fast_path)
            for fast_path in config.grid_fast_path
        ]
        neighbourhood_future = runner.submit(_neighbourhood_job, config, pairs)
        exact_future = runner.submit(_exact_job, config)
        exact_fast_future = runner.submit(_exact_job, config, DEFAULT_FAST_PATH_SECONDS)

        shards: list[ShardResult] = [f.result() for f in shard_futures]
        timings["workload (real orchestrator)"] = time.perf_counter() - started
        log(f"bench: workload done after {timings['workload (real orchestrator)']:.0f} s")
        host_runs = host_future.result()
        family = [point for future in frontier_futures for point in future.result()]
        neighbours, no_jitter = neighbourhood_future.result()
        exact = exact_future.result()
        exact_fast = exact_fast_future.result()
        can_contexts = can_future.result()
        no_can_contexts = no_can_future.result()
        timings["virtual-time jobs"] = time.perf_counter() - started
        wall, fast_path = wall_future.result()
        log(f"bench: parallel jobs done after {time.perf_counter() - started:.0f} s")
    finally:
        for executor in (pool, wall_pool):
            if executor is not None:
                executor.shutdown()

    by_index = {m.index: m for shard in shards for m in shard.runs}
    measured = [by_index[r.index] for r in runs]
    calls: Counter[str] = Counter()
    for shard in shards:
        calls.update(shard.agents_calls)

    ours_strategy = RelaySchedule()
    strategies = [
        StrategyResult(
            s.key,
            s.label,
            s.deployment,
            next(iter(s.poll_offsets(""))),
            [simulate(s, r.duration, seed) for r, seed in zip(runs, seeds, strict=True)],
        )
        for s in [ours_strategy, *base]
    ]
    _check_ours(runs, measured, strategies[0])
    if with_tenacity:
        _check_tenacity(runs, next(s for s in strategies if s.key == "tenacity"))
    _check_host_baselines(host_runs)

    targets_workload = check_runs(
        f"{len(runs)} workload runs (real orchestrator)",
        ((m.duration, m.submission_id, m.polls, m.delay) for m in measured),
    )
    durable_point = evaluate(ours_strategy, pairs)
    default_point = evaluate(
        RelaySchedule(
            DEFAULT_POLICY,
            key="ours-default",
            label=f"ours, defaults ({DEFAULT_FAST_PATH_SECONDS:g} s fast path, 2 s, x1.5, "
            "cap 30 s)",
            fast_path_seconds=DEFAULT_FAST_PATH_SECONDS,
        ),
        pairs,
    )
    baseline_points = [evaluate(s, pairs) for s in base]
    fast_path_checks = _check_fast_path(fast_path)
    frontier = FrontierResult(
        family=family,
        default=default_point,
        durable_default=durable_point,
        baselines=baseline_points,
        dominance=[compare(default_point, b, family) for b in baseline_points],
        neighbours=neighbours,
        no_jitter=no_jitter,
    )

    log("bench: measuring client reuse and replay cost")
    phase = time.perf_counter()
    # In its own processes (https Agents service + managed identity endpoint on loopback).
    client_reuse = measure_client_reuse(
        calls=config.client_reuse_calls, rounds=config.client_reuse_rounds
    )
    with bench_bed() as bed:
        function = bed.host.functions["agent_run_orchestrator"]
        replay = [
            _replay_row(function, c, continue_as_new)
            for contexts, continue_as_new in ((can_contexts, True), (no_can_contexts, False))
            for c in contexts
        ]
    timings["client reuse + replay CPU"] = time.perf_counter() - phase
    timings["total"] = time.perf_counter() - started
    return Results(
        config=config,
        runs=runs,
        seeds=seeds,
        measured=measured,
        agents_calls=dict(calls),
        episodes=sum(s.episodes for s in shards),
        replayed_events=sum(s.replayed_events for s in shards),
        strategies=strategies,
        host_baselines=host_runs,
        replay=replay,
        client_reuse=client_reuse,
        wall=wall,
        fast_path=fast_path,
        frontier=frontier,
        targets_workload=targets_workload,
        targets_exact=exact,
        targets_exact_fast_path=exact_fast,
        fast_path_checks=fast_path_checks,
        fast_path_windows=window_sweep(DEFAULT_POLICY, config.fast_path_windows, pairs),
        with_tenacity=with_tenacity,
        timings=timings,
        cpu_count=os.cpu_count() or 0,
    )


def _replay_row(function: Any, context: ReplayContext, continue_as_new: bool) -> ReplayRow:
    end = measure_replay(function, context.end_context)
    peak = (
        end
        if context.peak_context == context.end_context
        else measure_replay(function, context.peak_context)
    )
    return ReplayRow(
        duration=context.duration,
        continue_as_new=continue_as_new,
        polls_per_generation=context.polls_per_generation,
        polls=context.polls,
        generations=context.generations,
        end_events=context.end_events,
        end=end,
        peak_events=context.peak_events,
        peak=peak,
    )

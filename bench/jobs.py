"""The benchmark jobs, spread over a process pool (or run here when there is none)."""

from __future__ import annotations

from collections.abc import Callable, Sequence
from concurrent.futures import Future, ProcessPoolExecutor
from dataclasses import replace
from typing import Any, TypeVar

from shared.adapters.settings import DEFAULT_FAST_PATH_SECONDS

from .config import HOST_BASELINE_MAX_DURATION, BenchConfig
from .frontier import (
    Point,
    grid,
    neighbourhood,
    schedule_of,
    sweep,
)
from .replay import (
    ReplayContext,
    measure_replay,
)
from .results import ReplayRow
from .schedules import (
    DEFAULT_POLICY,
    Strategy,
    submission_id_for,
)
from .targets import TargetCheck, check_exact
from .wallclock import FastPathRun, WallRun, measure_create_and_process, measure_fast_path
from .workload import WorkloadRun

T = TypeVar("T")


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

"""Run every benchmark, check the results against each other and the targets, write the doc."""

from __future__ import annotations

import multiprocessing
import os
import time
from collections import Counter
from collections.abc import Callable
from concurrent.futures import ProcessPoolExecutor

from shared.adapters.settings import DEFAULT_FAST_PATH_SECONDS

from .backends import _foundry_wall_job, backends_result, foundry_subset
from .baseline_runs import run_baselines_on_host
from .checks import _check_fast_path, _check_host_baselines, _check_ours, _check_tenacity
from .client_reuse import measure_client_reuse
from .config import FULL, BenchConfig
from .foundry_runs import FoundryShard, run_foundry_workload
from .frontier import (
    compare,
    evaluate,
    window_sweep,
)
from .jobs import (
    _exact_job,
    _frontier_job,
    _host_cases,
    _neighbourhood_job,
    _replay_row,
    _Runner,
    _shards,
    _wall_job,
)
from .relay_runs import ShardResult, bench_bed, run_workload
from .replay import (
    MAX_POLLS_PER_GENERATION,
    REPLAY_INDEX_BASE,
    capture_contexts,
)
from .results import FrontierResult, Results, StrategyResult
from .schedules import (
    DEFAULT_POLICY,
    RelaySchedule,
    baselines,
    simulate,
    submission_id_for,
    tenacity_available,
)
from .targets import check_runs
from .workload import idempotency_key


def run(config: BenchConfig = FULL, log: Callable[[str], None] = print) -> Results:
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
        # The Foundry backend: the same runs (same submission ids), and its fast path.
        foundry_runs = foundry_subset(config, runs) if config.foundry else []
        foundry_wall_future = wall_runner.submit(_foundry_wall_job, config)
        foundry_futures = [
            runner.submit(run_foundry_workload, shard)
            for shard in _shards(foundry_runs, config.shards)
        ]

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
        foundry_shards: list[FoundryShard] = [f.result() for f in foundry_futures]
        timings["virtual-time jobs"] = time.perf_counter() - started
        wall, fast_path = wall_future.result()
        foundry_fast_path = foundry_wall_future.result()
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
    foundry_calls: Counter[str] = Counter()
    for foundry_shard in foundry_shards:
        foundry_calls.update(foundry_shard.calls)
    foundry_by_index = {m.index: m for shard in foundry_shards for m in shard.runs}
    backends = (
        None
        if not config.foundry
        else backends_result(
            config,
            runs,
            measured,
            [foundry_by_index[i] for i in sorted(foundry_by_index)],
            dict(foundry_calls),
            foundry_fast_path,
        )
    )
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
        backends=backends,
    )

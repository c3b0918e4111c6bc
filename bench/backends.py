"""Both backends side by side: the classic Agents service and Foundry (Responses API).

- Virtual time, durable schedule (`FAST_PATH_SECONDS=0`): the workload's runs (the same
  Idempotency-Keys, so the same submission ids and jitter as relay_runs.py's classic runs)
  submitted for the bed's Foundry agent (foundry_runs.py), compared run by run with classic.
- Wall clock, fast path: Foundry responses with and without a stream cut half-way, next to the
  simulator's prediction and the classic fast-path run of the same duration (same submission
  id where the classic bench measured that duration).
"""

from __future__ import annotations

from collections.abc import Sequence

from .checks import check_foundry_durable, check_foundry_fast_path
from .config import BenchConfig
from .foundry_runs import FoundryRun, measure_foundry_fast_path
from .relay_runs import RelayRun
from .results import BackendsResult, RunPair
from .targets import check_runs
from .wallclock import FAST_PATH_INDEX_BASE
from .workload import WorkloadRun

FOUNDRY_FAST_INDEX_BASE = 300_000


def foundry_subset(config: BenchConfig, runs: Sequence[WorkloadRun]) -> list[WorkloadRun]:
    """The workload runs that go through Foundry too: all, or the round durations and every
    `foundry_tail_every`-th heavy-tail run in duration order (its spread kept)."""
    every = max(1, config.foundry_tail_every)
    tail = sorted((r for r in runs if r.group == "heavy-tail"), key=lambda r: r.duration)
    kept = {r.index for r in runs if r.group != "heavy-tail"}
    kept |= {r.index for r in tail[every // 2 :: every]} if every > 1 else {r.index for r in tail}
    return [r for r in runs if r.index in kept]


def describe_subset(config: BenchConfig, runs: Sequence[WorkloadRun]) -> str:
    picked = foundry_subset(config, runs)
    if len(picked) == len(runs):
        return f"the whole workload ({len(runs)} runs)"
    tail = sum(1 for r in picked if r.group == "heavy-tail")
    return (
        f"{len(picked)} of the workload's {len(runs)} runs: every round-duration run and "
        f"{tail} heavy-tail runs (every {config.foundry_tail_every}th by duration)"
    )


def fast_path_runs(config: BenchConfig) -> list[WorkloadRun]:
    """The Foundry fast-path runs, with the classic fast-path run's index (so the same
    submission id and jitter) where the classic bench measures that duration."""
    runs = []
    for i, duration in enumerate(config.foundry_fast_path_durations):
        if duration in config.fast_path_durations:
            index = FAST_PATH_INDEX_BASE + config.fast_path_durations.index(duration)
        else:
            index = FOUNDRY_FAST_INDEX_BASE + i
        runs.append(WorkloadRun(index, duration, "fast-path"))
    return runs


def _foundry_wall_job(config: BenchConfig) -> list[FoundryRun]:
    """Each duration without a dropped stream, then with one (separate beds: same ids)."""
    runs = fast_path_runs(config)
    if not runs or not config.foundry:
        return []
    window = config.foundry_fast_path_window
    return [
        *measure_foundry_fast_path(runs, window),
        *measure_foundry_fast_path(runs, window, config.foundry_drop_after),
    ]


def backends_result(
    config: BenchConfig,
    runs: Sequence[WorkloadRun],
    classic: Sequence[RelayRun],
    foundry: Sequence[FoundryRun],
    foundry_calls: dict[str, int],
    fast_path: Sequence[FoundryRun],
) -> BackendsResult:
    by_index = {m.index: m for m in classic}
    pairs = [RunPair(by_index[f.index], f) for f in foundry]
    check_foundry_durable(pairs)
    window = config.foundry_fast_path_window
    return BackendsResult(
        pairs=pairs,
        subset=describe_subset(config, runs),
        foundry_calls=foundry_calls,
        targets=check_runs(
            f"{len(pairs)} workload runs, Foundry backend (real orchestrator)",
            ((f.duration, f.submission_id, f.polls, f.delay) for f in foundry),
        ),
        window=window,
        fast_path=list(fast_path),
        fast_path_checks=check_foundry_fast_path(fast_path, window),
    )

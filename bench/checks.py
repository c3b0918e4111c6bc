"""Cross-checks of the measurements against each other and the simulation."""

from __future__ import annotations

from collections.abc import Sequence

from shared.adapters.settings import DEFAULT_FAST_PATH_SECONDS

from .baseline_runs import HostBaselineRun
from .foundry_runs import FoundryRun
from .relay_runs import RelayRun
from .results import FastPathCheck, RunPair, StrategyResult
from .schedules import (
    DEFAULT_POLICY,
    RelaySchedule,
    simulate,
    tenacity_detects,
    to_micros,
)
from .targets import DELAY_TOLERANCE
from .wallclock import FastPathRun
from .workload import WorkloadRun


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


def _check_fast_path(
    runs: Sequence[FastPathRun], window: float = DEFAULT_FAST_PATH_SECONDS
) -> list[FastPathCheck]:
    """The simulator's fast path must predict the real app's wall-clock runs.

    Streams run on the wall clock, so the fallback lands a few ms after the window: the
    detection instant may differ by that much, and the poll count must match unless a
    simulated check falls within that slack of the run's end.
    """
    schedule = RelaySchedule(fast_path_seconds=window)
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


# ------------------------------------------------------------------------------ Foundry


def as_fast_path_run(run: FoundryRun) -> FastPathRun:
    return FastPathRun(
        run.duration, run.polls, run.delay, run.status, run.submission_id, run.detected_us
    )


def check_foundry_durable(pairs: Sequence[RunPair]) -> None:
    """Every response detected once, by polls only (no stream with the fast path off)."""
    for pair in pairs:
        run = pair.foundry
        problems = []
        if run.status != "completed":
            problems.append(f"status {run.status}")
        if run.responses != 1:
            problems.append(f"{run.responses} responses")
        if run.event_polls != run.polls or run.polls == 0:
            problems.append(f"polls {run.polls} (event {run.event_polls})")
        if run.resumes or run.last_sequence is not None:
            problems.append("streamed with the fast path off")
        if not 0 <= run.delay <= DEFAULT_POLICY.max_seconds + DELAY_TOLERANCE:
            problems.append(f"delay {run.delay}")
        if problems:
            raise AssertionError(
                f"Foundry run {run.index} ({run.duration} s): " + "; ".join(problems)
            )


def check_foundry_fast_path(runs: Sequence[FoundryRun], window: float) -> list[FastPathCheck]:
    """Every response detected; a dropped stream resumed, never reopened from its start; a
    response ending inside the window published from the stream (0 polls, its terminal event
    seen); the rest as the simulator predicts (as for classic, checks._check_fast_path)."""
    for run in runs:
        problems = []
        if run.status != "completed" or run.responses != 1:
            problems.append(f"status {run.status}, {run.responses} responses")
        if run.delay < 0:
            problems.append(f"delay {run.delay}")
        if run.drop_after is None and run.resumes:
            problems.append(f"{run.resumes} resumes of a stream that was not cut")
        if run.drop_after is not None and run.resumes < 1:
            problems.append("its stream was cut and never resumed")
        if run.last_sequence is None or (
            run.drop_after is not None and run.last_sequence < run.drop_after
        ):
            problems.append(f"last event seen {run.last_sequence}")
        # Well inside the window, whatever the wall clock does: no poll, the end on the stream.
        if run.duration < window / 2 and (
            run.polls != 0 or run.last_sequence != run.final_sequence
        ):
            problems.append(
                f"{run.polls} polls, last event {run.last_sequence} of {run.final_sequence}"
            )
        if problems:
            raise AssertionError(
                f"Foundry fast path {run.duration} s (drop after {run.drop_after}): "
                + "; ".join(problems)
            )
    return _check_fast_path([as_fast_path_run(r) for r in runs], window)

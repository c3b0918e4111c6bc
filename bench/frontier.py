"""The polls/delay frontier of the relay's schedule family, with the baselines on it.

Every (initialSeconds, maxSeconds, multiplier) of a grid is simulated on the workload's
durations (with the workload's own submission ids as jitter seeds).
"""

from __future__ import annotations

import itertools
import statistics
from collections.abc import Sequence
from dataclasses import dataclass

from shared.schedule import PollingPolicy

from .schedules import RelaySchedule, Strategy, simulate
from .targets import DELAY_TOLERANCE, delay_limit, polls_limit

GRID_INITIAL = (1.0, 2.0, 3.0, 5.0, 10.0)
GRID_MAX = (1.0, 2.0, 5.0, 10.0, 15.0, 20.0, 30.0, 45.0, 60.0, 120.0)
GRID_MULTIPLIER = (1.1, 1.25, 1.5, 2.0, 3.0)


@dataclass(frozen=True)
class Point:
    label: str
    key: str
    initial: float | None
    maximum: float | None
    multiplier: float | None
    mean_polls: float
    worst_delay: float  # inf if any run was never detected
    mean_delay: float  # over detected runs
    gave_up: int
    target_misses: int  # runs where it breaks the polls or delay target

    @property
    def meets_targets(self) -> bool:
        return self.target_misses == 0


def evaluate(strategy: Strategy, runs: Sequence[tuple[float, str]]) -> Point:
    polls, delays, gave_up, misses = [], [], 0, 0
    for duration, seed in runs:
        outcome = simulate(strategy, duration, seed)
        polls.append(outcome.polls)
        delay = outcome.delay(duration)
        if delay is None:
            gave_up += 1
        else:
            delays.append(delay)
        if (
            delay is None
            or delay > delay_limit(duration) + DELAY_TOLERANCE
            or outcome.polls > polls_limit(duration)
        ):
            misses += 1
    policy = strategy.policy if isinstance(strategy, RelaySchedule) else None
    return Point(
        label=strategy.label,
        key=strategy.key,
        initial=policy.initial_seconds if policy else None,
        maximum=policy.max_seconds if policy else None,
        multiplier=policy.multiplier if policy else None,
        mean_polls=statistics.fmean(polls),
        worst_delay=float("inf") if gave_up else max(delays),
        mean_delay=statistics.fmean(delays) if delays else float("inf"),
        gave_up=gave_up,
        target_misses=misses,
    )


def grid(
    initials: Sequence[float] = GRID_INITIAL,
    maxima: Sequence[float] = GRID_MAX,
    multipliers: Sequence[float] = GRID_MULTIPLIER,
) -> list[PollingPolicy]:
    return [
        PollingPolicy(initial, maximum, multiplier)
        for initial, maximum, multiplier in itertools.product(initials, maxima, multipliers)
        if maximum >= initial
    ]


def neighbourhood(policy: PollingPolicy, step: float = 0.05) -> list[PollingPolicy]:
    """The default and its neighbours: each parameter -step, 0, +step (relative)."""
    found = []
    for a, b, c in itertools.product((-1, 0, 1), repeat=3):
        initial = round(policy.initial_seconds * (1 + a * step), 3)
        maximum = round(policy.max_seconds * (1 + b * step), 3)
        multiplier = round(1 + (policy.multiplier - 1) * (1 + c * 2 * step), 3)
        found.append(PollingPolicy(initial, maximum, multiplier, policy.jitter))
    return found


def sweep(policies: Sequence[PollingPolicy], runs: Sequence[tuple[float, str]]) -> list[Point]:
    return [
        evaluate(
            RelaySchedule(
                policy,
                key="grid",
                label=f"{policy.initial_seconds:g}/{policy.max_seconds:g}/x{policy.multiplier:g}"
                f"/j{policy.jitter:g}",
            ),
            runs,
        )
        for policy in policies
    ]


@dataclass(frozen=True)
class Dominance:
    baseline: str
    default_dominates: bool  # default: <= polls and <= worst and <= mean delay
    fewer_polls_at_delay: Point | None  # best grid point with worst delay <= the baseline's
    fewer_polls_at_mean_delay: Point | None  # best grid point with mean delay <= the baseline's
    lower_delay_at_polls: Point | None  # best grid point with mean polls <= the baseline's


def compare(default: Point, baseline: Point, family: Sequence[Point]) -> Dominance:
    dominates = (
        default.mean_polls <= baseline.mean_polls
        and default.worst_delay <= baseline.worst_delay
        and default.mean_delay <= baseline.mean_delay
    )
    at_delay = [p for p in family if p.worst_delay <= baseline.worst_delay and p.gave_up == 0]
    at_mean = [p for p in family if p.mean_delay <= baseline.mean_delay and p.gave_up == 0]
    at_polls = [p for p in family if p.mean_polls <= baseline.mean_polls and p.gave_up == 0]
    return Dominance(
        baseline=baseline.label,
        default_dominates=dominates,
        fewer_polls_at_delay=min(at_delay, key=lambda p: p.mean_polls) if at_delay else None,
        fewer_polls_at_mean_delay=min(at_mean, key=lambda p: p.mean_polls) if at_mean else None,
        lower_delay_at_polls=min(at_polls, key=lambda p: (p.worst_delay, p.mean_delay))
        if at_polls
        else None,
    )

"""The polls/delay frontier of the relay's schedule family, with the baselines on it.

Every (initialSeconds, maxSeconds, multiplier, jitter, fast path) of a grid is simulated on the
workload's durations (with the workload's own submission ids as jitter seeds).
"""

from __future__ import annotations

import itertools
import statistics
from collections.abc import Sequence
from dataclasses import dataclass

from shared.adapters.settings import DEFAULT_FAST_PATH_SECONDS
from shared.core.schedule import PollingPolicy

from .schedules import RelaySchedule, Strategy, simulate
from .targets import DELAY_TOLERANCE, delay_limit, polls_limit

# Initial waits up to the cap, so fixed intervals (initial = cap) are members of the family.
GRID_INITIAL = (1.0, 2.0, 3.0, 5.0, 10.0, 15.0, 20.0, 30.0, 45.0, 60.0)
GRID_MAX = (1.0, 2.0, 5.0, 10.0, 15.0, 20.0, 25.0, 30.0, 40.0, 45.0, 50.0, 55.0, 60.0, 90.0, 120.0)
GRID_MULTIPLIER = (1.1, 1.25, 1.5, 2.0, 3.0)
GRID_JITTER = (0.0, 0.1)
GRID_FAST_PATH = (0.0, DEFAULT_FAST_PATH_SECONDS)


@dataclass(frozen=True)
class Point:
    label: str
    key: str
    initial: float | None
    maximum: float | None
    multiplier: float | None
    jitter: float | None
    fast_path: float | None  # FAST_PATH_SECONDS; None for baselines
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
    ours = strategy if isinstance(strategy, RelaySchedule) else None
    policy = ours.policy if ours else None
    return Point(
        label=strategy.label,
        key=strategy.key,
        initial=policy.initial_seconds if policy else None,
        maximum=policy.max_seconds if policy else None,
        multiplier=policy.multiplier if policy else None,
        jitter=policy.jitter if policy else None,
        fast_path=ours.fast_path_seconds if ours else None,
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
    jitters: Sequence[float] = GRID_JITTER,
    fast_paths: Sequence[float] = GRID_FAST_PATH,
) -> list[RelaySchedule]:
    found = []
    for initial, maximum, multiplier, jitter, fast_path in itertools.product(
        initials, maxima, multipliers, jitters, fast_paths
    ):
        if maximum < initial or (maximum == initial and multiplier != multipliers[0]):
            continue  # initial = cap: every wait is the cap, whatever the multiplier
        found.append(
            schedule_of(PollingPolicy(initial, maximum, multiplier, jitter), fast_path, "grid")
        )
    return found


def schedule_of(policy: PollingPolicy, fast_path: float, key: str) -> RelaySchedule:
    fast = f", fast path {fast_path:g} s" if fast_path else ""
    label = (
        f"{policy.initial_seconds:g} s, x{policy.multiplier:g}, cap {policy.max_seconds:g} s, "
        f"jitter {policy.jitter:g}{fast}"
    )
    return RelaySchedule(policy, key=key, label=label, fast_path_seconds=fast_path)


def neighbourhood(policy: PollingPolicy, step: float = 0.05) -> list[PollingPolicy]:
    """The default and its neighbours: each parameter -step, 0, +step (relative)."""
    found = []
    for a, b, c in itertools.product((-1, 0, 1), repeat=3):
        initial = round(policy.initial_seconds * (1 + a * step), 3)
        maximum = round(policy.max_seconds * (1 + b * step), 3)
        multiplier = round(1 + (policy.multiplier - 1) * (1 + c * 2 * step), 3)
        found.append(PollingPolicy(initial, maximum, multiplier, policy.jitter))
    return found


def sweep(schedules: Sequence[RelaySchedule], runs: Sequence[tuple[float, str]]) -> list[Point]:
    return [evaluate(schedule, runs) for schedule in schedules]


def dominates(a: Point, b: Point) -> bool:
    """a is no worse than b on polls, worst and mean delay, and better on one of them.

    (A schedule that gives up has an unbounded worst delay; its mean delay is over the runs
    it did detect, which flatters it.)
    """
    eps = 1e-9
    no_worse = (
        a.mean_polls <= b.mean_polls + eps
        and a.worst_delay <= b.worst_delay + eps
        and a.mean_delay <= b.mean_delay + eps
        and a.gave_up <= b.gave_up
    )
    better = (
        a.mean_polls < b.mean_polls - eps
        or a.worst_delay < b.worst_delay - eps
        or a.mean_delay < b.mean_delay - eps
        or a.gave_up < b.gave_up
    )
    return no_worse and better


@dataclass(frozen=True)
class Dominance:
    baseline: Point
    default_dominates: bool  # the default alone: dominates(default, baseline)
    dominating: tuple[Point, ...]  # family points that dominate the baseline, fewest polls first
    # Fewer polls at equal delay: the fewest polls with worst and mean delay <= the baseline's.
    fewer_polls_at_delay: Point | None
    # Lower delay at equal polls: the lowest (worst, mean) delay with polls <= the baseline's.
    lower_delay_at_polls: Point | None


def compare(default: Point, baseline: Point, family: Sequence[Point]) -> Dominance:
    eps = 1e-9
    detecting = [p for p in family if p.gave_up == 0]
    at_delay = [
        p
        for p in detecting
        if p.worst_delay <= baseline.worst_delay + eps and p.mean_delay <= baseline.mean_delay + eps
    ]
    at_polls = [p for p in detecting if p.mean_polls <= baseline.mean_polls + eps]
    return Dominance(
        baseline=baseline,
        default_dominates=dominates(default, baseline),
        dominating=tuple(
            sorted((p for p in family if dominates(p, baseline)), key=lambda p: p.mean_polls)
        ),
        fewer_polls_at_delay=min(at_delay, key=lambda p: p.mean_polls) if at_delay else None,
        lower_delay_at_polls=min(at_polls, key=lambda p: (p.worst_delay, p.mean_delay))
        if at_polls
        else None,
    )


@dataclass(frozen=True)
class WindowRow:
    """The default schedule with one fast-path window, on the whole workload."""

    window: float
    mean_polls: float
    on_stream: float  # share of runs that ended inside the window (no poll, no delay)
    mean_delay: float
    # The mean delay the runs seen on the stream would have had without the fast path.
    saved_delay: float
    held_seconds: float  # mean wall seconds the start activity follows the stream per run


def window_sweep(
    policy: PollingPolicy, windows: Sequence[float], runs: Sequence[tuple[float, str]]
) -> list[WindowRow]:
    rows = []
    plain = RelaySchedule(policy)
    for window in windows:
        schedule = RelaySchedule(policy, fast_path_seconds=window)
        polls, delays, saved = [], [], []
        for duration, seed in runs:
            outcome = simulate(schedule, duration, seed)
            delay = outcome.delay(duration)
            assert delay is not None  # our schedules never give up
            polls.append(outcome.polls)
            delays.append(delay)
            if window > 0 and duration <= window:
                saved.append(simulate(plain, duration, seed).delay(duration) or 0.0)
        rows.append(
            WindowRow(
                window=window,
                mean_polls=statistics.fmean(polls),
                on_stream=sum(1 for d, _ in runs if d <= window) / len(runs),
                mean_delay=statistics.fmean(delays),
                saved_delay=statistics.fmean(saved) if saved else 0.0,
                held_seconds=statistics.fmean(min(d, window) for d, _ in runs),
            )
        )
    return rows

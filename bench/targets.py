"""The issue's targets for our default schedule, checked on every duration given."""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from dataclasses import dataclass

from shared.core.schedule import PollingPolicy

from .schedules import DEFAULT_POLICY, MICROS, RelaySchedule, to_micros

# Durable timers (and the schedule's waits) have millisecond resolution: a wait rounded to
# the millisecond may pass an exact bound by less than that.
DELAY_TOLERANCE = 0.001


def polls_limit(duration: float) -> float:
    return duration / 25 + 8


def delay_limit(duration: float, policy: PollingPolicy = DEFAULT_POLICY) -> float:
    return min(max(2.0, 0.5 * duration), policy.max_seconds)


@dataclass(frozen=True)
class Violation:
    duration: float
    seed: str
    what: str
    value: float
    limit: float


@dataclass(frozen=True)
class TargetCheck:
    name: str
    checked: int  # (duration, seed) pairs
    violations: tuple[Violation, ...]
    worst_polls_margin: float  # min over runs of limit - polls
    worst_delay_margin: float  # min over runs of limit - delay
    undetected_2h: int

    @property
    def met(self) -> bool:
        return not self.violations and self.undetected_2h == 0


def check_runs(
    name: str,
    runs: Iterable[tuple[float, str, int, float | None]],
    policy: PollingPolicy = DEFAULT_POLICY,
) -> TargetCheck:
    """Check (duration, seed, polls, delay or None if never detected) tuples.

    The delay limit's cap is `policy.max_seconds` (the issue's targets use the default's 30 s).
    """
    violations: list[Violation] = []
    checked, undetected_2h = 0, 0
    polls_margin, delay_margin = float("inf"), float("inf")
    for duration, seed, polls, delay in runs:
        checked += 1
        if delay is None:
            violations.append(Violation(duration, seed, "never detected", 0, 0))
            if duration >= 7200:
                undetected_2h += 1
            continue
        polls_margin = min(polls_margin, polls_limit(duration) - polls)
        delay_margin = min(delay_margin, delay_limit(duration, policy) - delay)
        if polls > polls_limit(duration):
            violations.append(Violation(duration, seed, "polls", polls, polls_limit(duration)))
        if delay > delay_limit(duration, policy) + DELAY_TOLERANCE:
            violations.append(
                Violation(duration, seed, "delay", delay, delay_limit(duration, policy))
            )
    return TargetCheck(name, checked, tuple(violations), polls_margin, delay_margin, undetected_2h)


def check_exact(
    seeds: Sequence[str],
    policy: PollingPolicy = DEFAULT_POLICY,
    horizon: float = 6 * 3600.0,
    limits: PollingPolicy = DEFAULT_POLICY,
    fast_path_seconds: float = 0.0,
) -> TargetCheck:
    """Check the targets on *every* duration up to `horizon`, exactly, for each seed.

    A run of duration D in (p[k-1], p[k]] (p = the check instants, p[-1] = 0) is seen by
    check k: k + 1 polls and a delay p[k] - D, which approaches p[k] - p[k-1] as D comes down
    to p[k-1]. Both limits grow with D, so the binding case of each interval is D just above
    p[k-1]: the targets hold for every D iff, for every k, p[k] - p[k-1] <= delay limit at
    p[k-1] and k + 1 <= p[k-1]/25 + 8. The delay cap comes from `limits` (30 s).
    With a fast path, runs ending inside the window have no poll and no delay, and the
    intervals start at the window's end (p[-1] = the window).
    """
    schedule = RelaySchedule(policy, fast_path_seconds=fast_path_seconds)
    violations: list[Violation] = []
    polls_margin, delay_margin = float("inf"), float("inf")
    checked = 0
    horizon_us = round(horizon * MICROS)
    for seed in seeds:
        previous = to_micros(fast_path_seconds)
        for k, at in enumerate(schedule.poll_offsets(seed)):
            start = previous / MICROS  # the interval's durations are just above this
            gap = (at - previous) / MICROS
            polls = k + 1
            checked += 1
            polls_room = polls_limit(start) - polls
            delay_room = delay_limit(start, limits) - gap
            polls_margin, delay_margin = (
                min(polls_margin, polls_room),
                min(delay_margin, delay_room),
            )
            if polls_room < 0:
                violations.append(Violation(start, seed, "polls", polls, polls_limit(start)))
            if delay_room < -DELAY_TOLERANCE:
                violations.append(Violation(start, seed, "delay", gap, delay_limit(start, limits)))
            if at >= horizon_us:
                break
            previous = at
    fast = f", fast path {fast_path_seconds:g} s" if fast_path_seconds else ""
    return TargetCheck(
        f"every duration up to {horizon / 3600:g} h, {len(seeds)} submission ids{fast} (exact)",
        checked,
        tuple(violations),
        polls_margin,
        delay_margin,
        0,
    )

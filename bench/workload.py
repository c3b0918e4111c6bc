"""The benchmark workload: round durations plus a seeded heavy-tailed sample."""

from __future__ import annotations

import math
import random
from dataclasses import dataclass

# The round durations, in seconds: 3 s, 15 s, 1 min, 5 min, 30 min, 2 h.
ROUND_DURATIONS: tuple[float, ...] = (3.0, 15.0, 60.0, 300.0, 1800.0, 7200.0)


@dataclass(frozen=True)
class HeavyTail:
    """Lognormal durations (median, sigma), clipped, rounded to the millisecond."""

    count: int = 300
    seed: int = 20260101
    median_seconds: float = 90.0
    sigma: float = 1.6
    min_seconds: float = 1.0
    max_seconds: float = 6 * 3600.0

    def describe(self) -> str:
        return (
            f"{self.count} durations drawn from a lognormal distribution (median "
            f"{self.median_seconds:g} s, sigma {self.sigma:g}, seed {self.seed}), clipped to "
            f"[{format_duration(self.min_seconds)}, {format_duration(self.max_seconds)}] and "
            "rounded to the ms"
        )


@dataclass(frozen=True)
class WorkloadRun:
    """One run of the workload: `index` also seeds its submission id (Idempotency-Key)."""

    index: int
    duration: float
    group: str  # "round" or "heavy-tail"


@dataclass(frozen=True)
class Workload:
    round_durations: tuple[float, ...] = ROUND_DURATIONS
    round_replicas: int = 5
    heavy_tail: HeavyTail = HeavyTail()

    def heavy_tail_durations(self) -> list[float]:
        tail = self.heavy_tail
        rng = random.Random(tail.seed)  # noqa: S311 (a seeded workload, not a secret)
        durations = []
        for _ in range(tail.count):
            value = rng.lognormvariate(math.log(tail.median_seconds), tail.sigma)
            durations.append(round(min(max(value, tail.min_seconds), tail.max_seconds), 3))
        return durations

    def runs(self) -> list[WorkloadRun]:
        runs: list[WorkloadRun] = []
        for duration in self.round_durations:
            for _ in range(self.round_replicas):
                runs.append(WorkloadRun(len(runs), duration, "round"))
        for duration in self.heavy_tail_durations():
            runs.append(WorkloadRun(len(runs), duration, "heavy-tail"))
        return runs


def idempotency_key(index: int) -> str:
    """The Idempotency-Key a workload run is submitted with (so its submission id is stable)."""
    return f"bench-run-{index}"


def format_duration(seconds: float) -> str:
    if seconds < 60:
        return f"{seconds:g} s"
    if seconds < 3600:
        return f"{seconds / 60:g} min"
    return f"{seconds / 3600:g} h"

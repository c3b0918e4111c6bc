"""What a benchmark run found (`Results`), for the report, the plots and the summary."""

from __future__ import annotations

from dataclasses import dataclass, field

from .baseline_runs import HostBaselineRun
from .client_reuse_result import ClientReuseResult
from .config import BenchConfig
from .foundry_runs import FoundryRun
from .frontier import (
    Dominance,
    Point,
    WindowRow,
)
from .relay_runs import RelayRun
from .replay import (
    ReplayCost,
)
from .schedules import (
    Deployment,
    Outcome,
)
from .targets import TargetCheck
from .wallclock import FastPathRun, WallRun
from .workload import WorkloadRun


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


@dataclass(frozen=True)
class RunPair:
    """One workload run on both backends (same submission id)."""

    classic: RelayRun
    foundry: FoundryRun

    @property
    def same(self) -> bool:
        c, f = self.classic, self.foundry
        return (c.polls, c.detected_us, c.delay) == (f.polls, f.detected_us, f.delay)


@dataclass(frozen=True)
class BackendsResult:
    pairs: list[RunPair]  # the runs measured on both backends, in workload order
    subset: str  # which of the workload's runs went through Foundry too
    foundry_calls: dict[str, int]  # every operation the Foundry service saw, by name
    targets: TargetCheck  # the targets on the Foundry runs
    window: float  # FAST_PATH_SECONDS of the fast-path runs
    fast_path: list[FoundryRun]  # each duration without, then with, a dropped stream
    fast_path_checks: list[FastPathCheck]  # aligned with fast_path


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
    backends: BackendsResult | None = None  # the Foundry backend beside the classic one


# ------------------------------------------------------------------------------ jobs

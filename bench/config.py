"""What a benchmark run measures (`BenchConfig`): the full run, and the quick one."""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import TypeVar

from shared.adapters.settings import DEFAULT_FAST_PATH_SECONDS, DEFAULT_POLLS_PER_GENERATION

from .frontier import (
    GRID_FAST_PATH,
    GRID_INITIAL,
    GRID_JITTER,
    GRID_MAX,
    GRID_MULTIPLIER,
)
from .workload import HeavyTail, Workload

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
    # The Foundry backend (bench/backends.py): the workload's runs through it too (with
    # `foundry_tail_every` = n > 1, only every n-th heavy-tail run by duration), and its fast
    # path on the wall clock, each response with and without its stream cut after event
    # `foundry_drop_after` (half-way: see foundry_runs.measure_foundry_fast_path).
    foundry: bool = True  # False: classic only (no Backends section)
    foundry_tail_every: int = 1
    foundry_fast_path_durations: tuple[float, ...] = (3.0, 15.0)
    foundry_fast_path_window: float = DEFAULT_FAST_PATH_SECONDS
    foundry_drop_after: int = 1


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
    foundry_fast_path_durations=(),
)

# The full benchmark (`make bench`).
FULL = BenchConfig()

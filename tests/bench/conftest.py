"""The tiny benchmark run the bench tests share (`results`): the whole of `bench.main.run` on
a workload of six runs, in one process, in a few seconds."""

from __future__ import annotations

import pytest

from bench.config import BenchConfig
from bench.main import run
from bench.results import Results
from bench.workload import HeavyTail, Workload

TINY = BenchConfig(
    workload=Workload(
        round_durations=(3.0, 15.0, 60.0),
        round_replicas=1,
        heavy_tail=HeavyTail(count=3, max_seconds=300.0),
    ),
    shards=1,
    workers=0,
    replay_durations=(60.0, 300.0),
    replay_polls_per_generation=5,
    wall_durations=(),
    fast_path_durations=(),
    client_reuse_calls=5,
    client_reuse_rounds=1,
    grid_initial=(1.0, 2.0),
    grid_max=(30.0,),
    grid_multiplier=(1.5, 2.0),
    grid_jitter=(0.0, 0.1),
    exact_seeds=3,
    exact_horizon=1800.0,
    foundry_fast_path_durations=(),  # test_bench_backends.py measures it with a short window
)


@pytest.fixture(scope="session")
def results() -> Results:
    return run(TINY, log=lambda _line: None)

"""The Foundry backend in the benchmark (bench/backends.py, bench/foundry_runs.py): the durable
workload through Foundry next to classic, and the fast path with a stream cut half-way, on a
tiny config (a 1 s window, so the wall-clock part takes a few seconds)."""

from __future__ import annotations

from dataclasses import replace

import pytest

from bench.backends import _foundry_wall_job, backends_result
from bench.checks import check_foundry_fast_path
from bench.config import BenchConfig
from bench.foundry_runs import FoundryRun, run_foundry_workload
from bench.relay_runs import run_workload
from bench.report.backends import _backends_headline, _backends_section
from bench.results import Results
from bench.schedules import RelaySchedule, simulate
from bench.workload import HeavyTail, Workload

WINDOW = 1.0
CONFIG = BenchConfig(
    workload=Workload(
        round_durations=(3.0, 60.0),
        round_replicas=1,
        heavy_tail=HeavyTail(count=2, max_seconds=400.0),
    ),
    # Inside the window (0 polls), and past it (the cut, half-way, comes before it closes).
    fast_path_durations=(),
    foundry_fast_path_durations=(0.4, 1.5),
    foundry_fast_path_window=WINDOW,
)


@pytest.fixture(scope="module")
def fast_path() -> list[FoundryRun]:
    return _foundry_wall_job(CONFIG)


def test_foundry_runs_the_classic_schedule_in_virtual_time() -> None:
    runs = CONFIG.workload.runs()
    classic = run_workload(runs).runs
    shard = run_foundry_workload(runs)
    result = backends_result(CONFIG, runs, classic, shard.runs, shard.calls, [])
    assert len(result.pairs) == len(runs) == 4
    for pair, run in zip(result.pairs, runs, strict=True):
        foundry = pair.foundry
        assert foundry.submission_id == pair.classic.submission_id
        assert foundry.status == "completed"
        assert (foundry.resumes, foundry.last_sequence, foundry.responses) == (0, None, 1)
        simulated = simulate(RelaySchedule(), run.duration, foundry.submission_id)
        assert foundry.polls == foundry.event_polls == simulated.polls
        assert foundry.delay == simulated.delay(run.duration)
        assert pair.same
    assert shard.calls["conversations.create"] == shard.calls["responses.create"] == 4
    assert shard.calls["responses.retrieve"] == sum(p.foundry.polls for p in result.pairs)
    assert result.targets.met


def test_the_fast_path_resumes_a_cut_stream(fast_path: list[FoundryRun]) -> None:
    assert [(r.duration, r.drop_after) for r in fast_path] == [
        (0.4, None),
        (1.5, None),
        (0.4, 1),
        (1.5, 1),
    ]
    short, long, short_cut, long_cut = fast_path
    for run in fast_path:
        assert run.status == "completed"
        assert run.delay >= 0
        assert run.resumes == (0 if run.drop_after is None else 1)
    for run in (short, short_cut):
        assert run.polls == 0
        assert run.last_sequence == run.final_sequence
    for run in (long, long_cut):
        assert run.polls > 0
        assert run.last_sequence == 1  # response.in_progress: the window closed before the end
    # The same submission id with and without the cut (separate beds): the same schedule.
    assert short.submission_id == short_cut.submission_id
    assert len(check_foundry_fast_path(fast_path, WINDOW)) == 4


def test_a_stream_cut_and_never_resumed_fails_the_check(fast_path: list[FoundryRun]) -> None:
    broken = replace(fast_path[2], resumes=0)
    with pytest.raises(AssertionError, match="never resumed"):
        check_foundry_fast_path([broken], WINDOW)
    polled = replace(fast_path[0], polls=1)
    with pytest.raises(AssertionError, match="1 polls"):
        check_foundry_fast_path([polled], WINDOW)


def test_the_report_shows_both_backends(results: Results, fast_path: list[FoundryRun]) -> None:
    backends = results.backends
    assert backends is not None
    assert backends.fast_path == []  # the tiny run measures no fast path: add this one's
    shown = replace(
        results,
        backends=replace(
            backends,
            window=WINDOW,
            fast_path=fast_path,
            fast_path_checks=check_foundry_fast_path(fast_path, WINDOW),
        ),
    )
    lines: list[str] = []
    _backends_section(shown, lines)
    doc = "\n".join(lines)
    assert "## Backends" in doc
    assert "**The two match exactly on all 6 runs**" in doc
    assert "| 0.4 s | cut after event 1 | 0 |" in doc
    headline = _backends_headline(shown)
    assert headline is not None
    assert "identical to classic on every run" in headline
    assert "0.4 s response with 0 polls" in headline

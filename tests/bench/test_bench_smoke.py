"""The benchmark machinery (bench/) on a tiny workload: it runs, agrees with itself, reports.

`python -m bench` (make bench) runs the full workload; this keeps its code working under
`make test` in a few seconds. tenacity and matplotlib come from requirements-bench.txt: without
them the tenacity baseline is left out and the plots are skipped. The tiny config and its
`results` (shared with test_bench_backends.py) are in conftest.py.
"""

from __future__ import annotations

from pathlib import Path

import pytest

from bench.report import render
from bench.results import Results
from bench.schedules import RelaySchedule, simulate, tenacity_available


def test_our_default_meets_the_targets_on_the_tiny_workload(results: Results) -> None:
    assert results.targets_workload.met, results.targets_workload.violations
    assert results.targets_exact.met, results.targets_exact.violations
    assert results.targets_exact_fast_path.met, results.targets_exact_fast_path.violations
    assert len(results.measured) == len(results.runs) == 6
    ours = RelaySchedule()
    for one, measured, seed in zip(results.runs, results.measured, results.seeds, strict=True):
        simulated = simulate(ours, one.duration, seed)
        assert measured.polls == simulated.polls > 0
        assert measured.delay == simulated.delay(one.duration)
        assert measured.status == "completed"


def test_every_strategy_is_measured_on_every_run(results: Results) -> None:
    keys = [s.key for s in results.strategies]
    expected = ["ours", "fixed-1s", "monitor-60s"]
    if tenacity_available():
        expected.insert(2, "tenacity")
    assert keys == expected
    for strategy in results.strategies:
        assert len(strategy.outcomes) == len(results.runs)
    fixed = results.strategies[1]
    assert [o.polls for o in fixed.outcomes[:3]] == [3, 15, 60]
    hosted = {(r.strategy, r.duration) for r in results.host_baselines}
    assert ("monitor-60s", 60.0) in hosted
    assert all(r.history_events == r.analytic_history for r in results.host_baselines)


def test_the_frontier_compares_the_family_with_every_baseline(results: Results) -> None:
    fr = results.frontier
    assert [d.baseline.key for d in fr.dominance] == [b.key for b in fr.baselines]
    assert {p.fast_path for p in fr.family} == {0.0, 10.0}
    # The fast path only removes polls from the same schedule.
    assert fr.default.mean_polls < fr.durable_default.mean_polls
    for dom in fr.dominance:
        base = dom.baseline
        for point in dom.dominating:
            assert point.mean_polls <= base.mean_polls + 1e-9
            assert point.worst_delay <= base.worst_delay + 1e-9
            assert point.mean_delay <= base.mean_delay + 1e-9
        if dom.fewer_polls_at_delay is not None:
            assert dom.fewer_polls_at_delay.worst_delay <= base.worst_delay + 1e-9


def test_continue_as_new_bounds_the_replayed_history(results: Results) -> None:
    by = {(r.continue_as_new, r.duration): r for r in results.replay}
    assert by[(True, 300.0)].generations > 1
    assert by[(False, 300.0)].generations == 1
    assert by[(True, 300.0)].peak_events < by[(False, 300.0)].end_events
    assert all(r.end.median_ms > 0 for r in results.replay)
    reuse = results.client_reuse
    assert reuse is not None
    assert reuse.reused_per_s > 0
    # Counted by the services (and asserted inside the bench): one TLS connection and one
    # token request per per-call client and credential, none for the reused client.
    assert (reuse.reused.connections, reuse.reused.token_requests) == (0, 0)
    assert (reuse.per_call.connections, reuse.per_call.token_requests) == (5, 5)
    assert reuse.tls_version.startswith("TLS")


def test_the_report_has_every_section_and_row(results: Results) -> None:
    doc = render(results, "benchmarks.png", None)
    for heading in (
        "## Summary",
        "## Workload and method",
        "## Results per duration",
        "## Heavy-tailed workload (3 runs)",
        "## Targets",
        "## Frontier",
        "## Durable history per generation",
        "## Replay cost",
        "## Client reuse",
        "## Backends",
        "## Cost model",
    ):
        assert heading in doc
    assert "Targets for the default schedule: all met" in doc
    assert "![Polls and detection delay against run duration](benchmarks.png)" in doc
    for duration in ("3 s", "15 s", "1 min"):
        for strategy in results.strategies:
            assert any(
                line.startswith(f"| {duration} |") and strategy.label in line
                for line in doc.splitlines()
            ), (duration, strategy.label)


def test_the_plots_are_written(results: Results, tmp_path: Path) -> None:
    pytest.importorskip("matplotlib")
    from bench.__main__ import write_plots

    main_png, frontier_png = write_plots(results, tmp_path)
    assert main_png is not None
    assert frontier_png is not None
    assert (tmp_path / main_png).stat().st_size > 10_000
    assert (tmp_path / frontier_png).stat().st_size > 10_000

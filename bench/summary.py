"""The short summary `python -m bench` prints."""

from __future__ import annotations

import statistics

from .report import rows, secs
from .results import Results
from .workload import format_duration


def _backends(results: Results) -> list[str]:
    b = results.backends
    if b is None:
        return []
    lines = []
    if b.pairs:
        same = sum(p.same for p in b.pairs)
        foundry = statistics.fmean(p.foundry.polls for p in b.pairs)
        classic = statistics.fmean(p.classic.polls for p in b.pairs)
        worst = max(p.foundry.delay for p in b.pairs)
        lines.append(
            f"Foundry backend on {len(b.pairs)} runs: {foundry:.2f} polls/run (classic "
            f"{classic:.2f}), worst delay {worst:.3f} s, identical to classic on {same}"
        )
    for f in b.fast_path:
        cut = "followed" if f.drop_after is None else f"cut after event {f.drop_after}"
        lines.append(
            f"Foundry fast path {format_duration(f.duration)} ({cut}): {f.polls} polls, "
            f"delay {f.delay:.3f} s, {f.resumes} resumes, last event {f.last_sequence}/"
            f"{f.final_sequence}"
        )
    return lines


def summary(results: Results) -> str:
    lines = ["", "=== agent-run relay benchmarks ==="]
    round_runs = [i for i, r in enumerate(results.runs) if r.group == "round"]
    header = f"{'run':>7} | " + " | ".join(f"{s.key:>22}" for s in results.strategies)
    lines.append("polls per run / worst delay")
    lines.append(header)
    per = [(s, rows(results, s)) for s in results.strategies]
    for duration in results.config.workload.round_durations:
        picked = [i for i in round_runs if results.runs[i].duration == duration]
        cells = []
        for _s, srows in per:
            chosen = [srows[i] for i in picked]
            detected = [r.delay for r in chosen if r.delay is not None]
            worst = secs(max(detected)) if len(detected) == len(chosen) else "gave up"
            cells.append(f"{statistics.fmean(r.polls for r in chosen):7.1f} / {worst:>10}")
        lines.append(f"{format_duration(duration):>7} | " + " | ".join(f"{c:>22}" for c in cells))
    for check in (results.targets_workload, results.targets_exact):
        verdict = "met" if check.met else f"NOT met ({len(check.violations)} violations)"
        lines.append(f"targets on {check.name}: {verdict}")
    if results.replay:
        by = {(r.continue_as_new, r.duration): r for r in results.replay}
        durations = sorted({r.duration for r in results.replay})
        for can in (True, False):
            a, b = by[(can, durations[0])], by[(can, durations[-1])]
            lines.append(
                f"replay CPU {format_duration(b.duration)}/{format_duration(a.duration)} "
                f"{'with' if can else 'without'} continue-as-new: "
                f"{b.end.min_ms / a.end.min_ms:.2f}x ({b.end.min_ms:.1f} ms vs "
                f"{a.end.min_ms:.1f} ms)"
            )
    if results.client_reuse is not None:
        cr = results.client_reuse
        lines.append(
            f"poll_run throughput (https + managed identity): reused {cr.reused_per_s:.0f}/s, "
            f"client + credential per call {cr.per_call_per_s:.0f}/s ({cr.ratio:.2f}x), "
            f"client per call {cr.per_call_client.calls_per_s:.0f}/s "
            f"({cr.ratio_client_only:.2f}x)"
        )
    for w in results.wall:
        lines.append(
            f"create_and_process {format_duration(w.duration)}: {w.gets} GETs, "
            f"delay {w.delay:.3f} s"
        )
    for f in results.fast_path:
        lines.append(
            f"fast path {format_duration(f.duration)}: {f.polls} polls, delay {f.delay:.3f} s"
        )
    lines += _backends(results)
    timing = ", ".join(f"{k} {v:.0f} s" for k, v in results.timings.items())
    lines.append(f"timings: {timing}")
    return "\n".join(lines)

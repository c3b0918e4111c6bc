"""The polls/delay frontier section of docs/benchmarks.md."""

# ruff: noqa: RUF001  (the report is typeset Markdown: its multiplication signs and dashes are meant)

from __future__ import annotations

import statistics
from collections.abc import Sequence

from ..frontier import Dominance, Point
from ..results import Results, StrategyResult
from ..targets import delay_limit, polls_limit
from ..workload import format_duration
from .format import Row, _count, _params, _point_numbers, _relative, _same_shape, num, secs, table


def _frontier_section(results: Results, lines: list[str], png_frontier: str | None) -> None:
    add = lines.append
    cfg = results.config
    fr = results.frontier
    add("## Frontier")
    add("")
    add(
        f"{len(fr.family)} schedules of our family — initialSeconds × maxSeconds × multiplier "
        f"× jitter × fast path over {', '.join(f'{v:g}' for v in cfg.grid_initial)} × "
        f"{', '.join(f'{v:g}' for v in cfg.grid_max)} × "
        f"{', '.join(f'{v:g}' for v in cfg.grid_multiplier)} × "
        f"{', '.join(f'{v * 100:g} %' for v in cfg.grid_jitter)} × "
        f"{', '.join('off' if v == 0 else f'{v:g} s' for v in cfg.grid_fast_path)} "
        "(initial ≤ cap; when initial = cap every wait is the cap, a fixed interval, so the "
        "multiplier does not matter) — simulated on the whole workload "
        f"({len(results.runs)} runs), with the baselines on the same runs. Mean polls per run "
        "against the worst and the mean detection delay. With the fast path a run that ends "
        "inside the window is seen with no poll as it ends, and a longer run's schedule goes "
        "on from the window's end as if it had been polling (the orchestrator anchors it at "
        "the run's age); the simulator's fast path is checked against the real app on the "
        "wall clock ([Wall clock](#wall-clock))."
    )
    add("")
    if png_frontier:
        add(f"![Polls against delay for the schedule family and the baselines]({png_frontier})")
        add("")
    body = []
    for point in [fr.default, fr.durable_default, *fr.baselines]:
        label = point.label
        if point is fr.durable_default:
            label += ", no fast path"
        body.append(
            [
                label,
                num(round(point.mean_polls, 2)),
                secs(point.worst_delay),
                secs(point.mean_delay),
                str(point.gave_up),
                str(point.target_misses),
            ]
        )
    lines += table(
        [
            "schedule",
            "polls / run",
            "worst delay",
            "mean delay",
            "never detected",
            "runs missing a target",
        ],
        body,
    )
    add("")
    add(
        "**Every baseline against our family.** A schedule *dominates* another when it makes "
        "no more polls per run and has no larger worst and no larger mean delay on the same "
        "runs, and is strictly better on one of them (a baseline that gives up on a run has "
        "an unbounded worst delay; its mean delay is over the runs it did detect, which "
        "flatters it)."
    )
    add("")
    for dom in fr.dominance:
        add(_dominance_lines(dom, fr.default))
    add("")
    add(_frontier_verdict(results))
    add("")
    feasible = sorted((p for p in fr.family if p.meets_targets), key=lambda p: p.mean_polls)
    add(_feasible_paragraph(fr.default, fr.durable_default, feasible, len(fr.family)))
    add("")
    add(_neighbourhood_sentence(fr.default, fr.neighbours, fr.no_jitter))
    add("")


def _dominance_lines(dom: Dominance, default: Point) -> str:
    base = dom.baseline
    head = (
        f"- **{base.label}** ({_point_numbers(base)}"
        + (f"; never detects {base.gave_up} runs" if base.gave_up else "")
        + "): "
    )
    if dom.dominating:
        head += f"dominated by {_count(len(dom.dominating), 'schedule')} of our family."
    else:
        head += "**not dominated** by any schedule of our family."
    items = []
    if dom.fewer_polls_at_delay is not None:
        found = dom.fewer_polls_at_delay
        items.append(
            "fewest polls at no larger worst and mean delay: "
            f"{_params(found)}: {_point_numbers(found, base)}"
        )
    else:
        items.append("no schedule of ours gets to both its worst and its mean delay")
    if dom.lower_delay_at_polls is not None:
        found = dom.lower_delay_at_polls
        items.append(
            f"lowest worst delay at no more polls: {_params(found)}: {_point_numbers(found, base)}"
        )
    verdict = "dominates it" if dom.default_dominates else "does not dominate it alone"
    items.append(
        f"the default ({_point_numbers(default)}) {verdict}"
        + (
            ""
            if dom.default_dominates
            else " (" + _default_gap(default, base) + "; it is held to the targets, which this "
            "baseline misses)"
        )
    )
    return head + "".join(f"\n  - {item}." for item in items)


def _default_gap(default: Point, base: Point) -> str:
    worse = []
    if default.mean_polls > base.mean_polls + 1e-9:
        worse.append(f"{_relative(default.mean_polls, base.mean_polls)} polls")
    if default.worst_delay > base.worst_delay + 1e-9:
        worse.append("a larger worst delay")
    if default.mean_delay > base.mean_delay + 1e-9:
        worse.append("a larger mean delay")
    return "it has " + " and ".join(worse)


def _frontier_verdict(results: Results) -> str:
    fr = results.frontier
    beaten = [d for d in fr.dominance if d.dominating]
    if len(beaten) == len(fr.dominance):
        text = (
            "**Every baseline is dominated by a schedule of our family**: fewer polls at equal "
            "delay, lower delay at equal polls. "
        )
    else:
        missed = ", ".join(d.baseline.label for d in fr.dominance if not d.dominating)
        text = f"**Not every baseline is dominated**: {missed} is not. "
    for dom in fr.dominance:
        if not dom.dominating or dom.baseline.key not in ("fixed-1s", "monitor-60s"):
            continue
        kinds = sorted(
            {
                ("fast path" if p.fast_path else "no fast path")
                + (", jitter" if p.jitter else ", no jitter")
                for p in dom.dominating
            }
        )
        text += (
            f"Against *{dom.baseline.label}*, {_count(len(dom.dominating), 'schedule')} of ours "
            f"({'; '.join(kinds)}) {'dominates' if len(dom.dominating) == 1 else 'dominate'} it. "
        )
    text += (
        "A fixed interval is the fewest checks that keep every delay under that interval, so "
        "at its own worst delay nothing that ramps up can poll less; what does is seeing "
        "short runs end on the stream (no polls, no delay), and, against the monitor, not "
        "making its check at t = 0 (the start activity has just seen the run queued). "
    )
    text += (
        "The default itself sits elsewhere on the frontier: it is the cheapest schedule that "
        "meets the targets (a delay proportional to short runs and capped at 30 s), which no "
        "baseline meets."
    )
    return text


def _feasible_paragraph(
    default: Point, durable: Point, feasible: Sequence[Point], family_size: int
) -> str:
    text = (
        f"**Within the targets.** {_count(len(feasible), 'schedule')} of {family_size} "
        f"{'meets' if len(feasible) == 1 else 'meet'} the targets on every workload run. "
        "The delay bound is max(initial, (multiplier − 1) × D) capped at maxSeconds, so "
        "multiplier ≤ 1.5 (delay ≤ D/2), maxSeconds ≤ 30 and, without the fast path, "
        "initialSeconds ≤ 2 (delay ≤ 2 s on short runs); within those, longer waits mean "
        "fewer polls. "
    )
    if not default.meets_targets:
        return text + f"The default does **not** ({default.target_misses} runs miss a target)."
    same_kind = [p for p in feasible if p.jitter == default.jitter]
    cheaper = [p for p in same_kind if p.mean_polls < default.mean_polls - 1e-9]
    if cheaper:
        best = cheaper[0]
        text += (
            f"With {default.jitter * 100 if default.jitter else 0:g} % jitter the default is "
            f"**not** the cheapest: {_params(best)} makes {num(round(best.mean_polls, 2))} "
            f"polls per run vs {num(round(default.mean_polls, 2))}."
        )
    else:
        ties = [p for p in same_kind if abs(p.mean_polls - default.mean_polls) <= 1e-9]
        text += (
            f"With {(default.jitter or 0) * 100:g} % jitter the default "
            f"({num(round(default.mean_polls, 2))} polls/run) makes the fewest polls of them"
            + (
                f" (tied by {len(ties) - 1} that differ only in an initial wait the fast path "
                "never reaches)"
                if len(ties) > 1
                else ""
            )
            + "."
        )
    text += (
        f" Without the fast path the same schedule makes {num(round(durable.mean_polls, 2))} "
        "polls per run"
        + (" and still meets the targets" if durable.meets_targets else "")
        + " (that is what the real orchestrator ran above)."
    )
    return text


def _neighbourhood_sentence(default: Point, neighbours: Sequence[Point], no_jitter: Point) -> str:
    others = [p for p in neighbours if not _same_shape(p, default)]
    ok = [p for p in others if p.meets_targets]
    cheaper = [p for p in ok if p.mean_polls < default.mean_polls - 1e-9]
    text = (
        f"**Around the default** (each of initialSeconds, maxSeconds and multiplier − 1 moved "
        f"5 % down, kept or moved 5 % up, with the fast path: {len(others)} neighbours; "
        "targets checked on the workload and exactly on every duration), "
        f"{_count(len(ok), 'neighbour')} {'meets' if len(ok) == 1 else 'meet'} the targets"
    )
    if cheaper:
        best = min(cheaper, key=lambda p: p.mean_polls)
        text += (
            f", and {len(cheaper)} of them poll less: {_params(best)} makes "
            f"{num(round(best.mean_polls, 2))} polls per run vs "
            f"{num(round(default.mean_polls, 2))}."
        )
    else:
        text += ", and none of them polls less than the default."
    saving = (1 - no_jitter.mean_polls / default.mean_polls) * 100
    text += (
        f" **Jitter** ({(default.jitter or 0) * 100:g} %: it shortens only the first wait, "
        "shifting the whole schedule so instances started together stay apart) costs "
        f"{saving:.1f} % of the polls: without it the default makes "
        f"{num(round(no_jitter.mean_polls, 2))} polls per run (worst delay "
        f"{secs(no_jitter.worst_delay)}, mean {secs(no_jitter.mean_delay)}) and "
        + ("still meets" if no_jitter.meets_targets else "no longer meets")
        + " the targets."
    )
    return text


def _frontier_headline(results: Results) -> str:
    fr = results.frontier
    beaten = [d for d in fr.dominance if d.dominating]
    misses = ", ".join(f"{p.label}: {p.target_misses} runs" for p in fr.baselines)
    feasible = [p for p in fr.family if p.meets_targets]
    cheapest = min((p.mean_polls for p in feasible if p.jitter == fr.default.jitter), default=0)
    default_cheapest = fr.default.meets_targets and fr.default.mean_polls <= cheapest + 1e-9
    return (
        f"- Frontier ({len(fr.family)} schedules of our family on the whole workload): "
        + (
            "**every baseline is dominated** by one of them (fewer polls at equal delay, "
            "lower delay at equal polls)"
            if len(beaten) == len(fr.dominance)
            else f"{len(beaten)} of {len(fr.dominance)} baselines are dominated by one of them"
        )
        + ". The default ("
        + _point_numbers(fr.default)
        + ") is "
        + ("the cheapest" if default_cheapest else "**not** the cheapest")
        + f" of the {len(feasible)} that meet the targets; no baseline meets them (runs "
        f"missing one: {misses}). Details under [Frontier](#frontier)."
    )


def _headline_table(
    results: Results, per_strategy: Sequence[tuple[StrategyResult, list[Row]]]
) -> list[str]:
    round_runs = [i for i, r in enumerate(results.runs) if r.group == "round"]
    body = []
    for duration in results.config.workload.round_durations:
        picked = [i for i in round_runs if results.runs[i].duration == duration]
        cells = [format_duration(duration)]
        for _strategy, srows in per_strategy:
            chosen = [srows[i] for i in picked]
            detected = [r.delay for r in chosen if r.delay is not None]
            worst = secs(max(detected)) if len(detected) == len(chosen) else "never detected"
            cells.append(f"{num(statistics.fmean(r.polls for r in chosen))} / {worst}")
        body.append(cells)
    return table(["run", *(s.label for s, _ in per_strategy)], body)


def _tightest(results: Results) -> str:
    measured = results.measured
    if not measured:
        return ""
    tight = min(measured, key=lambda m: polls_limit(m.duration) - m.polls)
    slow = max(measured, key=lambda m: m.delay / delay_limit(m.duration))
    return (
        f"Closest calls on the real runs: {tight.polls} polls for a {secs(tight.duration)} run "
        f"(limit {polls_limit(tight.duration):.1f}); a {secs(slow.delay)} delay on a "
        f"{secs(slow.duration)} run (limit {secs(delay_limit(slow.duration))})."
    )

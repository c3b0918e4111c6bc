"""Tables, numbers and rows shared by the sections of docs/benchmarks.md."""

# ruff: noqa: RUF001  (the report is typeset Markdown: its multiplication signs and dashes are meant)

from __future__ import annotations

import math
import statistics
from collections.abc import Iterable, Sequence
from dataclasses import dataclass

from ..baseline_runs import durable_history_events
from ..costs import waiting_cost
from ..frontier import Point
from ..results import Results, StrategyResult
from ..targets import DELAY_TOLERANCE

PNG_MAIN = "benchmarks.png"
PNG_FRONTIER = "benchmarks-frontier.png"
BINS: tuple[tuple[float, float], ...] = (
    (0, 10),
    (10, 60),
    (60, 300),
    (300, 1800),
    (1800, 7200),
    (7200, math.inf),
)


@dataclass(frozen=True)
class Row:
    """One strategy on one run."""

    duration: float
    polls: int
    delay: float | None  # None: never detected
    history: int
    waited: float  # seconds from the start to the last check


def rows(results: Results, strategy: StrategyResult) -> list[Row]:
    out = []
    for i, (run, outcome) in enumerate(zip(results.runs, strategy.outcomes, strict=True)):
        delay: float | None
        if strategy.key == "ours":
            measured = results.measured[i]
            polls, delay, history = measured.polls, measured.delay, measured.max_history
        else:
            polls, delay = outcome.polls, outcome.delay(run.duration)
            timers = polls if strategy.first_us > 0 else polls - 1
            history = durable_history_events(polls, timers)
        out.append(Row(run.duration, polls, delay, history, outcome.last_us / 1_000_000))
    return out


def p95(values: Sequence[float]) -> float:
    """Nearest-rank 95th percentile."""
    ordered = sorted(values)
    return ordered[max(0, math.ceil(0.95 * len(ordered)) - 1)]


def secs(value: float | None) -> str:
    if value is None or math.isinf(value):
        return "—"
    if abs(value) < 10:
        return f"{value:.2f} s"
    if abs(value) < 100:
        return f"{value:.1f} s"
    return f"{value:,.0f} s"


def num(value: float) -> str:
    if value == int(value):
        return f"{int(value):,}"
    return f"{value:,.1f}" if value >= 10 else f"{value:.2f}"


def dollars(value: float) -> str:
    if value >= 100:
        return f"${value:,.0f}"
    if value >= 1:
        return f"${value:.2f}"
    return f"${value:.2g}"


def table(header: Sequence[str], body: Iterable[Sequence[str]], align: str = "") -> list[str]:
    spec = align or "l" + "r" * (len(header) - 1)
    marks = {"l": "---", "r": "---:", "c": ":---:"}
    lines = ["| " + " | ".join(header) + " |", "| " + " | ".join(marks[a] for a in spec) + " |"]
    lines += ["| " + " | ".join(cells) + " |" for cells in body]
    return lines


def summary_cells(
    strategy: StrategyResult, selected: Sequence[Row], per_1000: bool = True
) -> list[str]:
    detected = [r.delay for r in selected if r.delay is not None]
    gave_up = sum(1 for r in selected if r.delay is None)
    cost = statistics.fmean(
        waiting_cost(strategy.deployment, r.polls, r.waited).dollars for r in selected
    )
    history = max(r.history for r in selected)
    mark = "" if strategy.deployment == "durable" else " †"
    return [
        num(statistics.fmean(r.polls for r in selected)),
        secs(statistics.fmean(detected) if detected else None),
        secs(p95(detected) if detected else None),
        secs(max(detected) if detected else None),
        str(gave_up),
        f"{history:,}{mark}",
        dollars(cost * 1000),
    ]


HEADER = [
    "strategy",
    "polls / run",
    "delay mean",
    "delay p95",
    "delay max",
    "never detected",
    "history events / generation",
    "waiting cost / 1000 runs",
]


def _strategy_rows(results: Results) -> list[tuple[StrategyResult, list[Row]]]:
    return [(s, rows(results, s)) for s in results.strategies]


def _params(p: Point) -> str:
    text = f"initial {p.initial:g} s, cap {p.maximum:g} s"
    if p.initial != p.maximum:
        text += f", ×{p.multiplier:g}"
    text += f", jitter {(p.jitter or 0) * 100:g} %"
    text += f", fast path {p.fast_path:g} s" if p.fast_path else ", no fast path"
    return text


def _point_numbers(p: Point, base: Point | None = None) -> str:
    polls = f"{num(round(p.mean_polls, 2))} polls/run"
    if base is not None:
        polls += f" ({_relative(p.mean_polls, base.mean_polls)})"
    return f"{polls}, worst {secs(p.worst_delay)}, mean {secs(p.mean_delay)}"


def _count(n: int, noun: str) -> str:
    return f"{n} {noun}" + ("" if n == 1 else "s")


def _relative(ours: float, theirs: float) -> str:
    if ours < theirs - 1e-9:
        return f"{(1 - ours / theirs) * 100:.1f} % fewer"
    if ours > theirs + 1e-9:
        return f"{(ours / theirs - 1) * 100:.1f} % more"
    return "as many"


def _same_shape(p: Point, q: Point) -> bool:
    return (p.initial, p.maximum, p.multiplier, p.jitter, p.fast_path) == (
        q.initial,
        q.maximum,
        q.multiplier,
        q.jitter,
        q.fast_path,
    )


def _margin(seconds: float) -> str:
    """A delay margin; waits are whole milliseconds, so a bound may be passed by less."""
    if -DELAY_TOLERANCE <= seconds < 0:
        return f"{seconds * 1000:.2f} ms (timer resolution)"
    return secs(seconds)


def _price(value: float) -> str:
    return "$" + f"{value:.6f}".rstrip("0").rstrip(".")

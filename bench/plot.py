"""The doc's PNGs (matplotlib, imported only here)."""

from __future__ import annotations

import math
from pathlib import Path

from shared.adapters.settings import DEFAULT_FAST_PATH_SECONDS

from .results import Results
from .schedules import RelaySchedule, Strategy, baselines, simulate
from .targets import delay_limit, polls_limit

COLORS = {
    "ours": "#1f77b4",
    "fixed-1s": "#d62728",
    "tenacity": "#ff7f0e",
    "monitor-60s": "#2ca02c",
}
MARKERS = {"fixed-1s": "s", "tenacity": "^", "monitor-60s": "D"}


def _curve_durations() -> list[float]:
    return [round(10 ** (i / 100), 3) for i in range(0, int(100 * math.log10(6 * 3600)) + 1)]


def plot_main(results: Results, path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    durations = _curve_durations()
    seed = results.seeds[0]
    strategies: list[Strategy] = [RelaySchedule(), *baselines(with_tenacity=results.with_tenacity)]
    fig, (ax_polls, ax_delay) = plt.subplots(1, 2, figsize=(13, 5.2))
    for strategy in strategies:
        outcomes = [simulate(strategy, d, seed) for d in durations]
        color = COLORS.get(strategy.key, "black")
        ax_polls.plot(durations, [o.polls for o in outcomes], color=color, label=strategy.label)
        detected = [(d, o.delay(d)) for d, o in zip(durations, outcomes, strict=True)]
        xs = [d for d, delay in detected if delay is not None]
        ys = [max(delay, 1e-3) for _, delay in detected if delay is not None]
        ax_delay.plot(xs, ys, color=color, label=strategy.label, linewidth=1)
        lost = [d for d, delay in detected if delay is None]
        if lost:
            ax_delay.axvspan(min(lost), max(lost), color=color, alpha=0.08)
            ax_delay.text(
                min(lost) * 1.1, 150, f"{strategy.key}: gives up", color=color, fontsize=8
            )
    fast = RelaySchedule(fast_path_seconds=DEFAULT_FAST_PATH_SECONDS)
    fast_label = f"ours with the default {DEFAULT_FAST_PATH_SECONDS:g} s fast path"
    fast_outcomes = [(d, simulate(fast, d, seed)) for d in durations]
    shown = [(d, o.polls) for d, o in fast_outcomes if o.polls > 0]
    ax_polls.plot(
        [d for d, _ in shown],
        [p for _, p in shown],
        color=COLORS["ours"],
        linestyle=":",
        label=fast_label + f" (0 polls up to {DEFAULT_FAST_PATH_SECONDS:g} s)",
    )
    ax_delay.plot(
        [d for d, _ in fast_outcomes],
        [max(o.delay(d) or 0.0, 1e-3) for d, o in fast_outcomes],
        color=COLORS["ours"],
        linestyle=":",
        linewidth=1,
        label=fast_label,
    )
    measured = results.measured
    for ax, values, label in (
        (ax_polls, [m.polls for m in measured], "ours, measured (real orchestrator)"),
        (ax_delay, [max(m.delay, 1e-3) for m in measured], "ours, measured"),
    ):
        ax.scatter(
            [m.duration for m in measured],
            values,
            s=9,
            color=COLORS["ours"],
            edgecolor="black",
            linewidth=0.3,
            zorder=3,
            label=label,
        )
    ax_polls.plot(
        durations, [polls_limit(d) for d in durations], "k--", linewidth=1, label="target: D/25 + 8"
    )
    ax_delay.plot(
        durations,
        [delay_limit(d) for d in durations],
        "k--",
        linewidth=1,
        label="target: max(2 s, D/2), ≤ 30 s",
    )
    for ax in (ax_polls, ax_delay):
        ax.set_xscale("log")
        ax.set_yscale("log")
        ax.set_xlabel("run duration (s)")
        ax.grid(True, which="both", alpha=0.25)
        for mark, text in ((60, "1 min"), (3600, "1 h")):
            ax.axvline(mark, color="grey", linewidth=0.5, alpha=0.5)
            ax.text(
                mark * 1.05,
                ax.get_ylim()[0] * 1.3 if ax is ax_polls else 1.5e-3,
                text,
                fontsize=7,
                color="grey",
            )
    ax_polls.set_ylabel("polls per run")
    ax_polls.set_title("Polls per run")
    ax_delay.set_ylabel("detection delay (s)")
    ax_delay.set_ylim(1e-3, 400)
    ax_delay.set_title("Delay from the run's end to its detection")
    ax_polls.legend(fontsize=8, loc="upper left")
    ax_delay.legend(fontsize=8, loc="lower right")
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)


def plot_frontier(results: Results, path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fr = results.frontier
    fig, axes = plt.subplots(1, 2, figsize=(13, 5.2))
    finite = [
        p.worst_delay
        for p in [*fr.family, fr.default, *fr.baselines]
        if not math.isinf(p.worst_delay)
    ]
    right_edge = max(finite) * 1.6
    for ax, attr, title in (
        (axes[0], "worst_delay", "Mean polls per run vs worst delay"),
        (axes[1], "mean_delay", "Mean polls per run vs mean delay"),
    ):
        for feasible, fast, color, marker, label in (
            (False, False, "#cccccc", "o", "our family, no fast path"),
            (False, True, "#aaaaaa", "^", "our family, fast path"),
            (True, False, "#9ecae1", "o", "our family, no fast path, meets the targets"),
            (True, True, "#3182bd", "^", "our family, fast path, meets the targets"),
        ):
            chosen = [
                p for p in fr.family if p.meets_targets is feasible and bool(p.fast_path) is fast
            ]
            ax.scatter(
                [getattr(p, attr) for p in chosen],
                [p.mean_polls for p in chosen],
                s=10,
                marker=marker,
                color=color,
                alpha=0.8,
                label=label,
            )
        ax.scatter(
            [getattr(fr.default, attr)],
            [fr.default.mean_polls],
            s=170,
            marker="*",
            color=COLORS["ours"],
            edgecolor="black",
            zorder=5,
            label=fr.default.label + " — default",
        )
        ax.scatter(
            [getattr(fr.durable_default, attr)],
            [fr.durable_default.mean_polls],
            s=120,
            marker="*",
            facecolor="white",
            edgecolor=COLORS["ours"],
            zorder=5,
            label="the same without the fast path",
        )
        for dom in fr.dominance:
            best = dom.fewer_polls_at_delay
            if best is not None and dom.dominating:
                ax.scatter(
                    [getattr(best, attr)],
                    [best.mean_polls],
                    s=60,
                    marker="D",
                    facecolor="none",
                    edgecolor=COLORS.get(dom.baseline.key, "black"),
                    linewidths=1.5,
                    zorder=4,
                    label=f"ours, fewest polls at the delay of {dom.baseline.label}",
                )
        for point in fr.baselines:
            x = getattr(point, attr)
            gave_up = math.isinf(x)
            ax.scatter(
                [right_edge if gave_up else x],
                [point.mean_polls],
                s=70,
                marker=MARKERS.get(point.key, "o"),
                color=COLORS.get(point.key, "black"),
                edgecolor="black",
                zorder=4,
                label=point.label
                + (f" (never detects {point.gave_up} runs)" if point.gave_up else ""),
            )
        ax.set_xscale("log")
        ax.set_yscale("log")
        ax.set_xlabel(
            attr.replace("_", " ")
            + " (s)"
            + ("; right edge = never detected" if attr == "worst_delay" else "")
        )
        ax.set_ylabel("mean polls per run")
        ax.set_title(title)
        ax.grid(True, which="both", alpha=0.25)
    axes[0].legend(fontsize=8, loc="upper right")
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)

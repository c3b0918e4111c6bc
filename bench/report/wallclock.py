"""The wall-clock and fast-path window sections of docs/benchmarks.md."""

# ruff: noqa: RUF001  (the report is typeset Markdown: its multiplication signs and dashes are meant)

from __future__ import annotations

from shared.adapters.settings import DEFAULT_FAST_PATH_SECONDS

from ..costs import PollModel, Prices, waiting_cost
from ..results import Results
from ..workload import format_duration
from .format import dollars, num, secs, table


def _wall_section(results: Results, lines: list[str]) -> None:
    add = lines.append
    if not results.wall and not results.fast_path:
        return
    add("## Wall clock")
    add("")
    if results.wall:
        add(
            "The real `AgentsClient.runs.create_and_process` (sync `azure.ai.agents`) against "
            "the loopback Agents service following the wall clock (`WallClock`), runs in "
            "parallel threads; delay = the GET that saw the end minus the run's end."
        )
        add("")
        lines += table(
            ["run", "GETs", "delay", "final status"],
            [
                [format_duration(w.duration), str(w.gets), secs(w.delay), w.status]
                for w in results.wall
            ],
        )
        add("")
    if results.fast_path:
        add(
            f"The relay with its default fast path (`FAST_PATH_SECONDS="
            f"{DEFAULT_FAST_PATH_SECONDS:g}`): the start activity creates the run streaming "
            f"and follows it for up to {DEFAULT_FAST_PATH_SECONDS:g} s of wall time (the "
            "loopback service's clock follows the wall during a stream); a longer run falls "
            "back to the durable schedule, which goes on from the run's age (the first wait "
            "after a 10 s window is (multiplier − 1) × 10 s, not the initial 2 s). *Simulated*: "
            "what the frontier's simulator predicts for the same run and submission id "
            "(asserted equal, up to the few ms a wall-clock stream overruns its window)."
        )
        add("")
        checks = {id(c.run): c for c in results.fast_path_checks}
        body = []
        for f in results.fast_path:
            check = checks.get(id(f))
            simulated = "—"
            if check is not None:
                sim_delay = check.simulated.delay(f.duration)
                simulated = f"{check.simulated.polls} / {secs(sim_delay)}"
            body.append(
                [format_duration(f.duration), str(f.polls), secs(f.delay), simulated, f.status]
            )
        lines += table(["run", "polls", "delay", "simulated polls / delay", "final status"], body)
        add("")
        add(
            "The fast path holds the start activity open for up to the window on every "
            "submission (about 20 GB-s on a 2 GB Flex instance for 10 s), in exchange for "
            "zero polls and an immediate event for runs that end inside it."
        )
        add("")


def _window_section(results: Results, lines: list[str]) -> None:
    add = lines.append
    rows = results.fast_path_windows
    if not rows:
        return
    prices, model = Prices(), PollModel()
    per_poll = waiting_cost("durable", 1, 0.0, prices, model).dollars
    per_held_second = model.instance_memory_gb * prices.per_gb_second
    add("### Fast path window")
    add("")
    add(
        "The default schedule with each `FAST_PATH_SECONDS`, simulated on the whole workload "
        f"({len(results.runs)} runs). *Held*: the mean wall time the start activity follows "
        "the stream per run (until the run ends or the window closes). *Cost*: the polls "
        "(Durable storage, executions and busy time, see [Cost model](#cost-model)) plus the "
        f"held time on a {model.instance_memory_gb:g} GB instance at concurrency 1, an upper "
        "bound (streams that share an instance share its billed time)."
    )
    add("")
    body = []
    for row in rows:
        polls_cost = row.mean_polls * per_poll * 1000
        held_cost = row.held_seconds * per_held_second * 1000
        body.append(
            [
                "off" if row.window == 0 else f"{row.window:g} s",
                num(round(row.mean_polls, 2)),
                f"{row.on_stream * 100:.0f} %",
                secs(row.saved_delay) if row.window else "—",
                secs(row.mean_delay),
                secs(row.held_seconds),
                dollars(polls_cost + held_cost),
            ]
        )
    lines += table(
        [
            "window",
            "polls / run",
            "runs seen on the stream",
            "their delay without it (mean)",
            "mean delay, all runs",
            "held / run",
            "cost / 1000 runs",
        ],
        body,
    )
    add("")
    by = {row.window: row for row in rows}
    chosen = by.get(DEFAULT_FAST_PATH_SECONDS)
    off = by.get(0.0)
    if chosen is not None and off is not None:
        extra = (chosen.held_seconds * per_held_second) * 1000
        saved = (off.mean_polls - chosen.mean_polls) * per_poll * 1000
        add(
            f"**Why {DEFAULT_FAST_PATH_SECONDS:g} s.** The fast path buys latency on short runs, "
            f"not money: at {DEFAULT_FAST_PATH_SECONDS:g} s, {chosen.on_stream * 100:.0f} % of "
            "these runs end on the stream, with no poll and no delay instead of "
            f"{secs(chosen.saved_delay)} on average, and the polls per run drop from "
            f"{num(round(off.mean_polls, 2))} to {num(round(chosen.mean_polls, 2))}; the held "
            f"time costs at most {dollars(extra)} per 1000 runs against {dollars(saved)} of "
            "polls saved. Agent runs that answer within seconds are the interactive case, where "
            "a caller is waiting for the event; a longer window holds every run's activity "
            "longer for runs that take long anyway, whose schedule then waits "
            "(multiplier − 1) × their age between checks. Set `FAST_PATH_SECONDS=0` where "
            "the bill matters more than the first seconds."
        )
        add("")

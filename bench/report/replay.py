"""The Durable history and replay section of docs/benchmarks.md."""

# ruff: noqa: RUF001  (the report is typeset Markdown: its multiplication signs and dashes are meant)

from __future__ import annotations

from ..results import Results
from ..workload import format_duration
from .format import table


def _replay_by(results: Results) -> dict[tuple[bool, float], object]:
    return {(r.continue_as_new, r.duration): r for r in results.replay}


def _replay_headline(results: Results) -> str:
    rows_ = results.replay
    if not rows_:
        return ""
    durations = sorted({r.duration for r in rows_})
    first, last = durations[0], durations[-1]
    by = {(r.continue_as_new, r.duration): r for r in rows_}
    can_first, can_last = by[(True, first)], by[(True, last)]
    no_first, no_last = by[(False, first)], by[(False, last)]
    return (
        f"- Replay CPU at the end of a run, {format_duration(last)} vs "
        f"{format_duration(first)}: **{can_last.end.min_ms / can_first.end.min_ms:.2f}×** "
        f"with continue-as-new ({can_last.end.min_ms:.1f} vs "
        f"{can_first.end.min_ms:.1f} ms; the largest generation during the run: "
        f"{can_last.peak.min_ms / can_first.peak.min_ms:.2f}×), "
        f"{no_last.end.min_ms / no_first.end.min_ms:.1f}× without it "
        f"({no_last.end.min_ms:.0f} ms per replay, {no_last.end_events:,} events)."
    )


def _replay_section(results: Results, lines: list[str]) -> None:
    add = lines.append
    if not results.replay:
        return
    cfg = results.config
    add("## Replay cost")
    add("")
    add(
        "CPU time (`time.process_time`) of one replay of the orchestrator through its SDK "
        "entry point, as the worker invokes it "
        "(`OrchestrationTriggerConverter.decode` → the registered user function of "
        "`function_app.app` → `encode`), on the exact context JSON the emulated host last "
        "sent to the SDK (`InstanceView.last_context`) at the end of each run; the fastest of "
        "repeated replays (the least disturbed by other load on the machine), garbage "
        "collector paused, the SDK's real (not memoized) timestamp parser. "
        "*Largest* is the biggest context seen during the run (just before a "
        "continue-as-new)."
    )
    add("")
    no_can_ppg = max(r.polls_per_generation for r in results.replay)
    add(
        f"Without continue-as-new: `POLLS_PER_GENERATION={no_can_ppg}` (the setting's "
        "maximum) is enough for these runs, since a run needs start + polls + publish steps "
        f"in one generation and the longest needs {max(r.polls for r in results.replay) + 2}; "
        f"the schedule's waits settle at about 28.5 s, so 1000 steps last until about "
        f"{_hours_for_steps(1000):.1f} h. Longer runs cannot disable it through the setting "
        "(the bench would then need to start the orchestration with a larger generation in "
        "its input, which it checks it does not need)."
    )
    add("")
    body = []
    for r in sorted(results.replay, key=lambda r: (not r.continue_as_new, r.duration)):
        mode = (
            f"continue-as-new every {r.polls_per_generation} steps"
            if r.continue_as_new
            else "no continue-as-new"
        )
        body.append(
            [
                format_duration(r.duration),
                mode,
                str(r.polls),
                str(r.generations),
                f"{r.end_events:,}",
                f"{r.end.min_ms:.1f}",
                f"{r.peak_events:,}",
                f"{r.peak.min_ms:.1f}",
            ]
        )
    lines += table(
        [
            "run",
            "mode",
            "polls",
            "generations",
            "events at the end",
            "CPU ms per replay at the end",
            "largest context (events)",
            "CPU ms, largest",
        ],
        body,
        "llrrrrrr",
    )
    add("")
    del cfg
    add(
        "With continue-as-new the cost per replay is bounded by the generation size whatever "
        "the run's length; without it every step replays the whole history, so the total "
        "replay work of a run grows with the square of its polls (and on the Consumption "
        "plan each replay is a billed execution)."
    )
    add("")


def _hours_for_steps(steps: int) -> float:
    from ..schedules import RelaySchedule, simulate

    low, high = 60.0, 48 * 3600.0
    while high - low > 60:
        mid = (low + high) / 2
        if simulate(RelaySchedule(), mid, "").polls + 2 > steps:
            high = mid
        else:
            low = mid
    return low / 3600

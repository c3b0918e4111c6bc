"""The Backends section of docs/benchmarks.md: classic Agents service and Foundry side by side."""

from __future__ import annotations

import statistics
from collections.abc import Sequence

from ..foundry_runs import FoundryRun
from ..results import BackendsResult, Results, RunPair
from ..wallclock import FastPathRun
from ..workload import format_duration
from .format import _margin, num, p95, secs, table

CLASSIC, FOUNDRY = "classic (Agents threads/runs)", "Foundry (Responses API)"


def _cells(polls: Sequence[int], delays: Sequence[float]) -> list[str]:
    return [
        num(round(statistics.fmean(polls), 2)),
        secs(statistics.fmean(delays)),
        secs(p95(delays)),
        secs(max(delays)),
    ]


def _rows(name: str, pairs: Sequence[RunPair]) -> list[list[str]]:
    if not pairs:
        return []
    same = sum(p.same for p in pairs)
    classic = _cells([p.classic.polls for p in pairs], [p.classic.delay for p in pairs])
    foundry = _cells([p.foundry.polls for p in pairs], [p.foundry.delay for p in pairs])
    count = str(len(pairs))
    return [
        [name, CLASSIC, count, *classic, "—"],
        [name, FOUNDRY, count, *foundry, f"{same} / {len(pairs)}"],
    ]


def _per_run(calls: dict[str, int], runs: int, operations: Sequence[str]) -> str:
    return ", ".join(f"`{op}` {num(round(calls.get(op, 0) / runs, 2))}" for op in operations)


def _stream(run: FoundryRun) -> str:
    if run.drop_after is None:
        return "followed"
    return f"cut after event {run.drop_after}"


def _classic_beside(classic: Sequence[FastPathRun], run: FoundryRun) -> str:
    found = next((c for c in classic if c.duration == run.duration), None)
    return "—" if found is None else f"{found.polls} / {_precise(found.delay)}"


def _precise(seconds: float | None) -> str:
    """Wall-clock delays: to the millisecond."""
    return "—" if seconds is None else f"{seconds:.3f} s"


def _same_text(b: BackendsResult) -> str:
    same = sum(p.same for p in b.pairs)
    if same == len(b.pairs):
        return (
            f"**The two match exactly on all {len(b.pairs)} runs**: same polls, same detection "
            "instant to the microsecond, same delay."
        )
    return f"The two match exactly on {same} of {len(b.pairs)} runs; the others differ:"


def _history_text(pairs: Sequence[RunPair]) -> str:
    """What the extra start step does to the Durable history, as measured."""
    single = [
        p for p in pairs if len(p.classic.history_lengths) == len(p.foundry.history_lengths) == 1
    ]
    extra = {p.foundry.history_lengths[0] - p.classic.history_lengths[0] for p in single}
    more = sum(len(p.foundry.history_lengths) > len(p.classic.history_lengths) for p in pairs)
    text = "The extra start step is one more step of the first generation"
    if len(extra) == 1:
        (events,) = extra
        text += f": {events:+d} history events for a run that ends within it"
    text += (
        " (continue-as-new comes after a fixed number of steps, so for longer runs its "
        f"boundary moves one step earlier: {more} of these runs needed one generation more; "
        "largest generation: classic "
        f"{max(p.classic.max_history for p in pairs)} events, Foundry "
        f"{max(p.foundry.max_history for p in pairs)})."
    )
    return text


def _durable(results: Results, b: BackendsResult, lines: list[str]) -> None:
    add = lines.append
    cfg = results.config
    add(
        f"**Durable schedule, virtual time** (`FAST_PATH_SECONDS=0`): {b.subset} submitted "
        'for a Foundry agent (`{"agent": {"name": ...}, "input": ...}`) through '
        "`POST /api/runs`, with the same `Idempotency-Key`s as the classic runs above (so the "
        "same submission ids, and the same jitter), on the same emulated host against the "
        "loopback Foundry project service (`devhost/foundry_service`), each response scripted "
        "`queued_seconds=0`, `duration_seconds=D`. Polls are the `responses.retrieve` calls the "
        "service recorded for the response; delay = the topic's receipt of the event minus the "
        "response's terminal time (its `responses.create` time + queued + D). *Same as classic*: "
        "runs whose polls, detection instant and delay equal the classic run's."
    )
    add("")
    pairs = b.pairs
    body: list[list[str]] = []
    for duration in cfg.workload.round_durations:
        picked = [p for p in pairs if p.foundry.group == "round" and p.foundry.duration == duration]
        body += _rows(format_duration(duration), picked)
    body += _rows("heavy tail", [p for p in pairs if p.foundry.group == "heavy-tail"])
    body += _rows("**all**", pairs)
    lines += table(
        [
            "run",
            "backend",
            "runs",
            "polls / run",
            "delay mean",
            "delay p95",
            "delay max",
            "same as classic",
        ],
        body,
        "llrrrrrr",
    )
    add("")
    add(_same_text(b))
    for pair in [p for p in pairs if not p.same][:10]:
        c, f = pair.classic, pair.foundry
        add(
            f"- run {f.index} ({format_duration(f.duration)}): classic {c.polls} polls, "
            f"detected at {c.detected_us / 1e6:.6f} s, delay {c.delay:.6f} s; Foundry "
            f"{f.polls} polls, detected at {f.detected_us / 1e6:.6f} s, delay {f.delay:.6f} s"
        )
    history = _history_text(pairs)
    check = b.targets
    add("")
    add(
        "Why they agree: the poll schedule starts when the start activity returns the new "
        "response (the run, for classic), and both backends then poll with the same policy "
        "and the same jitter. What Foundry adds comes before that instant: a new submission "
        "first gets its conversation (`conversations.create`, one more start activity, called "
        "again at once with no timer in between), then the start activity reads the "
        "conversation's items (to find a response an earlier attempt made) and creates the "
        "response. Virtual time stands still during a call, so here the extra activity moves "
        "nothing; in Azure it delays the response's create by one activity round trip (a queue "
        "message and the HTTP call), which the caller waits for, but it does not move the "
        "schedule relative to the response, so polls and the delay after the response ends "
        f"stay as measured. {history} Service calls per run: classic "
        + _per_run(
            results.agents_calls,
            len(results.runs),
            ("threads.create", "threads.list", "runs.create", "runs.get", "messages.list"),
        )
        + " (the whole workload); Foundry "
        + _per_run(
            b.foundry_calls,
            len(pairs),
            (
                "conversations.create",
                "conversations.items.list",
                "responses.create",
                "responses.retrieve",
            ),
        )
        + ". Targets on the Foundry runs: "
        + ("met" if check.met else f"**not met** ({len(check.violations)} violations)")
        + f" (smallest polls margin {check.worst_polls_margin:.2f}, smallest delay margin "
        f"{_margin(check.worst_delay_margin)})."
    )
    add("")


def _fast_path(results: Results, b: BackendsResult, lines: list[str]) -> None:
    add = lines.append
    if not b.fast_path:
        return
    window = b.window
    add(
        f"**Fast path with resume, wall clock** (`FAST_PATH_SECONDS={window:g}`): the start "
        "activity creates the response with `stream=True` and follows its SSE stream for up "
        "to the window; a stream that drops is resumed with `GET /responses/{id}?stream=true"
        "&starting_after=N` (up to 3 times), and when the window closes the durable schedule "
        "goes on from the response's age, as for classic. Each response is queued for the "
        "first half of its duration and in progress for the second, so its event 1 "
        "(`response.in_progress`) comes half-way; *cut* runs have the service close the "
        f"create's stream right after event {results.config.foundry_drop_after}, half-way "
        "through. One submission at a time, each duration with the same submission id as "
        "the classic fast-path run beside it (the same jitter). *Resumes*: `responses."
        "retrieve` calls with `stream=true&starting_after=`; *last event seen*: the highest "
        "`sequence_number` the service sent the relay on a stream, against the response's "
        "last (terminal) event; polls exclude the streams. *Simulated*: the simulator's "
        "prediction for the same submission id (asserted, as for classic)."
    )
    add("")
    checks = dict(zip(map(id, b.fast_path), b.fast_path_checks, strict=True))
    body = []
    for run in b.fast_path:
        simulated = checks[id(run)].simulated
        body.append(
            [
                format_duration(run.duration),
                _stream(run),
                str(run.polls),
                _precise(run.delay),
                str(run.resumes),
                f"{run.last_sequence} / {run.final_sequence}",
                f"{simulated.polls} / {_precise(simulated.delay(run.duration))}",
                _classic_beside(results.fast_path, run),
                run.status,
            ]
        )
    lines += table(
        [
            "response",
            "stream",
            "polls",
            "delay",
            "resumes",
            "last event seen / last",
            "simulated polls / delay",
            "classic polls / delay",
            "final status",
        ],
        body,
        "llrrrrrrr",
    )
    add("")
    inside = [r for r in b.fast_path if r.duration < window / 2]
    if inside:
        add(
            "Asserted: every response detected once; a cut stream resumed (never reopened "
            "from its start) and a followed one never; a response ending well inside the "
            "window ("
            + ", ".join(sorted({format_duration(r.duration) for r in inside}))
            + ") published from its stream with 0 polls and its terminal event seen, cut or "
            "not. Longer responses: the window closes on the stream (after the resume, for a "
            "cut one) with `response.in_progress` the last event seen, and polls pick the end "
            "up as the simulator predicts."
        )
        add("")


def _backends_section(results: Results, lines: list[str]) -> None:
    b = results.backends
    if b is None:
        return
    lines.append("## Backends")
    lines.append("")
    lines.append(
        "The relay drives two backends: the classic Agents service (threads and runs, "
        "measured everywhere above) and the Foundry Agent Service through the OpenAI "
        "Responses API in background mode. Both run the same orchestrator and schedule; "
        "this section measures Foundry the same way."
    )
    lines.append("")
    _durable(results, b, lines)
    _fast_path(results, b, lines)


def _backends_headline(results: Results) -> str | None:
    b = results.backends
    if b is None or not b.pairs:
        return None
    same = sum(p.same for p in b.pairs)
    pairs = b.pairs
    f_delays = [p.foundry.delay for p in pairs]
    c_delays = [p.classic.delay for p in pairs]
    text = (
        f"- **Both backends**: through the Foundry backend (Responses API) on {b.subset}, "
        f"{num(round(statistics.fmean(p.foundry.polls for p in pairs), 2))} polls/run, delay "
        f"mean {secs(statistics.fmean(f_delays))} / max {secs(max(f_delays))} (classic: "
        f"{num(round(statistics.fmean(p.classic.polls for p in pairs), 2))}, "
        f"{secs(statistics.fmean(c_delays))} / {secs(max(c_delays))}); "
        + (
            "identical to classic on every run"
            if same == len(pairs)
            else f"identical to classic on {same} of {len(pairs)} runs"
        )
        + "."
    )
    quick = [r for r in b.fast_path if r.duration < b.window / 2]
    if quick:
        shortest = min(r.duration for r in quick)
        followed = [r for r in quick if r.duration == shortest and r.drop_after is None]
        cut = [r for r in quick if r.duration == shortest and r.drop_after is not None]
        if followed and cut:
            text += (
                f" Its fast path publishes a {format_duration(shortest)} response with "
                f"{followed[0].polls} polls, {_precise(followed[0].delay)} after it ended, "
                f"and with {cut[0].polls} polls, {_precise(cut[0].delay)} after, when its "
                f"stream is cut half-way ({cut[0].resumes} resume)."
            )
    return text + " Details in [Backends](#backends)."

"""The fault suites' driver, shared by both backends (classic Agents and Foundry Responses).

A seeded plan of submissions (see fault_suite_support.py for classic agents,
foundry_fault_suite_support.py for Foundry agents) is driven through the relay on one test bed:
time moves only through the host, and the driver interleaves the planned caller actions
(submissions, reposts, cancels, tool outputs, status reads) with `advance` /
`advance_to_next_timer`, while the worker crashes at a seeded share of every crash point and
every activity executes twice. A backend's driver says what a submission's body is; the rest
(scheduling, caller actions at awkward moments, watching for tool calls round after round) is
the same for both. So are the plans' common draws, the shape of the fault rules, the checks of
every AgentRunCompleted event, and what both suites' tests assert of their reports.
"""

from __future__ import annotations

import heapq
import itertools
import json
import logging
import math
import random
import time
from collections import Counter
from collections.abc import Callable, Iterable, Mapping, Sequence, Set
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from typing import Any, Generic, Literal, Protocol, TypeVar, get_args

import jsonschema
import pytest

from devhost.functions_host import CRASH_KINDS, CrashPoint, HostStats
from devhost.loopback_api import FaultRuleBase
from shared.core.timefmt import from_iso
from tests.relay_bed import EVENT_DATA_SCHEMA, RelayBed

TERMINAL = frozenset({"completed", "failed", "cancelled", "expired", "incomplete"})
CANCELLATION_REASONS = ("requested", "deadline_exceeded", "tool_outputs_timeout")
# Share of caller actions held back for an awkward moment (see Driver.armed).
ARMED_SHARE = 0.8
# A submission that cannot be sent yet (its conversation is not known): look again this late.
POSTPONE_SECONDS = 30.0

ToolMode = Literal["answer", "twice_at_once", "twice_later", "wrong_then_answer", "never"]
TOOL_MODES: tuple[ToolMode, ...] = get_args(ToolMode)  # the order the plans' weights follow
# How many function calls a round asks for at once: mostly a few, sometimes many (their
# arguments then 1 KB each, past what one custom status could list in full).
TOOL_CALL_COUNTS = (1, 2, 3, 8, 12, 64)
TOOL_CALL_WEIGHTS = (30, 25, 20, 10, 8, 7)
TOOL_NAMES = ("get_weather", "get_time", "lookup")


# Plan ----------------------------------------------------------------------------------------


@dataclass(frozen=True)
class ToolPlan:
    mode: ToolMode
    # Virtual seconds after the run asks for outputs before the client first looks.
    react_after: float
    # Also post outputs (again) long after the run ended.
    late: bool
    # Rounds of function calls the run asks for, one after the other (Foundry: 1-3). Every
    # round is answered as `mode` says, except that "never" answers all but the last.
    rounds: int = 1


class SuitePlan(Protocol):
    """What the driver needs of a backend's plan of one submission."""

    @property
    def index(self) -> int: ...
    @property
    def arrive_at(self) -> float: ...  # virtual seconds after the suite's start
    @property
    def cancel_at(self) -> tuple[float, ...]: ...  # virtual seconds after the submission
    @property
    def tool(self) -> ToolPlan | None: ...
    @property
    def repost_after(self) -> float | None: ...  # same Idempotency-Key and body again
    @property
    def idempotency_key(self) -> str: ...
    @property
    def tool_asks_at(self) -> float: ...  # seconds after the submission the first round asks
    @property
    def run_length(self) -> float: ...  # seconds the run needs when nobody interferes


PlanT = TypeVar("PlanT", bound=SuitePlan)


# What both plans draw alike (each from its own seeded generator, in its own order).


def log_uniform(rng: random.Random, low: float, high: float) -> float:
    return math.exp(rng.uniform(math.log(low), math.log(high)))


def draw_duration(rng: random.Random) -> float:
    """Heavy-tailed: half under two minutes, one in ten between half an hour and two hours."""
    draw = rng.random()
    if draw < 0.5:
        return round(log_uniform(rng, 2, 120), 1)
    if draw < 0.9:
        return round(log_uniform(rng, 120, 1800), 1)
    return round(log_uniform(rng, 1800, 7200), 1)


def draw_arrival(rng: random.Random, index: int, burst: int) -> float:
    """Virtual seconds after the suite's start the submission arrives."""
    if index < burst:
        return 0.0  # a batch submitted at once
    if rng.random() < 0.25:
        return float(rng.choice([600, 1800, 3600]))  # smaller bursts later on
    return round(rng.uniform(0, 5400), 1)


def draw_function_calls(
    rng: random.Random, id_key: str, call_id: Callable[[int], str]
) -> list[dict[str, str]]:
    """One round's function calls, the n-th identified as `id_key: call_id(n)`."""
    count = rng.choices(TOOL_CALL_COUNTS, TOOL_CALL_WEIGHTS)[0]
    arguments = json.dumps({"q": "x" * 1000}) if count >= 8 else '{"q": 1}'
    return [
        {id_key: call_id(n), "name": TOOL_NAMES[n % 3], "arguments": arguments}
        for n in range(count)
    ]


def draw_body_extras(rng: random.Random, index: int, seed: int, length: float) -> dict[str, Any]:
    """The request body's input (a string or a message list), metadata and polling schedule,
    for a run of `length` virtual seconds."""
    extras: dict[str, Any] = {}
    if rng.random() < 0.3:
        extras["messages"] = [
            {"role": "user", "content": "first"},
            {"role": "assistant", "content": "ok"},
            {"role": "user", "content": f"question {index}"},
        ]
    else:
        extras["input"] = f"question {index}"
    if rng.random() < 0.4:
        extras["metadata"] = {"ticket": f"INC-{index}", "batch": str(seed)}
    # Callers of long runs tend to ask for a slower schedule.
    if rng.random() < (0.7 if length > 1800 else 0.25):
        initial = rng.choice([1, 2, 5, 10])
        fixed = length < 300 and rng.random() < 0.3  # a fixed rate, for short runs only
        extras["polling"] = {
            "initialSeconds": initial,
            "maxSeconds": initial if fixed else rng.choice([20, 60, 120, 300]),
            "multiplier": 1.0 if fixed else rng.choice([1.5, 2.0, 3.0]),
        }
    return extras


RuleT = TypeVar("RuleT", bound=FaultRuleBase)


def fault_rules(
    rule: type[RuleT],
    *,
    writes: Sequence[str],
    reads: Sequence[str],
    not_found: str,
    refused_start: tuple[str, float],
    throttled: Sequence[RuleT],
    refused_first: Sequence[RuleT] = (),
) -> list[RuleT]:
    """Roughly a quarter of the relay's calls to a backend's service fail, in every way it can:
    500 after a write was applied, 404 on the `not_found` read, the backend's `refused_first`,
    401/403 on the start (`refused_start`: its operation and rate), client timeouts on reads,
    the backend's `throttled` rules, then 500, 503 and malformed JSON anywhere.

    The service draws the rules in this order, so the order is part of the seeded faults.
    """
    rules = [rule(operation=op, kind="500_after_apply", rate=0.12) for op in writes]
    rules += [rule(operation=not_found, kind="404", rate=0.03), *refused_first]
    # Role assignments still propagating: refused starts are retried for a while.
    start, start_rate = refused_start
    rules += [rule(operation=start, kind=kind, rate=start_rate) for kind in ("401", "403")]
    # Read operations only: a "timeout" fault holds the answer for real (wall) seconds and then
    # applies the request, while the bed moves virtual time much faster. On a write this would
    # let the retry overtake the held request, a race production only sees when the service
    # takes longer than read timeout + retry wait; on a read the late apply changes nothing.
    rules += [
        rule(operation=op, kind="timeout", rate=0.01, count=8, delay_seconds=0.4) for op in reads
    ]
    rules += throttled
    rules += [
        rule(operation="*", kind="500", rate=0.04),
        rule(operation="*", kind="503", rate=0.04),
        rule(operation="*", kind="malformed_json", rate=0.03),
    ]
    return rules


# Driver ------------------------------------------------------------------------------------


@dataclass
class HttpCall:
    at: datetime
    kind: str  # submit, resubmit, status, cancel, tool_outputs, tool_outputs_wrong, ...
    status: int


@dataclass
class Submission(Generic[PlanT]):
    plan: PlanT
    id: str = ""
    thread_id: str | None = None  # classic: a thread the caller made
    body: dict[str, Any] | None = None  # as first sent (a repost sends it again)
    calls: list[HttpCall] = field(default_factory=list)
    tool_call_ids: list[str] | None = None  # the newest round's calls
    rounds_seen: int = 0
    finished_seen: bool = False

    def accepted_at(self, kind: str) -> list[datetime]:
        """When the relay accepted (202) the caller's calls of this kind, oldest first."""
        return [c.at for c in self.calls if c.kind == kind and c.status == 202]


class CrashPlan:
    """Crashes the worker at a seeded share of every kind of crash point."""

    def __init__(self, seed: int, rate: float) -> None:
        self._rng = random.Random(f"crashes:{seed}")
        self.rate = rate
        self.by_kind: Counter[str] = Counter()
        self.enabled = True

    def __call__(self, point: CrashPoint) -> bool:
        if not self.enabled or self._rng.random() >= self.rate:
            return False
        self.by_kind[point.kind] += 1
        return True


Action = Callable[[], None]


class Driver(Generic[PlanT]):
    """Drives the plans through the relay. Subclasses say what a submission's body is."""

    # The HTTP call kinds of outputs posted again for a round already answered, and of
    # outputs posted long after the run ended.
    repeat_kind = "tool_outputs"
    late_kind = "tool_outputs"

    def __init__(self, bed: RelayBed, plans: list[PlanT], seed: int) -> None:
        self.bed = bed
        self.rng = random.Random(f"driver:{seed}")
        self.start = bed.clock.now()
        self.submissions = [Submission(plan) for plan in plans]
        self.by_id: dict[str, Submission[PlanT]] = {}
        self._queue: list[tuple[datetime, int, Action]] = []
        self._seq = itertools.count()
        self.http_calls: Counter[tuple[str, int]] = Counter()
        self.loop_turns = 0
        # Caller actions (cancels, tool outputs) held back to be sent at the next moment the
        # runtime makes awkward: inside one of the submission's activities, or right after one
        # of its timers fired (the TimerFired and the event then share a batch, which at a
        # generation's end DTFx carries into the next generation).
        self.armed: dict[tuple[str, str], list[Action]] = {}
        self.injected: Counter[str] = Counter()

    def body(self, sub: Submission[PlanT]) -> dict[str, Any] | None:
        """The submission's request body; None: not yet (asked again POSTPONE_SECONDS later)."""
        raise NotImplementedError

    # caller actions at awkward moments ------------------------------------------------------
    def arm_or_run(self, sub: Submission[PlanT], action: Action) -> None:
        draw = self.rng.random()
        if draw < ARMED_SHARE / 2:
            self.armed.setdefault(("activity", sub.id), []).append(action)
        elif draw < ARMED_SHARE:
            self.armed.setdefault(("timer", sub.id), []).append(action)
        else:
            action()

    def _fire_armed(self, moment: str, submission_id: str | None, where: str) -> None:
        actions = self.armed.pop((moment, str(submission_id)), None)
        for action in actions or []:
            self.injected[where] += 1
            action()

    def during_activity(self, name: str, payload: Any) -> None:
        if not isinstance(payload, dict):
            return
        data = payload.get("data")
        sid = payload.get("submissionId") or (data.get("submissionId") if data else None)
        self._fire_armed("activity", sid, f"inside {name}")

    def after_timer(self, point: CrashPoint) -> None:
        if point.kind == "after_timer_fired":
            self._fire_armed("timer", point.instance_id, "after a timer fired")

    def fire_leftovers(self) -> None:
        """Actions whose moment never came (the instance finished first): send them now."""
        for moment, sid in list(self.armed):
            self._fire_armed(moment, sid, "after the end")

    # scheduling ------------------------------------------------------------------------------
    def at(self, moment: datetime, action: Action) -> None:
        heapq.heappush(self._queue, (moment, next(self._seq), action))

    def after(self, seconds: float, action: Action) -> None:
        self.at(self.bed.clock.now() + timedelta(seconds=seconds), action)

    def run(self, status_probe_rate: float) -> None:
        for sub in self.submissions:
            self.at(self.start + timedelta(seconds=sub.plan.arrive_at), self._submit_action(sub))
        self.drive(status_probe_rate)

    def drive(self, status_probe_rate: float) -> None:
        """Interleave the queued actions with the host's work until nothing is left."""
        host, clock = self.bed.host, self.bed.clock
        while True:
            self.loop_turns += 1
            host.run_until_idle()
            next_timer = host.next_timer_at()
            if self._queue and (next_timer is None or self._queue[0][0] <= next_timer):
                moment = self._queue[0][0]
                host.advance(max(0.0, (moment - clock.now()).total_seconds()))
                while self._queue and self._queue[0][0] <= clock.now():
                    _, _, action = heapq.heappop(self._queue)
                    action()
            elif next_timer is not None:
                host.advance_to_next_timer()
            else:
                return
            if self.by_id and self.rng.random() < status_probe_rate:
                self.status(self.rng.choice(list(self.by_id.values())))

    # HTTP ------------------------------------------------------------------------------------
    def _record(self, sub: Submission[PlanT], kind: str, status: int) -> None:
        sub.calls.append(HttpCall(self.bed.clock.now(), kind, status))
        self.http_calls[(kind, status)] += 1

    def _post(self, path: str, body: Any) -> tuple[int, Any]:
        response = self.bed.host.http(
            "POST", path, body=json.dumps(body), headers={"Content-Type": "application/json"}
        )
        raw = response.get_body()
        return response.status_code, json.loads(raw) if raw else None

    def _submit_action(self, sub: Submission[PlanT]) -> Action:
        def submit() -> None:
            body = self.body(sub)
            if body is None:
                self.after(POSTPONE_SECONDS, submit)
                return
            sub.body = body
            response = self.bed.post_run(
                body, headers={"Idempotency-Key": sub.plan.idempotency_key}
            )
            self._record(sub, "submit", response.status_code)
            if response.status_code != 202:
                return
            sub.id = str(json.loads(response.get_body())["id"])
            self.by_id[sub.id] = sub
            for offset in sub.plan.cancel_at:
                self.after(offset, lambda: self.arm_or_run(sub, lambda: self.cancel(sub)))
            if sub.plan.repost_after is not None:
                self.after(sub.plan.repost_after, lambda: self.resubmit(sub))
            tool = sub.plan.tool
            if tool is not None:
                asks_at = sub.plan.tool_asks_at
                self.after(asks_at + tool.react_after, lambda: self.watch_tools(sub))
                if tool.late:
                    self.after(asks_at + sub.plan.run_length + 3600, lambda: self.late_tools(sub))

        return submit

    def resubmit(self, sub: Submission[PlanT]) -> None:
        response = self.bed.post_run(
            sub.body, headers={"Idempotency-Key": sub.plan.idempotency_key}
        )
        self._record(sub, "resubmit", response.status_code)
        if response.status_code == 202:
            assert json.loads(response.get_body())["id"] == sub.id, "a repost made a new id"

    def status(self, sub: Submission[PlanT]) -> dict[str, Any] | None:
        response = self.bed.host.http("GET", f"/api/runs/{sub.id}")
        self._record(sub, "status", response.status_code)
        if response.status_code != 200:
            return None
        view: dict[str, Any] = json.loads(response.get_body())
        if view.get("event") or view.get("status") in TERMINAL:
            sub.finished_seen = True
        return view

    def cancel(self, sub: Submission[PlanT]) -> None:
        status, _ = self._post(f"/api/runs/{sub.id}/cancel", None)
        self._record(sub, "cancel", status)

    def _outputs(self, ids: list[str]) -> dict[str, Any]:
        return {"toolOutputs": [{"toolCallId": i, "output": f"result of {i}"} for i in ids]}

    def post_tools(self, sub: Submission[PlanT], ids: list[str], kind: str = "tool_outputs") -> int:
        status, _ = self._post(f"/api/runs/{sub.id}/tool-outputs", self._outputs(ids))
        self._record(sub, kind, status)
        return status

    def watch_tools(self, sub: Submission[PlanT]) -> None:
        """A client that reacts to the run asking for outputs (it looks every 10-60 s), round
        after round."""
        tool = sub.plan.tool
        assert tool is not None
        view = self.status(sub)
        if view is None or sub.finished_seen:
            return
        action = view.get("requiredAction")
        if view.get("status") != "requires_action" or not action:
            self.after(self.rng.uniform(10, 60), lambda: self.watch_tools(sub))
            return
        ids = [call["id"] for call in action["toolCalls"]]
        if action.get("truncated"):
            ids = self._announced_ids(sub) or ids
        if ids == sub.tool_call_ids:
            # Still the round answered last (the relay has not taken the outputs in yet).
            self.after(self.rng.uniform(10, 60), lambda: self.watch_tools(sub))
            return
        sub.tool_call_ids = ids
        sub.rounds_seen += 1
        if tool.mode == "never" and sub.rounds_seen >= tool.rounds:
            return
        if tool.mode == "wrong_then_answer":
            self.post_tools(sub, ids[1:] or ["call_nobody_asked_for"], "tool_outputs_wrong")
        self.arm_or_run(sub, lambda: self._answer(sub, ids))
        if sub.rounds_seen < tool.rounds:
            self.after(self.rng.uniform(10, 60), lambda: self.watch_tools(sub))

    def _announced_ids(self, sub: Submission[PlanT]) -> list[str]:
        """The calls of the newest AgentRunRequiresAction (the status may list only some)."""
        announced = [
            e for e in self.bed.events_for(sub.id) if e.get("eventType") == "AgentRunRequiresAction"
        ]
        return [call["id"] for call in announced[-1]["data"]["toolCalls"]] if announced else []

    def _answer(self, sub: Submission[PlanT], ids: list[str]) -> None:
        tool = sub.plan.tool
        assert tool is not None
        self.post_tools(sub, ids)
        if tool.mode == "twice_at_once":
            self.post_tools(sub, ids, self.repeat_kind)
        elif tool.mode == "twice_later":
            self.after(self.rng.uniform(0.5, 40), lambda: self._post_tools_again(sub, ids))

    def _post_tools_again(self, sub: Submission[PlanT], ids: list[str]) -> None:
        self.post_tools(sub, ids, self.repeat_kind)

    def late_tools(self, sub: Submission[PlanT]) -> None:
        self.post_tools(sub, sub.tool_call_ids or ["call_late"], self.late_kind)


# Running a suite -----------------------------------------------------------------------------


TOOL_OUTPUTS_TIMEOUT_SECONDS = 600
SUITE_SETTINGS = {
    # Some submissions continue a thread (Foundry: a conversation) the caller made.
    "ALLOW_CALLER_THREADS": "true",
    # A "timeout" fault holds its answer 0.4 s: the client gives up first, as on a slow service.
    "SERVICE_READ_TIMEOUT_SECONDS": "0.25",
    "TOOL_OUTPUTS_TIMEOUT_SECONDS": str(TOOL_OUTPUTS_TIMEOUT_SECONDS),
    # Short generations: many more continue-as-new boundaries for caller events to land at.
    "POLLS_PER_GENERATION": "5",
}


@dataclass(frozen=True)
class SuiteConfig:
    """One run of a suite: its plan's seed and size, how hard the runtime is hit, and the
    relay's settings."""

    seed: int
    count: int  # submissions
    burst: int  # of them submitted at the same instant at the start
    crash_rate: float = 0.002  # of every crash point (episodes, activities, fired timers)
    status_probe_rate: float = 0.08  # chance per driver turn of reading a random status
    settings: Mapping[str, str] = field(default_factory=lambda: SUITE_SETTINGS)


def drive_under_faults(bed: RelayBed, driver: Driver[Any], config: SuiteConfig) -> CrashPlan:
    """Run the plan to its end while Event Grid refuses every publish for the first 30 virtual
    minutes, every activity executes twice and the worker crashes at `config.crash_rate` of
    every crash point. Crashes are off again when it returns (for the checks' status reads)."""
    bed.topic.refuse_until(bed.clock.now() + timedelta(minutes=30))
    bed.host.duplicate_activities = True
    crashes = CrashPlan(config.seed, config.crash_rate)

    def after_timer_then_crash(point: CrashPoint) -> bool:
        driver.after_timer(point)
        return crashes(point)

    bed.host.crash_when = after_timer_then_crash
    bed.host.during_activity = driver.during_activity

    driver.run(config.status_probe_rate)
    driver.fire_leftovers()
    bed.host.during_activity = None
    driver.drive(config.status_probe_rate)

    crashes.enabled = False
    return crashes


def completed_events(bed: RelayBed) -> dict[str, list[dict[str, Any]]]:
    found: dict[str, list[dict[str, Any]]] = {}
    for received in bed.topic.events:
        event = received.event
        if event.get("eventType") == "AgentRunCompleted":
            found.setdefault(str(event["data"]["submissionId"]), []).append(event)
    return found


def check_events(
    bed: RelayBed,
    driver: Driver[PlanT],
    outcomes: Counter[str],
    describe: Callable[[PlanT], str],
    check: Callable[[Submission[PlanT], dict[str, Any], set[str], str], list[str]],
) -> list[str]:
    """What every backend promises of each submission's AgentRunCompleted event: one event id
    (republished alike), its data valid against the published schema. Each ending is counted in
    `outcomes` (status/reason); then `check(sub, data, event ids, where)` adds the backend's
    own problems, `where` naming the submission (`describe` says what its plan is)."""
    problems: list[str] = []
    validator_class: Any = jsonschema.validators.validator_for(EVENT_DATA_SCHEMA)
    validator = validator_class(EVENT_DATA_SCHEMA, format_checker=jsonschema.FormatChecker())
    events = completed_events(bed)
    for sub in driver.submissions:
        sid = sub.id
        where = f"submission #{sub.plan.index} {sid} ({describe(sub.plan)})"
        if not sid:
            problems.append(f"{where}: never accepted")
            continue
        mine = events.get(sid, [])
        ids = {e["id"] for e in mine}
        if len(ids) != 1:
            problems.append(
                f"{where}: {len(ids)} distinct AgentRunCompleted ids ({len(mine)} sent)"
            )
            if not mine:
                continue
        if any(e != mine[0] for e in mine):
            problems.append(f"{where}: republished events differ")
        data = mine[0]["data"]
        for error in validator.iter_errors(data):
            problems.append(f"{where}: event data off schema: {error.message}")
        status, reason = data["status"], data["cancellationReason"]
        outcomes[f"{status}/{reason}" if reason else status] += 1
        problems += check(sub, data, ids, where)
    return problems


def check_status_view(
    driver: Driver[PlanT], sub: Submission[PlanT], data: dict[str, Any], ids: set[str], where: str
) -> tuple[dict[str, Any] | None, list[str]]:
    """The final status read (None: it failed), and where it disagrees with the event: its
    status, event id and cancellation reason."""
    view = driver.status(sub)
    if view is None:
        return None, [f"{where}: final status read failed"]
    problems = []
    if view["status"] != data["status"] or (view.get("event") or {}).get("id") not in ids:
        problems.append(f"{where}: status view {view['status']} / {view.get('event')}")
    if view.get("cancellationReason") != data["cancellationReason"]:
        problems.append(
            f"{where}: view reason {view.get('cancellationReason')} != {data['cancellationReason']}"
        )
    return view, problems


class CheckedPlan(SuitePlan, Protocol):
    """What reason_problem needs of a plan, besides what the driver needs."""

    @property
    def kind(self) -> str: ...  # run, tool (asks for function calls) or unknown_agent
    @property
    def deadline_seconds(self) -> int | None: ...


def deadline_at(plan: CheckedPlan, data: dict[str, Any]) -> datetime | None:
    """When the submission's deadline passed (None: it had none)."""
    if plan.deadline_seconds is None:
        return None
    return from_iso(data["submittedAt"]) + timedelta(seconds=plan.deadline_seconds)


def reason_problem(
    plan: CheckedPlan, data: dict[str, Any], accepted: list[datetime], decided: datetime
) -> str | None:
    """The rule of the event's cancellation reason it breaks, whatever the backend (None:
    none): only a cancelled submission has a reason; "requested" needs a cancel `accepted`;
    "deadline_exceeded" a deadline, passed when the relay `decided` to give up, and no cancel
    accepted before it; "tool_outputs_timeout" a run with tools; there is no other reason.
    Each backend then checks the reason against what its service saw."""
    status, reason = data["status"], data["cancellationReason"]
    if reason is not None and status != "cancelled":
        return f"cancellationReason {reason} on a {status} submission"
    if reason == "requested" and not accepted:
        return "'requested' without an accepted cancel"
    if reason == "deadline_exceeded":
        deadline = deadline_at(plan, data)
        if deadline is None:
            return "'deadline_exceeded' without a deadline"
        if decided < deadline:
            return f"'deadline_exceeded' decided at {decided}, before {deadline}"
        if accepted and accepted[0] < deadline:
            return "'deadline_exceeded' though a cancel was accepted before it"
    if reason == "tool_outputs_timeout" and plan.kind != "tool":
        return "'tool_outputs_timeout' on a run without tools"
    if reason is not None and reason not in CANCELLATION_REASONS:
        return f"unexpected cancellationReason {reason!r}"
    return None


def unfinished_instances(bed: RelayBed) -> list[str]:
    return [v.instance_id for v in bed.host.instances() if v.runtime_status != "Completed"]


def distinct_completed_ids(bed: RelayBed) -> int:
    return sum(len({e["id"] for e in v}) for v in completed_events(bed).values())


@dataclass
class SuiteReport:
    """What both suites report: the submissions' fate and what happened around them."""

    submissions: int
    unfinished: list[str]
    http_errors: list[BaseException]
    problems: list[str]
    outcomes: Counter[str]
    relay_requests: int  # requests to the agent service once the faults were on
    faulted_requests: int
    topic_faults: dict[str, int]
    publishes: int
    events_accepted: int
    distinct_completed_ids: int
    crashes: Counter[str]
    host_stats: HostStats
    http_calls: Counter[tuple[str, int]]
    injected: Counter[str]
    virtual_time: timedelta

    @property
    def fault_share(self) -> str:
        return f"{self.faulted_requests / max(1, self.relay_requests):.1%}"

    def summary(self, seed: int, wall_seconds: float) -> list[str]:
        """The counts to print, one line each."""
        raise NotImplementedError

    def outcome_and_call_lines(self, service: str, faults: dict[str, int]) -> list[str]:
        """The outcomes, and the relay's calls to the `service` once the faults were on, with
        the faults it met by kind."""
        return [
            f"  outcomes: {dict(sorted(self.outcomes.items()))}",
            f"  {service} calls by the relay: {self.relay_requests}, faulted "
            f"{self.faulted_requests} ({self.fault_share}): {dict(sorted(faults.items()))}",
        ]

    def runtime_lines(self) -> list[str]:
        """Event Grid (publishes, faults, events accepted, distinct AgentRunCompleted ids), the
        host, the caller's HTTP calls, and the caller actions at awkward moments."""
        stats = self.host_stats
        http = {f"{kind} {status}": n for (kind, status), n in sorted(self.http_calls.items())}
        return [
            f"  Event Grid: {self.publishes} publish requests, faults {self.topic_faults}, "
            f"{self.events_accepted} events accepted, {self.distinct_completed_ids} distinct "
            "AgentRunCompleted ids",
            f"  host: {stats.crashes} crashes {dict(sorted(self.crashes.items()))}, "
            f"{stats.duplicate_executions} duplicate activity executions, {stats.episodes} "
            f"episodes, {stats.timers_fired} timers fired",
            f"  activity executions: {dict(sorted(stats.activity_executions.items()))}",
            f"  HTTP calls by status: {http}",
            f"  caller actions at awkward moments: {dict(sorted(self.injected.items()))}; "
            f"{stats.continued_as_new} generations continued as new, {stats.events_carried} "
            "events carried into the next",
        ]


class ServiceRequest(Protocol):
    """A request the service recorded (either backend's)."""

    @property
    def fault(self) -> str | None: ...


def suite_report(
    bed: RelayBed,
    driver: Driver[Any],
    crashes: CrashPlan,
    problems: list[str],
    outcomes: Counter[str],
    relay_requests: Sequence[ServiceRequest],
) -> dict[str, Any]:
    """The SuiteReport fields, read off the bed once the suite has run (as keyword arguments,
    so that each backend's report adds its own); `relay_requests`: the service's requests
    once the faults were on."""
    return {
        "submissions": len(driver.submissions),
        "unfinished": unfinished_instances(bed),
        "http_errors": list(bed.host.http_errors),
        "problems": problems,
        "outcomes": outcomes,
        "relay_requests": len(relay_requests),
        "faulted_requests": sum(1 for r in relay_requests if r.fault),
        "topic_faults": bed.topic.fault_counts,
        "publishes": len(bed.topic.publish_requests),
        "events_accepted": len(bed.topic.events),
        "distinct_completed_ids": distinct_completed_ids(bed),
        "crashes": crashes.by_kind,
        "host_stats": bed.host.stats,
        "http_calls": driver.http_calls,
        "injected": driver.injected,
        "virtual_time": bed.clock.now() - driver.start,
    }


# What both suites' tests assert --------------------------------------------------------------
# (pytest rewrites no assert outside a test module: each one here says what it saw.)

ReportT = TypeVar("ReportT", bound=SuiteReport)


def run_suite_shown(
    run_suite: Callable[[SuiteConfig], ReportT],
    config: SuiteConfig,
    caplog: pytest.LogCaptureFixture,
    capsys: pytest.CaptureFixture[str],
) -> ReportT:
    """Run a backend's suite (run_fault_suite, run_foundry_fault_suite); print its counts."""
    # Thousands of expected warnings (every injected fault is logged), and aiohttp sessions
    # that crashed workers leave unclosed: keep a failure report readable.
    caplog.set_level(logging.ERROR, logger="agent_run_relay")
    caplog.set_level(logging.CRITICAL, logger="asyncio")
    started = time.perf_counter()
    report = run_suite(config)
    lines = report.summary(config.seed, time.perf_counter() - started)
    # pytest captures a passing test's output (fd 1 included); the counts must show in a
    # normal `make test`, so print with capturing suspended.
    with capsys.disabled():
        print("\n" + "\n".join(lines), flush=True)
    return report


def assert_faults_happened(
    report: SuiteReport, count: int, service_faults: dict[str, int], required: Set[str]
) -> None:
    """Not vacuous: all `count` submissions were sent; a fifth of the service calls or more
    failed, in every `required` way, each often; Event Grid refused; the worker crashed at
    every kind of crash point; every activity ran twice; caller events arrived inside
    activities and right after timers, across many continue-as-new boundaries."""
    assert report.submissions == count, report.submissions
    assert report.faulted_requests / report.relay_requests >= 0.20, report.fault_share
    assert set(service_faults) == required, service_faults
    assert min(service_faults.values()) >= 10, service_faults
    assert report.topic_faults["refuse"] >= 100, report.topic_faults
    assert all(report.crashes[kind] >= 3 for kind in CRASH_KINDS), report.crashes
    stats = report.host_stats
    executions = sum(stats.activity_executions.values())
    assert stats.duplicate_executions * 2 == executions, (stats.duplicate_executions, executions)
    assert stats.continued_as_new >= 100, stats.continued_as_new
    injected = report.injected
    assert sum(n for where, n in injected.items() if where.startswith("inside")) >= 20, injected
    assert injected["after a timer fired"] >= 10, injected


def assert_every_ending(outcomes: Counter[str], statuses: Iterable[str]) -> None:
    """Each of the final `statuses`, and each cancellation reason, ended 3 submissions or more."""
    seen: Counter[str] = Counter()
    for key, n in outcomes.items():
        seen[key.split("/")[0]] += n
    assert all(seen[status] >= 3 for status in statuses), outcomes
    for reason in CANCELLATION_REASONS:
        assert outcomes[f"cancelled/{reason}"] >= 3, outcomes


def answered(http: Counter[tuple[str, int]], *kinds: str) -> set[int]:
    """The HTTP statuses the caller's calls of these kinds got."""
    return {status for (kind, status) in http if kind in kinds}


def assert_api_answers(report: SuiteReport) -> None:
    """The status endpoint never failed; submits, cancels and outputs for the wrong calls got
    only what the API promises (409 for late cancels, 400 for wrong outputs); no HTTP handler
    raised. (Tool outputs: each suite's own test.)"""
    http = report.http_calls
    assert answered(http, "status") == {200}, http
    assert answered(http, "submit", "resubmit") == {202}, http
    assert answered(http, "cancel") == {202, 409}, http
    assert answered(http, "tool_outputs_wrong") == {400}, http
    assert not report.http_errors, report.http_errors[:3]


def assert_one_true_event_each(report: SuiteReport, count: int) -> None:
    """Every instance completed, each of the `count` submissions got one AgentRunCompleted id,
    and the backend's checks found no problem."""
    assert not report.unfinished, f"instances not completed: {report.unfinished[:10]}"
    assert report.distinct_completed_ids == count, report.distinct_completed_ids
    problems = report.problems
    assert not problems, f"{len(problems)} problems:\n" + "\n".join(problems[:60])

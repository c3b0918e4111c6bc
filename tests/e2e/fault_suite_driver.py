"""The fault suites' driver, shared by both backends (classic Agents and Foundry Responses).

A seeded plan of submissions (see fault_suite_support.py for classic agents,
foundry_fault_suite_support.py for Foundry agents) is driven through the relay on one test bed:
time moves only through the host, and the driver interleaves the planned caller actions
(submissions, reposts, cancels, tool outputs, status reads) with `advance` /
`advance_to_next_timer`, while the worker crashes at a seeded share of every crash point and
every activity executes twice. A backend's driver says what a submission's body is; the rest
(scheduling, caller actions at awkward moments, watching for tool calls round after round) is
the same for both.
"""

from __future__ import annotations

import heapq
import itertools
import json
import random
from collections import Counter
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from typing import Any, Generic, Literal, Protocol, TypeVar

from devhost.functions_host import CrashPoint, HostStats
from tests.relay_bed import RelayBed

TERMINAL = frozenset({"completed", "failed", "cancelled", "expired", "incomplete"})
# Share of caller actions held back for an awkward moment (see Driver.armed).
ARMED_SHARE = 0.8
# A submission that cannot be sent yet (its conversation is not known): look again this late.
POSTPONE_SECONDS = 30.0

ToolMode = Literal["answer", "twice_at_once", "twice_later", "wrong_then_answer", "never"]


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


def drive_under_faults(
    bed: RelayBed, driver: Driver[Any], seed: int, crash_rate: float, status_probe_rate: float
) -> CrashPlan:
    """Run the plan to its end while Event Grid refuses every publish for the first 30 virtual
    minutes, every activity executes twice and the worker crashes at `crash_rate` of every
    crash point. Crashes are off again when it returns (for the checks' status reads)."""
    bed.topic.refuse_until(bed.clock.now() + timedelta(minutes=30))
    bed.host.duplicate_activities = True
    crashes = CrashPlan(seed, crash_rate)

    def after_timer_then_crash(point: CrashPoint) -> bool:
        driver.after_timer(point)
        return crashes(point)

    bed.host.crash_when = after_timer_then_crash
    bed.host.during_activity = driver.during_activity

    driver.run(status_probe_rate)
    driver.fire_leftovers()
    bed.host.during_activity = None
    driver.drive(status_probe_rate)

    crashes.enabled = False
    return crashes


def completed_events(bed: RelayBed) -> dict[str, list[dict[str, Any]]]:
    found: dict[str, list[dict[str, Any]]] = {}
    for received in bed.topic.events:
        event = received.event
        if event.get("eventType") == "AgentRunCompleted":
            found.setdefault(str(event["data"]["submissionId"]), []).append(event)
    return found


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


def suite_report(
    bed: RelayBed,
    driver: Driver[Any],
    crashes: CrashPlan,
    problems: list[str],
    outcomes: Counter[str],
    service_requests: tuple[int, int],
) -> dict[str, Any]:
    """The SuiteReport fields, read off the bed once the suite has run (as keyword arguments,
    so that each backend's report adds its own)."""
    relay_requests, faulted_requests = service_requests
    return {
        "submissions": len(driver.submissions),
        "unfinished": unfinished_instances(bed),
        "http_errors": list(bed.host.http_errors),
        "problems": problems,
        "outcomes": outcomes,
        "relay_requests": relay_requests,
        "faulted_requests": faulted_requests,
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

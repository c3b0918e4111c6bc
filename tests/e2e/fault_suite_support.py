"""The classic fault suite's plan and checks (see tests/e2e/test_fault_suite.py).

A seeded plan of a few hundred submissions (durations, outcomes, tool calls, deadlines,
cancels, thread continuations) is driven through the relay on one test bed while the Agents
service, the Event Grid topic and the host inject faults; the driver, shared with the Foundry
suite, is tests/e2e/fault_suite_driver.py. Afterwards `check_submissions` lists every broken
promise, one line per problem.
"""

from __future__ import annotations

import json
import math
import random
from collections import Counter
from collections.abc import Callable
from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Any, Literal

import jsonschema
from azure.ai.agents.models import ThreadMessageOptions

from devhost.agents_service import FaultRule, RunScript, make_sync_client
from shared.core.timefmt import from_iso
from tests.e2e.fault_suite_driver import (
    TERMINAL,
    Driver,
    Submission,
    SuiteReport,
    ToolMode,
    ToolPlan,
    completed_events,
    drive_under_faults,
    suite_report,
)
from tests.relay_bed import EVENT_DATA_SCHEMA, RelayBed, relay_bed

__all__ = ["TERMINAL", "ClassicDriver", "Plan", "Report", "make_plan", "run_fault_suite"]

UNKNOWN_AGENT = "asst_fault_suite_missing"
# Read operations only: a "timeout" fault holds the answer for real (wall) seconds and then
# applies the request, while the bed moves virtual time much faster. On a write this would
# let the retry overtake the held request, a race production only sees when the service takes
# longer than read timeout + retry wait; on a read the late apply changes nothing.
TIMEOUT_OPERATIONS = ("runs.get", "runs.list", "threads.list", "messages.list")
WRITE_OPERATIONS = ("threads.create", "messages.create", "runs.create")


# Plan --------------------------------------------------------------------------------------


@dataclass(frozen=True)
class Plan:
    index: int
    arrive_at: float  # virtual seconds after the suite's start
    kind: Literal["run", "tool", "unknown_agent"]
    script: RunScript | None
    continue_thread: bool
    deadline_seconds: int | None
    cancel_at: tuple[float, ...]  # virtual seconds after arrival
    tool: ToolPlan | None
    repost_after: float | None  # same Idempotency-Key and body again, seconds after arrival
    body_extras: dict[str, Any]

    @property
    def idempotency_key(self) -> str:
        return f"fault-suite-{self.index:04d}"

    @property
    def run_length(self) -> float:
        """Virtual seconds the run needs at the service when nobody interferes."""
        if self.script is None:
            return 0.0
        return self.script.queued_seconds + self.script.duration_seconds

    @property
    def tool_asks_at(self) -> float:
        """Virtual seconds after the submission the run asks for tool outputs."""
        assert self.script is not None
        return self.script.queued_seconds + self.script.requires_action_after_seconds


def _log_uniform(rng: random.Random, low: float, high: float) -> float:
    return math.exp(rng.uniform(math.log(low), math.log(high)))


def _duration(rng: random.Random) -> float:
    """Heavy-tailed: half under two minutes, one in ten between half an hour and two hours."""
    draw = rng.random()
    if draw < 0.5:
        return round(_log_uniform(rng, 2, 120), 1)
    if draw < 0.9:
        return round(_log_uniform(rng, 120, 1800), 1)
    return round(_log_uniform(rng, 1800, 7200), 1)


def _final_script(rng: random.Random, duration: float) -> RunScript:
    final = rng.choices(
        ["completed", "failed", "cancelled", "expired", "incomplete"], [62, 12, 6, 8, 12]
    )[0]
    return RunScript(
        queued_seconds=round(rng.uniform(0, 5), 1),
        duration_seconds=duration,
        final_status=final,
        last_error={"code": "server_error", "message": "model crashed"}
        if final == "failed"
        else None,
        incomplete_details={"reason": "max_completion_tokens"} if final == "incomplete" else None,
        output_text=f"answer after {duration:g}s" if rng.random() < 0.7 else None,
        cancel_delay_seconds=round(rng.uniform(0, 8), 1),
    )


# How many function calls a tool run asks for at once: mostly a few, sometimes many (their
# arguments then 1 KB each, past what one custom status could list in full).
TOOL_CALL_COUNTS = (1, 2, 3, 8, 12, 64)
TOOL_CALL_WEIGHTS = (30, 25, 20, 10, 8, 7)


def _tool_script(rng: random.Random, duration: float) -> RunScript:
    count = rng.choices(TOOL_CALL_COUNTS, TOOL_CALL_WEIGHTS)[0]
    names = ["get_weather", "get_time", "lookup"]
    arguments = json.dumps({"q": "x" * 1000}) if count >= 8 else '{"q": 1}'
    calls = [
        {"id": f"call_{n}_{rng.randrange(10**6)}", "name": names[n % 3], "arguments": arguments}
        for n in range(count)
    ]
    return RunScript(
        queued_seconds=round(rng.uniform(0, 5), 1),
        duration_seconds=max(duration, 20.0),
        final_status=rng.choices(["completed", "failed", "incomplete"], [80, 10, 10])[0],
        requires_action=calls,
        requires_action_after_seconds=round(rng.uniform(1, min(duration, 600) * 0.8 + 1), 1),
        tool_outputs_expire_seconds=round(rng.uniform(300, 1500)),
        cancel_delay_seconds=round(rng.uniform(0, 5), 1),
    )


def _arrival(rng: random.Random, index: int, burst: int) -> float:
    if index < burst:
        return 0.0  # a batch submitted at once
    if rng.random() < 0.25:
        return float(rng.choice([600, 1800, 3600]))  # smaller bursts later on
    return round(rng.uniform(0, 5400), 1)


def make_plan(seed: int, count: int, *, burst: int) -> list[Plan]:
    rng = random.Random(seed)
    plans: list[Plan] = []
    for index in range(count):
        arrive_at = _arrival(rng, index, burst)
        draw = rng.random()
        kind: Literal["run", "tool", "unknown_agent"]
        if draw < 0.05:
            kind, script = "unknown_agent", None
        elif draw < 0.22:
            kind, script = "tool", _tool_script(rng, _duration(rng))
        else:
            kind, script = "run", _final_script(rng, _duration(rng))
        length = 0.0 if script is None else script.queued_seconds + script.duration_seconds
        deadline = None
        if kind == "run" and length > 240 and rng.random() < 0.2:
            deadline = int(max(120, length * rng.uniform(0.3, 0.9)))
        cancels: tuple[float, ...] = ()
        if kind != "unknown_agent" and rng.random() < 0.14:
            first = rng.choice([0.0, round(rng.uniform(0, 1.3 * length + 30), 1)])
            cancels = (first,)
            if rng.random() < 0.35:
                cancels += (first + rng.choice([0.0, round(rng.uniform(1, 60), 1)]),)
        elif kind == "unknown_agent" and rng.random() < 0.3:
            cancels = (round(rng.uniform(0, 30), 1),)
        tool = None
        if kind == "tool":
            modes: list[ToolMode] = [
                "answer",
                "twice_at_once",
                "twice_later",
                "wrong_then_answer",
                "never",
            ]
            mode = rng.choices(modes, [40, 15, 15, 10, 20])[0]
            tool = ToolPlan(
                mode=mode, react_after=round(rng.uniform(0, 400), 1), late=rng.random() < 0.25
            )
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
        if rng.random() < 0.2:
            extras["instructions"] = "Answer briefly."
        plans.append(
            Plan(
                index=index,
                arrive_at=arrive_at,
                kind=kind,
                script=script,
                continue_thread=kind != "unknown_agent" and rng.random() < 0.12,
                deadline_seconds=deadline,
                cancel_at=cancels,
                tool=tool,
                repost_after=round(rng.uniform(0, 600), 1) if rng.random() < 0.05 else None,
                body_extras=extras,
            )
        )
    return plans


def agents_fault_rules() -> list[FaultRule]:
    """Roughly a quarter of the relay's Agents calls fail, in every way the service can."""
    rules = [FaultRule(operation=op, kind="500_after_apply", rate=0.12) for op in WRITE_OPERATIONS]
    rules += [FaultRule(operation="runs.get", kind="404", rate=0.03)]
    # Role assignments still propagating: refused starts are retried for a while.
    rules += [
        FaultRule(operation="threads.create", kind=kind, rate=0.04) for kind in ("401", "403")
    ]
    rules += [
        FaultRule(operation=op, kind="timeout", rate=0.01, count=8, delay_seconds=0.4)
        for op in TIMEOUT_OPERATIONS
    ]
    rules += [
        FaultRule(operation="*", kind="429", rate=0.06),
        FaultRule(operation="*", kind="429_retry_after", rate=0.02, retry_after=3),
        FaultRule(operation="*", kind="429_retry_after", rate=0.015, retry_after=45),
        FaultRule(operation="*", kind="429_retry_after", rate=0.01, retry_after=150),
        FaultRule(operation="*", kind="500", rate=0.04),
        FaultRule(operation="*", kind="503", rate=0.04),
        FaultRule(operation="*", kind="malformed_json", rate=0.03),
    ]
    return rules


# Driver ------------------------------------------------------------------------------------


class ClassicDriver(Driver[Plan]):
    def body(self, sub: Submission[Plan]) -> dict[str, Any]:
        plan = sub.plan
        agent_id = UNKNOWN_AGENT if plan.kind == "unknown_agent" else self.bed.agent_id
        body: dict[str, Any] = {"agentId": agent_id, **plan.body_extras}
        if sub.thread_id:
            body["threadId"] = sub.thread_id
        if plan.deadline_seconds is not None:
            body["deadlineSeconds"] = plan.deadline_seconds
        return body


# Checks ------------------------------------------------------------------------------------


def _terminal_at(run: dict[str, Any]) -> float | None:
    stamps = [run.get(f) for f in ("completed_at", "failed_at", "cancelled_at")]
    if run["status"] == "expired":
        stamps.append(run.get("expires_at"))
    known = [s for s in stamps if s]
    return float(max(known)) if known else None


def check_submissions(bed: RelayBed, driver: ClassicDriver) -> tuple[list[str], Counter[str]]:
    """Every promise the relay makes, for every submission: (problems, outcome counts)."""
    problems: list[str] = []
    outcomes: Counter[str] = Counter()
    validator_class: Any = jsonschema.validators.validator_for(EVENT_DATA_SCHEMA)
    validator = validator_class(EVENT_DATA_SCHEMA, format_checker=jsonschema.FormatChecker())
    events = completed_events(bed)
    runs = bed.agents.runs
    runs_by_submission: dict[str, list[str]] = {}
    for run_id, run in runs.items():
        marker = (run.get("metadata") or {}).get("relay_submission_id")
        if marker:
            runs_by_submission.setdefault(str(marker), []).append(run_id)
        if run["status"] not in TERMINAL:
            problems.append(f"run {run_id} of {marker} is left {run['status']} (orphan)")
    cancels_by_run: dict[str, list[datetime]] = {}
    for request in bed.agents.calls("runs.cancel"):
        run_id = request.path.rstrip("/").split("/")[-2]
        cancels_by_run.setdefault(run_id, []).append(request.time)

    for sub in driver.submissions:
        plan, sid = sub.plan, sub.id
        where = f"submission #{plan.index} {sid} ({plan.kind})"
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
        status, run_id, reason = data["status"], data["runId"], data["cancellationReason"]
        outcomes[f"{status}/{reason}" if reason else status] += 1
        created = runs_by_submission.get(sid, [])
        if len(created) > 1:
            problems.append(f"{where}: {len(created)} agent runs {sorted(created)}")
        if run_id is None:
            if created:
                problems.append(f"{where}: event has no runId but run(s) {created} exist")
            # Never started: the agent is unknown, or the start was still being retried when
            # the caller cancelled or the deadline passed (and no earlier attempt made a run).
            code = (data.get("lastError") or {}).get("code")
            allowed = {("cancelled", "requested")}
            if plan.kind == "unknown_agent":
                allowed.add(("failed", "not_found"))
            else:
                allowed |= {("cancelled", "deadline_exceeded"), ("failed", "start_timeout")}
            outcome = (status, reason if status == "cancelled" else code)
            if outcome not in allowed:
                problems.append(f"{where}: no run, yet {status} ({code}, {reason})")
            outcomes[f"{plan.kind} without run: {outcome[0]}/{outcome[1]}"] += 1
        else:
            if plan.kind == "unknown_agent":
                problems.append(f"{where}: an unknown agent got run {run_id}")
            if created and run_id not in created:
                problems.append(f"{where}: event names {run_id}, the service has {created}")
            known = runs.get(run_id)
            if known is None:
                problems.append(f"{where}: run {run_id} unknown to the service")
            elif known["status"] != status:
                problems.append(f"{where}: event says {status}, the service says {known['status']}")
        view = driver.status(sub)
        if view is None:
            problems.append(f"{where}: final status read failed")
        else:
            if view["status"] != status or (view.get("event") or {}).get("id") not in ids:
                problems.append(f"{where}: status view {view['status']} / {view.get('event')}")
            if view.get("cancellationReason") != reason:
                problems.append(
                    f"{where}: view reason {view.get('cancellationReason')} != {reason}"
                )
        problems += _check_reason(sub, data, runs.get(run_id or ""), cancels_by_run, where)
    return problems, outcomes


def _check_reason(
    sub: Submission[Plan],
    data: dict[str, Any],
    run: dict[str, Any] | None,
    cancels_by_run: dict[str, list[datetime]],
    where: str,
) -> list[str]:
    """The cancellation reason is one this submission's history allows."""
    plan = sub.plan
    status, reason = data["status"], data["cancellationReason"]
    if reason is not None and status != "cancelled":
        return [f"{where}: cancellationReason {reason} on a {status} submission"]
    # What the relay asked of the service, and when the run ended there (whole seconds).
    sent = sorted(cancels_by_run.get(str(data["runId"]), []))
    end = _terminal_at(run) if run else None
    effective = bool(sent) and (end is None or sent[0].timestamp() <= end + 1)
    # What the caller was told.
    accepted = [c.at for c in sub.calls if c.kind == "cancel" and c.status == 202]
    answered = [c.at for c in sub.calls if c.kind == "tool_outputs" and c.status == 202]
    decided = sent[0] if sent else from_iso(data["completedAt"])
    if reason == "requested":
        if not accepted:
            return [f"{where}: 'requested' without an accepted cancel"]
        if end is not None and accepted[0].timestamp() > end + 1:
            return [f"{where}: 'requested', but the cancel was accepted after the run ended"]
    elif reason == "deadline_exceeded":
        if plan.deadline_seconds is None:
            return [f"{where}: 'deadline_exceeded' without a deadline"]
        deadline = from_iso(data["submittedAt"]) + timedelta(seconds=plan.deadline_seconds)
        if decided < deadline:
            return [f"{where}: 'deadline_exceeded' decided at {decided}, before {deadline}"]
        if accepted and accepted[0] < deadline:
            return [f"{where}: 'deadline_exceeded' though a cancel was accepted before it"]
        if end is not None and end + 1 < deadline.timestamp():
            return [f"{where}: 'deadline_exceeded', but the run had ended before the deadline"]
    elif reason == "tool_outputs_timeout":
        if plan.kind != "tool":
            return [f"{where}: 'tool_outputs_timeout' on a run without tools"]
        if answered and answered[0] <= decided:
            return [f"{where}: 'tool_outputs_timeout' though outputs were accepted first"]
    elif reason is not None:
        return [f"{where}: unexpected cancellationReason {reason!r}"]
    elif status == "cancelled":
        # No reason: only a run the service cancelled on its own, without our cancel.
        if plan.script is None or plan.script.final_status != "cancelled":
            return [f"{where}: cancelled without a reason"]
        if effective:
            return [f"{where}: the relay cancelled the run but the event gives no reason"]
    return []


# The whole suite ---------------------------------------------------------------------------


@dataclass
class Report(SuiteReport):
    runs: int
    agents_faults: dict[str, int]
    tool_call_counts: Counter[int]

    def summary(self, seed: int, wall_seconds: float) -> list[str]:
        return [
            f"fault suite (seed {seed}): {self.submissions} submissions, {self.runs} agent runs, "
            f"virtual time {self.virtual_time}, wall {wall_seconds:.1f} s",
            f"  outcomes: {dict(sorted(self.outcomes.items()))}",
            f"  Agents calls by the relay: {self.relay_requests}, faulted {self.faulted_requests}"
            f" ({self.fault_share}): {dict(sorted(self.agents_faults.items()))}",
            *self.runtime_lines(),
            f"  tool runs by calls asked at once: {dict(sorted(self.tool_call_counts.items()))}",
        ]


def run_fault_suite(
    seed: int,
    count: int,
    *,
    burst: int,
    crash_rate: float,
    status_probe_rate: float,
    settings: dict[str, str],
    inspect: Callable[[RelayBed, ClassicDriver], None] | None = None,
) -> Report:
    plans = make_plan(seed, count, burst=burst)
    with relay_bed(settings=settings) as bed:
        driver = ClassicDriver(bed, plans, seed)

        def script_for(body: dict[str, Any], _thread_id: str) -> RunScript | None:
            metadata = body.get("metadata")
            marker = metadata.get("relay_submission_id") if isinstance(metadata, dict) else None
            sub = driver.by_id.get(str(marker))
            return sub.plan.script if sub is not None else None

        bed.agents.script_for = script_for
        with make_sync_client(bed.agents) as admin:
            for sub in driver.submissions:
                if sub.plan.continue_thread:
                    thread = admin.threads.create(
                        messages=[ThreadMessageOptions(role="user", content="earlier question")]
                    )
                    sub.thread_id = thread.id
        faults_from = len(bed.agents.requests)
        bed.agents.faults.extend(agents_fault_rules())
        crashes = drive_under_faults(bed, driver, seed, crash_rate, status_probe_rate)

        problems, outcomes = check_submissions(bed, driver)
        if inspect is not None:
            inspect(bed, driver)
        relay_requests = bed.agents.requests[faults_from:]
        return Report(
            **suite_report(
                bed,
                driver,
                crashes,
                problems,
                outcomes,
                (len(relay_requests), sum(1 for r in relay_requests if r.fault)),
            ),
            runs=len(bed.agents.runs),
            agents_faults=dict(bed.agents.fault_counts),
            tool_call_counts=Counter(
                len(sub.plan.script.requires_action or [])
                for sub in driver.submissions
                if sub.plan.kind == "tool" and sub.plan.script is not None
            ),
        )

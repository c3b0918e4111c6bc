"""The classic fault suite's plan and checks (see tests/e2e/test_fault_suite.py).

A seeded plan of a few hundred submissions (durations, outcomes, tool calls, deadlines,
cancels, thread continuations) is driven through the relay on one test bed while the Agents
service, the Event Grid topic and the host inject faults; the driver, shared with the Foundry
suite, is tests/e2e/fault_suite_driver.py. Afterwards `check_submissions` lists every broken
promise, one line per problem.
"""

from __future__ import annotations

import random
from collections import Counter
from collections.abc import Callable
from dataclasses import dataclass
from datetime import datetime
from typing import Any, Literal

from azure.ai.agents.models import ThreadMessageOptions

from devhost.agents_service import FaultRule, RunScript, make_sync_client
from shared.core.timefmt import from_iso
from tests.e2e import fault_suite_driver as suite
from tests.relay_bed import RelayBed, relay_bed

__all__ = ["ClassicDriver", "Plan", "Report", "make_plan", "run_fault_suite"]

UNKNOWN_AGENT = "asst_fault_suite_missing"
# The operations the relay calls, which change something and which only read.
WRITE_OPERATIONS = ("threads.create", "messages.create", "runs.create")
READ_OPERATIONS = ("runs.get", "runs.list", "threads.list", "messages.list")


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
    tool: suite.ToolPlan | None
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


def _tool_script(rng: random.Random, duration: float) -> RunScript:
    calls = suite.draw_function_calls(rng, "id", lambda n: f"call_{n}_{rng.randrange(10**6)}")
    return RunScript(
        queued_seconds=round(rng.uniform(0, 5), 1),
        duration_seconds=max(duration, 20.0),
        final_status=rng.choices(["completed", "failed", "incomplete"], [80, 10, 10])[0],
        requires_action=calls,
        requires_action_after_seconds=round(rng.uniform(1, min(duration, 600) * 0.8 + 1), 1),
        tool_outputs_expire_seconds=round(rng.uniform(300, 1500)),
        cancel_delay_seconds=round(rng.uniform(0, 5), 1),
    )


def make_plan(seed: int, count: int, *, burst: int) -> list[Plan]:
    rng = random.Random(seed)
    plans: list[Plan] = []
    for index in range(count):
        arrive_at = suite.draw_arrival(rng, index, burst)
        draw = rng.random()
        kind: Literal["run", "tool", "unknown_agent"]
        if draw < 0.05:
            kind, script = "unknown_agent", None
        elif draw < 0.22:
            kind, script = "tool", _tool_script(rng, suite.draw_duration(rng))
        else:
            kind, script = "run", _final_script(rng, suite.draw_duration(rng))
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
            mode = rng.choices(suite.TOOL_MODES, [40, 15, 15, 10, 20])[0]
            tool = suite.ToolPlan(
                mode=mode, react_after=round(rng.uniform(0, 400), 1), late=rng.random() < 0.25
            )
        extras = suite.draw_body_extras(rng, index, seed, length)
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
    return suite.fault_rules(
        FaultRule,
        writes=WRITE_OPERATIONS,
        reads=READ_OPERATIONS,
        not_found="runs.get",
        refused_start=("threads.create", 0.04),
        throttled=[
            FaultRule(operation="*", kind="429", rate=0.06),
            FaultRule(operation="*", kind="429_retry_after", rate=0.02, retry_after=3),
            FaultRule(operation="*", kind="429_retry_after", rate=0.015, retry_after=45),
            FaultRule(operation="*", kind="429_retry_after", rate=0.01, retry_after=150),
        ],
    )


# Driver ------------------------------------------------------------------------------------


class ClassicDriver(suite.Driver[Plan]):
    def body(self, sub: suite.Submission[Plan]) -> dict[str, Any]:
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
    runs = bed.agents.runs
    runs_by_submission: dict[str, list[str]] = {}
    for run_id, run in runs.items():
        marker = (run.get("metadata") or {}).get("relay_submission_id")
        if marker:
            runs_by_submission.setdefault(str(marker), []).append(run_id)
        if run["status"] not in suite.TERMINAL:
            problems.append(f"run {run_id} of {marker} is left {run['status']} (orphan)")
    cancels_by_run: dict[str, list[datetime]] = {}
    for request in bed.agents.calls("runs.cancel"):
        run_id = request.path.rstrip("/").split("/")[-2]
        cancels_by_run.setdefault(run_id, []).append(request.time)

    def check_run(
        sub: suite.Submission[Plan], data: dict[str, Any], ids: set[str], where: str
    ) -> list[str]:
        """The event's run is the submission's only one, and its status the service's."""
        plan, found = sub.plan, []
        status, run_id, reason = data["status"], data["runId"], data["cancellationReason"]
        created = runs_by_submission.get(sub.id, [])
        if len(created) > 1:
            found.append(f"{where}: {len(created)} agent runs {sorted(created)}")
        if run_id is None:
            if created:
                found.append(f"{where}: event has no runId but run(s) {created} exist")
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
                found.append(f"{where}: no run, yet {status} ({code}, {reason})")
            outcomes[f"{plan.kind} without run: {outcome[0]}/{outcome[1]}"] += 1
        else:
            if plan.kind == "unknown_agent":
                found.append(f"{where}: an unknown agent got run {run_id}")
            if created and run_id not in created:
                found.append(f"{where}: event names {run_id}, the service has {created}")
            known = runs.get(run_id)
            if known is None:
                found.append(f"{where}: run {run_id} unknown to the service")
            elif known["status"] != status:
                found.append(f"{where}: event says {status}, the service says {known['status']}")
        found += suite.check_status_view(driver, sub, data, ids, where)[1]
        found += _check_reason(sub, data, runs.get(run_id or ""), cancels_by_run, where)
        return found

    problems += suite.check_events(bed, driver, outcomes, lambda plan: plan.kind, check_run)
    return problems, outcomes


def _check_reason(
    sub: suite.Submission[Plan],
    data: dict[str, Any],
    run: dict[str, Any] | None,
    cancels_by_run: dict[str, list[datetime]],
    where: str,
) -> list[str]:
    """The cancellation reason is one this submission's history allows."""
    plan = sub.plan
    status, reason = data["status"], data["cancellationReason"]
    # What the relay asked of the service, and when the run ended there (whole seconds).
    sent = sorted(cancels_by_run.get(str(data["runId"]), []))
    end = _terminal_at(run) if run else None
    effective = bool(sent) and (end is None or sent[0].timestamp() <= end + 1)
    # What the caller was told.
    accepted = sub.accepted_at("cancel")
    decided = sent[0] if sent else from_iso(data["completedAt"])
    broken = suite.reason_problem(plan, data, accepted, decided)
    if broken is not None:
        return [f"{where}: {broken}"]
    if reason == "requested":
        if end is not None and accepted[0].timestamp() > end + 1:
            return [f"{where}: 'requested', but the cancel was accepted after the run ended"]
    elif reason == "deadline_exceeded":
        deadline = suite.deadline_at(plan, data)  # not None (reason_problem)
        if end is not None and deadline is not None and end + 1 < deadline.timestamp():
            return [f"{where}: 'deadline_exceeded', but the run had ended before the deadline"]
    elif reason == "tool_outputs_timeout":
        answered = sub.accepted_at("tool_outputs")
        if answered and answered[0] <= decided:
            return [f"{where}: 'tool_outputs_timeout' though outputs were accepted first"]
    elif reason is None and status == "cancelled":
        # No reason: only a run the service cancelled on its own, without our cancel.
        if plan.script is None or plan.script.final_status != "cancelled":
            return [f"{where}: cancelled without a reason"]
        if effective:
            return [f"{where}: the relay cancelled the run but the event gives no reason"]
    return []


# The whole suite ---------------------------------------------------------------------------


@dataclass
class Report(suite.SuiteReport):
    runs: int
    agents_faults: dict[str, int]
    tool_call_counts: Counter[int]

    def summary(self, seed: int, wall_seconds: float) -> list[str]:
        return [
            f"fault suite (seed {seed}): {self.submissions} submissions, {self.runs} agent runs, "
            f"virtual time {self.virtual_time}, wall {wall_seconds:.1f} s",
            *self.outcome_and_call_lines("Agents", self.agents_faults),
            *self.runtime_lines(),
            f"  tool runs by calls asked at once: {dict(sorted(self.tool_call_counts.items()))}",
        ]


def run_fault_suite(
    config: suite.SuiteConfig, inspect: Callable[[RelayBed, ClassicDriver], None] | None = None
) -> Report:
    plans = make_plan(config.seed, config.count, burst=config.burst)
    with relay_bed(settings=config.settings) as bed:
        driver = ClassicDriver(bed, plans, config.seed)

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
        crashes = suite.drive_under_faults(bed, driver, config)

        problems, outcomes = check_submissions(bed, driver)
        if inspect is not None:
            inspect(bed, driver)
        relay_requests = bed.agents.requests[faults_from:]
        return Report(
            **suite.suite_report(bed, driver, crashes, problems, outcomes, relay_requests),
            runs=len(bed.agents.runs),
            agents_faults=dict(bed.agents.fault_counts),
            tool_call_counts=Counter(
                len(sub.plan.script.requires_action or [])
                for sub in driver.submissions
                if sub.plan.kind == "tool" and sub.plan.script is not None
            ),
        )

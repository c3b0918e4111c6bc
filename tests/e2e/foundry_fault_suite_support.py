"""The Foundry fault suite's plan and checks (see tests/e2e/test_foundry_fault_suite.py).

The same driver as the classic suite (tests/e2e/fault_suite_driver.py), over Foundry agents:
each submission is a chain of background responses on one conversation, scripted per round
(`FoundryPlan.scripts`: the first response, then one per round of tool outputs), while the
loopback Foundry project service injects faults on every operation the relay uses. Afterwards
`check_foundry_submissions` lists every broken promise, one line per problem, judged against
the responses the service holds (found by their `relay_submission_id` metadata).
"""

from __future__ import annotations

import random
import re
from collections import Counter
from collections.abc import Callable
from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Any, Literal

from devhost.foundry_service import FaultRule, ResponseScript, make_openai_client
from shared.core.timefmt import from_iso
from tests.e2e import fault_suite_driver as suite
from tests.relay_bed import RelayBed, relay_bed

UNKNOWN_AGENT = "fault-suite-missing-agent"
# The operations the relay calls, and which of them change something.
FOUNDRY_WRITES = ("conversations.create", "responses.create", "responses.cancel")
FOUNDRY_READS = ("responses.retrieve", "conversations.retrieve", "conversations.items.list")
RELAY_OPERATIONS = frozenset(FOUNDRY_WRITES + FOUNDRY_READS)
MARKER_KEY = "relay_submission_id"
# The function calls a round asks for are named after the plan and the round, so that the
# service's script can tell which round a tool-outputs response answers.
CALL_ID = re.compile(r"^call_(\d+)_(\d+)_(\d+)$")
ACTIVE = frozenset({"queued", "in_progress"})

Kind = Literal["run", "tool", "unknown_agent"]
# new: the relay makes one; caller: one the caller made; earlier: the conversation of an
# earlier submission's event, once it ended; earlier_now: of an earlier submission still
# running (its responses hold the conversation's lock: this one's start waits them out).
ConversationMode = Literal["new", "caller", "earlier", "earlier_now"]


# Plan ----------------------------------------------------------------------------------------


@dataclass(frozen=True)
class FoundryPlan:
    index: int
    arrive_at: float
    kind: Kind
    # The chain's responses: the first, then one per round of tool outputs (the last one
    # answers; the ones before ask for function calls).
    scripts: tuple[ResponseScript, ...]
    agent_version: str | None
    conversation: ConversationMode
    continue_from: int | None  # the earlier plan, for the "earlier" modes
    deadline_seconds: int | None
    cancel_at: tuple[float, ...]
    tool: suite.ToolPlan | None
    repost_after: float | None
    body_extras: dict[str, Any]

    @property
    def idempotency_key(self) -> str:
        return f"foundry-fault-suite-{self.index:04d}"

    @property
    def run_length(self) -> float:
        return sum(s.queued_seconds + s.duration_seconds for s in self.scripts)

    @property
    def tool_asks_at(self) -> float:
        first = self.scripts[0]
        return first.queued_seconds + first.duration_seconds

    def script_for_round(self, answered_round: int | None) -> ResponseScript:
        """The script of the response that answers `answered_round` (None: the first)."""
        index = 0 if answered_round is None else answered_round + 1
        return self.scripts[min(index, len(self.scripts) - 1)]


def _after_cancel(rng: random.Random) -> float | None:
    """Some background responses read `cancelled` after a cancel, then `completed`: before the
    relay's first read, between its two confirming reads, or long after it published."""
    if rng.random() >= 0.5:
        return None
    # The relay reads again about 2 s after its cancel (the schedule restarts), then 5 s later.
    band = rng.choices([(0.5, 1.5), (3.0, 7.0), (60.0, 900.0)], [10, 50, 40])[0]
    return round(rng.uniform(*band), 1)


def _response_script(
    rng: random.Random,
    duration: float,
    final: str,
    calls: list[dict[str, str]] | None = None,
) -> ResponseScript:
    return ResponseScript(
        queued_seconds=round(rng.uniform(0, 5), 1),
        duration_seconds=duration,
        final_status=final,
        error={"code": "server_error", "message": "model crashed"} if final == "failed" else None,
        incomplete_reason=rng.choice(["max_output_tokens", "content_filter"]),
        function_calls=calls,
        output_text=f"answer after {duration:g}s" if rng.random() < 0.7 else None,
        usage={"input_tokens": rng.randrange(1, 5000), "output_tokens": rng.randrange(0, 900)}
        if rng.random() < 0.5
        else None,
        cancel_delay_seconds=round(rng.choice([rng.uniform(0, 1.5), rng.uniform(1.5, 8)]), 1),
        completed_after_cancel_seconds=_after_cancel(rng),
    )


def _calls(rng: random.Random, index: int, round_number: int) -> list[dict[str, str]]:
    return suite.draw_function_calls(rng, "call_id", lambda n: f"call_{index}_{round_number}_{n}")


def _scripts(rng: random.Random, index: int, kind: Kind) -> tuple[ResponseScript, ...]:
    if kind == "run":
        final = rng.choices(["completed", "failed", "cancelled", "incomplete"], [62, 14, 8, 16])[0]
        return (_response_script(rng, suite.draw_duration(rng), final),)
    if kind == "unknown_agent":
        return (ResponseScript(),)  # never used: the service knows no such agent
    rounds = rng.choices([1, 2, 3], [50, 30, 20])[0]
    asking = [
        _response_script(
            rng,
            suite.draw_duration(rng) if n == 0 else round(suite.log_uniform(rng, 2, 300), 1),
            "completed",
            _calls(rng, index, n),
        )
        for n in range(rounds)
    ]
    final = rng.choices(["completed", "failed", "incomplete", "cancelled"], [75, 10, 10, 5])[0]
    return (*asking, _response_script(rng, round(suite.log_uniform(rng, 2, 600), 1), final))


def _conversation(
    rng: random.Random, index: int, arrive_at: float, plans: list[FoundryPlan]
) -> tuple[ConversationMode, int | None]:
    draw = rng.random()
    if draw < 0.04:
        return "caller", None
    if draw < 0.14:
        earlier = [p.index for p in plans if p.arrive_at <= arrive_at]
        if earlier:
            mode: ConversationMode = "earlier" if rng.random() < 0.6 else "earlier_now"
            return mode, rng.choice(earlier)
    return "new", None


def _cancels(rng: random.Random, kind: Kind, length: float) -> tuple[float, ...]:
    if kind == "unknown_agent":
        return (round(rng.uniform(0, 30), 1),) if rng.random() < 0.3 else ()
    if rng.random() >= 0.18:
        return ()
    first = rng.choice([0.0, round(rng.uniform(0, 1.3 * length + 30), 1)])
    if rng.random() < 0.35:
        return (first, first + rng.choice([0.0, round(rng.uniform(1, 60), 1)]))
    return (first,)


def make_foundry_plan(seed: int, count: int, *, burst: int) -> list[FoundryPlan]:
    rng = random.Random(f"foundry:{seed}")
    plans: list[FoundryPlan] = []
    for index in range(count):
        arrive_at = suite.draw_arrival(rng, index, burst)
        draw = rng.random()
        kind: Kind = "unknown_agent" if draw < 0.05 else "tool" if draw < 0.27 else "run"
        scripts = _scripts(rng, index, kind)
        length = (
            0.0
            if kind == "unknown_agent"
            else sum(s.queued_seconds + s.duration_seconds for s in scripts)
        )
        deadline = None
        if kind != "unknown_agent" and length > 240 and rng.random() < 0.2:
            deadline = int(max(120, length * rng.uniform(0.3, 0.9)))
        tool = None
        if kind == "tool":
            tool = suite.ToolPlan(
                mode=rng.choices(suite.TOOL_MODES, [35, 12, 12, 11, 30])[0],
                react_after=round(rng.uniform(0, 400), 1),
                late=rng.random() < 0.25,
                rounds=len(scripts) - 1,
            )
        conversation, continue_from = _conversation(rng, index, arrive_at, plans)
        plans.append(
            FoundryPlan(
                index=index,
                arrive_at=arrive_at,
                kind=kind,
                scripts=scripts,
                agent_version=None
                if kind == "unknown_agent"
                else rng.choices([None, "1", "2"], [60, 20, 20])[0],
                conversation=conversation,
                continue_from=continue_from,
                deadline_seconds=deadline,
                cancel_at=_cancels(rng, kind, length),
                tool=tool,
                repost_after=round(rng.uniform(0, 600), 1) if rng.random() < 0.05 else None,
                body_extras=suite.draw_body_extras(rng, index, seed, length),
            )
        )
    return plans


def foundry_fault_rules() -> list[FaultRule]:
    """Roughly a quarter of the relay's Foundry calls fail, in every way the service can."""
    return suite.fault_rules(
        FaultRule,
        writes=FOUNDRY_WRITES,
        reads=FOUNDRY_READS,
        not_found="responses.retrieve",
        # Cancels are few (most runs end on their own): refused often enough to be retried.
        refused_first=[FaultRule(operation="responses.cancel", kind="503", rate=0.2)],
        refused_start=("conversations.create", 0.06),
        throttled=[
            FaultRule(operation="*", kind="429", rate=0.05),
            FaultRule(operation="*", kind="429_retry_after", rate=0.02, retry_after=3),
            FaultRule(operation="*", kind="429_retry_after", rate=0.015, retry_after=45),
            FaultRule(operation="*", kind="429_retry_after_ms", rate=0.01, retry_after=2.5),
            FaultRule(operation="*", kind="429_retry_after_ms", rate=0.005, retry_after=150),
        ],
    )


# Driver ------------------------------------------------------------------------------------


class FoundryDriver(suite.Driver[FoundryPlan]):
    repeat_kind = "tool_outputs_again"
    late_kind = "tool_outputs_late"

    def __init__(self, bed: RelayBed, plans: list[FoundryPlan], seed: int) -> None:
        super().__init__(bed, plans, seed)
        # The scripts the service was given, in the order it created responses.
        self.scripts_used: list[ResponseScript | None] = []

    def body(self, sub: suite.Submission[FoundryPlan]) -> dict[str, Any] | None:
        plan = sub.plan
        name = UNKNOWN_AGENT if plan.kind == "unknown_agent" else self.bed.foundry_agent
        agent = {"name": name}
        if plan.agent_version is not None:
            agent["version"] = plan.agent_version
        body: dict[str, Any] = {"agent": agent, **plan.body_extras}
        if plan.deadline_seconds is not None:
            body["deadlineSeconds"] = plan.deadline_seconds
        conversation: str | None = sub.thread_id
        if plan.continue_from is not None:
            known, conversation = self._earlier_conversation(plan)
            if not known:
                return None
        if conversation:
            body["conversationId"] = conversation
        return body

    def _earlier_conversation(self, plan: FoundryPlan) -> tuple[bool, str | None]:
        """(known yet, the earlier submission's conversation): "earlier" waits for its event,
        "earlier_now" only for its conversation to exist."""
        assert plan.continue_from is not None
        earlier = self.submissions[plan.continue_from]
        if not earlier.id:
            # Not sent yet (it waits for a conversation itself), or refused: a new one then.
            refused = any(c.kind == "submit" for c in earlier.calls)
            return refused, None
        view = self.status(earlier)
        if view is None:
            return False, None
        if view.get("event") or view.get("publishError"):
            return True, (view.get("result") or {}).get("conversationId")
        if plan.conversation == "earlier_now":
            conversation = (view.get("agentRun") or {}).get("conversationId")
            return bool(conversation), conversation
        return False, None

    def script_for(self, body: dict[str, Any]) -> ResponseScript | None:
        """The script of a response the relay creates: its plan's, for the round it answers."""
        metadata = body.get("metadata")
        marker = metadata.get(MARKER_KEY) if isinstance(metadata, dict) else None
        sub = self.by_id.get(str(marker).partition("#")[0])
        answered: int | None = None
        for item in body.get("input") or []:
            found = CALL_ID.match(str(item.get("call_id") or ""))
            if item.get("type") == "function_call_output" and found:
                answered = int(found.group(2))
        script = sub.plan.script_for_round(answered) if sub is not None else None
        self.scripts_used.append(script)
        return script


# Checks ------------------------------------------------------------------------------------


def _marker(response: dict[str, Any]) -> str | None:
    value = (response.get("metadata") or {}).get(MARKER_KEY)
    return str(value) if value else None


def _pending_calls(response: dict[str, Any]) -> bool:
    """A response that ended asking for function calls (the Responses API's requires_action)."""
    return response["status"] == "completed" and any(
        item.get("type") == "function_call" for item in response.get("output") or []
    )


@dataclass
class ServiceView:
    """What the Foundry service holds and saw, indexed for the checks."""

    responses: dict[str, dict[str, Any]]  # id -> as GET /responses/{id} returns it now
    scripts: dict[str, ResponseScript | None]  # id -> the script it was created with
    chains: dict[str, list[dict[str, Any]]]  # submission id -> its responses, oldest first
    reads: dict[str, list[tuple[datetime, str]]]  # id -> the relay's successful reads
    cancels: dict[str, list[datetime]]  # id -> the relay's cancel requests


def service_view(bed: RelayBed, driver: FoundryDriver) -> tuple[ServiceView, list[str]]:
    problems: list[str] = []
    responses = bed.foundry.responses
    if len(driver.scripts_used) != len(responses):
        problems.append(f"{len(responses)} responses, {len(driver.scripts_used)} scripts chosen")
    view = ServiceView(
        responses, dict(zip(responses, driver.scripts_used, strict=False)), {}, {}, {}
    )
    for rid, response in responses.items():
        marker = _marker(response)
        if marker is None or view.scripts.get(rid) is None:
            problems.append(f"response {rid} ({marker}) belongs to no planned submission")
        view.chains.setdefault(str(marker).partition("#")[0], []).append(response)
        if response["status"] in ACTIVE:
            problems.append(f"response {rid} of {marker} is left {response['status']} (orphan)")
    for request in bed.foundry.calls("responses.retrieve"):
        if request.status == 200 and isinstance(request.response, dict):
            rid = str(request.response.get("id"))
            view.reads.setdefault(rid, []).append((request.time, request.response["status"]))
    for request in bed.foundry.calls("responses.cancel"):
        view.cancels.setdefault(request.path.rstrip("/").split("/")[-2], []).append(request.time)
    return view, problems


def check_foundry_submissions(
    bed: RelayBed, driver: FoundryDriver, tool_outputs_timeout: float
) -> tuple[list[str], Counter[str], ServiceView]:
    """Every promise the relay makes, for every Foundry submission: (problems, outcome counts,
    what the service holds)."""
    outcomes: Counter[str] = Counter()
    service, problems = service_view(bed, driver)

    def check_chain(
        sub: suite.Submission[FoundryPlan], data: dict[str, Any], ids: set[str], where: str
    ) -> list[str]:
        """The responses behind the event, their truth, the reason and the status view."""
        chain = service.chains.get(sub.id, [])
        found = _check_chain(sub, data, chain, where)
        found += _check_truth(sub, data, chain, service, where, outcomes)
        found += _check_reason(sub, data, chain, service, tool_outputs_timeout, where)
        view, disagree = suite.check_status_view(driver, sub, data, ids, where)
        found += disagree
        if view is not None:
            found += _check_view(view, data, where)
        outcomes[f"responses per submission: {len(chain)}"] += 1
        return found

    def describe(plan: FoundryPlan) -> str:
        return f"{plan.kind}, {plan.conversation}"

    problems += suite.check_events(bed, driver, outcomes, describe, check_chain)
    return problems, outcomes, service


def _check_chain(
    sub: suite.Submission[FoundryPlan],
    data: dict[str, Any],
    chain: list[dict[str, Any]],
    where: str,
) -> list[str]:
    """The event names the chain: its agent, its conversation, its last response; one
    response per round at most."""
    plan, problems = sub.plan, []
    if data["api"] != "responses":
        problems.append(f"{where}: api {data['api']!r}")
    name = UNKNOWN_AGENT if plan.kind == "unknown_agent" else "relay-foundry-test"
    if data["agentName"] != name:
        problems.append(f"{where}: agentName {data['agentName']!r}, not {name!r}")
    markers = Counter(_marker(r) for r in chain)
    problems += [f"{where}: {n} responses marked {m}" for m, n in markers.items() if n > 1]
    if len(markers) > len(plan.scripts):
        problems.append(f"{where}: {len(markers)} rounds, the plan has {len(plan.scripts)}")
    wanted = (sub.body or {}).get("conversationId")
    if wanted and data["conversationId"] != wanted:
        problems.append(f"{where}: continued {wanted}, the event names {data['conversationId']}")
    if not chain:
        if data["responseId"] is not None:
            problems.append(f"{where}: responseId {data['responseId']} but no response exists")
        return problems
    last = chain[-1]
    if data["responseId"] != last["id"]:
        problems.append(f"{where}: responseId {data['responseId']}, the last is {last['id']}")
    elsewhere = {
        r["id"] for r in chain if (r["conversation"] or {}).get("id") != data["conversationId"]
    }
    if elsewhere:
        problems.append(f"{where}: responses {sorted(elsewhere)} not on {data['conversationId']}")
    ran = (last.get("agent_reference") or {}).get("version")
    if data["agentVersion"] != ran or (plan.agent_version or ran) != ran:
        problems.append(f"{where}: agentVersion {data['agentVersion']}, {ran} ran")
    return problems


def _check_truth(
    sub: suite.Submission[FoundryPlan],
    data: dict[str, Any],
    chain: list[dict[str, Any]],
    service: ServiceView,
    where: str,
    outcomes: Counter[str],
) -> list[str]:
    """The event's status is the last response's at the service (after a cancel the relay
    confirmed, the status the second read saw)."""
    plan = sub.plan
    status, reason = data["status"], data["cancellationReason"]
    confirmation = data["cancelConfirmation"]
    if not chain:
        # Never started: the agent is unknown, or the start was still being retried when
        # the caller cancelled or the deadline passed (and no earlier attempt made a response).
        code = (data.get("lastError") or {}).get("code")
        # (An unknown agent's create answered 5xx may have been applied, for all the relay
        # knows: a cancel then looks for its response until it gives up, start_timeout.)
        allowed = {("cancelled", "requested"), ("failed", "start_timeout")}
        if plan.kind == "unknown_agent":
            allowed.add(("failed", "not_found"))
        else:
            allowed.add(("cancelled", "deadline_exceeded"))
        outcome = (status, reason if status == "cancelled" else code)
        outcomes[f"{plan.kind} without response: {outcome[0]}/{outcome[1]}"] += 1
        if outcome not in allowed:
            return [f"{where}: no response, yet {status} ({code}, {reason})"]
        return []
    if plan.kind == "unknown_agent":
        return [f"{where}: an unknown agent got responses"]
    last = chain[-1]
    actual = last["status"]
    if _pending_calls(last):
        # The chain ends on a response asking for function calls: only the relay giving up
        # (a cancel, the deadline, the tool-output timeout) ends the submission there.
        outcomes["ended asking for tool outputs"] += 1
        if status != "cancelled" or reason is None:
            return [
                f"{where}: ended on a response asking for function calls, yet {status} "
                f"({(data.get('lastError') or {}).get('code')}, reason {reason})"
            ]
        return []
    if confirmation is None:
        if status != actual:
            return [f"{where}: event says {status}, the service says {actual}"]
        return _check_answer(data, chain, where)
    first, second = confirmation["firstRead"], confirmation["secondRead"]
    outcomes[f"cancel confirmed: {first} then {second}"] += 1
    reads = service.reads.get(last["id"], [])
    seen = any(
        a_status == "cancelled" and b_status == second and (b_at - a_at).total_seconds() >= 5
        for a_at, a_status in reads
        for b_at, b_status in reads
    )
    problems = []
    if first != "cancelled" or second != status or not seen:
        problems.append(f"{where}: cancelConfirmation {confirmation} for {status}; reads {reads}")
    script = service.scripts.get(last["id"])
    if second != actual:
        later = second == "cancelled" and actual == "completed"
        if later and script is not None and script.completed_after_cancel_seconds is not None:
            outcomes["confirmed cancelled, completed later at the service"] += 1
        else:
            problems.append(f"{where}: second read {second}, the service says {actual}")
    return problems


def _check_answer(data: dict[str, Any], chain: list[dict[str, Any]], where: str) -> list[str]:
    """The event carries the last response's answer, and the usage of the whole chain."""
    problems = []
    texts = [
        part.get("text") or ""
        for item in chain[-1].get("output") or []
        if item.get("type") == "message"
        for part in item.get("content") or []
        if part.get("type") == "output_text"
    ]
    text = (data["output"] or {}).get("text")
    if (text is not None or texts) and text != "".join(texts):
        problems.append(f"{where}: output {text!r}, the service has {texts!r}")
    used = [r["usage"] for r in chain if r.get("usage")]
    expected = (
        {
            "promptTokens": sum(u["input_tokens"] for u in used),
            "completionTokens": sum(u["output_tokens"] for u in used),
            "totalTokens": sum(u["total_tokens"] for u in used),
        }
        if used
        else None
    )
    if data["usage"] != expected:
        problems.append(f"{where}: usage {data['usage']}, the chain's is {expected}")
    return problems


def _check_reason(
    sub: suite.Submission[FoundryPlan],
    data: dict[str, Any],
    chain: list[dict[str, Any]],
    service: ServiceView,
    tool_outputs_timeout: float,
    where: str,
) -> list[str]:
    """The cancellation reason is one this submission's history allows."""
    status, reason = data["status"], data["cancellationReason"]
    # What the relay asked of the service, and what the caller was told.
    sent = sorted(t for r in chain for t in service.cancels.get(r["id"], []))
    accepted = sub.accepted_at("cancel")
    completed = from_iso(data["completedAt"])
    decided = sent[0] if sent else completed
    broken = suite.reason_problem(sub.plan, data, accepted, decided)
    if broken is not None:
        return [f"{where}: {broken}"]
    if reason == "requested":
        if accepted[0] > completed:
            return [f"{where}: 'requested', but the cancel was accepted after the end"]
    elif reason == "tool_outputs_timeout":
        # Each round's first outputs come before the next round is asked: outputs accepted
        # within the timeout before the relay gave up answered the round it gave up on.
        window = decided - timedelta(seconds=tool_outputs_timeout)
        if any(window < at <= decided for at in sub.accepted_at("tool_outputs")):
            return [f"{where}: 'tool_outputs_timeout' though outputs were accepted in time"]
    elif reason is None and status == "cancelled":
        # No reason: only a response the service cancelled on its own, without our cancel.
        script = service.scripts.get(chain[-1]["id"]) if chain else None
        if script is None or script.final_status != "cancelled":
            return [f"{where}: cancelled without a reason"]
        if data["cancelConfirmation"] is not None:
            return [f"{where}: the relay cancelled the response but the event gives no reason"]
    return []


def _check_view(view: dict[str, Any], data: dict[str, Any], where: str) -> list[str]:
    """The status view names the event's last response and its conversation."""
    problems = []
    run = view.get("agentRun") or {}
    shown = run.get("responseIds") or []
    if (shown[-1] if shown else None) != data["responseId"]:
        problems.append(f"{where}: view responseIds {shown[-3:]}, event {data['responseId']}")
    if run.get("conversationId") != data["conversationId"]:
        problems.append(f"{where}: view conversation {run.get('conversationId')}")
    return problems


# The whole suite ---------------------------------------------------------------------------


@dataclass
class FoundryReport(suite.SuiteReport):
    responses: int
    conversations: int
    empty_conversations: int
    foundry_faults: dict[str, int]
    faulted_operations: dict[str, int]
    locked_refusals: int
    continued: Counter[str]
    tool_rounds: Counter[str]

    def summary(self, seed: int, wall_seconds: float) -> list[str]:
        return [
            f"Foundry fault suite (seed {seed}): {self.submissions} submissions, "
            f"{self.responses} responses on {self.conversations} conversations "
            f"({self.empty_conversations} left empty), virtual time {self.virtual_time}, "
            f"wall {wall_seconds:.1f} s",
            *self.outcome_and_call_lines("Foundry", self.foundry_faults),
            f"  faulted by operation: {dict(sorted(self.faulted_operations.items()))}; "
            f"{self.locked_refusals} creates refused conversation_locked",
            *self.runtime_lines(),
            f"  conversations continued: {dict(sorted(self.continued.items()))}",
            f"  tool runs by rounds x calls asked at once: {dict(sorted(self.tool_rounds.items()))}",
        ]


def run_foundry_fault_suite(
    config: suite.SuiteConfig, inspect: Callable[[RelayBed, FoundryDriver], None] | None = None
) -> FoundryReport:
    plans = make_foundry_plan(config.seed, config.count, burst=config.burst)
    with relay_bed(settings=config.settings) as bed:
        driver = FoundryDriver(bed, plans, config.seed)
        bed.foundry.script_for = driver.script_for
        bed.foundry.create_agent_version(bed.foundry_agent)  # version 2 (the latest)
        with make_openai_client(bed.foundry) as admin:
            for sub in driver.submissions:
                if sub.plan.conversation == "caller":
                    made = admin.conversations.create(
                        items=[{"type": "message", "role": "user", "content": "earlier question"}]
                    )
                    sub.thread_id = made.id
        faults_from = len(bed.foundry.requests)
        bed.foundry.faults.extend(foundry_fault_rules())
        crashes = suite.drive_under_faults(bed, driver, config)

        timeout = float(config.settings["TOOL_OUTPUTS_TIMEOUT_SECONDS"])
        problems, outcomes, service = check_foundry_submissions(bed, driver, timeout)
        if inspect is not None:
            inspect(bed, driver)
        relay_requests = bed.foundry.requests[faults_from:]
        conversations = {
            r.response["id"]
            for r in bed.foundry.calls("conversations.create")
            if r.status == 200 and isinstance(r.response, dict)
        }
        used = {(r["conversation"] or {}).get("id") for r in service.responses.values()}
        return FoundryReport(
            **suite.suite_report(bed, driver, crashes, problems, outcomes, relay_requests),
            responses=len(service.responses),
            conversations=len(conversations),
            empty_conversations=len(conversations - used),
            foundry_faults=dict(bed.foundry.fault_counts),
            faulted_operations=dict(Counter(r.operation for r in relay_requests if r.fault)),
            locked_refusals=sum(
                1
                for r in relay_requests
                if r.operation == "responses.create"
                and r.status == 400
                and "conversation_locked" in str(r.response)
            ),
            continued=Counter(
                sub.plan.conversation
                for sub in driver.submissions
                if (sub.body or {}).get("conversationId")
            ),
            tool_rounds=Counter(
                f"{len(p.scripts) - 1}x{len(p.scripts[0].function_calls or [])}"
                for p in plans
                if p.kind == "tool"
            ),
        )


__all__ = [
    "FoundryDriver",
    "FoundryPlan",
    "FoundryReport",
    "make_foundry_plan",
    "run_foundry_fault_suite",
]

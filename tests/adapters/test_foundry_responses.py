"""The Foundry backend (Responses API), driven directly against the loopback Foundry service.

Every test asserts what the backend returned (the Outcome) and what the service saw (its
recorded requests): one response per submission and per round of tool outputs, however often
an activity runs, and only the fields the relay should send.
"""

from __future__ import annotations

import asyncio
from collections.abc import Coroutine, Iterator
from dataclasses import dataclass, field
from datetime import timedelta
from typing import Any, TypeVar

import pytest

from devhost.clock import VirtualClock
from devhost.foundry_service import FaultRule, FoundryService, RecordedRequest, ResponseScript
from shared.adapters import foundry_responses as backend
from shared.adapters.clients import close_clients, get_clients
from shared.adapters.foundry_requests import LISTED_NOT_FOUND_READS
from shared.adapters.runtime import reset_worker_state
from shared.contract import (
    Outcome,
    RunRef,
    RunSnapshot,
    ToolOutput,
    error_code,
    error_message,
)
from shared.core.submission import Submission
from shared.core.timefmt import to_iso
from shared.core.tool_outputs import tool_call_round

T = TypeVar("T")
AGENT = "helper"
CALLER = "key:caller-a"
# What the relay may send on POST /responses (reference note §3), stream only on the fast path.
ALLOWED_CREATE_FIELDS = {
    "input",
    "conversation",
    "agent_reference",
    "background",
    "store",
    "metadata",
    "stream",
}
FAST = ResponseScript(queued_seconds=0.05, duration_seconds=0.2, output_text="Quick answer.")


@dataclass
class Relay:
    """The backend's functions on one event loop (as the worker runs them), and the service."""

    loop: asyncio.AbstractEventLoop
    service: FoundryService
    clock: VirtualClock
    submissions: dict[str, Submission] = field(default_factory=dict)

    def run(self, coro: Coroutine[Any, Any, T]) -> T:
        return self.loop.run_until_complete(coro)

    def start(self, sid: str, submission: Submission, **options: Any) -> Outcome:
        """A start as the orchestrator makes it: a `prepared` outcome (the new conversation)
        is recorded and the start called again at once with it."""
        self.submissions[sid] = submission
        outcome = self.run(backend.start_run(sid, submission, **options))
        if outcome.get("prepared"):
            options["known_thread_id"] = outcome.get("threadId")
            outcome = self.run(backend.start_run(sid, submission, **options))
        return outcome

    def ref(self, sid: str, run: RunSnapshot | None) -> RunRef:
        assert run is not None
        submission = self.submissions[sid]
        return {
            "submissionId": sid,
            "agentId": submission.agent_id,
            "threadId": run["threadId"],
            "runId": run["runId"],
            "api": "responses",
            "agentVersion": submission.agent_version,
        }

    def poll(self, ref: RunRef) -> Outcome:
        return self.run(backend.poll_run(ref))

    def until_ended(self, ref: RunRef, step: float = 1.0) -> Outcome:
        for _ in range(200):
            outcome = self.poll(ref)
            assert outcome["outcome"] == "ok", outcome
            run = outcome.get("run")
            assert run is not None
            if run["status"] not in ("queued", "in_progress"):
                return outcome
            self.clock.advance(step)
        raise AssertionError("the response never ended")

    def creates(self) -> list[RecordedRequest]:
        """The POST /responses the service accepted (each made a response)."""
        return [r for r in self.service.calls("responses.create") if r.status == 200]


def submission(**fields: Any) -> Submission:
    values: dict[str, Any] = {
        "agent_id": AGENT,
        "messages": [{"role": "user", "content": "hello"}],
        "api": "responses",
        "metadata": {"ticket": "T-1"},
        "caller": CALLER,
        "deadline_seconds": 3600,
    }
    values.update(fields)
    return Submission(**values)


@pytest.fixture
def clock() -> VirtualClock:
    return VirtualClock()


@pytest.fixture
def service(clock: VirtualClock) -> Iterator[FoundryService]:
    with FoundryService(clock, seed=11) as svc:
        svc.create_agent_version(AGENT)
        yield svc


@pytest.fixture
def relay(
    service: FoundryService, clock: VirtualClock, monkeypatch: pytest.MonkeyPatch
) -> Iterator[Relay]:
    monkeypatch.setenv("AZURE_AI_PROJECT_ENDPOINT", "http://127.0.0.1:9/api/projects/classic")
    monkeypatch.setenv("FOUNDRY_PROJECT_ENDPOINT", service.endpoint)
    monkeypatch.setenv("EVENTGRID_TOPIC_ENDPOINT", "http://127.0.0.1:9/api/events")
    monkeypatch.setenv("EVENTGRID_TOPIC_KEY", "topic-key")
    monkeypatch.setenv("SERVICE_READ_TIMEOUT_SECONDS", "5")
    reset_worker_state()
    loop = asyncio.new_event_loop()
    try:
        yield Relay(loop, service, clock)
    finally:
        loop.run_until_complete(close_clients())
        loop.close()
        reset_worker_state()


def ok_run(outcome: Outcome) -> RunSnapshot:
    assert outcome["outcome"] == "ok", outcome
    run = outcome.get("run")
    assert run is not None
    return run


# ---------------------------------------------------------------------------- a plain run


def test_start_then_poll_until_completed(relay: Relay) -> None:
    relay.service.default_script = ResponseScript(
        output_text="Done.", usage={"input_tokens": 7, "output_tokens": 3}
    )
    started = relay.start("sub-1", submission())
    run = ok_run(started)
    assert started.get("reused") is False
    assert run["status"] == "queued"
    assert run["agentId"] == AGENT
    assert run.get("agentVersion") == "1"  # the version the service resolved (latest)
    assert run["threadId"] is not None
    assert run["threadId"].startswith("conv_")
    assert started.get("outputText") is None

    (conversation,) = relay.service.calls("conversations.create")
    assert conversation.body == {
        "metadata": {"relay_submission_id": "sub-1", "relay_caller": CALLER}
    }
    (create,) = relay.creates()
    body = create.body
    assert set(body) <= ALLOWED_CREATE_FIELDS
    assert "stream" not in body
    assert body["conversation"] == run["threadId"]
    assert body["background"] is True
    assert body["store"] is True
    assert body["agent_reference"] == {"type": "agent_reference", "name": AGENT}
    assert body["input"] == [{"type": "message", "role": "user", "content": "hello"}]
    assert body["metadata"] == {"ticket": "T-1", "relay_submission_id": "sub-1"}
    assert all(r.bearer for r in relay.service.requests)
    assert all(r.retry_count == "0" for r in relay.service.requests)

    ended = relay.until_ended(relay.ref("sub-1", run))
    final = ok_run(ended)
    assert final["status"] == "completed"
    assert ended.get("outputText") == "Done."
    assert final["usage"] == {"prompt_tokens": 7, "completion_tokens": 3, "total_tokens": 10}
    assert final["terminalAt"] is not None
    assert final.get("agentVersion") == "1"
    assert final["runId"] == run["runId"]
    assert len(relay.creates()) == 1


def test_a_pinned_agent_version_is_sent_and_reported(relay: Relay) -> None:
    relay.service.create_agent_version(AGENT)  # version 2 is now the latest
    run = ok_run(relay.start("sub-v", submission(agent_version="1")))
    assert run.get("agentVersion") == "1"
    (create,) = relay.creates()
    assert create.body["agent_reference"] == {
        "type": "agent_reference",
        "name": AGENT,
        "version": "1",
    }


@pytest.mark.parametrize(
    ("script", "status", "error", "details", "text"),
    [
        (
            ResponseScript(
                final_status="failed", error={"code": "server_error", "message": "Boom."}
            ),
            "failed",
            {"code": "server_error", "message": "Boom."},
            None,
            None,
        ),
        (
            ResponseScript(
                final_status="incomplete",
                incomplete_reason="content_filter",
                output_text="Half an answer",
            ),
            "incomplete",
            None,
            {"reason": "content_filter"},
            "Half an",
        ),
        (ResponseScript(final_status="cancelled"), "cancelled", None, None, None),
    ],
)
def test_ends_other_than_completed(
    relay: Relay,
    script: ResponseScript,
    status: str,
    error: dict[str, str] | None,
    details: dict[str, str] | None,
    text: str | None,
) -> None:
    relay.service.default_script = script
    run = ok_run(relay.start("sub-end", submission()))
    ended = relay.until_ended(relay.ref("sub-end", run))
    final = ok_run(ended)
    assert final["status"] == status
    assert final["lastError"] == error
    assert final["incompleteDetails"] == details
    assert ended.get("outputText") == text
    assert final["toolCalls"] is None


# ---------------------------------------------------------------------------- tool calls


def test_function_calls_then_tool_outputs_make_a_new_response(relay: Relay) -> None:
    relay.service.default_script = ResponseScript(
        function_calls=[{"name": "lookup", "arguments": {"q": "weather"}, "call_id": "call_1"}],
        answer_function_outputs=True,
    )
    run = ok_run(relay.start("sub-tools", submission()))
    asked = ok_run(relay.until_ended(relay.ref("sub-tools", run)))
    assert asked["status"] == "requires_action"
    assert asked["toolCalls"] == [
        {"id": "call_1", "name": "lookup", "arguments": '{"q": "weather"}'}
    ]
    ref = relay.ref("sub-tools", asked)
    outputs: list[ToolOutput] = [{"toolCallId": "call_1", "output": "sunny"}]

    submitted = relay.run(backend.submit_tool_outputs(ref, outputs))
    follow_up = ok_run(submitted)
    assert submitted.get("reused") is False
    assert follow_up["runId"] != asked["runId"]
    assert follow_up["threadId"] == asked["threadId"]
    first, second = relay.creates()
    assert set(second.body) <= ALLOWED_CREATE_FIELDS
    assert second.body["input"] == [
        {"type": "function_call_output", "call_id": "call_1", "output": "sunny"}
    ]
    assert second.body["conversation"] == asked["threadId"]
    assert "previous_response_id" not in second.body
    # The agent version the asking response ran, and the caller's metadata, carry over.
    assert second.body["agent_reference"] == {
        "type": "agent_reference",
        "name": AGENT,
        "version": "1",
    }
    round_key = tool_call_round(["call_1"])
    assert second.body["metadata"] == {
        "ticket": "T-1",
        "relay_submission_id": f"sub-tools#{round_key}",
    }

    # The activity runs again while the new response still runs: the conversation is locked.
    again = relay.run(backend.submit_tool_outputs(ref, outputs))
    assert again["outcome"] == "transient"
    assert error_code(again.get("error")) == "conversation_locked"
    # The lock may be held by a response of ours whose answer was lost: looked for later.
    assert again.get("uncertainCreate") is True
    ended = relay.until_ended(relay.ref("sub-tools", follow_up))
    assert ok_run(ended)["status"] == "completed"
    assert ended.get("outputText") == "Echo: sunny"
    # ... and once it has ended, it is found instead of made again.
    found = relay.run(backend.submit_tool_outputs(ref, outputs))
    assert found.get("reused") is True
    assert ok_run(found)["runId"] == follow_up["runId"]
    assert len(relay.creates()) == 2
    assert first.body["metadata"]["relay_submission_id"] == "sub-tools"


# ---------------------------------------------------------------------------- idempotency


def test_a_new_submission_first_gets_its_conversation_and_no_response(relay: Relay) -> None:
    """Step one of two: the orchestrator records the conversation before any create, so an
    attempt that runs twice finds the one response there instead of making a second."""
    prepared = relay.run(backend.start_run("sub-prep", submission()))
    assert prepared["outcome"] == "ok"
    assert prepared.get("prepared") is True
    assert prepared.get("run") is None
    (created,) = relay.service.calls("conversations.create")
    assert prepared.get("threadId") == created.response["id"]
    assert created.body["metadata"]["relay_submission_id"] == "sub-prep"
    assert relay.creates() == []


def test_starting_twice_reuses_the_one_response(relay: Relay) -> None:
    run = ok_run(relay.start("sub-twice", submission()))
    conversation = run["threadId"]
    # A re-run while the response still runs: refused by the conversation lock, nothing made.
    locked = relay.start("sub-twice", submission(), known_thread_id=conversation)
    assert locked["outcome"] == "transient"
    assert error_code(locked.get("error")) == "conversation_locked"
    assert locked.get("threadId") == conversation
    relay.until_ended(relay.ref("sub-twice", run))
    again = relay.start("sub-twice", submission(), known_thread_id=conversation)
    assert again.get("reused") is True
    assert ok_run(again)["runId"] == run["runId"]
    assert again.get("outputText") == "Echo: hello"
    assert len(relay.creates()) == 1
    assert len(relay.service.calls("conversations.create")) == 1


def test_a_create_applied_but_answered_500_is_found_after_it_ends(relay: Relay) -> None:
    relay.service.faults.append(
        FaultRule(operation="responses.create", kind="500_after_apply", count=1)
    )
    failed = relay.start("sub-500", submission())
    assert failed["outcome"] == "transient"
    assert failed.get("uncertainCreate") is True
    conversation = failed.get("threadId")
    assert conversation is not None
    assert conversation.startswith("conv_")
    assert len(relay.service.responses) == 1  # it was applied

    unresolved = relay.start(
        "sub-500",
        submission(),
        find_only=True,
        known_thread_id=conversation,
        uncertain_since=to_iso(relay.clock.now()),
    )
    assert unresolved["outcome"] == "transient"
    assert error_code(unresolved.get("error")) == "earlier_attempt_unresolved"
    retried = relay.start("sub-500", submission(), known_thread_id=conversation)
    assert error_code(retried.get("error")) == "conversation_locked"

    relay.clock.advance(10)  # the response ends and adds its items to the conversation
    found = relay.start(
        "sub-500",
        submission(),
        find_only=True,
        known_thread_id=conversation,
        uncertain_since=to_iso(relay.clock.now()),
    )
    assert found.get("reused") is True
    assert ok_run(found)["status"] == "completed"
    reused = relay.start("sub-500", submission(), known_thread_id=conversation)
    assert reused.get("reused") is True
    assert ok_run(reused)["runId"] == ok_run(found)["runId"]
    assert len(relay.service.responses) == 1
    assert len(relay.service.calls("conversations.create")) == 1


def test_find_only_creates_nothing(relay: Relay) -> None:
    nothing = relay.start("sub-find", submission(), find_only=True)
    assert nothing == {"outcome": "ok", "run": None, "reused": False}
    conversation = ok_run(relay.start("sub-other", submission()))["threadId"]
    relay.clock.advance(10)
    # A conversation without this submission's response, no create in doubt: nothing there.
    empty = relay.start("sub-find", submission(), find_only=True, known_thread_id=conversation)
    assert empty == {"outcome": "ok", "run": None, "reused": False}
    assert len(relay.creates()) == 1
    assert len(relay.service.calls("conversations.create")) == 1


def test_a_lost_create_answer_with_a_timeout(relay: Relay, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("SERVICE_READ_TIMEOUT_SECONDS", "0.3")
    reset_worker_state()
    relay.service.faults.append(
        FaultRule(operation="responses.create", kind="timeout", delay_seconds=1.0, count=1)
    )
    timed_out = relay.start("sub-timeout", submission())
    assert timed_out["outcome"] == "transient"
    assert error_code(timed_out.get("error")) == "transport_error"
    assert timed_out.get("uncertainCreate") is True
    assert timed_out.get("threadId") is not None


# ---------------------------------------------------------------------------- conversations


def test_caller_conversations_and_their_owners(relay: Relay) -> None:
    mine = ok_run(relay.start("sub-mine", submission()))["threadId"]
    relay.clock.advance(10)
    # Another caller naming it: refused, nothing made.
    other = relay.start("sub-theirs", submission(conversation_id=mine, caller="key:caller-b"))
    assert other["outcome"] == "permanent"
    assert error_code(other.get("error")) == "conversation_not_allowed"
    assert "another caller" in error_message(other.get("error"))
    # The caller that owns it continues it (no new conversation).
    again = relay.start("sub-mine-2", submission(conversation_id=mine))
    assert ok_run(again)["threadId"] == mine
    assert again.get("threadId") is None
    assert len(relay.service.calls("conversations.create")) == 1
    assert len(relay.creates()) == 2


def test_a_conversation_the_relay_did_not_create(relay: Relay) -> None:
    foreign = relay.run(_foreign_conversation())
    refused = relay.start("sub-foreign", submission(conversation_id=foreign))
    assert refused["outcome"] == "permanent"
    assert error_code(refused.get("error")) == "conversation_not_allowed"
    assert "ALLOW_CALLER_THREADS" in error_message(refused.get("error"))
    allowed = relay.start(
        "sub-foreign", submission(conversation_id=foreign, allow_caller_conversations=True)
    )
    assert ok_run(allowed)["threadId"] == foreign
    missing = relay.start("sub-missing", submission(conversation_id="conv_missing"))
    assert missing["outcome"] == "not_found"
    assert len(relay.creates()) == 1


async def _foreign_conversation() -> str:
    """A conversation made without the relay (no relay_caller in its metadata)."""
    return (await get_clients().openai.conversations.create(metadata={"team": "x"})).id


# ---------------------------------------------------------------------------- failures


@pytest.mark.parametrize(
    ("kind", "retry_after", "expected"),
    [("429_retry_after", 7.0, 7.0), ("429_retry_after_ms", 1.5, 1.5), ("429", 1.0, None)],
)
def test_throttled_calls_are_transient_with_retry_after(
    relay: Relay, kind: str, retry_after: float, expected: float | None
) -> None:
    run = ok_run(relay.start("sub-429", submission()))
    relay.service.faults.append(
        FaultRule(operation="responses.retrieve", kind=kind, retry_after=retry_after, count=1)
    )
    throttled = relay.poll(relay.ref("sub-429", run))
    assert throttled["outcome"] == "transient"
    assert throttled.get("httpStatus") == 429
    assert throttled.get("retryAfter") == expected
    assert error_code(throttled.get("error")) == "rate_limit_exceeded"
    assert len(relay.service.calls("responses.retrieve")) == 1  # no SDK retry


def test_a_throttled_create_leaves_a_response_possible_and_a_refused_one_does_not(
    relay: Relay,
) -> None:
    # This create was not applied, but another execution of the same attempt (its answer
    # lost) may have got through: the orchestrator must not conclude that none exists.
    relay.service.faults.append(FaultRule(operation="responses.create", kind="429", count=1))
    throttled = relay.start("sub-429c", submission())
    assert throttled["outcome"] == "transient"
    assert throttled.get("uncertainCreate") is True
    assert throttled.get("threadId") is not None
    assert relay.service.responses == {}
    # A refusal every execution gets (an unknown agent version) rules it out.
    refused = relay.start("sub-400", submission(agent_version="99"))
    assert refused["outcome"] in ("permanent", "not_found"), refused
    assert "uncertainCreate" not in refused


@pytest.mark.parametrize(
    ("kind", "outcome", "code", "status"),
    [
        ("malformed_json", "transient", "malformed_response", None),
        ("500", "transient", "server_error", 500),
        ("503", "transient", "service_unavailable", 503),
        ("401", "permanent", None, 401),
        ("404", "not_found", None, 404),
    ],
)
def test_poll_failures(
    relay: Relay, kind: str, outcome: str, code: str | None, status: int | None
) -> None:
    run = ok_run(relay.start("sub-fail", submission()))
    relay.service.faults.append(FaultRule(operation="responses.retrieve", kind=kind, count=1))
    failed = relay.poll(relay.ref("sub-fail", run))
    assert failed["outcome"] == outcome
    if code is not None:
        assert error_code(failed.get("error")) == code
    assert failed.get("httpStatus") == status
    assert ok_run(relay.poll(relay.ref("sub-fail", run)))["runId"] == run["runId"]


def test_a_cut_short_create_answer_is_a_create_in_doubt(relay: Relay) -> None:
    relay.service.faults.append(
        FaultRule(operation="responses.create", kind="malformed_json", count=1)
    )
    failed = relay.start("sub-cut", submission())
    assert failed["outcome"] == "transient"
    assert error_code(failed.get("error")) == "malformed_response"
    assert failed.get("uncertainCreate") is True
    conversation = failed.get("threadId")
    assert conversation is not None
    # (The stand-in drops a write it answers cut short: the retry makes the one response.)
    retried = relay.start("sub-cut", submission(), known_thread_id=conversation)
    assert ok_run(retried)["threadId"] == conversation
    assert len(relay.creates()) == 2  # the cut-short one counts as answered 200 by the service
    assert len(relay.service.responses) == 1


def test_a_failed_conversation_create_is_not_a_create_in_doubt(relay: Relay) -> None:
    relay.service.faults.append(FaultRule(operation="conversations.create", kind="500", count=1))
    failed = relay.start("sub-conv", submission())
    assert failed["outcome"] == "transient"
    assert "uncertainCreate" not in failed
    assert "threadId" not in failed
    assert relay.creates() == []


# ---------------------------------------------------------------------------- cancel


def test_cancel(relay: Relay) -> None:
    relay.service.default_script = ResponseScript(duration_seconds=30)
    run = ok_run(relay.start("sub-cancel", submission()))
    ref = relay.ref("sub-cancel", run)
    relay.clock.advance(2)
    cancelled = relay.run(backend.cancel_run(ref))
    assert ok_run(cancelled)["status"] == "cancelled"
    assert ok_run(relay.until_ended(ref))["status"] == "cancelled"
    (cancel,) = relay.service.calls("responses.cancel")
    assert cancel.path.endswith(f"/responses/{run['runId']}/cancel")

    relay.service.default_script = FAST
    done = ok_run(relay.start("sub-done", submission()))
    relay.until_ended(relay.ref("sub-done", done))
    too_late = relay.run(backend.cancel_run(relay.ref("sub-done", done)))
    assert too_late["outcome"] == "permanent"
    assert too_late.get("httpStatus") == 400
    unknown = relay.run(backend.cancel_run({**ref, "runId": "resp_unknown"}))
    assert unknown["outcome"] == "not_found"


# ---------------------------------------------------------------------------- fast path


def test_fast_path_ends_inside_the_window(relay: Relay) -> None:
    relay.service.default_script = FAST
    started = relay.start("sub-fast", submission(), fast_path_seconds=5.0)
    run = ok_run(started)
    assert run["status"] == "completed"
    assert started.get("outputText") == "Quick answer."
    followed = started.get("followedSeconds")
    assert followed is not None
    assert 0 < followed <= 5.0
    (create,) = relay.creates()
    assert create.body["stream"] is True
    assert create.body["background"] is True
    assert set(create.body) <= ALLOWED_CREATE_FIELDS
    assert started.get("streamSequence") == create.events[-1]["sequence_number"]
    assert create.events[-1]["type"] == "response.completed"
    assert relay.service.calls("responses.retrieve") == []


def test_fast_path_resumes_a_dropped_stream(relay: Relay) -> None:
    relay.service.default_script = ResponseScript(
        queued_seconds=0.05,
        duration_seconds=0.2,
        output_text="A streamed answer.",
        stream_drop_after=3,
    )
    started = relay.start("sub-drop", submission(), fast_path_seconds=5.0)
    assert ok_run(started)["status"] == "completed"
    assert started.get("outputText") == "A streamed answer."
    (create,) = relay.creates()
    assert [e["sequence_number"] for e in create.events] == [0, 1, 2, 3]
    (resume,) = relay.service.calls("responses.retrieve")
    assert resume.query == {"stream": "true", "starting_after": "3"}
    assert started.get("streamSequence") == resume.events[-1]["sequence_number"]
    assert resume.events[-1]["type"] == "response.completed"


def test_fast_path_hands_over_when_the_window_closes(relay: Relay) -> None:
    relay.service.default_script = ResponseScript(queued_seconds=0.05, duration_seconds=60)
    started = relay.start("sub-slow", submission(), fast_path_seconds=1.0)
    run = ok_run(started)
    assert run["status"] == "in_progress"
    followed = started.get("followedSeconds")
    assert followed is not None
    assert followed <= 1.0
    assert started.get("streamSequence") == 1
    relay.clock.advance(120)
    assert ok_run(relay.poll(relay.ref("sub-slow", run)))["status"] == "completed"
    assert len(relay.creates()) == 1


def test_fast_path_stops_at_function_calls(relay: Relay) -> None:
    relay.service.default_script = ResponseScript(
        queued_seconds=0.05,
        duration_seconds=0.1,
        function_calls=[{"name": "lookup", "call_id": "call_f"}],
    )
    started = relay.start("sub-fast-tools", submission(), fast_path_seconds=5.0)
    run = ok_run(started)
    assert run["status"] == "requires_action"
    assert [c["id"] for c in run["toolCalls"] or []] == ["call_f"]
    assert started.get("outputText") is None


def test_fast_path_create_refused(relay: Relay) -> None:
    relay.service.faults.append(FaultRule(operation="responses.create", kind="503", count=1))
    refused = relay.start("sub-fast-503", submission(), fast_path_seconds=5.0)
    assert refused["outcome"] == "transient"
    assert refused.get("httpStatus") == 503
    assert refused.get("uncertainCreate") is True
    assert refused.get("threadId") is not None


def test_a_lock_held_by_another_response_is_shown_absent_once_that_one_ends(
    relay: Relay,
) -> None:
    relay.service.default_script = ResponseScript(duration_seconds=60, output_text="first")
    first = ok_run(relay.start("sub-first", submission()))
    conversation = first["threadId"]
    # A follow-up on that conversation is refused by its lock: the lock might be a lost
    # create of the follow-up's own, for all the relay can tell.
    follow_up = submission(conversation_id=conversation)
    locked = relay.start("sub-next", follow_up)
    assert error_code(locked.get("error")) == "conversation_locked"
    assert locked.get("uncertainCreate") is True
    since = to_iso(relay.clock.now())

    def look(uncertain_since: str) -> Outcome:
        return relay.run(
            backend.start_run(
                "sub-next", follow_up, find_only=True, uncertain_since=uncertain_since
            )
        )

    assert error_code(look(since).get("error")) == "earlier_attempt_unresolved"
    relay.clock.advance(61)  # the first response ends, after the refusal
    nothing = look(since)
    assert nothing["outcome"] == "ok"
    assert nothing.get("run") is None
    # A refusal seen after that response ended proves nothing: ours could hold a later lock.
    later = to_iso(relay.clock.now() + timedelta(seconds=1))
    assert error_code(look(later).get("error")) == "earlier_attempt_unresolved"
    assert len(relay.creates()) == 1


@pytest.mark.parametrize("reads_404", [1, LISTED_NOT_FOUND_READS])
def test_a_listed_response_answering_404_is_read_again_and_never_skipped_when_it_may_be_ours(
    relay: Relay, reads_404: int
) -> None:
    relay.service.default_script = ResponseScript(duration_seconds=5, output_text="once")
    relay.service.faults.append(
        FaultRule(operation="responses.create", kind="500_after_apply", count=1)
    )
    failed = relay.start("sub-404", submission())
    assert failed.get("uncertainCreate") is True
    conversation = failed.get("threadId")
    since = to_iso(relay.clock.now())
    relay.clock.advance(10)  # the response ends and is listed on the conversation
    relay.service.faults.append(
        FaultRule(operation="responses.retrieve", kind="404", count=reads_404)
    )
    again = relay.start(
        "sub-404", submission(), known_thread_id=conversation, uncertain_since=since
    )
    if reads_404 < LISTED_NOT_FOUND_READS:
        assert again.get("reused") is True  # a passing 404, read again
    else:
        assert again["outcome"] == "transient"
        assert error_code(again.get("error")) == "lookup_incomplete"
    assert len(relay.service.responses) == 1  # the one applied, and no second


def test_a_listed_response_deleted_since_is_skipped_when_nothing_of_ours_can_be_missing(
    relay: Relay,
) -> None:
    relay.service.default_script = ResponseScript(duration_seconds=5, output_text="first")
    first = ok_run(relay.start("sub-old", submission()))
    relay.clock.advance(10)
    relay.service.faults.append(
        FaultRule(operation="responses.retrieve", kind="404", count=LISTED_NOT_FOUND_READS)
    )
    started = relay.start("sub-new", submission(conversation_id=first["threadId"]))
    assert ok_run(started)["status"] in ("queued", "in_progress")
    assert len(relay.creates()) == 2

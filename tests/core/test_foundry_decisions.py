"""The decisions only a Foundry agent's submission takes (shared/core/response_chain.py and its
use in shared/core/decisions.py and limits.py): the chain of responses, the cancel confirmed
by a second read, and a start whose create may have been applied."""

from __future__ import annotations

from typing import Any

from shared.contract import error_code
from shared.core import decisions as decide
from shared.core import limits
from shared.core.report import completed_event
from shared.core.response_chain import CANCEL_CONFIRM_SECONDS, LOST_RESPONSE_SEARCH_SECONDS
from shared.core.schedule import TRANSIENT_RETRY_POLICY
from shared.core.state import RelayState
from shared.core.timefmt import to_iso
from tests.core.test_decisions import POLICY, at, new_state, ok, snapshot


def foundry(**changes: Any) -> RelayState:
    state = new_state(**changes)
    state.submission.update(
        {"api": "responses", "agentId": "weather", "agentVersion": "3", "conversationId": None}
    )
    return state


def response(status: str = "in_progress", response_id: str = "resp_1", **fields: Any) -> Any:
    return snapshot(status, runId=response_id, threadId="conv_1", agentId="weather", **fields)


def started(**changes: Any) -> RelayState:
    state = foundry(**changes)
    decide.after_start(state, ok(response(), streamSequence=7), at(1), False, [])
    return state


def test_the_start_records_the_first_response_and_the_stream_position() -> None:
    state = started()
    assert state.response_chain == ["resp_1"]
    assert state.stream_sequence == 7
    view = state.agent_run_view()
    assert view["responseIds"] == ["resp_1"]
    assert (view["agentName"], view["agentVersion"], view["conversationId"]) == (
        "weather",
        "3",
        "conv_1",
    )
    assert (view["agentId"], view["runId"], view["threadId"]) == (None, None, None)


def test_each_round_of_tool_outputs_adds_its_response_once() -> None:
    state = started()
    decide.after_poll(state, ok(response()), at(5), [])
    state.tool_outputs = [{"toolCallId": "call_1", "output": "x"}]
    decide.after_tool_outputs(state, ok(response(response_id="resp_2")), at(10))
    decide.after_poll(state, ok(response(response_id="resp_2")), at(15), [])
    assert state.response_chain == ["resp_1", "resp_2"]


def test_a_classic_submission_keeps_no_chain() -> None:
    state = new_state()
    decide.after_start(state, ok(snapshot()), at(1), False, [])
    assert state.response_chain == []
    assert "responseIds" not in state.agent_run_view()


def test_a_lost_create_is_remembered_for_the_next_start_attempt() -> None:
    state = foundry()
    lost = {"outcome": "transient", "error": {"code": "http_500", "message": ""}}
    decide.after_start(state, {**lost, "uncertainCreate": True}, at(1), False, [])  # type: ignore[typeddict-item]
    assert decide.start_input(state)["uncertainSince"] == to_iso(at(1))
    decide.after_start(state, lost, at(30), False, [])  # type: ignore[arg-type]
    assert decide.start_input(state)["uncertainSince"] == to_iso(at(1))
    decide.after_start(state, {**lost, "uncertainCreate": True}, at(60), False, [])  # type: ignore[typeddict-item]
    assert decide.start_input(state)["uncertainSince"] == to_iso(at(60))
    # An activity that failed may have done anything, a create included.
    failed = {"outcome": "transient", "error": {"code": "activity_failed", "message": ""}}
    decide.after_start(state, failed, at(75), False, [])  # type: ignore[arg-type]
    assert state.uncertain_since == to_iso(at(75))
    # Found: nothing is uncertain any more.
    decide.after_start(state, ok(response("in_progress")), at(90), False, [])
    assert state.uncertain_since is None


def test_a_find_only_start_keeps_looking_while_a_lost_create_may_show_up() -> None:
    state = foundry(cancel_reason="requested")
    unresolved = {
        "outcome": "transient",
        "error": {"code": "earlier_attempt_unresolved", "message": ""},
    }
    state.uncertain_since = to_iso(at(0))
    for n in range(decide.MAX_FIND_ATTEMPTS + 5):
        decision = decide.after_start(state, unresolved, at(60 + n), True, [])  # type: ignore[arg-type]
        assert decision.kind == "retry"
    # A lookup that failed (even the activity itself) creates nothing: the search's end stays.
    failed = {"outcome": "transient", "error": {"code": "activity_failed", "message": ""}}
    decide.after_start(state, failed, at(200), True, [])  # type: ignore[arg-type]
    assert state.uncertain_since == to_iso(at(0))
    # Later lookups are spaced out (LOST_RESPONSE_RETRY_POLICY), not a minute apart.
    assert decision.retry_at is not None
    assert (decision.retry_at - at(60 + n)).total_seconds() > TRANSIENT_RETRY_POLICY.max_seconds
    end = LOST_RESPONSE_SEARCH_SECONDS
    decision = decide.after_start(state, unresolved, at(end), True, [])  # type: ignore[arg-type]
    assert decision.kind == "finished"
    assert state.final_status == "failed"
    assert error_code(state.final_error) == "start_timeout"


def test_a_cancelled_read_after_our_cancel_waits_for_a_confirming_read() -> None:
    state = started(cancel_reason="requested", cancel_sent=True)
    decide.after_poll(state, ok(response("cancelled")), at(100), [])
    assert state.final_status is None
    assert limits.next_poll_at(state, POLICY, at(100)) == at(100 + CANCEL_CONFIRM_SECONDS)
    # Woken early (an event): the confirming read is still due.
    decide.after_poll(state, ok(response("cancelled")), at(101), [])
    assert state.final_status is None
    decide.after_poll(state, ok(response("completed")), at(105), [])
    assert state.final_status == "completed"
    data = completed_event(state)["data"]
    assert data["cancelConfirmation"] == {"firstRead": "cancelled", "secondRead": "completed"}


def test_a_response_ending_otherwise_after_a_cancel_is_published_at_once() -> None:
    state = started(cancel_reason="requested", cancel_sent=True)
    decide.after_poll(state, ok(response("completed")), at(100), [])
    assert state.final_status == "completed"
    assert completed_event(state)["data"]["cancelConfirmation"] is None


def test_a_response_cancelled_without_our_cancel_is_published_at_once() -> None:
    state = started()
    decide.after_poll(state, ok(response("cancelled")), at(100), [])
    assert state.final_status == "cancelled"


def test_the_event_names_the_agent_the_last_response_and_the_conversation() -> None:
    state = started()
    state.tool_outputs = [{"toolCallId": "call_1", "output": "x"}]
    decide.after_tool_outputs(state, ok(response(response_id="resp_2")), at(10))
    decide.after_poll(
        state, ok(response("completed", response_id="resp_2", agentVersion="4")), at(20), []
    )
    event = completed_event(state)
    assert event["subject"] == "agents/weather/responses/resp_2"
    data = event["data"]
    assert data["api"] == "responses"
    assert (data["agentName"], data["agentVersion"]) == ("weather", "4")
    assert (data["responseId"], data["conversationId"]) == ("resp_2", "conv_1")
    assert (data["agentId"], data["runId"], data["threadId"]) == (None, None, None)


def test_a_classic_event_has_the_new_fields_null() -> None:
    state = new_state()
    decide.after_start(state, ok(snapshot()), at(1), False, [])
    decide.after_poll(state, ok(snapshot("completed")), at(20), [])
    data = completed_event(state)["data"]
    assert data["api"] == "agents"
    assert (data["agentId"], data["runId"], data["threadId"]) == ("asst_1", "run_1", "thread_1")
    assert data["agentName"] is data["responseId"] is data["conversationId"] is None
    assert data["cancelConfirmation"] is None


def test_the_event_adds_up_the_usage_of_every_response_of_the_chain() -> None:
    state = started()
    asked = {"prompt_tokens": 10, "completion_tokens": 5, "total_tokens": 15}
    decide.after_poll(state, ok(response("requires_action", usage=asked)), at(5), [])
    state.tool_outputs = [{"toolCallId": "call_1", "output": "x"}]
    decide.after_tool_outputs(state, ok(response(response_id="resp_2")), at(10))
    answered = {"prompt_tokens": 30, "completion_tokens": 7, "total_tokens": 37}
    decide.after_poll(
        state, ok(response("completed", response_id="resp_2", usage=answered)), at(20), []
    )
    usage = completed_event(state)["data"]["usage"]
    assert usage == {"promptTokens": 40, "completionTokens": 12, "totalTokens": 52}

"""Fault suite over Foundry agents: the classic suite's rigour, for the Responses API backend.

One test bed, one virtual clock, a few hundred concurrent Foundry submissions, driven by the
classic suite's driver (tests/e2e/fault_suite_driver.py). A seeded plan (see
tests/e2e/foundry_fault_suite_support.py) mixes durations from seconds to hours and every ending
a response has (completed, failed, cancelled, incomplete), function calls over one to three
rounds (answered, answered twice, answered wrongly, never answered, answered late), unknown
agents, agent versions, conversations continued (one the caller made, or an earlier
submission's, once it ended or while it still runs: the service's conversation lock then holds
the start back), deadlines, cancels (early, late, twice), responses that read cancelled and
then completed after a cancel, and idempotent reposts. Meanwhile:

- about a quarter of the Foundry calls fail, on every operation the relay uses
  (responses.create/retrieve/cancel, conversations.create/retrieve/items.list): 429 with and
  without Retry-After or retry-after-ms, 500, 503, client timeouts, malformed JSON, 404 on
  responses.retrieve, 401/403 on conversations.create, and 500 after a write was applied;
- Event Grid refuses every publish for the first 30 virtual minutes;
- the worker crashes at every kind of crash point, several times each, and replays;
- every activity executes twice, and caller events arrive inside activities and right after
  timers, across continue-as-new every 5 steps.

Then, for every submission: exactly one AgentRunCompleted id, valid against the published
schema (api "responses", the agent's name, responseId the last response of the chain), its
status the last response's at the service (after a cancel the relay confirmed, what the
second read saw), no response left queued or in progress, at most one response per
(submission, round), every response on the conversation the event names, the status endpoint
never 5xx, and a cancellation reason the submission's history allows. The counts are printed.
"""

from __future__ import annotations

import json
from datetime import UTC, datetime

import pytest

from devhost.foundry_service import FAULT_KINDS, FaultRule, ResponseScript
from shared.core.schedule import LOST_RESPONSE_RETRY_POLICY
from shared.core.timefmt import from_iso
from tests.e2e import fault_suite_driver as suite
from tests.e2e.foundry_fault_suite_support import RELAY_OPERATIONS, run_foundry_fault_suite
from tests.e2e.test_openapi_conformance import wait_for_requires_action
from tests.relay_bed import RelayBed, relay_bed

SEED = 20261206
SUBMISSIONS = 200
BURST = 70  # submitted at the same instant at the start
FOUNDRY_STATUSES = ("completed", "failed", "cancelled", "incomplete")


@pytest.mark.slow
def test_every_foundry_submission_ends_in_one_true_event_under_faults(
    caplog: pytest.LogCaptureFixture,
    capsys: pytest.CaptureFixture[str],
) -> None:
    config = suite.SuiteConfig(SEED, SUBMISSIONS, burst=BURST)
    report = suite.run_suite_shown(run_foundry_fault_suite, config, caplog, capsys)

    # Not vacuous: every fault, on every operation, happened, and often; starts waited on
    # conversation locks; every way of continuing a conversation happened.
    suite.assert_faults_happened(report, SUBMISSIONS, report.foundry_faults, set(FAULT_KINDS))
    assert set(report.faulted_operations) == RELAY_OPERATIONS, report.faulted_operations
    assert min(report.faulted_operations.values()) >= 10, report.faulted_operations
    assert report.locked_refusals >= 10, report.locked_refusals
    assert all(report.continued[mode] >= 3 for mode in ("caller", "earlier", "earlier_now"))

    # The API answered only what it promises; tool outputs: 409 once the response no longer
    # waits for them, and 400 for a round already answered once the next one asks.
    suite.assert_api_answers(report)
    assert suite.answered(report.http_calls, "tool_outputs") <= {202, 409}
    assert suite.answered(report.http_calls, "tool_outputs_again") <= {202, 400, 409}
    assert suite.answered(report.http_calls, "tool_outputs_late") == {409}

    # Every submission: one event, the service's status, one response per round, nothing
    # left running, one conversation, a reason its history allows (check_foundry_submissions).
    suite.assert_one_true_event_each(report, SUBMISSIONS)

    # And every ending happened: each status, each reason, chains of one to four responses,
    # cancels the relay confirmed (some read cancelled, then completed: at the second read,
    # or only after the event).
    outcomes = report.outcomes
    suite.assert_every_ending(outcomes, FOUNDRY_STATUSES)
    assert all(outcomes[f"responses per submission: {n}"] >= 3 for n in (1, 2, 3, 4)), outcomes
    assert outcomes["cancel confirmed: cancelled then cancelled"] >= 3, outcomes
    assert outcomes["cancel confirmed: cancelled then completed"] >= 1, outcomes
    assert outcomes["confirmed cancelled, completed later at the service"] >= 1, outcomes


# What the suite found, pinned down one by one ------------------------------------------------


def _post(bed: RelayBed, path: str) -> int:
    response = bed.host.http("POST", path, body=b"", headers={"Content-Type": "application/json"})
    return int(response.status_code)


ASKS_FOR_A_CALL = ResponseScript(duration_seconds=20, function_calls=[{"name": "get_weather"}])


@pytest.mark.parametrize("ending", ["requested", "tool_outputs_timeout", "deadline_exceeded"])
def test_a_submission_given_up_while_its_response_asks_for_calls_ends_cancelled(
    ending: str,
) -> None:
    # A response that asks for function calls has ended (`completed`, function_call items):
    # there is nothing left to cancel at the service, and no later read will ever say
    # `cancelled`. Giving up on it (the caller's cancel, the tool-output timeout, the
    # deadline) must still end the submission at once, `cancelled` with that reason.
    settings = {"TOOL_OUTPUTS_TIMEOUT_SECONDS": str(suite.TOOL_OUTPUTS_TIMEOUT_SECONDS)}
    with relay_bed(settings=settings) as bed:
        bed.foundry.default_script = ASKS_FOR_A_CALL
        fields = {"deadlineSeconds": 300} if ending == "deadline_exceeded" else {}
        submission_id = bed.submit_foundry(**fields)
        asked = wait_for_requires_action(bed, submission_id)
        if ending == "requested":
            assert _post(bed, f"/api/runs/{submission_id}/cancel") == 202
        view = bed.complete(submission_id)
        assert (view["status"], view["cancellationReason"]) == ("cancelled", ending), view
        # Promptly: not after CANCEL_GRACE_SECONDS of polling a response that has ended.
        limit = {"requested": 120, "tool_outputs_timeout": 720, "deadline_exceeded": 420}[ending]
        took = from_iso(view["result"]["completedAt"]) - from_iso(asked["createdAt"])
        assert took.total_seconds() <= limit, view
        (response,) = bed.foundry.responses.values()
        assert view["result"]["responseId"] == response["id"]


def test_a_cancel_that_lands_as_the_response_ends_asking_for_calls_ends_cancelled() -> None:
    # The cancel reaches the service while the response runs, but it ends asking for calls
    # before the cancel takes effect: reads say requires_action from then on, never
    # cancelled. The submission must end cancelled (the caller's reason) at the next read,
    # not after CANCEL_GRACE_SECONDS of polling.
    with relay_bed() as bed:
        bed.foundry.default_script = ResponseScript(
            duration_seconds=20, function_calls=[{"name": "get_weather"}], cancel_delay_seconds=30
        )
        submission_id = bed.submit_foundry()
        bed.host.run_until_idle()
        bed.host.advance(10)
        assert _post(bed, f"/api/runs/{submission_id}/cancel") == 202
        view = bed.complete(submission_id)
        assert (view["status"], view["cancellationReason"]) == ("cancelled", "requested"), view
        (response,) = bed.foundry.responses.values()
        assert response["status"] == "completed"  # it asked for calls; the cancel came late
        assert len(bed.foundry.calls("responses.cancel")) == 1
        took = from_iso(view["result"]["completedAt"]) - datetime.fromtimestamp(
            response["completed_at"], UTC
        )
        assert took.total_seconds() <= 120, view


def test_a_cancel_before_a_lost_create_shows_up_follows_that_response_to_its_end() -> None:
    # Every activity runs twice and the first result is lost (an unacknowledged queue
    # message): the start that created the response is forgotten, and its repeat is refused
    # conversation_locked, since that response now runs there. Nothing lists running
    # responses, and a response shows on its conversation only once it has ended: it cannot
    # be cancelled before. A cancel meanwhile must not conclude that nothing was started (the
    # response would run on unobserved while the event says cancelled, naming no response):
    # the relay keeps looking, and reports the response's real end.
    with relay_bed() as bed:
        bed.foundry.default_script = ResponseScript(duration_seconds=3600, output_text="long")
        bed.host.duplicate_activities = True
        submission_id = bed.submit_foundry()
        bed.host.run_until_idle()
        bed.host.advance(60)
        (response_id,) = bed.foundry.responses
        assert _post(bed, f"/api/runs/{submission_id}/cancel") == 202
        view = bed.complete(submission_id)
        response = bed.foundry.responses[response_id]
        assert list(bed.foundry.responses) == [response_id]
        assert (view["status"], view["cancellationReason"]) == ("completed", None), view
        assert view["result"]["responseId"] == response_id
        assert view["result"]["conversationId"] == response["conversation"]["id"]
        assert view["result"]["output"]["text"] == "long"
        ended = datetime.fromtimestamp(response["completed_at"], UTC)
        assert from_iso(view["result"]["completedAt"]) >= ended


def test_a_cancel_while_queued_behind_another_response_ends_once_that_one_ends() -> None:
    # A follow-up on a conversation where an earlier submission's response still runs is
    # refused by the conversation's lock, which could also be held by a create of its own
    # whose answer was lost. Once the other response has ended after the refusal, it cannot
    # be: the cancel ends the follow-up, cancelled, with no response.
    with relay_bed() as bed:
        bed.foundry.default_script = ResponseScript(duration_seconds=900, output_text="first")
        first = bed.submit_foundry()
        bed.host.run_until_idle()
        bed.host.advance(30)
        (first_response,) = bed.foundry.responses.values()
        conversation = first_response["conversation"]["id"]
        follow_up = bed.submit_foundry(conversationId=conversation, input="and then?")
        bed.host.run_until_idle()
        bed.host.advance(60)
        assert _post(bed, f"/api/runs/{follow_up}/cancel") == 202
        view = bed.complete(follow_up)
        assert (view["status"], view["cancellationReason"]) == ("cancelled", "requested"), view
        assert view["result"]["responseId"] is None
        assert list(bed.foundry.responses) == [first_response["id"]]
        assert bed.complete(first)["status"] == "completed"
        # Once the first response ended, within the lookups' spacing (LOST_RESPONSE_RETRY_POLICY).
        ended = datetime.fromtimestamp(
            bed.foundry.responses[first_response["id"]]["completed_at"], UTC
        )
        took = from_iso(view["result"]["completedAt"]) - ended
        assert 0 <= took.total_seconds() <= LOST_RESPONSE_RETRY_POLICY.max_seconds * 1.2 + 5, took


def test_a_cancel_after_a_lost_tool_outputs_create_follows_that_response() -> None:
    # The create answering a round of calls was applied, its answer lost (500): a cancel of
    # the submission must not end it at once as if nothing ran. The relay looks for the
    # response the outputs started, and follows it (it can be found once it has ended).
    with relay_bed() as bed:
        bed.foundry.script_for = lambda body: (
            ResponseScript(duration_seconds=600, output_text="answered")
            if body["input"][0]["type"] == "function_call_output"
            else ASKS_FOR_A_CALL
        )
        submission_id = bed.submit_foundry()
        (call,) = wait_for_requires_action(bed, submission_id)["requiredAction"]["toolCalls"]
        bed.foundry.faults.append(
            FaultRule(operation="responses.create", kind="500_after_apply", count=1)
        )
        answer = {"toolOutputs": [{"toolCallId": call["id"], "output": "sunny"}]}
        response = bed.host.http(
            "POST",
            f"/api/runs/{submission_id}/tool-outputs",
            body=json.dumps(answer).encode(),
            headers={"Content-Type": "application/json"},
        )
        assert response.status_code == 202
        bed.host.run_until_idle()
        assert _post(bed, f"/api/runs/{submission_id}/cancel") == 202
        view = bed.complete(submission_id)
        # Looked for, never created again after the cancel (nor a cancel sent to the asker).
        answers = [
            r
            for r in bed.foundry.calls("responses.create")
            if r.body["input"][0]["type"] == "function_call_output"
        ]
        assert len(answers) == 1, answers
        assert bed.foundry.calls("responses.cancel") == []
        asking, answering = bed.foundry.responses.values()
        assert answering["status"] == "completed"
        assert (view["status"], view["cancellationReason"]) == ("completed", None), view
        assert view["result"]["responseId"] == answering["id"]
        assert view["agentRun"]["responseIds"] == [asking["id"], answering["id"]]


def test_a_404_while_looking_for_the_lost_response_does_not_start_a_second() -> None:
    # The create was applied but answered 500; once the response has ended it shows on the
    # conversation, and the lookup reads it. A 404 on that read (the fault the suite injects
    # on responses.retrieve, as the classic suite does on runs.get) is taken for "deleted
    # since" and a second response with the same marker is created.
    with relay_bed() as bed:
        bed.foundry.default_script = ResponseScript(duration_seconds=30, output_text="once")
        bed.foundry.faults += [
            FaultRule(operation="responses.create", kind="500_after_apply", count=1),
            FaultRule(operation="responses.retrieve", kind="404", count=1),
        ]
        submission_id = bed.submit_foundry()
        view = bed.complete(submission_id)
        assert view["status"] == "completed"
        markers = [r["metadata"]["relay_submission_id"] for r in bed.foundry.responses.values()]
        assert markers == [submission_id], markers

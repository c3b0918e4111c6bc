"""Caller isolation, end to end through the emulated host.

- `ALLOWED_AGENTS`: a submission for another agent is a 403 naming `agentId`; nothing starts.
- `ALLOW_CALLER_THREADS` (off by default): a `threadId` is a 403 naming `threadId`.
- The caller is identified by the function key the host authorised (hashed, never stored), or
  with `AUTH_MODE=app-service` by the principal App Service authentication injects; it goes
  to the orchestration as the submission's `caller`, and idempotency keys are scoped by it.
- A retry with the same Idempotency-Key while the first is pending or running joins it
  (tests/e2e/test_idempotency_race.py covers two POSTs racing to start it).
"""

from __future__ import annotations

import json
import re
from collections import Counter
from collections.abc import Iterator, Mapping
from typing import Any

import azure.functions as func
import pytest

from tests.app_settings import changed_settings
from tests.relay_bed import TERMINAL_SCRIPTS, RelayBed, relay_bed

PROBLEM = "application/problem+json"
KEY_CALLER = re.compile(r"^key:[0-9a-f]{32}$")


def problem(response: func.HttpResponse, status: int, field: str) -> dict[str, Any]:
    assert response.status_code == status, response.get_body()
    assert response.headers["Content-Type"] == PROBLEM
    body: dict[str, Any] = json.loads(response.get_body())
    assert (body["status"], body["field"]) == (status, field)
    assert body["detail"]
    return body


def accepted(response: func.HttpResponse) -> str:
    assert response.status_code == 202, response.get_body()
    return str(json.loads(response.get_body())["id"])


def post(
    bed: RelayBed,
    body: Mapping[str, Any],
    headers: Mapping[str, str] | None = None,
    **kwargs: Any,
) -> func.HttpResponse:
    return bed.host.http(
        "POST",
        "/api/runs",
        body=json.dumps(body),
        headers={"Content-Type": "application/json", **(headers or {})},
        **kwargs,
    )


def orchestration_input(bed: RelayBed, submission_id: str) -> dict[str, Any]:
    instance = bed.host.instance(submission_id)
    assert instance is not None
    value: Any = instance.input
    while isinstance(value, str):  # the extension keeps the client's JSON text
        value = json.loads(value)
    assert isinstance(value, dict)
    return value


def runs_created(bed: RelayBed, *submission_ids: str) -> Counter[str]:
    """How many create-run requests the Agents service received for each submission."""
    return Counter(
        str(request.body["metadata"]["relay_submission_id"])
        for request in bed.agents.calls("runs.create")
        if request.body["metadata"].get("relay_submission_id") in submission_ids
    )


def caller_of(bed: RelayBed, submission_id: str) -> str:
    return str(orchestration_input(bed, submission_id)["submission"]["caller"])


@pytest.fixture(scope="module")
def bed() -> Iterator[RelayBed]:
    with relay_bed() as started:
        started.agents.default_script = TERMINAL_SCRIPTS["completed"]
        yield started


# --- ALLOWED_AGENTS --------------------------------------------------------------------------


def test_only_the_allowed_agents_run(bed: RelayBed) -> None:
    with changed_settings(bed, ALLOWED_AGENTS=f"support-bot, {bed.agent_id}"):
        before = len(bed.agents.requests)
        for agent in ("asst_someone_elses", bed.agent_id.upper(), "support-bot2"):
            refused = post(bed, {"agentId": agent, "input": "hi"})
            assert problem(refused, 403, "agentId")["type"].endswith("/agent-not-allowed")
        # A 403 wins over the Idempotency-Key check that follows it, and starts nothing.
        keyed = post(bed, {"agentId": "asst_x", "input": "hi"}, {"Idempotency-Key": "k-403"})
        problem(keyed, 403, "agentId")
        submission_id = accepted(post(bed, {"agentId": bed.agent_id, "input": "hi"}))
        assert bed.agents.requests[before:] == []  # the refused ones started nothing
        assert bed.complete(submission_id)["status"] == "completed"
        assert runs_created(bed, submission_id) == {submission_id: 1}
    # Unset again: every agent (the unsafe default for a shared deployment).
    accepted(post(bed, {"agentId": "asst_someone_elses", "input": "hi"}))


def test_a_malformed_body_is_400_before_the_agent_is_checked(bed: RelayBed) -> None:
    with changed_settings(bed, ALLOWED_AGENTS=bed.agent_id):
        problem(post(bed, {"agentId": "asst_other"}), 400, "input")
        bad_key = {"Idempotency-Key": " padded"}
        problem(post(bed, {"agentId": "asst_other", "input": "x"}, bad_key), 400, "Idempotency-Key")


# --- ALLOW_CALLER_THREADS --------------------------------------------------------------------


def test_a_thread_id_is_refused_unless_caller_threads_are_allowed(bed: RelayBed) -> None:
    first = bed.submit()
    thread_id = bed.complete(first)["agentRun"]["threadId"]
    before = len(bed.agents.requests)
    refused = post(bed, {"agentId": bed.agent_id, "input": "more", "threadId": thread_id})
    assert problem(refused, 403, "threadId")["type"].endswith("/thread-not-allowed")
    bed.host.run_until_idle()
    assert bed.agents.requests[before:] == []  # nothing reached the Agents service
    # null means absent: still fine.
    accepted(post(bed, {"agentId": bed.agent_id, "input": "x", "threadId": None}))
    with changed_settings(bed, ALLOW_CALLER_THREADS="true"):
        second = accepted(
            post(bed, {"agentId": bed.agent_id, "input": "follow-up", "threadId": thread_id})
        )
        assert bed.complete(second)["agentRun"]["threadId"] == thread_id
        posted = [r.body for r in bed.agents.calls("messages.create")]
        assert posted[-1]["content"] == "follow-up"


# --- who the caller is -----------------------------------------------------------------------


def test_the_caller_is_a_hash_of_the_function_key_never_the_key(bed: RelayBed) -> None:
    keys = bed.host.keys
    by_header = bed.submit()
    by_query = accepted(
        post(
            bed,
            {"agentId": bed.agent_id, "input": "hello"},
            key=None,
            query={"code": keys.function_key},
        )
    )
    by_master_key = accepted(
        post(bed, {"agentId": bed.agent_id, "input": "hello"}, key=keys.master_key)
    )
    caller = caller_of(bed, by_header)
    assert KEY_CALLER.fullmatch(caller)
    assert caller_of(bed, by_query) == caller  # the same key, sent as `code`
    assert caller_of(bed, by_master_key) != caller  # another key, another caller
    for submission_id in (by_header, by_query, by_master_key):
        stored = json.dumps(orchestration_input(bed, submission_id))
        assert keys.function_key not in stored
        assert keys.master_key not in stored


def test_the_caller_is_the_key_the_host_checked(bed: RelayBed) -> None:
    """Like the host, the header wins over `code` (even an empty header: then the host refuses)."""
    keys = bed.host.keys
    body = {"agentId": bed.agent_id, "input": "hello"}
    header_only = accepted(post(bed, body))
    both = accepted(post(bed, body, query={"code": keys.master_key}))
    assert caller_of(bed, both) == caller_of(bed, header_only)
    empty_header = post(
        bed, body, {"x-functions-key": ""}, key=None, query={"code": keys.function_key}
    )
    assert empty_header.status_code == 401


def test_principal_headers_are_ignored_unless_app_service_authentication_is_trusted(
    bed: RelayBed,
) -> None:
    body = {"agentId": bed.agent_id, "input": "once"}
    key = {"Idempotency-Key": "forged-principal"}
    plain = accepted(post(bed, body, key))
    forged = accepted(post(bed, body, {**key, "X-MS-CLIENT-PRINCIPAL-ID": "someone-else"}))
    assert forged == plain
    assert KEY_CALLER.fullmatch(caller_of(bed, forged))


def test_app_service_authentication_identifies_callers_by_principal(bed: RelayBed) -> None:
    body = {"agentId": bed.agent_id, "input": "once"}
    with changed_settings(bed, AUTH_MODE="app-service", WEBSITE_AUTH_ENABLED="True"):
        # As App Service authentication would inject them (it strips a client's own).
        alice = {"x-ms-client-principal-id": "2f1c-alice", "Idempotency-Key": "order-1"}
        bob = {"X-MS-CLIENT-PRINCIPAL-ID": "7d9e-bob", "Idempotency-Key": "order-1"}
        from_alice = accepted(post(bed, body, alice))
        from_bob = accepted(post(bed, body, bob))
        assert from_alice != from_bob
        assert caller_of(bed, from_alice) == "principal:2f1c-alice"
        assert caller_of(bed, from_bob) == "principal:7d9e-bob"
        # The principal identifies the caller, whichever function key let the request in.
        again = post(bed, body, alice, key=bed.host.keys.master_key)
        assert accepted(again) == from_alice
        # Not authenticated (App Service set to allow anonymous requests): refused.
        anonymous = post(bed, body)
        assert problem(anonymous, 403, "Authorization")["type"].endswith("/caller-unidentified")
        problem(post(bed, body, {"x-ms-client-principal-id": "a b"}), 403, "Authorization")


# --- idempotency keys are per caller ---------------------------------------------------------


def test_two_callers_never_share_an_idempotency_key(bed: RelayBed) -> None:
    mine_body = {"agentId": bed.agent_id, "input": "mine"}
    their_body = {"agentId": bed.agent_id, "input": "theirs"}
    key = {"Idempotency-Key": "order-42"}
    master = bed.host.keys.master_key
    mine = accepted(post(bed, mine_body, key))
    # The same key with another body from another caller: their own submission, not a 409.
    theirs = accepted(post(bed, their_body, key, key=master))
    assert theirs != mine
    # The same key and body from both: still two submissions.
    also_theirs = accepted(post(bed, mine_body, {"Idempotency-Key": "order-43"}, key=master))
    also_mine = accepted(post(bed, mine_body, {"Idempotency-Key": "order-43"}))
    assert also_theirs != also_mine
    # Each caller's replays and conflicts concern only their own use of the key.
    assert accepted(post(bed, mine_body, key)) == mine
    assert accepted(post(bed, their_body, key, key=master)) == theirs
    problem(post(bed, their_body, key), 409, "Idempotency-Key")
    bed.host.run_all_until_complete()
    submissions = (mine, theirs, also_theirs, also_mine)
    assert runs_created(bed, *submissions) == dict.fromkeys(submissions, 1)


# --- concurrent POSTs with one Idempotency-Key -----------------------------------------------


def test_a_retry_while_the_first_is_pending_or_running_joins_it(bed: RelayBed) -> None:
    body = {"agentId": bed.agent_id, "input": "once"}
    key = {"Idempotency-Key": "retry-while-running"}
    first = post(bed, body, key)
    pending = post(bed, body, key)  # nothing driven in between: the instance is Pending
    assert json.loads(pending.get_body()) == json.loads(first.get_body())
    submission_id = accepted(first)
    bed.host.run_until_idle()
    assert bed.status(submission_id)["status"] == "running"
    running = post(bed, body, key)
    assert accepted(running) == submission_id
    assert post(bed, {**body, "input": "other"}, key).status_code == 409
    assert bed.complete(submission_id)["status"] == "completed"
    assert runs_created(bed, submission_id) == {submission_id: 1}
    assert len(bed.events_for(submission_id)) == 1


# --- callers kept apart after submitting ------------------------------------------------------


def test_another_caller_cannot_see_cancel_or_answer_a_submission(bed: RelayBed) -> None:
    master = bed.host.keys.master_key
    mine = bed.submit()
    bed.host.run_until_idle()  # the orchestration has written its status
    theirs_get = bed.host.http("GET", f"/api/runs/{mine}", key=master)
    assert problem(theirs_get, 404, "id")
    for path in (f"/api/runs/{mine}/cancel", f"/api/runs/{mine}/tool-outputs"):
        body = {"toolOutputs": [{"toolCallId": "call_x", "output": "x"}]}
        response = bed.host.http(
            "POST",
            path,
            body=json.dumps(body),
            headers={"Content-Type": "application/json"},
            key=master,
        )
        assert problem(response, 404, "id")
    assert bed.complete(mine)["status"] == "completed"
    assert bed.agents.calls("runs.cancel") == []


def test_a_pending_submission_is_kept_apart_too(bed: RelayBed) -> None:
    mine = bed.submit()  # not started yet: no custom status, the input says who submitted
    response = bed.host.http("GET", f"/api/runs/{mine}", key=bed.host.keys.master_key)
    assert problem(response, 404, "id")
    assert bed.host.http("GET", f"/api/runs/{mine}").status_code == 200
    bed.complete(mine)


def test_a_thread_the_relay_made_for_one_caller_is_refused_to_another(bed: RelayBed) -> None:
    first = bed.submit()
    thread_id = bed.complete(first)["agentRun"]["threadId"]
    master = bed.host.keys.master_key
    with changed_settings(bed, ALLOW_CALLER_THREADS="true"):
        body = {"agentId": bed.agent_id, "input": "let me in", "threadId": thread_id}
        intruder = accepted(post(bed, body, key=master))
        view = bed.host.http("GET", f"/api/runs/{intruder}", key=master)
        bed.host.run_until_complete(intruder)
        view = json.loads(bed.host.http("GET", f"/api/runs/{intruder}", key=master).get_body())
        assert view["status"] == "failed"
        assert view["result"]["lastError"]["code"] == "thread_not_allowed"
        assert runs_created(bed, intruder) == Counter()
        contents = [r.body["content"] for r in bed.agents.calls("messages.create")]
        assert "let me in" not in contents
        # Its owner may continue it.
        own = accepted(post(bed, {**body, "input": "mine"}))
        assert bed.complete(own)["status"] == "completed"

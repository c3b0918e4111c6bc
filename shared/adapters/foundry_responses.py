"""The Foundry Agent Service behind the start, poll, cancel and tool-outputs activities, through
the OpenAI Responses API (`openai.AsyncOpenAI` on `<project>/openai/v1`; reference note
foundry-responses-wire.md).

A submission's "run" is a chain of background responses on one conversation (the caller's, or
one the relay creates): the first answers the submission's messages, each later one a round of
tool outputs. Every call is safe to run more than once (the host may re-execute an activity,
and the SDK makes one attempt, `max_retries=0`):

- each response carries a marker in its metadata (RESERVED_METADATA_KEY: the submission id,
  `<submission id>#<round>` for a round of tool outputs); before creating one, the call looks
  for it among the responses that added items to the conversation (newest first);
- a create always names the conversation (never `previous_response_id`), so the service's
  conversation lock refuses a second response while the first still runs (400
  `conversation_locked`, transient): a response whose create answer was lost is found once it
  has ended and added its items.

Each function returns an Outcome and never raises for a service failure.
"""

from __future__ import annotations

import logging
from collections.abc import Mapping
from typing import TYPE_CHECKING, Any

import openai

from ..contract import Outcome, RunRef, RunSnapshot, ToolOutput, error_code
from ..core.run_status import RunPhase, classify_run_status
from ..core.submission import RESERVED_METADATA_KEY, Submission
from ..core.tool_outputs import tool_call_round
from .azure_agents import CALLER_METADATA_KEY
from .clients import get_clients
from .failures import describe_failure
from .foundry_requests import (
    ConversationNotAllowedError,
    CreateRequest,
    Lookup,
    LookupIncompleteError,
    agent_reference,
    as_dict,
    check_conversation,
    create,
    find_response,
    marker,
    proves_absent,
    refused_outright,
)
from .foundry_streaming import StreamGaveNoResponse, follow_stream
from .observability import bind_log_fields
from .response_snapshot import response_output_text, response_snapshot

if TYPE_CHECKING:
    from openai import AsyncOpenAI

logger = logging.getLogger("agent_run_relay.foundry")


def _failed(action: str, exc: BaseException) -> Outcome:
    if isinstance(exc, StreamGaveNoResponse | LookupIncompleteError):
        code = "stream_failed" if isinstance(exc, StreamGaveNoResponse) else "lookup_incomplete"
        outcome: Outcome = {
            "outcome": "transient",
            "error": {"code": code, "message": str(exc)},
            "retryAfter": None,
        }
    else:
        outcome = describe_failure(exc)
    logger.warning("%s failed: %s", action, error_code(outcome.get("error")))
    return outcome


def _snapshot(wire: Mapping[str, Any], agent_name: str, version: str | None) -> RunSnapshot:
    snapshot = response_snapshot(wire, version)
    if snapshot["agentId"] is None:
        snapshot["agentId"] = agent_name
    return snapshot


def _ok(wire: Mapping[str, Any], agent_name: str, version: str | None) -> Outcome:
    snapshot = _snapshot(wire, agent_name, version)
    bind_log_fields(runId=snapshot["runId"], threadId=snapshot["threadId"])
    return {"outcome": "ok", "run": snapshot, "outputText": response_output_text(wire)}


def _unresolved() -> Outcome:
    return {
        "outcome": "transient",
        "error": {
            "code": "earlier_attempt_unresolved",
            "message": "an earlier attempt's create may have been applied; its response "
            "shows on the conversation once it ends",
        },
        "retryAfter": None,
    }


async def _look_only(
    client: AsyncOpenAI,
    conversation: str | None,
    wanted: str,
    uncertain_since: str | None,
    after: str | None = None,
) -> dict[str, Any] | Outcome:
    """Find the response marked `wanted` without creating one: its JSON, an ok outcome with
    no run (there is none), or `earlier_attempt_unresolved` (an earlier create may have made
    one that has not shown yet)."""
    lookup = Lookup()
    if conversation:
        try:
            lookup = await find_response(
                client, conversation, wanted, after, strict=uncertain_since is not None
            )
        except openai.NotFoundError:
            conversation = None  # the conversation is gone, and with it anything on it
    if lookup.found is not None:
        return lookup.found
    if uncertain_since and conversation and not proves_absent(lookup, uncertain_since):
        return _unresolved()
    return {"outcome": "ok", "run": None, "reused": False}


def _reused(found: dict[str, Any] | Outcome, agent_name: str, version: str | None) -> Outcome:
    if "outcome" in found:
        return found  # type: ignore[return-value]  # an Outcome (_look_only)
    outcome = _ok(found, agent_name, version)
    outcome["reused"] = True
    return outcome


async def _start_streaming(
    client: AsyncOpenAI, request: CreateRequest, window_seconds: float, submission: Submission
) -> Outcome:
    """Create the response streaming and follow it for up to the window (the fast path).

    A response that ends inside the window is returned terminal (no poll needed). Otherwise
    its latest snapshot is, so the durable schedule takes over with the one response; after a
    stream that stopped for good (resumes used up), it is read once more.
    """
    seen = await follow_stream(client, lambda: create(client, request, True), window_seconds)
    wire = seen.wire or {}
    if not seen.ended and not seen.window_closed and seen.response_id:
        try:
            wire = as_dict(await client.responses.retrieve(seen.response_id))
        except Exception as exc:
            logger.info("reading the response after its stream failed: %s", type(exc).__name__)
    outcome = _ok(wire, submission.agent_id, submission.agent_version)
    outcome["reused"] = False
    outcome["followedSeconds"] = seen.followed_seconds(window_seconds)
    outcome["streamSequence"] = seen.sequence
    return outcome


async def start_run(
    submission_id: str,
    submission: Submission,
    *,
    find_only: bool = False,
    fast_path_seconds: float = 0.0,
    known_thread_id: str | None = None,
    not_before: float | None = None,
    uncertain_since: str | None = None,
) -> Outcome:
    """Start the submission's first response, or find the one an earlier attempt started.

    The conversation is the caller's (`conversation_id`, ownership checked), the one an
    earlier attempt created (`known_thread_id`), or a new one. With `find_only` nothing is
    created: the outcome's `run` is the earlier response or None (transient
    `earlier_attempt_unresolved` while a create that may have been applied at or before
    `uncertain_since` may still show up: see `proves_absent`). With
    `fast_path_seconds` > 0 the response is created streaming and followed for that long.
    `not_before` is not needed: the lookup reads the conversation, not a project-wide list.
    """
    client = get_clients().openai
    wanted = marker(submission_id)
    conversation = submission.conversation_id or known_thread_id
    relay_conversation = None if submission.conversation_id else known_thread_id
    creating = False
    try:
        if find_only:
            found_only = await _look_only(client, conversation, wanted, uncertain_since)
            return _reused(found_only, submission.agent_id, submission.agent_version)
        if submission.conversation_id:
            await check_conversation(client, submission)
        if conversation:
            strict = uncertain_since is not None
            found = (await find_response(client, conversation, wanted, strict=strict)).found
            if found is not None:
                logger.info("found the response started earlier for this submission")
                outcome = _ok(found, submission.agent_id, submission.agent_version)
                outcome["reused"] = True
                return outcome
        else:
            # Step one of two: the new conversation goes back to the orchestrator, which
            # records it and calls again at once. A response is only ever created on a
            # conversation the orchestration recorded, so an attempt run twice (a crash, a
            # re-executed activity) finds it there (or is refused by the conversation's
            # lock) instead of starting a second one; at worst an empty conversation is left.
            created = await client.conversations.create(
                metadata={
                    RESERVED_METADATA_KEY: submission_id,
                    CALLER_METADATA_KEY: submission.caller or "",
                }
            )
            bind_log_fields(threadId=created.id)
            logger.info("conversation created for the submission")
            return {"outcome": "ok", "run": None, "threadId": created.id, "prepared": True}
        request = CreateRequest(
            conversation=conversation,
            input=[
                {"type": "message", "role": m["role"], "content": m["content"]}
                for m in submission.messages
            ],
            agent=agent_reference(submission.agent_id, submission.agent_version),
            metadata={**submission.metadata, RESERVED_METADATA_KEY: wanted},
        )
        creating = True
        if fast_path_seconds > 0:
            outcome = await _start_streaming(client, request, fast_path_seconds, submission)
        else:
            wire = as_dict(await create(client, request))
            outcome = _ok(wire, submission.agent_id, submission.agent_version)
            outcome["reused"] = False
        logger.info("Foundry response started (%s)", _status(outcome))
    except ConversationNotAllowedError as exc:
        logger.warning("the submission names a conversation it may not continue")
        return {
            "outcome": "permanent",
            "error": {"code": "conversation_not_allowed", "message": str(exc)},
        }
    except Exception as exc:
        outcome = _failed("starting the Foundry response", exc)
        # Short of a create refused outright, a response may exist (see refused_outright).
        if conversation and not find_only and not (creating and refused_outright(exc)):
            outcome["uncertainCreate"] = True
        if relay_conversation:
            # The retry goes straight to this conversation (the response may exist on it).
            outcome["threadId"] = relay_conversation
    return outcome


def _status(outcome: Outcome) -> str:
    run = outcome.get("run")
    return run["status"] if run else ""


def _response_id(ref: RunRef) -> str:
    """The orchestrator polls, cancels and answers only a known response."""
    return str(ref["runId"])


async def poll_run(ref: RunRef) -> Outcome:
    client = get_clients().openai
    try:
        wire = as_dict(await client.responses.retrieve(_response_id(ref)))
    except Exception as exc:
        return _failed("polling the Foundry response", exc)
    outcome = _ok(wire, ref["agentId"], ref.get("agentVersion"))
    status = _status(outcome)
    if classify_run_status(status) is RunPhase.UNKNOWN:
        logger.warning("unknown response status %r; still waiting", status)
    return outcome


async def cancel_run(ref: RunRef) -> Outcome:
    """Ask the service to cancel the response (a 400 for one that already ended: permanent,
    and the orchestrator reads its end by polling)."""
    client = get_clients().openai
    try:
        wire = as_dict(await client.responses.cancel(_response_id(ref)))
    except Exception as exc:
        return _failed("cancelling the Foundry response", exc)
    logger.info("Foundry response cancel requested")
    return {"outcome": "ok", "run": _snapshot(wire, ref["agentId"], ref.get("agentVersion"))}


def _caller_metadata(previous: Mapping[str, Any]) -> dict[str, str]:
    """The caller's metadata on a response of the chain (the relay's own keys left out)."""
    metadata = previous.get("metadata") or {}
    return {str(k): str(v) for k, v in metadata.items() if not str(k).startswith("relay_")}


async def submit_tool_outputs(
    ref: RunRef,
    tool_outputs: list[ToolOutput],
    *,
    find_only: bool = False,
    uncertain_since: str | None = None,
) -> Outcome:
    """Answer a round of function calls with a new response on the same conversation.

    The new response carries the round's marker and the caller's metadata (read from the
    response that asked, `ref["runId"]`), and runs the agent version that response ran. Its
    snapshot (a new `runId`) is the outcome's `run`: the orchestrator records the chain.
    """
    client = get_clients().openai
    conversation = ref.get("threadId")
    if not conversation:
        return {
            "outcome": "permanent",
            "error": {"code": "no_conversation", "message": "the response has no conversation"},
        }
    round_key = tool_call_round([o["toolCallId"] for o in tool_outputs])
    wanted = marker(ref["submissionId"], round_key)
    asking = _response_id(ref)
    creating = False
    try:
        if find_only:
            # Given up while this round's create may have been applied: look, never create.
            found_only = await _look_only(client, conversation, wanted, uncertain_since, asking)
            return _reused(found_only, ref["agentId"], ref.get("agentVersion"))
        strict = uncertain_since is not None
        lookup = await find_response(client, conversation, wanted, asking, strict)
        found, previous = lookup.found, lookup.after
        if found is not None:
            logger.info("found the response an earlier attempt made for these tool outputs")
            outcome = _ok(found, ref["agentId"], ref.get("agentVersion"))
            outcome["reused"] = True
            return outcome
        if previous is None:
            previous = as_dict(await client.responses.retrieve(asking))
        ran = _snapshot(previous, ref["agentId"], ref.get("agentVersion"))
        request = CreateRequest(
            conversation=conversation,
            input=[
                {"type": "function_call_output", "call_id": o["toolCallId"], "output": o["output"]}
                for o in tool_outputs
            ],
            agent=agent_reference(str(ran["agentId"]), ran.get("agentVersion")),
            metadata={**_caller_metadata(previous), RESERVED_METADATA_KEY: wanted},
        )
        creating = True
        wire = as_dict(await create(client, request))
    except Exception as exc:
        outcome = _failed("submitting tool outputs", exc)
        if not find_only and not (creating and refused_outright(exc)):  # as for start_run
            outcome["uncertainCreate"] = True
        return outcome
    logger.info("tool outputs submitted as a new response")
    outcome = _ok(wire, ref["agentId"], ref.get("agentVersion"))
    outcome["reused"] = False
    return outcome

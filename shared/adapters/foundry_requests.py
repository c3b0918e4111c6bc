"""The requests the Foundry backend sends (foundry_responses.py), and how it finds the
responses an earlier attempt made: through the conversation's items, newest first.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, Literal, cast, overload

import openai

from ..core.submission import RESERVED_METADATA_KEY, Submission
from ..core.timefmt import from_iso
from .azure_agents import CALLER_METADATA_KEY
from .failures import CONVERSATION_LOCKED

if TYPE_CHECKING:
    from openai import AsyncOpenAI, AsyncStream
    from openai.types.responses import Response, ResponseInputParam, ResponseStreamEvent

# How far back a lookup reads a conversation: pages of items, and responses retrieved.
ITEMS_PAGE_SIZE = 100
ITEM_PAGES = 3
CANDIDATE_RESPONSES = 5
# Reads of a listed response that answers 404 before it counts as deleted.
LISTED_NOT_FOUND_READS = 3
# The service's clock (`completed_at`, whole seconds) against the orchestrator's.
CLOCK_MARGIN_SECONDS = 2.0


class ConversationNotAllowedError(Exception):
    """A caller named a conversation it may not continue (the message says why)."""


def marker(submission_id: str, round_key: str | None = None) -> str:
    """The metadata value that names a response of the submission's chain."""
    return submission_id if round_key is None else f"{submission_id}#{round_key}"


def refused_outright(exc: BaseException) -> bool:
    """Whether a create failed with a refusal that every execution of it gets (a 4xx other
    than 408, 409, 429 and the conversation's lock: the request itself is refused).

    Only then has no response been made for the attempt. After any other failure one may
    exist: made by this execution (a timeout, a lost connection, a 5xx, a cut-short body), or
    by another execution of the same activity whose answer was lost (a crash, an activity
    run twice): that one may have got through where this one was throttled, and it holds the
    conversation's lock when this one is refused `conversation_locked`.
    """
    if not isinstance(exc, openai.APIStatusError):
        return False
    status = exc.status_code
    transient = status in (408, 409, 429) or exc.code == CONVERSATION_LOCKED
    return 400 <= status < 500 and not transient


def as_dict(model: Any) -> dict[str, Any]:
    return cast(dict[str, Any], model.to_dict(mode="json"))


def agent_reference(name: str, version: str | None) -> dict[str, str]:
    reference = {"type": "agent_reference", "name": name}
    if version is not None:
        reference["version"] = version
    return reference


@dataclass(frozen=True)
class CreateRequest:
    """What `POST /responses` carries (reference note §3: nothing the agent owns)."""

    conversation: str
    input: list[dict[str, Any]]
    agent: dict[str, str]
    metadata: dict[str, str]


@overload
async def create(
    client: AsyncOpenAI, request: CreateRequest, stream: Literal[False] = False
) -> Response: ...
@overload
async def create(
    client: AsyncOpenAI, request: CreateRequest, stream: Literal[True]
) -> AsyncStream[ResponseStreamEvent]: ...
async def create(
    client: AsyncOpenAI, request: CreateRequest, stream: bool = False
) -> Response | AsyncStream[ResponseStreamEvent]:
    return await client.responses.create(
        input=cast("ResponseInputParam", request.input),
        conversation=request.conversation,
        background=True,
        store=True,
        metadata=request.metadata,
        # `stream` is sent only when true (the SDK leaves an omitted one out of the body).
        stream=True if stream else openai.omit,
        extra_body={"agent_reference": request.agent},
    )


async def check_conversation(client: AsyncOpenAI, submission: Submission) -> None:
    """Refuse another caller's conversation, and (unless ALLOW_CALLER_THREADS) one the relay
    did not create (no `relay_caller` in its metadata)."""
    conversation = await client.conversations.retrieve(str(submission.conversation_id))
    metadata = conversation.metadata if isinstance(conversation.metadata, dict) else {}
    owner = metadata.get(CALLER_METADATA_KEY)
    if owner is None and not submission.allow_caller_conversations:
        raise ConversationNotAllowedError(
            "conversationId names a conversation the relay did not create, and this relay "
            "does not continue those (ALLOW_CALLER_THREADS is off)"
        )
    if owner is not None and owner != (submission.caller or ""):
        raise ConversationNotAllowedError(
            "conversationId names a conversation the relay created for another caller"
        )


async def recent_response_ids(client: AsyncOpenAI, conversation_id: str) -> list[str]:
    """The responses that added the conversation's newest items, newest first.

    (`response_id` on a conversation item is a Foundry extension; items are added when a
    response ends, so a response still running is not among them.)
    """
    found: list[str] = []
    page = await client.conversations.items.list(
        conversation_id, order="desc", limit=ITEMS_PAGE_SIZE
    )
    for _ in range(ITEM_PAGES):
        for item in page.data:
            response_id = item.to_dict().get("response_id")
            if isinstance(response_id, str) and response_id and response_id not in found:
                found.append(response_id)
                if len(found) >= CANDIDATE_RESPONSES:
                    return found
        if not page.has_next_page():
            break
        page = await page.get_next_page()
    return found


class LookupIncompleteError(Exception):
    """A response listed on the conversation kept answering 404 while an earlier attempt's
    create may have been applied: it may be that response, so nothing is concluded yet."""


@dataclass(frozen=True)
class Lookup:
    """What a lookup on the conversation read.

    `found`: the response marked as wanted; `after`: the response `after` if it was read on
    the way; `newest_other_ended_at`: when the newest listed response, if not the wanted one,
    ended (unix seconds; the proof that nothing of ours still runs, see `proves_absent`).
    """

    found: dict[str, Any] | None = None
    after: dict[str, Any] | None = None
    newest_other_ended_at: float | None = None


async def _retrieve_listed(client: AsyncOpenAI, response_id: str) -> dict[str, Any] | None:
    """A listed response, or None if it answered 404 every time (deleted, or a passing 404:
    a response the conversation lists exists, so a 404 is read again before it counts)."""
    for _ in range(LISTED_NOT_FOUND_READS):
        try:
            return as_dict(await client.responses.retrieve(response_id))
        except openai.NotFoundError:
            continue
    return None


async def find_response(
    client: AsyncOpenAI,
    conversation_id: str,
    wanted: str,
    after: str | None = None,
    strict: bool = False,
) -> Lookup:
    """Look for the response marked `wanted` among the conversation's newest responses.

    With `after` (the response a round of tool outputs answers) the lookup stops there: a
    response that answers it started after it ended, so its items are newer. With `strict`
    (an earlier create may have been applied) a listed response that keeps answering 404
    raises LookupIncompleteError instead of being skipped: it may be the one wanted.
    """
    newest_other_ended_at: float | None = None
    for index, response_id in enumerate(await recent_response_ids(client, conversation_id)):
        wire = await _retrieve_listed(client, response_id)
        if wire is None:
            if strict:
                raise LookupIncompleteError(f"response {response_id} on the conversation: 404")
            continue  # deleted since, and nothing of ours can be missing: not ours to find
        if (wire.get("metadata") or {}).get(RESERVED_METADATA_KEY) == wanted:
            return Lookup(found=wire)
        if index == 0 and isinstance(wire.get("completed_at"), int | float):
            newest_other_ended_at = float(wire["completed_at"])
        if response_id == after:
            return Lookup(after=wire, newest_other_ended_at=newest_other_ended_at)
    return Lookup(newest_other_ended_at=newest_other_ended_at)


def proves_absent(lookup: Lookup, uncertain_since: str) -> bool:
    """Whether the lookup shows that no create of ours applied at or before `uncertain_since`
    can still be running (or have ended unseen).

    A conversation runs one response at a time (its lock refuses a create meanwhile). If ours
    had been applied at t <= uncertain_since: with another response running at t it would
    have been refused; with one started after t, ours had ended first and its items would be
    listed (the lookup did not find it). So the newest listed response, not ours, having
    ended after uncertain_since (plus a margin for the two clocks) proves there is none.
    """
    ended = lookup.newest_other_ended_at
    since = from_iso(uncertain_since).timestamp()
    return ended is not None and ended >= since + CLOCK_MARGIN_SECONDS

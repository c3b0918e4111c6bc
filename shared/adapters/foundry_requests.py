"""The requests the Foundry backend sends (foundry_responses.py), and how it finds the
responses an earlier attempt made: through the conversation's items, newest first.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, Literal, cast, overload

import httpx2
import openai

from ..core.submission import RESERVED_METADATA_KEY, Submission
from .azure_agents import CALLER_METADATA_KEY

if TYPE_CHECKING:
    from openai import AsyncOpenAI, AsyncStream
    from openai.types.responses import Response, ResponseInputParam, ResponseStreamEvent

# How far back a lookup reads a conversation: pages of items, and responses retrieved.
ITEMS_PAGE_SIZE = 100
ITEM_PAGES = 3
CANDIDATE_RESPONSES = 5
# Failures raised before the request left: nothing can have been applied.
_NOT_SENT = (httpx2.ConnectError, httpx2.ConnectTimeout, httpx2.PoolTimeout)


class ConversationNotAllowedError(Exception):
    """A caller named a conversation it may not continue (the message says why)."""


def marker(submission_id: str, round_key: str | None = None) -> str:
    """The metadata value that names a response of the submission's chain."""
    return submission_id if round_key is None else f"{submission_id}#{round_key}"


def may_have_applied(exc: BaseException) -> bool:
    """Whether a create that failed with `exc` may still have made its response.

    Only a refusal (4xx but 408) or a connection never made rules it out; a timeout, a lost
    connection, a 5xx, a cut-short body or a stream that named nothing leave it possible.
    """
    if isinstance(exc, openai.APIStatusError):
        return exc.status_code >= 500 or exc.status_code == 408
    if isinstance(exc, openai.APIConnectionError):
        return not isinstance(exc.__cause__, _NOT_SENT)
    return True


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


async def find_response(
    client: AsyncOpenAI, conversation_id: str, wanted: str, after: str | None = None
) -> tuple[dict[str, Any] | None, dict[str, Any] | None]:
    """(the response marked `wanted`, the response `after` if it was read on the way).

    With `after` (the response a round of tool outputs answers) the lookup stops there: a
    response that answers it started after it ended, so its items are newer.
    """
    for response_id in await recent_response_ids(client, conversation_id):
        try:
            wire = as_dict(await client.responses.retrieve(response_id))
        except openai.NotFoundError:
            continue  # deleted since: not ours to find
        if (wire.get("metadata") or {}).get(RESERVED_METADATA_KEY) == wanted:
            return wire, None
        if response_id == after:
            return None, wire
    return None, None

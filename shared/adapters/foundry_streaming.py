"""The fast path of a Foundry response: create it streaming and follow its events for a while.

The stream is read for at most the window. A stream that drops before the response's end is
resumed where it stopped (`GET /responses/{id}?stream=true&starting_after=N`, reference note
foundry-responses-wire.md §6) up to MAX_RESUMES times inside the window. Whatever happens,
the response is the one the create made: the caller hands the durable schedule its snapshot.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

import openai

from .response_snapshot import RESPONSE_TERMINAL_STATUSES

if TYPE_CHECKING:
    from openai import AsyncOpenAI, AsyncStream

logger = logging.getLogger("agent_run_relay.foundry")

MAX_RESUMES = 3
TERMINAL_EVENTS = frozenset({"response.completed", "response.failed", "response.incomplete"})
# Events that carry the whole response (spec ResponseStreamEvent).
RESPONSE_EVENTS = TERMINAL_EVENTS | {"response.created", "response.queued", "response.in_progress"}


class StreamGaveNoResponse(Exception):
    """The create's stream ended before any event named the response."""


@dataclass
class Followed:
    """What following a response's stream saw."""

    wire: dict[str, Any] | None = None  # the latest response object an event carried
    sequence: int | None = None  # the last event's sequence number
    first_event_at: float | None = None  # time.monotonic() of the create's first event
    ended: bool = False  # the response's end (a terminal event) was seen
    window_closed: bool = False
    resumes: int = 0
    # Why the last stream stopped before the end (None: it just ended, or the window closed).
    broke: BaseException | None = None

    @property
    def response_id(self) -> str | None:
        found = (self.wire or {}).get("id")
        return str(found) if found else None

    def followed_seconds(self, window: float) -> float:
        if self.first_event_at is None:
            return 0.0
        return min(round(time.monotonic() - self.first_event_at, 3), window)

    def absorb(self, event: Any) -> None:
        if self.first_event_at is None:
            self.first_event_at = time.monotonic()
        sequence = getattr(event, "sequence_number", None)
        if isinstance(sequence, int):
            self.sequence = sequence
        kind = getattr(event, "type", None)
        response = getattr(event, "response", None)
        if kind in RESPONSE_EVENTS and response is not None:
            self.wire = response.to_dict(mode="json")
        status = (self.wire or {}).get("status")
        self.ended = self.ended or kind in TERMINAL_EVENTS or status in RESPONSE_TERMINAL_STATUSES


async def follow_stream(
    client: AsyncOpenAI,
    create: Callable[[], Awaitable[AsyncStream[Any]]],
    window_seconds: float,
) -> Followed:
    """Open the create's stream and follow it (resuming it when it drops) for the window.

    Raises what the create raised, or StreamGaveNoResponse / TimeoutError, when no event named
    the response: then the caller cannot know whether it exists. HTTP streams are closed
    before returning, whatever happens.
    """
    seen = Followed()
    streams: list[AsyncStream[Any]] = []
    try:
        async with asyncio.timeout(window_seconds):
            await _follow(client, create, seen, streams)
    except TimeoutError:
        if seen.response_id is None:
            raise
        seen.window_closed = True
    finally:
        for stream in streams:
            with contextlib.suppress(Exception):
                await stream.close()
    return seen


async def _follow(
    client: AsyncOpenAI,
    create: Callable[[], Awaitable[AsyncStream[Any]]],
    seen: Followed,
    streams: list[AsyncStream[Any]],
) -> None:
    stream = await create()  # a failure here propagates: nothing is known of the response
    streams.append(stream)
    while True:
        try:
            async for event in stream:
                seen.absorb(event)
                if seen.ended:
                    return
            seen.broke = None
        except Exception as exc:
            if seen.response_id is None:
                raise
            seen.broke = exc
        response_id = seen.response_id
        if response_id is None:
            raise StreamGaveNoResponse("the stream ended before naming the response")
        if seen.resumes >= MAX_RESUMES:
            return
        seen.resumes += 1
        logger.info(
            "response stream stopped after event %s (%s); resuming",
            seen.sequence,
            type(seen.broke).__name__ if seen.broke else "ended",
        )
        after = seen.sequence if seen.sequence is not None else openai.omit
        try:
            stream = await client.responses.retrieve(response_id, stream=True, starting_after=after)
        except Exception as exc:
            seen.broke = exc
            return
        streams.append(stream)

"""The Agents service I/O behind the start, poll and cancel activities.

Each function is safe to run more than once (the host may re-execute an activity): the start
call finds a thread or run it created earlier through the submission id in their metadata.
Each returns an outcome dict and never raises for a service failure.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from collections.abc import AsyncIterator
from typing import Any, cast

from azure.ai.agents.aio import AgentsClient
from azure.ai.agents.models import ThreadMessageOptions, ThreadRun
from azure.ai.agents.models import ToolOutput as SdkToolOutput

from ..contract import Outcome, RunRef, RunSnapshot, error_code
from ..contract import ToolOutput as RelayToolOutput
from ..core.run_status import RunPhase, classify_run_status, normalize_run_status
from ..core.submission import RESERVED_METADATA_KEY, Submission
from .clients import get_clients
from .failures import describe_failure
from .observability import bind_log_fields
from .run_snapshot import assistant_text, run_snapshot

logger = logging.getLogger("agent_run_relay.agents")

# How far back the start activity looks for a thread or run it may have created already.
LOOKBACK_THREADS = 100
LIST_PAGE_SIZE = 100
# Thread metadata naming the caller a relay-created thread belongs to.
CALLER_METADATA_KEY = "relay_caller"


def _failed(action: str, exc: BaseException) -> Outcome:
    outcome = describe_failure(exc)
    logger.warning("%s failed: %s", action, error_code(outcome.get("error")))
    return outcome


async def _first_page(pager: Any) -> list[dict[str, Any]]:
    # List calls page forever on some services; one page is all a lookup needs.
    async for page in pager.by_page():
        return [item.as_dict() async for item in page]
    return []


def _ours(item: dict[str, Any], submission_id: str) -> bool:
    return (item.get("metadata") or {}).get(RESERVED_METADATA_KEY) == submission_id


async def _find_thread(
    client: AgentsClient, submission_id: str, not_before: float | None
) -> str | None:
    """The thread a start attempt created, newest first back to the submission's time.

    (Paging back to `not_before`, not just one page: a busy project may create many threads
    between an attempt and its retry.) Without `not_before`, one page is read.
    """
    seen = 0
    async for thread in client.threads.list(limit=LOOKBACK_THREADS, order="desc"):
        wire = thread.as_dict()
        if _ours(wire, submission_id):
            return str(wire["id"])
        seen += 1
        created = wire.get("created_at")
        if not_before is None:
            if seen >= LOOKBACK_THREADS:
                return None
        elif isinstance(created, int | float) and created < not_before:
            return None
    return None


async def _paged_back(pager: Any, not_before: float | None) -> AsyncIterator[dict[str, Any]]:
    """Items of a newest-first list, page after page, until one is older than `not_before`.

    Every page is read (not only the first): a busy thread may hold more runs or messages
    made since the submission than one page shows.
    """
    async for item in pager:
        wire: dict[str, Any] = item.as_dict()
        created = wire.get("created_at")
        if not_before is not None and isinstance(created, int | float) and created < not_before:
            return
        yield wire


async def _find_run(
    client: AgentsClient, thread_id: str, submission_id: str, not_before: float | None = None
) -> dict[str, Any] | None:
    """The run a start attempt created on this thread, however many runs the thread has."""
    runs = client.runs.list(thread_id, limit=LIST_PAGE_SIZE, order="desc")
    async for run in _paged_back(runs, not_before):
        if _ours(run, submission_id):
            return run
    return None


async def _add_missing_messages(
    client: AgentsClient,
    thread_id: str,
    submission: Submission,
    marker: dict[str, str],
    not_before: float | None,
) -> None:
    messages = client.messages.list(thread_id, limit=LIST_PAGE_SIZE, order="desc")
    already = 0
    async for message in _paged_back(messages, not_before):
        already += _ours(message, marker[RESERVED_METADATA_KEY])
    for message in submission.messages[already:]:
        await client.messages.create(
            thread_id, role=message["role"], content=message["content"], metadata=marker
        )


class ThreadNotAllowedError(Exception):
    """A caller named a thread the relay created for another caller."""


async def _check_thread_owner(client: AgentsClient, thread_id: str, caller: str | None) -> None:
    """Refuse a thread the relay created for another caller (`relay_caller` metadata).

    Threads the relay did not create are the deployment's to allow (ALLOW_CALLER_THREADS).
    """
    thread = (await client.threads.get(thread_id)).as_dict()
    owner = (thread.get("metadata") or {}).get(CALLER_METADATA_KEY)
    if owner is not None and owner != (caller or ""):
        raise ThreadNotAllowedError(thread_id)


async def _output_text(client: AgentsClient, snapshot: RunSnapshot) -> str | None:
    if snapshot["status"] != "completed":
        return None
    messages = await _first_page(
        client.messages.list(
            cast(str, snapshot["threadId"]), run_id=snapshot["runId"], order="desc", limit=20
        )
    )
    return assistant_text(messages)


def _settled(status: str) -> bool:
    """A status the stream need not wait past: the run ended or needs the caller."""
    return classify_run_status(status) in (RunPhase.TERMINAL, RunPhase.REQUIRES_ACTION)


async def _start_streaming(
    client: AgentsClient,
    submission_id: str,
    thread_id: str,
    submission: Submission,
    metadata: dict[str, str],
    window_seconds: float,
    not_before: float | None,
) -> Outcome:
    """Create the run as a stream and follow it for up to `window_seconds` (the fast path).

    A run that ends inside the window is returned terminal (no poll needed). Whatever happens
    to the stream (window over, cut, ended early), the run is the one created here: found again
    by its metadata if no event named it, so the durable schedule takes over with one run.
    The outcome's `followedSeconds` says how long the run was followed, so the schedule takes
    over from the run's age instead of starting its ramp again.
    """
    responses: list[Any] = []
    created_at: list[float] = []

    def keep_response(pipeline_response: Any, deserialized: Any, _headers: Any) -> Any:
        # Called when the create call's response arrives: the run exists from here on.
        created_at.append(time.monotonic())
        responses.append(pipeline_response.http_response)
        return deserialized

    last: dict[str, Any] | None = None
    try:
        async with asyncio.timeout(window_seconds):
            stream = await client.runs.stream(
                thread_id,
                agent_id=submission.agent_id,
                additional_instructions=submission.instructions,
                metadata=metadata,
                cls=keep_response,
            )
            async with stream as events:
                async for _event_type, data, _ in events:
                    if isinstance(data, ThreadRun):
                        last = data.as_dict()
                        if _settled(normalize_run_status(last.get("status"))):
                            break
    except Exception as exc:
        if not responses:
            raise  # the create call itself failed: let the caller classify it
        # The window closed or the stream broke after the run was created: fall back to polls.
        logger.info("fast path ended without the run's end: %s", type(exc).__name__)
    finally:
        for response in responses:
            with contextlib.suppress(Exception):
                # The SDK's stream iterator cannot be closed; close the HTTP response itself.
                await response.close()
    followed = round(time.monotonic() - created_at[0], 3) if created_at else 0.0
    if last is None:
        last = await _find_run(client, thread_id, submission_id, not_before)
        if last is None:
            return {
                "outcome": "transient",
                "error": {"code": "stream_failed", "message": "no run seen on the stream"},
                "retryAfter": None,
            }
    snapshot = run_snapshot(last)
    return {
        "outcome": "ok",
        "run": snapshot,
        "reused": False,
        "outputText": await _output_text(client, snapshot),
        "followedSeconds": min(followed, window_seconds),
    }


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
    """Start the submission's run, or find the one an earlier attempt started.

    With `find_only` (the submission was cancelled before its run was known), nothing is
    created: the outcome's `run` is the earlier run or None. With `fast_path_seconds` > 0 a
    new run is created streaming and followed for that long (see `_start_streaming`).
    `known_thread_id` is the thread an earlier attempt reported creating; `not_before` (Unix
    seconds) bounds how far back the thread lookup pages.
    """
    client = get_clients().agents
    marker = {RESERVED_METADATA_KEY: submission_id}
    created_thread: str | None = None

    async def find_thread() -> str | None:
        return known_thread_id or await _find_thread(client, submission_id, not_before)

    try:
        if find_only:
            thread_id = submission.thread_id or await find_thread() or ""
            existing = (
                await _find_run(client, thread_id, submission_id, not_before) if thread_id else None
            )
            return {
                "outcome": "ok",
                "run": run_snapshot(existing) if existing else None,
                "reused": existing is not None,
            }
        if submission.thread_id:
            thread_id = submission.thread_id
            await _check_thread_owner(client, thread_id, submission.caller)
            existing = await _find_run(client, thread_id, submission_id, not_before)
            if existing is None:
                await _add_missing_messages(client, thread_id, submission, marker, not_before)
        else:
            found = await find_thread()
            existing = await _find_run(client, found, submission_id, not_before) if found else None
            if found:
                thread_id = found
            else:
                thread = await client.threads.create(
                    messages=[
                        ThreadMessageOptions(role=m["role"], content=m["content"], metadata=marker)
                        for m in submission.messages
                    ],
                    metadata={**marker, CALLER_METADATA_KEY: submission.caller or ""},
                )
                thread_id = created_thread = thread.id
        if existing is not None:
            bind_log_fields(runId=existing.get("id"), threadId=existing.get("thread_id"))
            logger.info("found the run started earlier for this submission")
            snapshot = run_snapshot(existing)
            output = await _output_text(client, snapshot)
            return {"outcome": "ok", "run": snapshot, "reused": True, "outputText": output}
        if fast_path_seconds > 0:
            outcome = await _start_streaming(
                client,
                submission_id,
                thread_id,
                submission,
                {**submission.metadata, **marker},
                fast_path_seconds,
                not_before,
            )
            if outcome["outcome"] != "ok":
                outcome["threadId"] = thread_id
            else:
                run_ids = outcome["run"]
                assert run_ids is not None
                bind_log_fields(runId=run_ids["runId"], threadId=run_ids["threadId"])
                logger.info("agent run started (streamed: %s)", run_ids["status"])
            return outcome
        run = await client.runs.create(
            thread_id,
            agent_id=submission.agent_id,
            additional_instructions=submission.instructions,
            metadata={**submission.metadata, **marker},
        )
    except ThreadNotAllowedError:
        logger.warning("the submission names a thread created for another caller")
        return {
            "outcome": "permanent",
            "error": {
                "code": "thread_not_allowed",
                "message": "threadId names a thread the relay created for another caller",
            },
        }
    except Exception as exc:
        failure = _failed("starting the agent run", exc)
        if created_thread:
            # The retry goes straight to this thread (the run may exist despite the error).
            failure["threadId"] = created_thread
        return failure
    snapshot = run_snapshot(run.as_dict())
    bind_log_fields(runId=snapshot["runId"], threadId=snapshot["threadId"])
    logger.info("agent run started")
    return {"outcome": "ok", "run": snapshot, "reused": False, "outputText": None}


def _ids(run: RunRef) -> tuple[str, str]:
    """(thread id, run id): the orchestrator polls, cancels and answers only a known run."""
    return str(run["threadId"]), str(run["runId"])


async def poll_run(ref: RunRef) -> Outcome:
    client = get_clients().agents
    try:
        run = (await client.runs.get(*_ids(ref))).as_dict()
        snapshot = run_snapshot(run)
        phase = classify_run_status(snapshot["status"])
        if phase is RunPhase.UNKNOWN:
            logger.warning("unknown run status %r; still waiting", snapshot["status"])
        output = await _output_text(client, snapshot)
    except Exception as exc:
        return _failed("polling the agent run", exc)
    return {"outcome": "ok", "run": snapshot, "outputText": output}


async def cancel_run(ref: RunRef) -> Outcome:
    client = get_clients().agents
    try:
        run = await client.runs.cancel(*_ids(ref))
    except Exception as exc:
        return _failed("cancelling the agent run", exc)
    logger.info("agent run cancel requested")
    return {"outcome": "ok", "run": run_snapshot(run.as_dict())}


async def submit_tool_outputs(
    ref: RunRef,
    tool_outputs: list[RelayToolOutput],
    *,
    find_only: bool = False,
    uncertain_since: str | None = None,
) -> Outcome:
    """Hand the run its outputs (the same run goes on: `find_only` and `uncertain_since`,
    which only a backend that starts a new run per round needs, are not used)."""
    client = get_clients().agents
    try:
        run = await client.runs.submit_tool_outputs(
            *_ids(ref),
            tool_outputs=[
                SdkToolOutput(tool_call_id=item["toolCallId"], output=item["output"])
                for item in tool_outputs
            ],
        )
    except Exception as exc:
        return _failed("submitting tool outputs", exc)
    logger.info("tool outputs submitted")
    return {"outcome": "ok", "run": run_snapshot(run.as_dict())}

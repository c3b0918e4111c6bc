"""Activity entry points: decode the orchestrator's payload, do the I/O, return an outcome.

This is the JSON edge of the activities: the payload arrives as the dict the Durable runtime
decoded (keys in `shared.contract`), and the `Outcome` leaves as a dict. Each binds the
submission's ids to its log records for the length of the invocation.
"""

from __future__ import annotations

from typing import Any, cast

from ..adapters.agents_backend import agents_backend, event_publisher
from ..adapters.observability import log_fields
from ..contract import (
    EventPayload,
    Outcome,
    RunRef,
    StartInput,
    ToolOutputsInput,
    submission_api,
)
from ..core.events import RelayEvent
from ..core.submission import Submission
from ..core.timefmt import from_iso


async def start_agent_run(payload: dict[str, Any]) -> dict[str, Any]:
    request = cast(StartInput, payload)
    submission = Submission.from_dict(request["submission"])
    with log_fields(submissionId=request["submissionId"], agentId=submission.agent_id):
        return _encode(
            await agents_backend(submission_api(request["submission"])).start_run(
                request["submissionId"],
                submission,
                find_only=bool(request.get("findOnly")),
                fast_path_seconds=float(request.get("fastPathSeconds") or 0.0),
                known_thread_id=request.get("knownThreadId"),
                not_before=_unix(request.get("submittedAt")),
                uncertain_since=request.get("uncertainSince"),
            )
        )


async def poll_agent_run(payload: dict[str, Any]) -> dict[str, Any]:
    run = _run_ref(payload)
    with log_fields(**_run_fields(run)):
        return _encode(await agents_backend(submission_api(run)).poll_run(run))


async def cancel_agent_run(payload: dict[str, Any]) -> dict[str, Any]:
    run = _run_ref(payload)
    with log_fields(**_run_fields(run)):
        return _encode(await agents_backend(submission_api(run)).cancel_run(run))


async def submit_tool_outputs(payload: dict[str, Any]) -> dict[str, Any]:
    request = cast(ToolOutputsInput, payload)
    with log_fields(**_run_fields(request)):
        return _encode(
            await agents_backend(submission_api(request)).submit_tool_outputs(
                request,
                request["toolOutputs"],
                find_only=bool(request.get("findOnly")),
                uncertain_since=request.get("uncertainSince"),
            )
        )


async def publish_run_event(payload: dict[str, Any]) -> dict[str, Any]:
    event = RelayEvent(**cast(EventPayload, payload))
    data = event.data
    with log_fields(
        submissionId=data.get("submissionId"),
        runId=data.get("runId"),
        agentId=data.get("agentId"),
        eventId=event.id,
    ):
        return _encode(await event_publisher().publish(event))


def _unix(moment: str | None) -> float | None:
    # A minute of slack: the service's clock and ours need not agree to the second.
    return from_iso(moment).timestamp() - 60 if moment else None


def _run_ref(payload: dict[str, Any]) -> RunRef:
    return cast(RunRef, payload)


def _run_fields(run: RunRef) -> dict[str, Any]:
    return {
        "submissionId": run["submissionId"],
        "runId": run.get("runId"),
        "threadId": run.get("threadId"),
        "agentId": run.get("agentId"),
    }


def _encode(outcome: Outcome) -> dict[str, Any]:
    """The outcome as the JSON dict the Durable runtime hands back to the orchestrator."""
    return cast(dict[str, Any], outcome)

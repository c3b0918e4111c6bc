"""Activity entry points: decode the orchestrator's payload, do the I/O, return an outcome.

Each binds the submission's ids to its log records for the length of the invocation.
"""

from __future__ import annotations

from typing import Any

from . import agents_calls, publishing
from .events import RelayEvent
from .observability import log_fields
from .submission import Submission
from .timefmt import from_iso


async def start_agent_run(payload: dict[str, Any]) -> dict[str, Any]:
    submission = Submission.from_dict(payload["submission"])
    with log_fields(submissionId=payload["submissionId"], agentId=submission.agent_id):
        return await agents_calls.start_run(
            payload["submissionId"],
            submission,
            find_only=bool(payload.get("findOnly")),
            fast_path_seconds=float(payload.get("fastPathSeconds") or 0.0),
            known_thread_id=payload.get("knownThreadId"),
            not_before=_unix(payload.get("submittedAt")),
        )


def _unix(moment: str | None) -> float | None:
    # A minute of slack: the service's clock and ours need not agree to the second.
    return from_iso(moment).timestamp() - 60 if moment else None


def _run_fields(payload: dict[str, Any]) -> dict[str, Any]:
    return {
        "submissionId": payload["submissionId"],
        "runId": payload.get("runId"),
        "threadId": payload.get("threadId"),
        "agentId": payload.get("agentId"),
    }


async def poll_agent_run(payload: dict[str, Any]) -> dict[str, Any]:
    with log_fields(**_run_fields(payload)):
        return await agents_calls.poll_run(
            payload["submissionId"], payload["threadId"], payload["runId"]
        )


async def cancel_agent_run(payload: dict[str, Any]) -> dict[str, Any]:
    with log_fields(**_run_fields(payload)):
        return await agents_calls.cancel_run(
            payload["submissionId"], payload["threadId"], payload["runId"]
        )


async def submit_tool_outputs(payload: dict[str, Any]) -> dict[str, Any]:
    with log_fields(**_run_fields(payload)):
        return await agents_calls.submit_tool_outputs(
            payload["submissionId"], payload["threadId"], payload["runId"], payload["toolOutputs"]
        )


async def publish_run_event(payload: dict[str, Any]) -> dict[str, Any]:
    event = RelayEvent(**payload)
    data = event.data
    with log_fields(
        submissionId=data.get("submissionId"),
        runId=data.get("runId"),
        agentId=data.get("agentId"),
        eventId=event.id,
    ):
        return await publishing.publish(event)

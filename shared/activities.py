"""Activity entry points: decode the orchestrator's payload, do the I/O, return an outcome."""

from __future__ import annotations

from typing import Any

from . import agents_calls, publishing
from .events import RelayEvent
from .submission import Submission


async def start_agent_run(payload: dict[str, Any]) -> dict[str, Any]:
    return await agents_calls.start_run(
        payload["submissionId"],
        Submission.from_dict(payload["submission"]),
        find_only=bool(payload.get("findOnly")),
    )


async def poll_agent_run(payload: dict[str, Any]) -> dict[str, Any]:
    return await agents_calls.poll_run(
        payload["submissionId"], payload["threadId"], payload["runId"]
    )


async def cancel_agent_run(payload: dict[str, Any]) -> dict[str, Any]:
    return await agents_calls.cancel_run(
        payload["submissionId"], payload["threadId"], payload["runId"]
    )


async def publish_run_event(payload: dict[str, Any]) -> dict[str, Any]:
    return await publishing.publish(RelayEvent(**payload))


async def submit_tool_outputs(payload: dict[str, Any]) -> dict[str, Any]:
    return await agents_calls.submit_tool_outputs(
        payload["submissionId"], payload["threadId"], payload["runId"], payload["toolOutputs"]
    )

"""The subscriber function: validate, de-duplicate, log a one-line summary."""

from __future__ import annotations

import logging
from typing import Any

import azure.functions as func

from ..adapters.observability import log_fields
from .dedup import first_delivery
from .event_check import data_problems, summary_line

logger = logging.getLogger("agent_run_relay.subscriber")

blueprint = func.Blueprint()  # type: ignore[no-untyped-call]


def _event_type(event: Any) -> str:
    return str(getattr(event, "event_type", None) or getattr(event, "type", None) or "")


@blueprint.event_grid_trigger(arg_name="event")
async def on_agent_run_completed(event: func.EventGridEvent) -> None:
    event_type = _event_type(event)
    if event_type != "AgentRunCompleted":
        logger.info("ignoring event %s of type %s", event.id, event_type)
        return
    data = event.get_json()
    problems = data_problems(data)
    if problems:
        # Retrying cannot fix a malformed event: log it (it stays in Event Grid's metrics).
        logger.error("invalid AgentRunCompleted %s: %s", event.id, "; ".join(problems[:5]))
        return
    with log_fields(
        submissionId=data["submissionId"],
        runId=data["runId"],
        agentId=data["agentId"],
        eventId=event.id,
    ):
        if not await first_delivery(event_type, str(event.id)):
            logger.info("duplicate delivery of %s skipped", event.id)
            return
        logger.info(summary_line(str(event.id), data))

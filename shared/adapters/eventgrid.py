"""Publishing an event to Event Grid with the SDK, in the configured schema."""

from __future__ import annotations

import logging
from typing import Any

from azure.core.messaging import CloudEvent
from azure.eventgrid import EventGridEvent

from ..contract import Outcome, error_code
from ..core.events import RelayEvent
from ..core.timefmt import from_iso
from .clients import get_clients, publish_call_options
from .failures import describe_failure
from .settings import Settings, get_settings

logger = logging.getLogger("agent_run_relay.publish")


def to_sdk_event(event: RelayEvent, settings: Settings) -> EventGridEvent | CloudEvent[Any]:
    # event_time / time are explicit: the SDK would otherwise stamp the wall clock, and the
    # event must carry when the run ended (and be identical when republished).
    moment = from_iso(event.event_time)
    if settings.event_schema == "cloudevents":
        return CloudEvent(
            source=settings.event_source,
            type=event.event_type,
            data=event.data,
            subject=event.subject,
            id=event.id,
            time=moment,
            datacontenttype="application/json",
        )
    return EventGridEvent(
        subject=event.subject,
        event_type=event.event_type,
        data=event.data,
        data_version=event.data_version,
        id=event.id,
        event_time=moment,
    )


async def publish(event: RelayEvent) -> Outcome:
    settings = get_settings()
    try:
        await get_clients().publisher.send(
            [to_sdk_event(event, settings)], **publish_call_options(settings)
        )
    except Exception as exc:
        outcome = describe_failure(exc)
        logger.warning(
            "publishing %s failed: %s", event.event_type, error_code(outcome.get("error"))
        )
        return outcome
    logger.info("published %s", event.event_type)
    return {"outcome": "ok", "eventId": event.id}

"""History events as the Durable extension (DTFx) hands them to an out-of-process SDK.

Field names and numbering follow DurableTask.Core's HistoryEvent classes serialized with
Newtonsoft (PascalCase). Events added by the runtime (OrchestratorStarted/Completed, messages)
carry EventId -1; TaskScheduled, TimerCreated and the completion events carry the sequence
number DTFx's TaskOrchestrationContext handed out (`idCounter++`).
"""

from __future__ import annotations

from datetime import UTC, datetime
from enum import IntEnum
from typing import Any

# The format the Python SDK writes and parses (azure.durable_functions.constants).
TIMESTAMP_FORMAT = "%Y-%m-%dT%H:%M:%S.%fZ"

HistoryEvent = dict[str, Any]


class EventType(IntEnum):
    """DurableTask.Core EventType values (azure.durable_functions HistoryEventType)."""

    EXECUTION_STARTED = 0
    EXECUTION_COMPLETED = 1
    EXECUTION_FAILED = 2
    EXECUTION_TERMINATED = 3
    TASK_SCHEDULED = 4
    TASK_COMPLETED = 5
    TASK_FAILED = 6
    SUB_ORCHESTRATION_INSTANCE_CREATED = 7
    SUB_ORCHESTRATION_INSTANCE_COMPLETED = 8
    SUB_ORCHESTRATION_INSTANCE_FAILED = 9
    TIMER_CREATED = 10
    TIMER_FIRED = 11
    ORCHESTRATOR_STARTED = 12
    ORCHESTRATOR_COMPLETED = 13
    EVENT_SENT = 14
    EVENT_RAISED = 15
    CONTINUE_AS_NEW = 16
    GENERIC_EVENT = 17
    HISTORY_STATE = 18
    EXECUTION_SUSPENDED = 19
    EXECUTION_RESUMED = 20


def format_timestamp(moment: datetime) -> str:
    """UTC, microseconds, trailing Z: what the SDK's dateutil parser reads back unchanged."""
    if moment.tzinfo is None:
        raise ValueError("history timestamps must be timezone-aware")
    return moment.astimezone(UTC).strftime(TIMESTAMP_FORMAT)


def parse_timestamp(text: str) -> datetime:
    """Parse a timestamp written by `format_timestamp` or by the SDK (fireAt)."""
    value = datetime.fromisoformat(text.replace("Z", "+00:00"))
    if value.tzinfo is None:
        # The SDK formats naive datetimes with a literal "Z": read them as UTC, as .NET does.
        value = value.replace(tzinfo=UTC)
    return value.astimezone(UTC)


def format_status_time(moment: datetime) -> str:
    """The extension's HTTP API writes times as `ToString("s") + "Z"` (no fraction)."""
    return moment.astimezone(UTC).strftime("%Y-%m-%dT%H:%M:%SZ")


def _event(
    event_type: EventType, event_id: int, timestamp: datetime, **fields: Any
) -> HistoryEvent:
    event: HistoryEvent = {
        "EventType": int(event_type),
        "EventId": event_id,
        "IsPlayed": False,
        "Timestamp": format_timestamp(timestamp),
    }
    event.update(fields)
    return event


def orchestrator_started(timestamp: datetime) -> HistoryEvent:
    return _event(EventType.ORCHESTRATOR_STARTED, -1, timestamp)


def orchestrator_completed(timestamp: datetime) -> HistoryEvent:
    return _event(EventType.ORCHESTRATOR_COMPLETED, -1, timestamp)


def execution_started(
    timestamp: datetime, *, instance_id: str, execution_id: str, name: str, input_json: str | None
) -> HistoryEvent:
    return _event(
        EventType.EXECUTION_STARTED,
        -1,
        timestamp,
        OrchestrationInstance={"InstanceId": instance_id, "ExecutionId": execution_id},
        ParentInstance=None,
        Name=name,
        Version="",
        Input=input_json,
        Tags=None,
    )


def task_scheduled(
    timestamp: datetime, event_id: int, name: str, input_json: str | None
) -> HistoryEvent:
    return _event(
        EventType.TASK_SCHEDULED, event_id, timestamp, Name=name, Version="", Input=input_json
    )


def task_completed(timestamp: datetime, scheduled_id: int, result_json: str | None) -> HistoryEvent:
    return _event(
        EventType.TASK_COMPLETED, -1, timestamp, TaskScheduledId=scheduled_id, Result=result_json
    )


def task_failed(timestamp: datetime, scheduled_id: int, reason: str, details: str) -> HistoryEvent:
    return _event(
        EventType.TASK_FAILED,
        -1,
        timestamp,
        TaskScheduledId=scheduled_id,
        Reason=reason,
        Details=details,
    )


def timer_created(timestamp: datetime, event_id: int, fire_at: datetime) -> HistoryEvent:
    return _event(EventType.TIMER_CREATED, event_id, timestamp, FireAt=format_timestamp(fire_at))


def timer_fired(timestamp: datetime, timer_id: int, fire_at: datetime) -> HistoryEvent:
    return _event(
        EventType.TIMER_FIRED, -1, timestamp, TimerId=timer_id, FireAt=format_timestamp(fire_at)
    )


def event_raised(timestamp: datetime, name: str, input_json: str | None) -> HistoryEvent:
    return _event(EventType.EVENT_RAISED, -1, timestamp, Name=name, Input=input_json)


def execution_terminated(timestamp: datetime, reason: str | None) -> HistoryEvent:
    return _event(EventType.EXECUTION_TERMINATED, -1, timestamp, Input=reason)


def execution_completed(
    timestamp: datetime,
    event_id: int,
    status: str,
    result: str | None,
    failure_details: dict[str, Any] | None = None,
) -> HistoryEvent:
    return _event(
        EventType.EXECUTION_COMPLETED,
        event_id,
        timestamp,
        OrchestrationStatus=status,
        Result=result,
        FailureDetails=failure_details,
    )


def continue_as_new(timestamp: datetime, event_id: int, new_input: str | None) -> HistoryEvent:
    """DTFx closes a generation with ContinueAsNewEvent (a subclass of ExecutionCompleted)."""
    return _event(
        EventType.CONTINUE_AS_NEW,
        event_id,
        timestamp,
        OrchestrationStatus="ContinuedAsNew",
        Result=new_input,
    )


def with_played(events: list[HistoryEvent], played: bool) -> list[HistoryEvent]:
    """Copies with IsPlayed set: true for earlier episodes, false for this episode's events."""
    return [{**event, "IsPlayed": played} for event in events]

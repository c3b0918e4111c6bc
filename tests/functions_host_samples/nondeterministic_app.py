"""Orchestrators that break the replay rules (read the wall clock / random)."""

# mypy: disallow-untyped-decorators=False

from __future__ import annotations

import random
from collections.abc import Generator
from datetime import UTC, datetime, timedelta
from typing import Any

import azure.durable_functions as df

app = df.DFApp()


@app.activity_trigger(input_name="value")
def echo(value: Any) -> Any:
    return value


@app.orchestration_trigger(context_name="context")
def wall_clock_timer(context: df.DurableOrchestrationContext) -> Generator[Any, Any, Any]:
    # BUG (on purpose): the fire time comes from the wall clock, not current_utc_datetime.
    yield context.create_timer(datetime.now(UTC) + timedelta(seconds=30))
    yield context.call_activity("echo", "after timer")
    return "done"


@app.orchestration_trigger(context_name="context")
def random_input(context: df.DurableOrchestrationContext) -> Generator[Any, Any, Any]:
    # BUG (on purpose): a random activity input differs on every replay.
    first = yield context.call_activity("echo", random.random())
    second = yield context.call_activity("echo", "second")
    return [first, second]


@app.orchestration_trigger(context_name="context")
def deterministic(context: df.DurableOrchestrationContext) -> Generator[Any, Any, Any]:
    yield context.create_timer(context.current_utc_datetime + timedelta(seconds=30))
    value = yield context.call_activity("echo", "fine")
    return value

"""Broken on purpose: the orchestrator's trigger is not named `context`."""

# mypy: disallow-untyped-decorators=False

from __future__ import annotations

from collections.abc import Generator
from typing import Any

import azure.durable_functions as df

app = df.DFApp()


@app.orchestration_trigger(context_name="ctx")
def orchestrator(ctx: df.DurableOrchestrationContext) -> Generator[Any, Any, Any]:
    yield ctx.call_activity("nothing", None)
    return None

"""Broken on purpose: a function with a binding but no trigger."""

# mypy: disallow-untyped-decorators=False

from __future__ import annotations

import azure.durable_functions as df

app = df.DFApp()


@app.durable_client_input(client_name="client")
async def no_trigger(client: df.DurableOrchestrationClient) -> None:
    return None

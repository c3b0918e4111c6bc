"""Broken on purpose: a durable client binding without a matching parameter."""

# mypy: disallow-untyped-decorators=False

from __future__ import annotations

import azure.durable_functions as df
import azure.functions as func

app = df.DFApp()


@app.route(route="start")
@app.durable_client_input(client_name="client")
async def start(req: func.HttpRequest) -> func.HttpResponse:
    return func.HttpResponse("never")

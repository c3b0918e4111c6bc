"""Broken on purpose: two triggers on one function (the SDK refuses while decorating)."""

# mypy: disallow-untyped-decorators=False

from __future__ import annotations

import azure.durable_functions as df
import azure.functions as func

app = df.DFApp()


@app.route(route="both")
@app.activity_trigger(input_name="req")
def both(req: func.HttpRequest) -> str:
    return "never"

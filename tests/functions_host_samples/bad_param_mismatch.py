"""Broken on purpose: the activity's parameter is not named like its binding."""

# mypy: disallow-untyped-decorators=False

from __future__ import annotations

import azure.durable_functions as df

app = df.DFApp()


@app.activity_trigger(input_name="payload")
def act(data: str) -> str:
    return data

"""Broken on purpose: two functions share a name (the SDK refuses in get_functions)."""

# mypy: disallow-untyped-decorators=False

from __future__ import annotations

import azure.durable_functions as df

app = df.DFApp()


@app.function_name("same")
@app.activity_trigger(input_name="value")
def first(value: str) -> str:
    return value


@app.function_name("same")
@app.activity_trigger(input_name="value")
def second(value: str) -> str:
    return value

"""Broken on purpose: names differing only by case (the host compares case-insensitively)."""

# mypy: disallow-untyped-decorators=False

from __future__ import annotations

import azure.durable_functions as df

app = df.DFApp()


@app.function_name("Transform")
@app.activity_trigger(input_name="value")
def transform_upper(value: str) -> str:
    return value.upper()


@app.function_name("transform")
@app.activity_trigger(input_name="value")
def transform_lower(value: str) -> str:
    return value.lower()

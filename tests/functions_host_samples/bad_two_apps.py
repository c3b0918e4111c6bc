"""Broken on purpose: two top-level function apps."""

from __future__ import annotations

import azure.durable_functions as df
import azure.functions as func

app = df.DFApp()
other_app = func.FunctionApp()

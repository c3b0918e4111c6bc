"""Broken on purpose: no top-level function app at all."""

from __future__ import annotations

import azure.durable_functions as df

blueprint = df.Blueprint()

"""Checking a delivered event against the published JSON Schema of its data (pure)."""

from __future__ import annotations

import json
from functools import lru_cache
from pathlib import Path
from typing import Any

import jsonschema

# Its own copy of docs/agent-run-completed.schema.json, so the subscriber stands alone
# (tests/subscriber/test_subscriber.py checks that the two are equal).
SCHEMA_PATH = Path(__file__).resolve().with_name("agent-run-completed.schema.json")


@lru_cache(maxsize=1)
def _validator() -> jsonschema.Draft202012Validator:
    schema = json.loads(SCHEMA_PATH.read_text(encoding="utf-8"))
    return jsonschema.Draft202012Validator(schema, format_checker=jsonschema.FormatChecker())


def data_problems(data: Any) -> list[str]:
    """Why `data` is not a valid AgentRunCompleted payload (empty when it is)."""
    errors = sorted(_validator().iter_errors(data), key=lambda e: list(e.absolute_path))
    return [f"{'/'.join(map(str, e.absolute_path)) or '(root)'}: {e.message}" for e in errors]


def summary_line(event_id: str, data: dict[str, Any]) -> str:
    usage = data.get("usage") or {}
    if data.get("api") == "responses":
        what = f"response {data.get('responseId')} agent {data.get('agentName')}"
    else:
        what = f"run {data.get('runId')} agent {data.get('agentId')}"
    return (
        f"AgentRunCompleted {event_id}: submission {data['submissionId']} {what} "
        f"status {data['status']} polls {data['polls']} tokens {usage.get('totalTokens', 0)}"
    )

"""The sample subscriber stands alone: its schema copy is the published one, and it is wired in
by one line of function_app.py and nothing else (tests/project/test_architecture.py)."""

from __future__ import annotations

import json
from pathlib import Path

from shared.subscriber.event_check import SCHEMA_PATH

ROOT = Path(__file__).resolve().parents[2]


def test_the_subscribers_schema_copy_equals_the_published_schema() -> None:
    published = ROOT / "docs" / "agent-run-completed.schema.json"
    assert SCHEMA_PATH.parent == ROOT / "shared" / "subscriber"
    assert json.loads(SCHEMA_PATH.read_text(encoding="utf-8")) == json.loads(
        published.read_text(encoding="utf-8")
    )
    assert SCHEMA_PATH.read_bytes() == published.read_bytes()


def test_function_app_registers_the_subscriber_in_one_line() -> None:
    source = (ROOT / "function_app.py").read_text(encoding="utf-8")
    lines = [
        line for line in source.splitlines() if "subscriber" in line and not line.startswith("#")
    ]
    assert lines == [
        "from shared.subscriber import blueprint as subscriber_blueprint",
        "app.register_functions(subscriber_blueprint)",
    ]

"""Observability: every relay log line carries the submission's ids, orchestrator lines are not
repeated on replay, and with a connection string the lines reach Application Insights with
those ids as custom dimensions."""

from __future__ import annotations

import gzip
import json
import logging
import os
import sys
import textwrap
from collections import Counter
from pathlib import Path
from typing import Any

import pytest
from aiohttp import web

from devhost.agents_service import FaultRule, RunScript
from devhost.server_thread import ServerThread
from tests.processes import run_captured
from tests.relay_bed import relay_bed

ROOT = Path(__file__).resolve().parents[2]
TOOL_RUN = RunScript(
    duration_seconds=200,
    final_status="completed",
    requires_action=[{"id": "call_1", "name": "lookup", "arguments": "{}"}],
    requires_action_after_seconds=30,
)


def relay_records(caplog: pytest.LogCaptureFixture) -> list[logging.LogRecord]:
    return [r for r in caplog.records if r.name.startswith("agent_run_relay")]


def test_every_relay_log_line_carries_the_ids(caplog: pytest.LogCaptureFixture) -> None:
    caplog.set_level(logging.INFO, logger="agent_run_relay")
    with relay_bed() as bed:
        bed.agents.default_script = TOOL_RUN
        bed.agents.faults.append(FaultRule(operation="runs.get", kind="503", count=2))
        submission_id = bed.submit()
        bed.host.run_until_idle()
        for _ in range(30):
            view = bed.status(submission_id)
            if view["status"] == "requires_action":
                break
            bed.host.advance_to_next_timer()
        body = json.dumps({"toolOutputs": [{"toolCallId": "call_1", "output": "42"}]})
        accepted = bed.host.http(
            "POST",
            f"/api/runs/{submission_id}/tool-outputs",
            body=body,
            headers={"Content-Type": "application/json"},
        )
        assert accepted.status_code == 202
        bed.complete(submission_id)
        run_id = bed.status(submission_id)["agentRun"]["runId"]
    records = relay_records(caplog)
    names = {r.name for r in records}
    assert {
        "agent_run_relay.http",
        "agent_run_relay.agents",
        "agent_run_relay.publish",
        "agent_run_relay.orchestrator",
    } <= names
    assert any(r.levelno == logging.WARNING for r in records)  # the 503s were logged
    for record in records:
        assert getattr(record, "submissionId", None) == submission_id, record.getMessage()
        assert getattr(record, "agentId", None) == bed.agent_id, record.getMessage()
    started = next(
        i
        for i, r in enumerate(records)
        if "agent run" in r.getMessage() and "started" in r.getMessage()
    )
    for record in records[started:]:
        if record.name != "agent_run_relay.http":
            assert getattr(record, "runId", None) == run_id, record.getMessage()


def test_orchestrator_lines_are_not_repeated_on_replay(caplog: pytest.LogCaptureFixture) -> None:
    caplog.set_level(logging.INFO, logger="agent_run_relay.orchestrator")
    with relay_bed(settings={"POLLS_PER_GENERATION": "10"}) as bed:
        bed.agents.default_script = RunScript(duration_seconds=1800, final_status="completed")
        submission_id = bed.submit()
        bed.complete(submission_id)
        episodes = bed.host.stats.episodes
    lines = [r.getMessage() for r in caplog.records if r.name == "agent_run_relay.orchestrator"]
    assert episodes > 50  # the orchestrator was replayed many times...
    assert Counter(lines).most_common(1)[0][1] == 1  # ...and said each thing once
    assert any("in_progress -> completed" in line for line in lines)
    assert any(line.startswith("submission completed: event") for line in lines)


EXPORT_SCRIPT = textwrap.dedent(
    """
    import logging, sys
    from shared.adapters.observability import configure_telemetry, install_log_fields, log_fields
    port = sys.argv[1]
    install_log_fields()
    configured = configure_telemetry({
        "APPLICATIONINSIGHTS_CONNECTION_STRING":
            "InstrumentationKey=00000000-0000-0000-0000-000000000001;"
            f"IngestionEndpoint=http://127.0.0.1:{port}/;LiveEndpoint=http://127.0.0.1:{port}/",
    })
    assert configured
    logging.getLogger("agent_run_relay").setLevel(logging.INFO)
    with log_fields(submissionId="0123456789abcdef0123456789abcdef", runId="run_42"):
        logging.getLogger("agent_run_relay.test").warning("relay line %s", "exported")
    from opentelemetry._logs import get_logger_provider
    get_logger_provider().force_flush()
    """
)


def test_relay_logs_reach_application_insights_with_custom_dimensions() -> None:
    received: list[Any] = []

    async def track(request: web.Request) -> web.Response:
        raw = await request.read()
        if request.headers.get("Content-Encoding") == "gzip":
            raw = gzip.decompress(raw)
        text = raw.decode()
        items = [json.loads(line) for line in text.splitlines() if line.strip()]
        for item in items:
            received.extend(item if isinstance(item, list) else [item])
        count = sum(1 for _ in received)
        return web.json_response({"itemsReceived": count, "itemsAccepted": count, "errors": []})

    def ingestion() -> web.Application:
        app = web.Application()
        app.router.add_post("/{tail:.*}", track)
        return app

    with ServerThread(ingestion) as server:
        env = {
            **os.environ,
            # Only loopback traffic: no statsbeat, no Azure VM metadata probe.
            "APPLICATIONINSIGHTS_STATSBEAT_DISABLED_ALL": "true",
            "OTEL_EXPERIMENTAL_RESOURCE_DETECTORS": "otel",
            "PYTHONPATH": str(ROOT),
        }
        result = run_captured(
            [sys.executable, "-c", EXPORT_SCRIPT, str(server.port)], env=env, timeout=120
        )
        assert result.returncode == 0, result.stderr
    messages = [
        item["data"]["baseData"]
        for item in received
        if item.get("data", {}).get("baseType") == "MessageData"
    ]
    (line,) = [m for m in messages if m.get("message") == "relay line exported"]
    assert line["properties"]["submissionId"] == "0123456789abcdef0123456789abcdef"
    assert line["properties"]["runId"] == "run_42"

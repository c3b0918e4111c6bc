"""Offline local mode: the Makefile starts and stops the local services cleanly on the ports the
settings name, and a full offline run (app on the emulated host, services as a separate
process, sample subscriber behind the Event Grid webhook) delivers the run's event."""

from __future__ import annotations

import asyncio
import json
import logging
import os
import subprocess
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from aiohttp import web
from azure.core.credentials import AzureKeyCredential
from azure.eventgrid import EventGridEvent, EventGridPublisherClient

from devhost.azurite import AzuriteTables
from devhost.clock import VirtualClock
from devhost.functions_host import EmulatedHost
from devhost.server_thread import ServerThread
from shared.adapters.clients import close_clients
from shared.adapters.runtime import reset_worker_state
from tests.processes import free_port, port_open, run_captured

ROOT = Path(__file__).resolve().parents[2]


def make(target: str, **variables: str) -> subprocess.CompletedProcess[str]:
    args = ["make", "--no-print-directory", target, *(f"{k}={v}" for k, v in variables.items())]
    return run_captured(args, timeout=120)


class OfflineProcess:
    def __init__(self, tmp_path: Path, functions_port: int) -> None:
        self.agents_port, self.eventgrid_port = free_port(), free_port()
        sample = json.loads((ROOT / "local.settings.sample.json").read_text())
        values = sample["Values"]
        values["AZURE_AI_PROJECT_ENDPOINT"] = (
            f"http://127.0.0.1:{self.agents_port}/api/projects/local"
        )
        values["EVENTGRID_TOPIC_ENDPOINT"] = f"http://127.0.0.1:{self.eventgrid_port}/api/events"
        self.values: dict[str, str] = values
        self.settings = tmp_path / "local.settings.json"
        self.settings.write_text(json.dumps(sample))
        self.state_dir = tmp_path / "offline"
        self.vars = {
            "SETTINGS": str(self.settings),
            "OFFLINE_DIR": str(self.state_dir),
            "FUNCTIONS_PORT": str(functions_port),
        }

    def up(self) -> dict[str, Any]:
        result = make("services-up", **self.vars)
        assert result.returncode == 0, result.stderr
        described: dict[str, Any] = json.loads((self.state_dir / "services.json").read_text())
        return described

    def down(self) -> None:
        result = make("services-down", **self.vars)
        assert result.returncode == 0, result.stderr


def test_services_start_on_the_configured_ports_and_stop_cleanly(tmp_path: Path) -> None:
    offline = OfflineProcess(tmp_path, functions_port=free_port())
    described = offline.up()
    try:
        pid = int((offline.state_dir / "services.pid").read_text())
        assert port_open(offline.agents_port)
        assert port_open(offline.eventgrid_port)
        assert set(described["agents"]) == {"echo", "instant-echo", "slow-echo"}
        assert described["agents"]["echo"] in described["curl"]
        again = make("services-up", **offline.vars)
        assert "already running" in again.stdout
        key = offline.values["EVENTGRID_TOPIC_KEY"]
        with EventGridPublisherClient(
            described["eventGridEndpoint"], AzureKeyCredential(key)
        ) as eg:
            eg.send(EventGridEvent(subject="s", event_type="Probe", data={}, data_version="1"))
    finally:
        offline.down()
    assert not port_open(offline.agents_port)
    assert not port_open(offline.eventgrid_port)
    with pytest.raises(ProcessLookupError):
        os.kill(pid, 0)
    assert "not running" in make("services-down", **offline.vars).stdout


@pytest.fixture
def azurite() -> Iterator[AzuriteTables]:
    with AzuriteTables() as started:
        yield started


def test_a_full_offline_run_reaches_the_sample_subscriber(
    tmp_path: Path, azurite: AzuriteTables, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.INFO, logger="agent_run_relay")
    bridge_port = free_port()
    offline = OfflineProcess(tmp_path, functions_port=bridge_port)
    env = {**offline.values, "AzureWebJobsStorage": azurite.connection_string}
    with EmulatedHost(
        "function_app", clock=VirtualClock(), env=env, worker_reset_hooks=[reset_worker_state]
    ) as host:

        async def forward(request: web.Request) -> web.Response:
            # What `func start` does on its port: hand the webhook call to the host. Core Tools
            # does not ask for keys locally, so the bridge supplies the system key.
            body = await request.read()
            query = {**request.query, "code": host.keys.eventgrid_system_key}
            response = await asyncio.get_running_loop().run_in_executor(
                None,
                lambda: host.http(
                    request.method,
                    request.path,
                    body=body,
                    headers=dict(request.headers),
                    query=query,
                    key=None,
                ),
            )
            return web.Response(
                status=response.status_code,
                body=response.get_body(),
                headers=dict(response.headers),
            )

        def bridge() -> web.Application:
            app = web.Application()
            app.router.add_route("*", "/{tail:.*}", forward)
            return app

        with ServerThread(bridge, port=bridge_port):
            described = offline.up()
            try:
                response = host.http(
                    "POST",
                    "/api/runs",
                    body=json.dumps(
                        {"agentId": described["agents"]["instant-echo"], "input": "hi"}
                    ),
                    headers={"Content-Type": "application/json"},
                )
                assert response.status_code == 202
                submission_id = json.loads(response.get_body())["id"]
                view = host.run_until_complete(submission_id)
                assert view.output["status"] == "completed"
                assert view.output["result"]["output"]["text"] == "echo: hi"
                summary = None
                deadline = time.monotonic() + 20
                while summary is None and time.monotonic() < deadline:
                    summary = next(
                        (
                            r.getMessage()
                            for r in caplog.records
                            if r.getMessage().startswith("AgentRunCompleted ")
                            and submission_id in r.getMessage()
                        ),
                        None,
                    )
                    time.sleep(0.1)  # waiting on another process's real-time delivery loop
                assert summary is not None, "the offline topic never delivered the event"
                assert "status completed" in summary
            finally:
                offline.down()
            host.run_on_worker(close_clients())

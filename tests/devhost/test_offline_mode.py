"""Offline local mode: the Makefile starts and stops the local services cleanly on the ports the
settings name, and a full offline run (app on the emulated host, services as a separate
process, sample subscriber behind the Event Grid webhook) delivers the run's event. The local
Foundry project service comes along: its echo agents answer the real openai client, its
endpoint reaches the app's environment as FOUNDRY_PROJECT_ENDPOINT, and the banner shows it."""

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
from urllib.parse import urlsplit

import openai
import pytest
from aiohttp import web
from azure.core.credentials import AzureKeyCredential
from azure.eventgrid import EventGridEvent, EventGridPublisherClient

from devhost.azurite import AzuriteTables
from devhost.clock import VirtualClock
from devhost.foundry_service import make_project_client
from devhost.functions_host import EmulatedHost
from devhost.offline import OfflinePlan, OfflineServices, plan_from_settings
from devhost.server_thread import ServerThread
from devhost.start import apply_settings, banner, offline_app_settings
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
        foundry = described["appSettings"]["FOUNDRY_PROJECT_ENDPOINT"]
        assert foundry == described["foundryEndpoint"]
        foundry_port = urlsplit(foundry).port
        assert foundry_port is not None
        assert port_open(foundry_port)
        assert (offline.state_dir / "foundry-state.json").is_file()  # the echo agents
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
    assert not port_open(foundry_port)
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


# ---------------------------------------------------------------------------- Foundry


def _plan(**changes: Any) -> OfflinePlan:
    plan = OfflinePlan(
        agents_port=0,
        eventgrid_port=0,
        eventgrid_key="a2V5",
        event_schema="eventgrid",
        deliver_to="http://127.0.0.1:9/runtime/webhooks/EventGrid?functionName=x",
    )
    return OfflinePlan(**{**plan.__dict__, **changes})


def _finish(client: openai.OpenAI, clock: VirtualClock, rid: str) -> Any:
    for _ in range(120):
        response = client.responses.retrieve(rid)
        if response.status not in ("queued", "in_progress"):
            return response
        clock.advance(1)
    raise AssertionError("the response never ended")


def _agent(name: str) -> dict[str, Any]:
    return {"agent_reference": {"type": "agent_reference", "name": name}}


def test_offline_foundry_echo_agents_answer_the_openai_client(tmp_path: Path) -> None:
    clock = VirtualClock()
    state = tmp_path / "foundry-state.json"
    services = OfflineServices(_plan(), seed=1, clock=clock, foundry_state_file=state).start()
    try:
        assert services.foundry is not None
        settings = services.app_settings()
        endpoint = settings["FOUNDRY_PROJECT_ENDPOINT"]
        assert endpoint == services.foundry.endpoint
        assert urlsplit(endpoint).path == "/api/projects/local"
        assert settings["AZURE_AI_PROJECT_ENDPOINT"] == services.agents.endpoint
        described = services.describe(7071)
        assert described["appSettings"] == settings
        # The classic echo agents' names, plus the tool-calling one.
        assert set(described["foundryAgents"]) == set(described["agents"]) | {"echo-tools"}
        assert '-d \'{"agent": {"name": "echo"}, "input": "hello"}\'' in described["foundryCurl"]
        with openai.OpenAI(
            base_url=endpoint + "/openai/v1", api_key="local", max_retries=0
        ) as client:
            created = client.responses.create(
                input="hello", background=True, extra_body=_agent("echo")
            )
            assert created.status == "queued"
            clock.advance(1)
            assert client.responses.retrieve(created.id).status == "in_progress"
            done = _finish(client, clock, created.id)
            assert done.status == "completed"
            assert done.output_text == "Echo: hello"
            assert (done.model_extra or {})["agent_reference"]["name"] == "echo"

            asking = client.responses.create(
                input="Weather?", background=True, extra_body=_agent("echo-tools")
            )
            asked = _finish(client, clock, asking.id)
            calls = [item for item in asked.output if item.type == "function_call"]
            assert [(c.name, json.loads(c.arguments)) for c in calls] == [
                ("get_weather", {"city": "Paris"})
            ]
            answering = client.responses.create(
                input=[
                    {"type": "function_call_output", "call_id": calls[0].call_id, "output": "sunny"}
                ],
                previous_response_id=asking.id,
                background=True,
                extra_body=_agent("echo-tools"),
            )
            assert _finish(client, clock, answering.id).output_text == "Echo: sunny"
        with make_project_client(services.foundry) as project:
            tools = project.agents.get("echo-tools").versions["latest"]["definition"]["tools"]
            assert [tool["name"] for tool in tools] == ["get_weather"]
    finally:
        services.stop()

    # A restart keeps the responses and finds the echo agents instead of adding versions.
    again = OfflineServices(_plan(), seed=2, clock=clock, foundry_state_file=state).start()
    try:
        assert again.foundry is not None
        endpoint = again.app_settings()["FOUNDRY_PROJECT_ENDPOINT"]
        with openai.OpenAI(
            base_url=endpoint + "/openai/v1", api_key="local", max_retries=0
        ) as client:
            assert client.responses.retrieve(created.id).output_text == "Echo: hello"
        with make_project_client(again.foundry) as project:
            assert project.agents.get("echo").versions["latest"]["version"] == "1"
    finally:
        again.stop()


def test_the_foundry_endpoint_follows_the_settings() -> None:
    values = {
        "AZURE_AI_PROJECT_ENDPOINT": "http://127.0.0.1:8091/api/projects/local",
        "EVENTGRID_TOPIC_ENDPOINT": "http://127.0.0.1:8092/api/events",
    }
    unset = plan_from_settings(values, 7071)
    assert (unset.foundry_port, unset.foundry_project) == (0, "local")  # any free port
    local = plan_from_settings(
        {**values, "FOUNDRY_PROJECT_ENDPOINT": "http://127.0.0.1:8095/api/projects/p1"}, 7071
    )
    assert (local.foundry_port, local.foundry_project) == (8095, "p1")
    remote = plan_from_settings(
        {**values, "FOUNDRY_PROJECT_ENDPOINT": "https://a.services.ai.azure.com/api/projects/p"},
        7071,
    )
    assert remote.foundry_port is None  # the app uses the remote project: nothing to start
    services = OfflineServices(_plan(foundry_port=None), clock=VirtualClock()).start()
    try:
        assert services.foundry is None
        assert "FOUNDRY_PROJECT_ENDPOINT" not in services.app_settings()
        assert "foundryEndpoint" not in services.describe(7071)
    finally:
        services.stop()


def test_the_development_host_gets_the_foundry_endpoint_and_shows_the_agents(
    tmp_path: Path,
) -> None:
    services = OfflineServices(_plan(), clock=VirtualClock()).start()
    try:
        described = services.describe(7071)
    finally:
        services.stop()
    path = tmp_path / "services.json"
    path.write_text(json.dumps(described))
    # What `python -m devhost.start --services` does after loading the settings file.
    environ = {"AZURE_AI_PROJECT_ENDPOINT": described["appSettings"]["AZURE_AI_PROJECT_ENDPOINT"]}
    skipped = apply_settings(offline_app_settings(path), environ)
    assert skipped == ["AZURE_AI_PROJECT_ENDPOINT"]  # set by the settings file already
    assert environ["FOUNDRY_PROJECT_ENDPOINT"] == described["foundryEndpoint"]
    assert offline_app_settings(None) == {}

    text = banner(7071, {"functionKey": "K"}, path, 0)
    lines = text.splitlines()
    assert f"FOUNDRY_PROJECT_ENDPOINT={described['foundryEndpoint']}" in text
    assert "echo, echo-tools, instant-echo, slow-echo" in text
    curls = [line.strip() for line in lines if line.strip().startswith("curl -i -X POST ")]
    assert len(curls) == 2
    assert described["agents"]["echo"] in curls[0]  # the classic one stays first
    assert curls[1] == (
        "curl -i -X POST http://localhost:7071/api/runs -H 'Content-Type: application/json' "
        '-H \'x-functions-key: K\' -d \'{"agent": {"name": "echo"}, "input": "hello"}\''
    )

"""The whole product on the test bed: emulated host + loopback Agents services + Event Grid topic.

`RelayBed` starts the four with one virtual clock (the classic Agents service, the Foundry
project service for the Responses API, the topic and the host), points the app's settings at
the loopback services and offers small helpers that go through public surfaces only (HTTP
functions, the events the topic received, the requests the services recorded).
"""

from __future__ import annotations

import json
from collections.abc import Iterator, Mapping
from contextlib import contextmanager
from pathlib import Path
from typing import Any, Literal

import azure.functions as func

from devhost.agents_service import AgentsService, RunScript, make_sync_client
from devhost.clock import VirtualClock
from devhost.eventgrid_topic import EventGridTopic
from devhost.foundry_service import FoundryService, ResponseScript
from devhost.functions_host import CrashPoint, EmulatedHost
from shared.adapters.clients import close_clients
from shared.adapters.runtime import reset_worker_state

ROOT = Path(__file__).resolve().parents[1]
TOPIC_KEY = "cmVsYXktdGVzdC10b3BpYy1rZXktMDEyMzQ1Njc4OWFiY2RlZg=="
# One script per final status the service can report, shared by the end-to-end suites.
TERMINAL_SCRIPTS: dict[str, RunScript] = {
    "completed": RunScript(
        duration_seconds=40,
        final_status="completed",
        output_text="the answer",
        usage={"prompt_tokens": 12, "completion_tokens": 30, "total_tokens": 42},
    ),
    "failed": RunScript(
        duration_seconds=25,
        final_status="failed",
        last_error={"code": "server_error", "message": "model crashed"},
    ),
    "cancelled": RunScript(duration_seconds=30, final_status="cancelled"),
    "expired": RunScript(duration_seconds=30, final_status="expired"),
    "incomplete": RunScript(
        duration_seconds=30, final_status="incomplete", incomplete_details={"reason": "max_tokens"}
    ),
}
# The same endings for a Foundry agent's response (the Responses API has no `expired`).
FOUNDRY_TERMINAL_SCRIPTS: dict[str, ResponseScript] = {
    "completed": ResponseScript(
        duration_seconds=40,
        output_text="the answer",
        usage={"input_tokens": 12, "output_tokens": 30},
    ),
    "failed": ResponseScript(
        duration_seconds=25,
        final_status="failed",
        error={"code": "server_error", "message": "model crashed"},
    ),
    "cancelled": ResponseScript(duration_seconds=30, final_status="cancelled"),
    "incomplete": ResponseScript(
        duration_seconds=30, final_status="incomplete", incomplete_reason="max_output_tokens"
    ),
}
FOUNDRY_AGENT = "relay-foundry-test"
EVENT_DATA_SCHEMA = json.loads((ROOT / "docs" / "agent-run-completed.schema.json").read_text())


class RelayBed:
    def __init__(
        self,
        host: EmulatedHost,
        agents: AgentsService,
        topic: EventGridTopic,
        foundry: FoundryService,
    ) -> None:
        self.host = host
        self.agents = agents
        self.topic = topic
        self.foundry = foundry
        self.clock = host.clock
        with make_sync_client(agents) as admin:
            self.agent_id = admin.create_agent(model="gpt-4o-mini", name="relay-test").id
        self.foundry_agent = FOUNDRY_AGENT
        foundry.create_agent_version(FOUNDRY_AGENT)

    # HTTP surface -------------------------------------------------------------------------
    def post_run(self, body: Any, headers: Mapping[str, str] | None = None) -> func.HttpResponse:
        raw = body if isinstance(body, bytes | str) else json.dumps(body)
        return self.host.http(
            "POST",
            "/api/runs",
            body=raw,
            headers={"Content-Type": "application/json", **(headers or {})},
        )

    def submit(self, **fields: Any) -> str:
        body = {"agentId": self.agent_id, "input": "hello", **fields}
        return self.submit_body(body)

    def submit_foundry(self, **fields: Any) -> str:
        """Submit for the bed's Foundry agent (`agent`), the Responses API backend."""
        body = {"agent": {"name": self.foundry_agent}, "input": "hello", **fields}
        return self.submit_body(body)

    def submit_body(self, body: dict[str, Any]) -> str:
        response = self.post_run(body)
        assert response.status_code == 202, response.get_body()
        return str(json.loads(response.get_body())["id"])

    def status(self, submission_id: str) -> dict[str, Any]:
        response = self.host.http("GET", f"/api/runs/{submission_id}")
        assert response.status_code == 200, response.get_body()
        body: dict[str, Any] = json.loads(response.get_body())
        return body

    def crash_every_third(self, kind: str) -> list[CrashPoint]:
        """Crash the worker at every third crash point of `kind`; the list fills as it does."""
        crashed: list[CrashPoint] = []

        def crash(point: CrashPoint) -> bool:
            if point.kind == kind and point.step % 3 == 0:
                crashed.append(point)
                return True
            return False

        self.host.crash_when = crash
        return crashed

    def complete(self, submission_id: str, **limits: Any) -> dict[str, Any]:
        self.host.run_until_complete(submission_id, **limits)
        return self.status(submission_id)

    # What the services saw ------------------------------------------------------------------
    def events_for(self, submission_id: str) -> list[dict[str, Any]]:
        found = []
        for received in self.topic.events:
            data = received.event.get("data") or {}
            if isinstance(data, dict) and data.get("submissionId") == submission_id:
                found.append(received.event)
        return found


@contextmanager
def relay_bed(
    *,
    event_schema: Literal["eventgrid", "cloudevents"] = "eventgrid",
    settings: Mapping[str, str] | None = None,
    host_json: Path = ROOT / "host.json",
) -> Iterator[RelayBed]:
    clock = VirtualClock()
    with (
        AgentsService(clock) as agents,
        FoundryService(clock) as foundry,
        EventGridTopic(clock, key=TOPIC_KEY, input_schema=event_schema) as topic,
    ):
        env = {
            "AZURE_AI_PROJECT_ENDPOINT": agents.endpoint,
            "FOUNDRY_PROJECT_ENDPOINT": foundry.endpoint,
            "EVENTGRID_TOPIC_ENDPOINT": topic.endpoint,
            "EVENTGRID_TOPIC_KEY": TOPIC_KEY,
            "EVENT_SCHEMA": event_schema,
            # Streams hold wall-clock time; the fast-path tests turn it on with short windows.
            "FAST_PATH_SECONDS": "0",
            **(settings or {}),
        }
        with EmulatedHost(
            "function_app",
            clock=clock,
            host_json=host_json,
            env=env,
            worker_reset_hooks=[reset_worker_state],
        ) as host:
            bed = RelayBed(host, agents, topic, foundry)
            try:
                yield bed
            finally:
                host.run_on_worker(close_clients())

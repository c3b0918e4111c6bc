"""The whole product on the test bed: emulated host + loopback Agents service + Event Grid topic.

`RelayBed` starts the three with one virtual clock, points the app's settings at the loopback
services and offers small helpers that go through public surfaces only (HTTP functions, the
events the topic received, the requests the Agents service recorded).
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
from devhost.functions_host import EmulatedHost
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
EVENT_DATA_SCHEMA = json.loads((ROOT / "docs" / "agent-run-completed.schema.json").read_text())


class RelayBed:
    def __init__(self, host: EmulatedHost, agents: AgentsService, topic: EventGridTopic) -> None:
        self.host = host
        self.agents = agents
        self.topic = topic
        self.clock = host.clock
        with make_sync_client(agents) as admin:
            self.agent_id = admin.create_agent(model="gpt-4o-mini", name="relay-test").id

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
        response = self.post_run(body)
        assert response.status_code == 202, response.get_body()
        return str(json.loads(response.get_body())["id"])

    def status(self, submission_id: str) -> dict[str, Any]:
        response = self.host.http("GET", f"/api/runs/{submission_id}")
        assert response.status_code == 200, response.get_body()
        body: dict[str, Any] = json.loads(response.get_body())
        return body

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
        EventGridTopic(clock, key=TOPIC_KEY, input_schema=event_schema) as topic,
    ):
        env = {
            "AZURE_AI_PROJECT_ENDPOINT": agents.endpoint,
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
            bed = RelayBed(host, agents, topic)
            try:
                yield bed
            finally:
                host.run_on_worker(close_clients())

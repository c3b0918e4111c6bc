"""Offline local mode: the test bed's Agents service and Event Grid topic as one local process.

`make start` runs this when `local.settings.json` points at loopback endpoints (the sample's
defaults): a local Agents service with scripted echo agents and a local Event Grid topic that
delivers to the sample subscriber at the Functions host's Event Grid webhook. The code is the
same the tests use; only the clock follows the wall.

    python -m devhost.offline --settings local.settings.json [--state-dir .offline]
"""

from __future__ import annotations

import argparse
import json
import secrets
import signal
import threading
from dataclasses import dataclass
from pathlib import Path
from typing import Any, cast
from urllib.parse import urlsplit

from devhost.agents_service import AgentsService, RunScript, make_sync_client
from devhost.clock import WallClock
from devhost.eventgrid_topic import EventGridTopic, Schema, SubscriptionValidationError
from shared.settings import is_loopback_url

SUBSCRIBER_FUNCTION = "on_agent_run_completed"
# Scripted agents: name -> how their runs behave (the output echoes the last user message).
ECHO_AGENTS: dict[str, RunScript] = {
    "echo": RunScript(queued_seconds=0.5, duration_seconds=3.0),
    "instant-echo": RunScript(queued_seconds=0.0, duration_seconds=0.0),
    "slow-echo": RunScript(queued_seconds=1.0, duration_seconds=60.0),
}


@dataclass(frozen=True)
class OfflinePlan:
    agents_port: int
    eventgrid_port: int
    eventgrid_key: str | None
    event_schema: Schema
    deliver_to: str


def _port(url: str, setting: str) -> int:
    if not is_loopback_url(url):
        raise SystemExit(f"{setting} is not a loopback endpoint: not starting offline services")
    parts = urlsplit(url)
    return parts.port or (443 if parts.scheme == "https" else 80)


def plan_from_settings(values: dict[str, str], functions_port: int) -> OfflinePlan:
    schema = (values.get("EVENT_SCHEMA") or "eventgrid").lower()
    if schema not in ("eventgrid", "cloudevents"):
        raise SystemExit(f"EVENT_SCHEMA must be eventgrid or cloudevents, got {schema!r}")
    return OfflinePlan(
        agents_port=_port(values.get("AZURE_AI_PROJECT_ENDPOINT", ""), "AZURE_AI_PROJECT_ENDPOINT"),
        eventgrid_port=_port(
            values.get("EVENTGRID_TOPIC_ENDPOINT", ""), "EVENTGRID_TOPIC_ENDPOINT"
        ),
        eventgrid_key=values.get("EVENTGRID_TOPIC_KEY") or None,
        event_schema=cast(Schema, schema),
        deliver_to=(
            f"http://127.0.0.1:{functions_port}/runtime/webhooks/EventGrid"
            f"?functionName={SUBSCRIBER_FUNCTION}"
        ),
    )


def uses_local_services(settings_path: Path) -> bool:
    values = json.loads(settings_path.read_text())["Values"]
    return is_loopback_url(values.get("AZURE_AI_PROJECT_ENDPOINT", "")) and is_loopback_url(
        values.get("EVENTGRID_TOPIC_ENDPOINT", "")
    )


def curl_example(functions_port: int, agent_id: str) -> str:
    body = json.dumps({"agentId": agent_id, "input": "Hello from the offline relay"})
    return (
        f"curl -i -X POST http://localhost:{functions_port}/api/runs "
        f"-H 'Content-Type: application/json' -d '{body}'"
    )


class OfflineServices:
    """The local Agents service (with echo agents) and Event Grid topic, on wall-clock time.

    Every start draws a fresh id seed: the service keeps nothing across restarts, but Azurite
    keeps the task hub, so an orchestration from before a restart must never meet an agent,
    thread or run id that now names something else. `seed` fixes them (for tests).
    """

    def __init__(self, plan: OfflinePlan, *, seed: int | None = None) -> None:
        self.plan = plan
        clock = WallClock()
        self.seed = secrets.randbits(128) if seed is None else seed
        self.agents = AgentsService(clock, seed=self.seed, port=plan.agents_port)
        self.topic = EventGridTopic(
            clock, key=plan.eventgrid_key, input_schema=plan.event_schema, port=plan.eventgrid_port
        )
        self.agent_ids: dict[str, str] = {}
        self.subscribed = False

    def start(self) -> OfflineServices:
        self.agents.start()
        self.topic.start()
        with make_sync_client(self.agents) as client:
            for name, script in ECHO_AGENTS.items():
                agent = client.create_agent(model="local-echo", name=name)
                self.agent_ids[name] = agent.id
                self.agents.scripts_by_agent[agent.id] = script
        return self

    def try_subscribe(self) -> bool:
        """Subscribe the sample function once the Functions host answers the handshake."""
        if not self.subscribed:
            try:
                self.topic.add_subscription(
                    "sample-subscriber", self.plan.deliver_to, backfill=True
                )
                self.subscribed = True
            except (SubscriptionValidationError, OSError):
                return False
        return True

    def tick(self) -> None:
        if self.try_subscribe():
            self.topic.deliver_due()

    def stop(self) -> None:
        self.topic.stop()
        self.agents.stop()

    def describe(self, functions_port: int) -> dict[str, Any]:
        return {
            "agentsEndpoint": self.agents.endpoint,
            "eventGridEndpoint": self.topic.endpoint,
            "agents": self.agent_ids,
            "deliverTo": self.plan.deliver_to,
            "curl": curl_example(functions_port, self.agent_ids["echo"]),
        }


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--settings", type=Path, default=Path("local.settings.json"))
    parser.add_argument("--state-dir", type=Path, default=Path(".offline"))
    parser.add_argument("--functions-port", type=int, default=7071)
    args = parser.parse_args(argv)
    values = json.loads(args.settings.read_text())["Values"]
    services = OfflineServices(plan_from_settings(values, args.functions_port)).start()
    stopping = threading.Event()
    # Background jobs of a shell never see SIGINT; `make services-down` sends SIGTERM.
    signal.signal(signal.SIGTERM, lambda *_: stopping.set())
    try:
        args.state_dir.mkdir(parents=True, exist_ok=True)
        description = services.describe(args.functions_port)
        (args.state_dir / "services.json").write_text(json.dumps(description, indent=2))
        print(f"local Agents service:   {description['agentsEndpoint']}", flush=True)
        print(f"local Event Grid topic: {description['eventGridEndpoint']}", flush=True)
        print(f"echo agents: {json.dumps(description['agents'])}", flush=True)
        while not stopping.wait(1.0):
            services.tick()
    except KeyboardInterrupt:
        pass
    finally:
        services.stop()
        (args.state_dir / "services.json").unlink(missing_ok=True)


if __name__ == "__main__":
    main()

"""Offline local mode: the test bed's Agents service and Event Grid topic as one local process.

`make start` runs this when `local.settings.json` points at loopback endpoints (the sample's
defaults): a local Agents service with scripted echo agents and a local Event Grid topic that
delivers to the sample subscriber at the Functions host's Event Grid webhook. The code is the
same the tests use; only the clock follows the wall.

    python -m devhost.offline --settings local.settings.json [--state-dir .offline]

The Agents service keeps its agents, threads and runs in `<state-dir>/agents-state.pickle`
across restarts (a run started before `make start` was stopped is still known after it starts
again); the scripted agents keep their ids.
"""

from __future__ import annotations

import argparse
import json
import secrets
import signal
import threading
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any, cast
from urllib.parse import quote, urlsplit

from devhost.agents_service import AgentsService, RunScript, make_sync_client
from devhost.clock import WallClock
from devhost.eventgrid_topic import EventGridTopic, Schema, SubscriptionValidationError
from shared.adapters.settings import is_loopback_url

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


def plan_from_settings(
    values: dict[str, str], functions_port: int, webhook_code: str | None = None
) -> OfflinePlan:
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
            # The development host asks for the Event Grid extension's system key, as the
            # Functions host in Azure does (Core Tools does not check keys locally).
            + (f"&code={quote(webhook_code, safe='')}" if webhook_code else "")
        ),
    )


def uses_local_services(settings_path: Path) -> bool:
    values = json.loads(settings_path.read_text())["Values"]
    return is_loopback_url(values.get("AZURE_AI_PROJECT_ENDPOINT", "")) and is_loopback_url(
        values.get("EVENTGRID_TOPIC_ENDPOINT", "")
    )


def curl_example(functions_port: int, agent_id: str, function_key: str | None = None) -> str:
    body = json.dumps({"agentId": agent_id, "input": "Hello from the offline relay"})
    key = f"-H 'x-functions-key: {function_key}' " if function_key else ""
    return (
        f"curl -i -X POST http://localhost:{functions_port}/api/runs "
        f"-H 'Content-Type: application/json' {key}-d '{body}'"
    )


def webhook_code(keys_file: Path | None) -> str | None:
    if keys_file is None:
        return None
    return str(json.loads(keys_file.read_text())["eventGridSystemKey"])


def parse_agent_seconds(items: list[str]) -> dict[str, float]:
    """`NAME=SECONDS` options: how long a scripted agent's runs stay in progress."""
    durations: dict[str, float] = {}
    for item in items:
        name, _, seconds = item.partition("=")
        if name not in ECHO_AGENTS or not seconds:
            raise SystemExit(
                f"--agent-seconds wants NAME=SECONDS with NAME in {sorted(ECHO_AGENTS)}"
            )
        durations[name] = float(seconds)
    return durations


class OfflineServices:
    """The local Agents service (with echo agents) and Event Grid topic, on wall-clock time.

    Every start draws a fresh id seed: the task hub (Azurite, or the development host's state
    file) outlives the process, so an orchestration from before a restart must never meet an
    agent, thread or run id that now names something else. `seed` fixes them (for tests).
    With `state_file` the Agents service keeps its agents, threads and runs across restarts
    (so those orchestrations find their runs), and the scripted agents keep their ids.
    `agent_seconds` changes how long a scripted agent's runs stay in progress.
    """

    def __init__(
        self,
        plan: OfflinePlan,
        *,
        seed: int | None = None,
        state_file: Path | None = None,
        agent_seconds: dict[str, float] | None = None,
    ) -> None:
        self.plan = plan
        clock = WallClock()
        self.seed = secrets.randbits(128) if seed is None else seed
        self.scripts = {
            name: replace(
                script, duration_seconds=(agent_seconds or {}).get(name, script.duration_seconds)
            )
            for name, script in ECHO_AGENTS.items()
        }
        self.agents = AgentsService(
            clock, seed=self.seed, port=plan.agents_port, state_file=state_file
        )
        self.topic = EventGridTopic(
            clock, key=plan.eventgrid_key, input_schema=plan.event_schema, port=plan.eventgrid_port
        )
        self.agent_ids: dict[str, str] = {}
        self.subscribed = False

    def start(self) -> OfflineServices:
        self.agents.start()
        self.topic.start()
        with make_sync_client(self.agents) as client:
            for name, script in self.scripts.items():
                agent_id = self.agents.agent_named(name)
                if agent_id is None:
                    agent_id = client.create_agent(model="local-echo", name=name).id
                self.agent_ids[name] = agent_id
                self.agents.scripts_by_agent[agent_id] = script
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
    parser.add_argument(
        "--webhook-keys",
        type=Path,
        default=None,
        help="the development host's keys.json: its Event Grid system key is sent to the "
        "webhook (Core Tools does not check keys locally)",
    )
    parser.add_argument(
        "--agent-seconds",
        action="append",
        default=[],
        metavar="NAME=SECONDS",
        help="how long a scripted agent's runs stay in progress (e.g. slow-echo=10)",
    )
    args = parser.parse_args(argv)
    values = json.loads(args.settings.read_text())["Values"]
    args.state_dir.mkdir(parents=True, exist_ok=True)
    services = OfflineServices(
        plan_from_settings(values, args.functions_port, webhook_code(args.webhook_keys)),
        state_file=args.state_dir / "agents-state.pickle",
        agent_seconds=parse_agent_seconds(args.agent_seconds),
    ).start()
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

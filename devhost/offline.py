"""Offline local mode: the test bed's Agents services and Event Grid topic as one local process.

`make start` runs this when `local.settings.json` points at loopback endpoints (the sample's
defaults): a local (classic) Agents service with scripted echo agents, a local Foundry project
service (Responses API) with the same echo agents plus `echo-tools`, and a local Event Grid
topic that delivers to the sample subscriber at the Functions host's Event Grid webhook. The
code is the same the tests use; only the clock follows the wall.

    python -m devhost.offline --settings local.settings.json [--state-dir .offline]

The Agents service keeps its agents, threads and runs in `<state-dir>/agents-state.pickle`
across restarts (a run started before `make start` was stopped is still known after it starts
again); the scripted agents keep their ids. The Foundry service keeps its responses,
conversations and agent versions in `<state-dir>/foundry-state.json` the same way.

The Foundry service listens on the port of `FOUNDRY_PROJECT_ENDPOINT` when the settings name a
loopback one, on a free port when they name none (and is not started when they name a remote
one). Its endpoint is in `services.json` (`appSettings.FOUNDRY_PROJECT_ENDPOINT`), which
`python -m devhost.start --services ...` puts into the app's environment.
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

from devhost.agents_service import AgentsService, Clock, RunScript, make_sync_client
from devhost.clock import WallClock
from devhost.eventgrid_topic import EventGridTopic, Schema, SubscriptionValidationError
from devhost.foundry_service import DEFAULT_PROJECT, FoundryService, ResponseScript
from shared.adapters.settings import is_loopback_url

SUBSCRIBER_FUNCTION = "on_agent_run_completed"
# Scripted agents: name -> how their runs behave (the output echoes the last user message).
ECHO_AGENTS: dict[str, RunScript] = {
    "echo": RunScript(queued_seconds=0.5, duration_seconds=3.0),
    "instant-echo": RunScript(queued_seconds=0.0, duration_seconds=0.0),
    "slow-echo": RunScript(queued_seconds=1.0, duration_seconds=60.0),
}
# The Foundry service's scripted agents (prompt agent versions, found by name): the classic
# echo agents' names and timings (the answer is "Echo: <last user text>"), and `echo-tools`,
# whose first response asks for one function call and whose next response (the one bringing
# the function_call_output, by previous_response_id or in the same conversation) answers with
# an echo of that output.
WEATHER_TOOL = {
    "type": "function",
    "name": "get_weather",
    "description": "The current weather in a city.",
    "parameters": {
        "type": "object",
        "properties": {"city": {"type": "string"}},
        "required": ["city"],
        "additionalProperties": False,
    },
    "strict": True,
}
FOUNDRY_ECHO_AGENTS: dict[str, ResponseScript] = {
    "echo": ResponseScript(queued_seconds=0.5, duration_seconds=3.0),
    "instant-echo": ResponseScript(queued_seconds=0.0, duration_seconds=0.0),
    "slow-echo": ResponseScript(queued_seconds=1.0, duration_seconds=60.0),
    "echo-tools": ResponseScript(
        queued_seconds=0.5,
        duration_seconds=3.0,
        function_calls=[{"name": "get_weather", "arguments": {"city": "Paris"}}],
        answer_function_outputs=True,
    ),
}
FOUNDRY_AGENT_TOOLS: dict[str, list[dict[str, Any]]] = {"echo-tools": [WEATHER_TOOL]}
FOUNDRY_SETTING = "FOUNDRY_PROJECT_ENDPOINT"


@dataclass(frozen=True)
class OfflinePlan:
    agents_port: int
    eventgrid_port: int
    eventgrid_key: str | None
    event_schema: Schema
    deliver_to: str
    # The local Foundry project service: its port (0: any free one; None: not started, the
    # settings name a remote project) and project name.
    foundry_port: int | None = 0
    foundry_project: str = DEFAULT_PROJECT


def _port(url: str, setting: str) -> int:
    if not is_loopback_url(url):
        raise SystemExit(f"{setting} is not a loopback endpoint: not starting offline services")
    parts = urlsplit(url)
    return parts.port or (443 if parts.scheme == "https" else 80)


def _foundry_target(url: str) -> tuple[int | None, str]:
    """(port, project) of the local Foundry service for a FOUNDRY_PROJECT_ENDPOINT setting."""
    if not url:
        return 0, DEFAULT_PROJECT
    if not is_loopback_url(url):
        return None, DEFAULT_PROJECT
    parts = urlsplit(url)
    segments = [s for s in parts.path.split("/") if s]
    project = segments[2] if segments[:2] == ["api", "projects"] and len(segments) > 2 else None
    return parts.port or (443 if parts.scheme == "https" else 80), project or DEFAULT_PROJECT


def plan_from_settings(
    values: dict[str, str], functions_port: int, webhook_code: str | None = None
) -> OfflinePlan:
    schema = (values.get("EVENT_SCHEMA") or "eventgrid").lower()
    if schema not in ("eventgrid", "cloudevents"):
        raise SystemExit(f"EVENT_SCHEMA must be eventgrid or cloudevents, got {schema!r}")
    foundry_port, foundry_project = _foundry_target(values.get(FOUNDRY_SETTING, ""))
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
        foundry_port=foundry_port,
        foundry_project=foundry_project,
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


def foundry_curl_example(
    functions_port: int, agent_name: str, function_key: str | None = None
) -> str:
    """A submission for a Foundry agent (`agent`, the relay's Responses API backend)."""
    body = json.dumps({"agent": {"name": agent_name}, "input": "hello"})
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
    """`NAME=SECONDS` options: how long a scripted agent's runs (classic) and responses
    (Foundry) stay in progress; a name both services have changes both."""
    durations: dict[str, float] = {}
    names = sorted(set(ECHO_AGENTS) | set(FOUNDRY_ECHO_AGENTS))
    for item in items:
        name, _, seconds = item.partition("=")
        if name not in names or not seconds:
            raise SystemExit(f"--agent-seconds wants NAME=SECONDS with NAME in {names}")
        durations[name] = float(seconds)
    return durations


class OfflineServices:
    """The local Agents and Foundry services (with echo agents) and Event Grid topic, on
    wall-clock time.

    Every start draws a fresh id seed: the task hub (Azurite, or the development host's state
    file) outlives the process, so an orchestration from before a restart must never meet an
    agent, thread or run id that now names something else. `seed` fixes them (for tests).
    With `state_file` the Agents service keeps its agents, threads and runs across restarts
    (so those orchestrations find their runs), and the scripted agents keep their ids.
    `agent_seconds` changes how long a scripted agent's runs stay in progress. The Foundry
    service (unless the plan says not to start it) gets the same treatment: a fresh id seed,
    its state in `foundry_state_file`, its echo agents found by name or created.
    """

    def __init__(
        self,
        plan: OfflinePlan,
        *,
        seed: int | None = None,
        state_file: Path | None = None,
        agent_seconds: dict[str, float] | None = None,
        foundry_state_file: Path | None = None,
        clock: Clock | None = None,
    ) -> None:
        self.plan = plan
        # The wall clock, as `make start` runs them; tests may pass a VirtualClock.
        clock = WallClock() if clock is None else clock
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
        self.foundry_scripts = {
            name: replace(
                script, duration_seconds=(agent_seconds or {}).get(name, script.duration_seconds)
            )
            for name, script in FOUNDRY_ECHO_AGENTS.items()
        }
        self.foundry: FoundryService | None = None
        if plan.foundry_port is not None:
            # Its own id stream (the classic service draws from `seed` itself).
            self.foundry = FoundryService(
                clock,
                seed=self.seed + 1,
                port=plan.foundry_port,
                project=plan.foundry_project,
                state_file=foundry_state_file,
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
        if self.foundry is not None:
            self.foundry.start()
            # An agent created later (agents.create_version) answers like `echo`.
            self.foundry.default_script = self.foundry_scripts["echo"]
            for name, response_script in self.foundry_scripts.items():
                if not self.foundry.has_agent(name):
                    self.foundry.create_agent_version(
                        name,
                        model="local-echo",
                        instructions="Echo the last user message.",
                        tools=FOUNDRY_AGENT_TOOLS.get(name, []),
                    )
                self.foundry.scripts_by_agent[name] = response_script
        return self

    def app_settings(self) -> dict[str, str]:
        """The endpoints the app needs for these services (`python -m devhost.start` puts
        those the settings file leaves unset into the app's environment)."""
        settings = {"AZURE_AI_PROJECT_ENDPOINT": self.agents.endpoint}
        if self.foundry is not None:
            settings[FOUNDRY_SETTING] = self.foundry.endpoint
        return settings

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
        if self.foundry is not None:
            self.foundry.stop()
        self.agents.stop()

    def describe(self, functions_port: int) -> dict[str, Any]:
        described: dict[str, Any] = {
            "agentsEndpoint": self.agents.endpoint,
            "eventGridEndpoint": self.topic.endpoint,
            "agents": self.agent_ids,
            "deliverTo": self.plan.deliver_to,
            "curl": curl_example(functions_port, self.agent_ids["echo"]),
            "appSettings": self.app_settings(),
        }
        if self.foundry is not None:
            described["foundryEndpoint"] = self.foundry.endpoint
            described["foundryAgents"] = sorted(self.foundry_scripts)
            described["foundryCurl"] = foundry_curl_example(functions_port, "echo")
        return described


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
        foundry_state_file=args.state_dir / "foundry-state.json",
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
        if "foundryEndpoint" in description:
            print(f"local Foundry project:  {description['foundryEndpoint']}", flush=True)
            print(f"Foundry echo agents: {', '.join(description['foundryAgents'])}", flush=True)
        while not stopping.wait(1.0):
            services.tick()
    except KeyboardInterrupt:
        pass
    finally:
        services.stop()
        (args.state_dir / "services.json").unlink(missing_ok=True)


if __name__ == "__main__":
    main()

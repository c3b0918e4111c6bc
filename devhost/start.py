"""The app on the development host, on the wall clock: `make start` where Core Tools is missing.

    python -m devhost.start [--settings local.settings.json] [--port 7071]
                            [--state-dir .azurite/devhost] [--services .offline/services.json]

This is an emulation of the Azure Functions host for local development (`devhost/`, the host
the tests use), not the real one: install Azure Functions Core Tools v4 (`npm install -g
azure-functions-core-tools@4 --unsafe-perm true`, needs internet access) and `make start`
runs `func start` instead. What it does, like `func start`:

- loads `Values` of the settings file into the environment (a variable already set wins,
  as with Core Tools), then the offline services' endpoints the settings leave unset
  (`appSettings` of `--services`, e.g. FOUNDRY_PROJECT_ENDPOINT, the local Foundry project),
  then indexes `function_app.py` as the Python worker does;
- serves the app's routes on http://localhost:PORT (`/api/...`, the Durable webhooks and the
  Event Grid webhook `/runtime/webhooks/EventGrid?functionName=...`) with the function keys
  the Functions host checks in Azure (401 without one; Core Tools skips that locally). The
  keys are generated once and kept in `<state-dir>/keys.json`;
- runs orchestrations, activities and durable timers on the real clock (`WallClockDriver`),
  and keeps the task hub (instances, histories, queued messages, timers) in
  `<state-dir>/durable-state.json`, so a run started before a restart finishes after it.

`--keys` creates the keys if needed, prints where they are and exits: the Makefile hands that
file to the offline services, which send its Event Grid system key to the webhook.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import logging
import os
import secrets
import signal
import sys
import threading
from collections.abc import Mapping, MutableMapping
from datetime import UTC, datetime
from pathlib import Path

from aiohttp import web

from devhost.clock import RealTimeClock
from devhost.functions_host import EmulatedHost
from devhost.server_thread import ServerThread

log = logging.getLogger("devhost.start")

CORE_TOOLS_INSTALL = "npm install -g azure-functions-core-tools@4 --unsafe-perm true"
KEY_NAMES = ("functionKey", "masterKey", "durableTaskSystemKey", "eventGridSystemKey")
# The driver wakes at least this often even when nothing is due (a safety net: commits and
# client operations wake it at once).
MAX_IDLE_SECONDS = 1.0


# ---------------------------------------------------------------------------- settings


def load_settings_values(path: Path) -> dict[str, str]:
    """The `Values` of a local.settings.json, as Core Tools reads them."""
    document = json.loads(path.read_text(encoding="utf-8"))
    if document.get("IsEncrypted"):
        raise SystemExit(f"{path} is encrypted (IsEncrypted: true): decrypt it first")
    values = document.get("Values") or {}
    return {str(k): "" if v is None else str(v) for k, v in values.items()}


def apply_settings(values: Mapping[str, str], environ: MutableMapping[str, str]) -> list[str]:
    """Put settings into the environment; a variable already set is kept (as `func start`
    does: it skips such a setting with a warning). Returns the names skipped."""
    skipped = []
    for name, value in values.items():
        if name in environ:
            skipped.append(name)
        else:
            environ[name] = value
    return skipped


def offline_app_settings(services: Path | None) -> dict[str, str]:
    """The endpoints of the offline services (`appSettings` of their services.json)."""
    if services is None or not services.is_file():
        return {}
    described = json.loads(services.read_text(encoding="utf-8"))
    return {str(k): str(v) for k, v in (described.get("appSettings") or {}).items()}


def load_or_create_keys(state_dir: Path) -> dict[str, str]:
    """The host's keys, generated once (the real host keeps its keys in storage too)."""
    path = state_dir / "keys.json"
    try:
        keys: dict[str, str] = json.loads(path.read_text(encoding="utf-8"))
        if all(keys.get(name) for name in KEY_NAMES):
            return keys
    except FileNotFoundError:
        pass
    keys = {name: secrets.token_urlsafe(32) for name in KEY_NAMES}
    state_dir.mkdir(parents=True, exist_ok=True)
    temporary = path.with_suffix(".tmp")
    temporary.write_text(json.dumps(keys, indent=2), encoding="utf-8")
    os.replace(temporary, path)
    return keys


# ---------------------------------------------------------------------------- the driver


class WallClockDriver:
    """Runs the host's durable work on the real clock, in a thread of its own.

    Each turn: run everything ready (activities, queued messages, timers due by now) until the
    engine is idle, then sleep until the next live timer is due or a commit (an HTTP function
    starting an orchestration, raising an event, terminating) wakes it.
    """

    def __init__(self, host: EmulatedHost) -> None:
        self.host = host
        self._wake = threading.Event()
        self._stopping = threading.Event()
        self._thread = threading.Thread(target=self._run, name="devhost-driver", daemon=True)
        host.on_commit = self._wake.set

    def start(self) -> WallClockDriver:
        self._thread.start()
        return self

    def stop(self, timeout: float = 5.0) -> None:
        self._stopping.set()
        self._wake.set()
        self._thread.join(timeout)

    def _run(self) -> None:
        while not self._stopping.is_set():
            self._wake.clear()
            try:
                if self.host.has_ready_work():
                    self.host.run_until_idle()
                    continue
                due = self.host.next_timer_at()
            except Exception:
                # The instance is marked failed where the engine does; keep serving the rest.
                log.exception("the durable engine failed a step")
                self._stopping.wait(MAX_IDLE_SECONDS)
                continue
            wait = MAX_IDLE_SECONDS
            if due is not None:
                wait = min(wait, max(0.0, (due - datetime.now(UTC)).total_seconds()))
            self._wake.wait(wait)


# ---------------------------------------------------------------------------- HTTP


def front_door_app(host: EmulatedHost) -> web.Application:
    """Every request goes through the host's front door (routes, keys, webhooks)."""

    async def forward(request: web.Request) -> web.Response:
        body = await request.read()
        query = dict(request.query)
        headers = dict(request.headers)
        response = await asyncio.get_running_loop().run_in_executor(
            None,
            lambda: host.http(
                request.method, request.path, body=body, headers=headers, query=query, key=None
            ),
        )
        log.info("%s %s -> %s", request.method, request.path, response.status_code)
        while host.http_errors:
            # What the host logs for a failed invocation (the client only sees an empty 500).
            error = host.http_errors.pop(0)
            log.error("%s %s failed", request.method, request.path, exc_info=error)
        out_headers = {
            k: v
            for k, v in dict(response.headers).items()
            if k.lower() not in ("content-length", "transfer-encoding", "connection")
        }
        if response.mimetype and not any(k.lower() == "content-type" for k in out_headers):
            charset = f"; charset={response.charset}" if response.charset else ""
            out_headers["Content-Type"] = f"{response.mimetype}{charset}"
        return web.Response(
            status=response.status_code, body=response.get_body(), headers=out_headers
        )

    app = web.Application(client_max_size=100 * 1024 * 1024)
    app.router.add_route("*", "/{tail:.*}", forward)
    return app


# ---------------------------------------------------------------------------- main


def banner(port: int, keys: Mapping[str, str], services: Path | None, loaded: int) -> str:
    lines = [
        "",
        "=" * 78,
        "Development host: an EMULATION of the Azure Functions host for local development",
        "(devhost/, the host the tests use), running because Core Tools (`func`) is not",
        "installed. For the real host, install Core Tools v4 (needs internet access):",
        f"  {CORE_TOOLS_INSTALL}",
        "and run `make start` again.",
        "",
        f"Functions: http://localhost:{port}/api/runs (POST), /api/runs/{{id}} (GET), ...",
        f"Event Grid webhook: http://localhost:{port}/runtime/webhooks/EventGrid"
        "?functionName=on_agent_run_completed",
        "Function key (x-functions-key header or ?code=; requests without it get 401):",
        f"  {keys['functionKey']}",
    ]
    if loaded:
        lines.append(f"Resumed {loaded} orchestration instance(s) from the previous start.")
    if services is not None and services.is_file():
        from devhost.offline import curl_example

        described = json.loads(services.read_text(encoding="utf-8"))
        lines += [
            "",
            "Offline mode. Submit a run (the echo agent answers in about 3 s):",
            "  " + curl_example(port, described["agents"]["echo"], keys["functionKey"]),
            "then GET the statusUrl it returns (with the same key), and watch this terminal",
            "for the sample subscriber's 'AgentRunCompleted ...' line.",
        ]
        if described.get("foundryEndpoint"):
            from devhost.offline import foundry_curl_example

            lines += [
                "",
                "Foundry agents (Responses API), FOUNDRY_PROJECT_ENDPOINT="
                + described["foundryEndpoint"],
                "  " + ", ".join(described.get("foundryAgents", [])),
                '  (echo-tools first asks for get_weather {"city": "Paris"}, then echoes its',
                "  output). Submit a run to one:",
                "  " + foundry_curl_example(port, "echo", keys["functionKey"]),
            ]
    lines += ["=" * 78, "Development host ready. Press Ctrl+C to stop.", ""]
    return "\n".join(lines)


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--settings", type=Path, default=Path("local.settings.json"))
    parser.add_argument("--port", type=int, default=7071)
    parser.add_argument("--state-dir", type=Path, default=Path(".azurite/devhost"))
    parser.add_argument("--services", type=Path, default=None, help="offline services.json")
    parser.add_argument("--app", default="function_app", help="the app module")
    parser.add_argument(
        "--exit-with",
        type=int,
        default=None,
        metavar="PID",
        help="stop when this process is gone (make passes its own pid: if make is killed "
        "outright, the host stops and the recipe's cleanup stops Azurite and the services)",
    )
    parser.add_argument(
        "--keys",
        action="store_true",
        help="create the keys file if needed, print its path and exit",
    )
    args = parser.parse_args(argv)
    keys = load_or_create_keys(args.state_dir)
    if args.keys:
        print(args.state_dir / "keys.json")
        return 0
    logging.basicConfig(
        level=logging.INFO,
        format="[%(asctime)s] %(message)s",
        stream=sys.stdout,
        force=True,
    )
    for noisy in ("azure", "aiohttp.access", "urllib3"):
        logging.getLogger(noisy).setLevel(logging.WARNING)
    for name in apply_settings(load_settings_values(args.settings), os.environ):
        log.warning(
            "Skipping '%s' from %s because it is already set in the environment.",
            name,
            args.settings,
        )
    offline = offline_app_settings(args.services)
    for name in apply_settings(offline, os.environ):
        if os.environ[name] != offline[name]:
            log.warning(
                "%s stays %s (set already); the offline service listens at %s.",
                name,
                os.environ[name],
                offline[name],
            )
    sys.path.insert(0, str(Path.cwd()))
    stopping = threading.Event()
    # make runs this in the foreground: Ctrl-C (SIGINT) or `kill` (SIGTERM) stops it.
    signal.signal(signal.SIGTERM, lambda *_: stopping.set())
    signal.signal(signal.SIGINT, lambda *_: stopping.set())
    host = EmulatedHost(
        args.app,
        clock=RealTimeClock(),
        function_key=keys["functionKey"],
        master_key=keys["masterKey"],
        durable_system_key=keys["durableTaskSystemKey"],
        eventgrid_system_key=keys["eventGridSystemKey"],
        base_url=f"http://localhost:{args.port}",
        strict_determinism=False,
        state_file=args.state_dir / "durable-state.json",
    )
    host.start()
    server: ServerThread | None = None
    driver = WallClockDriver(host)
    try:
        server = ServerThread(lambda: front_door_app(host), port=args.port).start()
        driver.start()
        print(banner(args.port, keys, args.services, host.loaded_instances), flush=True)
        while not stopping.wait(0.5):
            if args.exit_with is not None and not _alive(args.exit_with):
                print(f"process {args.exit_with} is gone: stopping.", flush=True)
                break
        print("Stopping the development host...", flush=True)
    finally:
        if server is not None:
            server.stop()
        driver.stop()
        host.stop()
    return 0


if __name__ == "__main__":
    sys.exit(main())

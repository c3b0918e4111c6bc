"""Poll activity throughput: the process's reused Agents client vs a client built per call.

Reproduces what a client built per call would pay in Azure, on loopback:

- the Agents service (`devhost.agents_service`) speaks https, with an RSA-2048 server
  certificate from a throwaway CA (`devhost.tls`), and accepts only bearer tokens issued
  by
- a loopback App Service managed identity endpoint (`devhost.managed_identity`), which
  `ManagedIdentityCredential` uses through `IDENTITY_ENDPOINT` / `IDENTITY_HEADER`, as the
  app's credential (`shared.adapters.clients.azure_credential`) does in Azure.

The real `shared.adapters.azure_agents.poll_run` is awaited back to back against a run that stays in
progress, in three variants (interleaved rounds, median round):

- reused: one Agents client and credential built once
  (`shared.adapters.clients.build_agents_client`, as `get_clients()` builds the process's
  set) and reused, as the app runs in Azure;
- per call: a new `ManagedIdentityCredential` and AgentsClient for every call, closed after it
  (so a new aiohttp session, TCP + TLS handshake, and a token request, since a new credential
  has an empty token cache);
- per call, credential kept: a new AgentsClient per call with the process's credential (its
  cached token), which separates the connection's cost from the token's.

Processes: `measure_client_reuse` (the bench) writes the CA and server certificate and starts
`python -m bench.client_reuse` with `SSL_CERT_FILE` pointing at the CA, so aiohttp's default
verified SSL context (made once when aiohttp is imported) trusts it, exactly as it trusts the
system store in Azure (`connection_verify=<path>` would build a new SSLContext per request and
defeat connection pooling). That process measures; it serves nothing: the Agents service and
the identity endpoint run in a third process it spawns, so, as for a remote service, their work
(the server's side of each TLS handshake, token issuing, JSON) neither holds the measuring
process's GIL nor counts in its CPU time. It sets `IDENTITY_ENDPOINT` / `IDENTITY_HEADER` before
building any credential (azure-identity reads them when a credential is constructed).

What keeps the ratio honest is asserted: the reused client opens no connection and fetches no
token during its timed calls, each per-call client opens exactly one TLS connection (counted by
the server), and each per-call credential fetches exactly one token (counted by the identity
endpoint). Tokens are never printed.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import multiprocessing
import os
import ssl
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Awaitable, Callable
from dataclasses import asdict, dataclass, replace
from multiprocessing.connection import Connection
from pathlib import Path
from types import SimpleNamespace
from typing import Any
from unittest import mock
from urllib.parse import urlsplit

from devhost.tls import LoopbackTls
from shared.adapters import azure_agents
from shared.adapters.clients import azure_credential, build_agents_client
from shared.adapters.settings import Settings, load_settings

from .client_reuse_result import (
    PART_BUILD_CLIENT,
    PART_BUILD_CREDENTIAL,
    PART_CACHE_HIT,
    PART_CLOSE,
    PART_FIRST_GET,
    PART_HANDSHAKE,
    PART_IDENTITY_REQUEST,
    PART_REUSED_GET,
    ClientReuseResult,
    Variant,
)
from .client_reuse_services import SCOPE, _serve

ROOT = Path(__file__).resolve().parents[1]
SUBMISSION = "bench-client-reuse"
# Environment that would change which credential DefaultAzureCredential picks, where its
# requests go, or what the measuring process trusts: none of it reaches the measurement.
_SCRUBBED_PREFIXES = ("AZURE_", "MSI_", "IDENTITY_", "IMDS_")
_SCRUBBED = {"SSL_CERT_DIR", "HTTP_PROXY", "HTTPS_PROXY", "ALL_PROXY", "NO_PROXY"}
TIMEOUT_SECONDS = 900.0

# ------------------------------------------------------------------ the bench's side


def measure_client_reuse(*, calls: int = 150, rounds: int = 3) -> ClientReuseResult:
    """Run the measurement in a fresh process that trusts a new loopback CA; see the module."""
    with tempfile.TemporaryDirectory(prefix="client-reuse-") as directory:
        files = LoopbackTls.generate().write(Path(directory))
        env = {
            k: v
            for k, v in os.environ.items()
            if not k.startswith(_SCRUBBED_PREFIXES) and k.upper() not in _SCRUBBED
        }
        env["SSL_CERT_FILE"] = str(files.ca)
        command = [
            sys.executable,
            "-m",
            "bench.client_reuse",
            f"--calls={calls}",
            f"--rounds={rounds}",
            f"--cert={files.cert}",
            f"--key={files.key}",
        ]
        done = subprocess.run(  # noqa: S603 (our own interpreter and module)
            command,
            cwd=ROOT,
            env=env,
            capture_output=True,
            text=True,
            timeout=TIMEOUT_SECONDS,
            check=False,
        )
    if done.returncode != 0:
        raise RuntimeError(f"the client reuse measurement failed:\n{done.stderr[-6000:]}")
    lines = done.stdout.strip().splitlines()
    if not lines:
        raise RuntimeError(f"the client reuse measurement printed nothing:\n{done.stderr[-6000:]}")
    return ClientReuseResult.from_json(json.loads(lines[-1]))


# ------------------------------------------------------------------ the measuring process


@dataclass
class _Window:
    wall_s: float
    cpu_s: float
    service_cpu_s: float
    connections: int
    token_requests: int


class _Measurement:
    def __init__(self, conn: Connection, settings: Settings) -> None:
        self.conn = conn
        self.settings = settings
        self.holder = SimpleNamespace(agents=None)  # what poll_run gets from get_clients()
        self.credential = azure_credential(settings)
        self.client = build_agents_client(settings, self.credential)
        self.client_env = build_agents_client(
            replace(settings, http_environment=True), self.credential
        )
        self.thread_id = ""
        self.run_id = ""

    def stats(self) -> dict[str, Any]:
        self.conn.send("stats")
        stats: dict[str, Any] = self.conn.recv()
        return stats

    async def setup(self) -> None:
        agent = await self.client.create_agent(model="gpt-4o-mini", name="client-reuse")
        thread = await self.client.threads.create()
        run = await self.client.runs.create(thread.id, agent_id=agent.id)
        self.thread_id, self.run_id = thread.id, run.id

    async def _poll(self, client: Any) -> None:
        self.holder.agents = client
        outcome = await azure_agents.poll_run(
            {
                "submissionId": SUBMISSION,
                "agentId": "bench",
                "threadId": self.thread_id,
                "runId": self.run_id,
            }
        )
        if outcome.get("outcome") != "ok":
            raise RuntimeError(f"poll_run failed during the measurement: {outcome}")

    async def reused(self) -> None:
        await self._poll(self.client)

    async def reused_env_lookups(self) -> None:
        await self._poll(self.client_env)

    async def per_call(self) -> None:
        credential = azure_credential(self.settings)
        client = build_agents_client(self.settings, credential)
        try:
            await self._poll(client)
        finally:
            await client.close()
            await credential.close()

    async def per_call_client(self) -> None:
        client = build_agents_client(self.settings, self.credential)
        try:
            await self._poll(client)
        finally:
            await client.close()

    async def window(self, calls: int, one: Callable[[], Awaitable[None]]) -> _Window:
        before = self.stats()
        wall, cpu = time.perf_counter(), time.process_time()
        for _ in range(calls):
            await one()
        wall_s, cpu_s = time.perf_counter() - wall, time.process_time() - cpu
        after = self.stats()
        if after["tls_connections"] != after["connections"]:
            raise AssertionError("a connection to the Agents service did not use TLS")
        return _Window(
            wall_s,
            cpu_s,
            after["cpu_s"] - before["cpu_s"],
            after["connections"] - before["connections"],
            after["token_requests"] - before["token_requests"],
        )

    async def breakdown(self, samples: int) -> dict[str, float]:
        """Wall ms of each part of a per-call client and credential, medians."""
        names = [
            PART_BUILD_CREDENTIAL,
            PART_IDENTITY_REQUEST,
            PART_BUILD_CLIENT,
            PART_FIRST_GET,
            PART_CLOSE,
            PART_REUSED_GET,
            PART_CACHE_HIT,
            PART_HANDSHAKE,
        ]
        parts: dict[str, list[float]] = {name: [] for name in names}
        host, port = _host_port(self.settings.agents_endpoint)
        tls = ssl.create_default_context()  # honours SSL_CERT_FILE, like aiohttp's
        before = self.stats()
        for _ in range(samples):
            t0 = time.perf_counter()
            credential = azure_credential(self.settings)
            t1 = time.perf_counter()
            await credential.get_token(SCOPE)
            t2 = time.perf_counter()
            client = build_agents_client(self.settings, credential)
            t3 = time.perf_counter()
            await client.runs.get(self.thread_id, self.run_id)
            t4 = time.perf_counter()
            await client.close()
            await credential.close()
            t5 = time.perf_counter()
            await self.client.runs.get(self.thread_id, self.run_id)
            t6 = time.perf_counter()
            await self.credential.get_token(SCOPE)
            t7 = time.perf_counter()
            _reader, writer = await asyncio.open_connection(host, port, ssl=tls)
            t8 = time.perf_counter()
            writer.close()
            await writer.wait_closed()
            spans = (t1 - t0, t2 - t1, t3 - t2, t4 - t3, t5 - t4, t6 - t5, t7 - t6, t8 - t7)
            for name, seconds in zip(names, spans, strict=True):
                parts[name].append(seconds)
        after = self.stats()
        tokens = after["token_requests"] - before["token_requests"]
        connections = after["connections"] - before["connections"]
        if tokens != samples or connections != samples:
            raise AssertionError(
                f"breakdown: {tokens} token requests and {connections} Agents connections "
                f"for {samples} new credentials and clients"
            )
        return {name: statistics.median(values) * 1000 for name, values in parts.items()}

    async def close(self) -> None:
        await self.client.close()
        await self.client_env.close()
        await self.credential.close()


def _host_port(url: str) -> tuple[str, int]:
    parts = urlsplit(url)
    assert parts.hostname is not None
    assert parts.port is not None
    return parts.hostname, parts.port


def _check(name: str, windows: list[_Window], calls: int, connections: int, tokens: int) -> None:
    for w in windows:
        if (w.connections, w.token_requests) != (connections, tokens):
            raise AssertionError(
                f"{name}: {w.connections} new Agents connections and {w.token_requests} token "
                f"requests in {calls} calls; expected {connections} and {tokens}"
            )


def _variant(windows: list[_Window], calls: int) -> Variant:
    return Variant(
        calls_per_s=statistics.median(calls / w.wall_s for w in windows),
        client_cpu_ms=statistics.median(w.cpu_s * 1000 / calls for w in windows),
        service_cpu_ms=statistics.median(w.service_cpu_s * 1000 / calls for w in windows),
        connections=sum(w.connections for w in windows),
        token_requests=sum(w.token_requests for w in windows),
    )


async def _measure(conn: Connection, endpoint: str, calls: int, rounds: int) -> ClientReuseResult:
    settings = load_settings(
        {
            "AZURE_AI_PROJECT_ENDPOINT": endpoint,
            "EVENTGRID_TOPIC_ENDPOINT": "https://127.0.0.1:9/api/events",  # never called
            # As App Service sets them: the app then uses ManagedIdentityCredential.
            **{k: os.environ[k] for k in ("IDENTITY_ENDPOINT", "IDENTITY_HEADER")},
        }
    )
    assert settings.managed_identity, "the identity endpoint variables are not set"
    m = _Measurement(conn, settings)
    windows: dict[str, list[_Window]] = {
        "reused": [],
        "per_call": [],
        "per_call_client": [],
        "reused_env_lookups": [],
    }
    with mock.patch.object(azure_agents, "get_clients", return_value=m.holder):
        await m.setup()
        # Warm every code path.
        for one in (m.reused, m.per_call, m.per_call_client, m.reused_env_lookups):
            await one()
        for _ in range(rounds):  # interleaved, so drift in machine load hits all alike
            await m.reused()  # the kept connection is open (keep-alive may have lapsed)
            windows["reused"].append(await m.window(calls, m.reused))
            windows["per_call"].append(await m.window(calls, m.per_call))
            windows["per_call_client"].append(await m.window(calls, m.per_call_client))
            await m.reused_env_lookups()
            windows["reused_env_lookups"].append(await m.window(calls, m.reused_env_lookups))
        _check("reused", windows["reused"], calls, connections=0, tokens=0)
        _check("reused, env lookups", windows["reused_env_lookups"], calls, 0, 0)
        _check("per call", windows["per_call"], calls, connections=calls, tokens=calls)
        _check("per call, credential kept", windows["per_call_client"], calls, calls, 0)
        breakdown = await m.breakdown(calls)
    stats = m.stats()
    await m.close()
    versions = stats["tls_versions"]
    return ClientReuseResult(
        reused=_variant(windows["reused"], calls),
        per_call=_variant(windows["per_call"], calls),
        per_call_client=_variant(windows["per_call_client"], calls),
        reused_env_lookups=_variant(windows["reused_env_lookups"], calls),
        breakdown_ms=breakdown,
        calls=calls * rounds,
        rounds=rounds,
        tls_version="/".join(sorted(versions)) or "none",
        resumed_tls_sessions=int(stats["resumed_tls_sessions"]),
    )


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description="(run by measure_client_reuse)")
    parser.add_argument("--calls", type=int, required=True)
    parser.add_argument("--rounds", type=int, required=True)
    parser.add_argument("--cert", required=True)
    parser.add_argument("--key", required=True)
    args = parser.parse_args(argv)
    if not os.environ.get("SSL_CERT_FILE"):
        raise SystemExit("SSL_CERT_FILE must name the CA of --cert (measure_client_reuse sets it)")
    context = multiprocessing.get_context("spawn")
    conn, child_conn = context.Pipe()
    services = context.Process(target=_serve, args=(child_conn, args.cert, args.key), daemon=True)
    services.start()
    try:
        if not conn.poll(120):
            raise RuntimeError("the services process did not start")
        info = conn.recv()
        os.environ.update(info["identity"])  # as App Service sets them for the app
        result = asyncio.run(_measure(conn, info["agents_endpoint"], args.calls, args.rounds))
        conn.send("stop")
        services.join(30)
    finally:
        if services.is_alive():
            services.terminate()
    print(json.dumps(asdict(result)))


if __name__ == "__main__":
    main()

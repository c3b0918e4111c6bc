"""Poll activity throughput: the process's reused Agents client vs a client built per call.

`shared.agents_calls.poll_run` is awaited back to back on the emulated worker's persistent
event loop against the loopback Agents service (plain http on 127.0.0.1, served from a
thread of this process):

- reused: as the app runs, `poll_run` takes the cached client of `shared.clients`;
- per call: a new `azure.ai.agents.aio.AgentsClient` is built for every call exactly as
  `shared/clients.py` builds the process's one (same credential type, loopback policy and
  pipeline options), handed to `poll_run`, and closed after it;
- per call, whole set: `close_clients()` then `poll_run`, so `get_clients()` rebuilds the
  whole cached set (Agents client, Event Grid publisher, credential) for each call.

A breakdown then times the parts of a per-call client separately.
"""

from __future__ import annotations

import statistics
import time
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from types import SimpleNamespace
from typing import Any
from unittest import mock

from azure.ai.agents.aio import AgentsClient

from shared import agents_calls
from shared.clients import _pipeline_options, close_clients, get_clients
from shared.loopback import AllowHttpOnLoopbackPolicy, LoopbackCredential
from shared.settings import Settings, get_settings
from tests.relay_bed import RelayBed
from tests.testbed.agents_service import RunScript, make_sync_client

SUBMISSION = "bench-client-reuse"


@dataclass(frozen=True)
class ClientReuseResult:
    reused_per_s: float
    per_call_per_s: float
    per_call_full_set_per_s: float
    reused_cpu_ms: float  # process CPU per call (includes the loopback server's thread)
    per_call_cpu_ms: float
    breakdown_ms: dict[str, float]
    calls: int

    @property
    def ratio(self) -> float:
        return self.reused_per_s / self.per_call_per_s

    @property
    def ratio_full_set(self) -> float:
        return self.reused_per_s / self.per_call_full_set_per_s


def build_agents_client(settings: Settings) -> tuple[AgentsClient, LoopbackCredential]:
    """The Agents client as `shared.clients._build` makes it for a loopback endpoint."""
    credential = LoopbackCredential()
    client = AgentsClient(
        endpoint=settings.agents_endpoint,
        credential=credential,
        per_call_policies=[AllowHttpOnLoopbackPolicy()],
        **_pipeline_options(settings),
    )
    return client, credential


async def _timed(calls: int, one: Callable[[], Awaitable[None]]) -> tuple[float, float]:
    """(calls per second of wall time, CPU ms per call)."""
    wall, cpu = time.perf_counter(), time.process_time()
    for _ in range(calls):
        await one()
    wall_spent, cpu_spent = time.perf_counter() - wall, time.process_time() - cpu
    return calls / wall_spent, cpu_spent * 1000 / calls


async def _measure(thread_id: str, run_id: str, calls: int, rounds: int) -> ClientReuseResult:
    settings = get_settings()

    async def check(outcome: dict[str, Any]) -> None:
        if outcome.get("outcome") != "ok":
            raise RuntimeError(f"poll_run failed during the measurement: {outcome}")

    async def reused() -> None:
        await check(await agents_calls.poll_run(SUBMISSION, thread_id, run_id))

    async def per_call() -> None:
        client, credential = build_agents_client(settings)
        holder = SimpleNamespace(agents=client)
        with mock.patch.object(agents_calls, "get_clients", return_value=holder):
            outcome = await agents_calls.poll_run(SUBMISSION, thread_id, run_id)
        await client.close()
        await credential.close()
        await check(outcome)

    async def per_call_full_set() -> None:
        await close_clients()
        await check(await agents_calls.poll_run(SUBMISSION, thread_id, run_id))

    await reused()  # warm: the cached client exists and its connection is open
    await per_call()
    results: dict[str, list[tuple[float, float]]] = {"reused": [], "per_call": [], "full": []}
    for _ in range(rounds):  # interleaved, so drift in machine load hits all alike
        results["reused"].append(await _timed(calls, reused))
        results["per_call"].append(await _timed(calls, per_call))
        results["full"].append(await _timed(calls, per_call_full_set))
    await close_clients()
    get_clients()

    def rate(name: str) -> float:
        return statistics.median(r[0] for r in results[name])

    def cpu(name: str) -> float:
        return statistics.median(r[1] for r in results[name])

    return ClientReuseResult(
        reused_per_s=rate("reused"),
        per_call_per_s=rate("per_call"),
        per_call_full_set_per_s=rate("full"),
        reused_cpu_ms=cpu("reused"),
        per_call_cpu_ms=cpu("per_call"),
        breakdown_ms=await _breakdown(settings, thread_id, run_id, calls),
        calls=calls * rounds,
    )


async def _breakdown(
    settings: Settings, thread_id: str, run_id: str, calls: int
) -> dict[str, float]:
    """Wall ms of each part of a per-call client, medians over `calls` samples."""
    from azure.eventgrid.aio import EventGridPublisherClient
    from azure.identity.aio import DefaultAzureCredential

    parts: dict[str, list[float]] = {
        "build AgentsClient": [],
        "GET on the reused client": [],
        "first GET on a new client (session + TCP connect + GET)": [],
        "close a used client": [],
        "build DefaultAzureCredential (no token request)": [],
        "build EventGridPublisherClient": [],
    }
    warm = get_clients().agents
    for _ in range(calls):
        started = time.perf_counter()
        client, credential = build_agents_client(settings)
        built = time.perf_counter()
        await warm.runs.get(thread_id, run_id)
        reused_done = time.perf_counter()
        await client.runs.get(thread_id, run_id)
        first_done = time.perf_counter()
        await client.close()
        await credential.close()
        closed = time.perf_counter()
        parts["build AgentsClient"].append(built - started)
        parts["GET on the reused client"].append(reused_done - built)
        parts["first GET on a new client (session + TCP connect + GET)"].append(
            first_done - reused_done
        )
        parts["close a used client"].append(closed - first_done)
    for _ in range(max(5, calls // 10)):
        started = time.perf_counter()
        identity = DefaultAzureCredential()
        built = time.perf_counter()
        await identity.close()
        parts["build DefaultAzureCredential (no token request)"].append(built - started)
        started = time.perf_counter()
        publisher = EventGridPublisherClient(settings.eventgrid_endpoint, LoopbackCredential())
        built = time.perf_counter()
        await publisher.close()
        parts["build EventGridPublisherClient"].append(built - started)
    return {name: statistics.median(values) * 1000 for name, values in parts.items()}


def measure_client_reuse(bed: RelayBed, *, calls: int = 150, rounds: int = 3) -> ClientReuseResult:
    """Measure on `bed`'s worker loop against a run that stays in progress."""
    bed.agents.default_script = RunScript(queued_seconds=0, duration_seconds=10 * 24 * 3600)
    with make_sync_client(bed.agents) as admin:
        thread = admin.threads.create()
        run = admin.runs.create(thread.id, agent_id=bed.agent_id)
    result: ClientReuseResult = bed.host.run_on_worker(_measure(thread.id, run.id, calls, rounds))
    return result

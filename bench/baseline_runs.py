"""Each baseline's schedule once through the emulated host, as a Durable orchestrator.

Counts the history events of one generation (the usual monitor samples never continue as
new), checks them against the analytic DTFx shape, and checks the host's polls and detection
times against the schedule simulator.
"""

from __future__ import annotations

import logging
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass

from devhost.agents_service import AgentsService, RunScript, make_sync_client
from devhost.clock import VirtualClock
from devhost.functions_host import EmulatedHost
from shared.adapters.clients import close_clients
from shared.adapters.runtime import reset_worker_state

from .baseline_app import ORCHESTRATOR
from .schedules import FixedInterval, Strategy, WaitList, simulate, to_micros

# A topic endpoint is a required setting; the baseline app never publishes.
UNUSED_TOPIC = "http://127.0.0.1:9/api/events"


@dataclass(frozen=True)
class HostBaselineRun:
    strategy: str
    duration: float
    polls: int
    detected_us: int | None
    history_events: int
    simulated_polls: int
    simulated_detected_us: int | None
    analytic_history: int


def durable_history_events(polls: int, timers: int) -> int:
    """Events in one generation of a poll loop, in the shape DTFx records.

    Episodes: one for ExecutionStarted, one per TaskCompleted, one per TimerFired, each
    wrapped in OrchestratorStarted/OrchestratorCompleted. Plus ExecutionStarted, one
    TaskScheduled + TaskCompleted per poll, one TimerCreated + TimerFired per timer and
    ExecutionCompleted: 4 + 4 x polls + 4 x timers.
    """
    episodes = 1 + polls + timers
    return 2 * episodes + 1 + 2 * polls + 2 * timers + 1


def timers_for(strategy: Strategy, polls: int) -> int:
    """Timers a schedule needs for `polls` checks (none before a check due at once)."""
    first = next(iter(strategy.poll_offsets("")))
    return polls if first > 0 else polls - 1


def orchestration_input(strategy: Strategy) -> dict[str, object]:
    if isinstance(strategy, FixedInterval):
        return {
            "firstUs": to_micros(strategy.first),
            "waitsUs": None,
            "intervalUs": to_micros(strategy.interval),
            "maxPolls": strategy.max_polls,
        }
    if isinstance(strategy, WaitList):
        return {
            "firstUs": to_micros(strategy.first),
            "waitsUs": [to_micros(w) for w in strategy.waits],
            "intervalUs": None,
            "maxPolls": None,
        }
    raise TypeError(f"no orchestrator input for {strategy!r}")


@contextmanager
def _quiet_root_logger() -> Iterator[None]:
    """The Functions SDK warns through the root logger about an app without HTTP functions
    (which would also install a stderr handler on it): swallow that while indexing."""
    handler = logging.NullHandler()
    root = logging.getLogger()
    root.addHandler(handler)
    try:
        yield
    finally:
        root.removeHandler(handler)


def run_baselines_on_host(cases: Sequence[tuple[Strategy, float]]) -> list[HostBaselineRun]:
    """Run each (strategy, duration) case as an orchestration of bench.baseline_app."""
    clock = VirtualClock()
    results: list[HostBaselineRun] = []
    with AgentsService(clock) as agents:
        env = {
            "AZURE_AI_PROJECT_ENDPOINT": agents.endpoint,
            "EVENTGRID_TOPIC_ENDPOINT": UNUSED_TOPIC,
            "EVENTGRID_TOPIC_KEY": "dW51c2Vk",
        }
        with (
            _quiet_root_logger(),
            EmulatedHost(
                "bench.baseline_app",
                clock=clock,
                env=env,
                worker_reset_hooks=[reset_worker_state],
            ) as host,
            make_sync_client(agents) as admin,
        ):
            try:
                agent = admin.create_agent(model="gpt-4o-mini", name="baseline")
                started: list[tuple[Strategy, float, str]] = []
                for number, (strategy, duration) in enumerate(cases):
                    agents.default_script = RunScript(queued_seconds=0, duration_seconds=duration)
                    thread = admin.threads.create()
                    run = admin.runs.create(thread.id, agent_id=agent.id)
                    instance_id = f"baseline-{number}-{strategy.key}"
                    spec = {
                        "submissionId": instance_id,
                        "threadId": thread.id,
                        "runId": run.id,
                        **orchestration_input(strategy),
                    }
                    host.start_orchestration(ORCHESTRATOR, spec, instance_id)
                    started.append((strategy, duration, instance_id))
                host.run_all_until_complete(max_steps=10_000_000)
                for strategy, duration, instance_id in started:
                    view = host.instance(instance_id)
                    assert view is not None
                    assert view.runtime_status == "Completed", view
                    output = view.output
                    simulated = simulate(strategy, duration, instance_id)
                    results.append(
                        HostBaselineRun(
                            strategy=strategy.key,
                            duration=duration,
                            polls=int(output["polls"]),
                            detected_us=output["detectedUs"],
                            history_events=view.history_lengths[0],
                            simulated_polls=simulated.polls,
                            simulated_detected_us=simulated.detected_us,
                            analytic_history=durable_history_events(
                                simulated.polls, timers_for(strategy, simulated.polls)
                            ),
                        )
                    )
            finally:
                host.run_on_worker(close_clients())
    return results

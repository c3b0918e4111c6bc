"""Orchestrations that exercise the Durable rules the emulated host reproduces.

Used only by tests/devhost/test_functions_host_rules.py: custom status limit, large payloads,
overridableExistingInstanceStates, events around continue-as-new, events raised while an
activity runs, and the SDK's deferred events (an orchestrator that spins).
"""

# mypy: disallow-untyped-decorators=False

from __future__ import annotations

import asyncio
import json
import threading
from collections.abc import Generator
from datetime import timedelta
from typing import Any

import azure.durable_functions as df
import azure.functions as func

app = df.DFApp(http_auth_level=func.AuthLevel.FUNCTION)

Orchestration = Generator[Any, Any, Any]

# Process state of the emulated worker, observed by the tests.
CALLS: list[tuple[str, Any]] = []
GATE_WAIT_SECONDS = 10.0
_SYNC_GATE = threading.Event()
_ASYNC_GATE: dict[str, asyncio.Event] = {}


def reset_state() -> None:
    CALLS.clear()
    _SYNC_GATE.clear()
    _ASYNC_GATE.clear()


def _async_gate() -> asyncio.Event:
    # Created on the worker loop, the first time an activity or the release route needs it.
    if "gate" not in _ASYNC_GATE:
        _ASYNC_GATE["gate"] = asyncio.Event()
    return _ASYNC_GATE["gate"]


# ---------------------------------------------------------------- HTTP functions


@app.route(route="rules/start/{name}/{instance_id}", methods=["POST"])
@app.durable_client_input(client_name="client")
async def rules_start(
    req: func.HttpRequest, client: df.DurableOrchestrationClient
) -> func.HttpResponse:
    """Start with an explicit id; report the SDK's exception instead of a bare 500."""
    body = req.get_body()
    try:
        instance_id = await client.start_new(
            req.route_params["name"],
            req.route_params["instance_id"],
            json.loads(body) if body else None,
        )
    except Exception as exc:
        return func.HttpResponse(str(exc), status_code=409)
    return func.HttpResponse(json.dumps({"id": instance_id}), status_code=202)


@app.route(route="rules/raise/{instance_id}/{event}", methods=["POST"])
@app.durable_client_input(client_name="client")
async def rules_raise(
    req: func.HttpRequest, client: df.DurableOrchestrationClient
) -> func.HttpResponse:
    body = req.get_body()
    await client.raise_event(
        req.route_params["instance_id"],
        req.route_params["event"],
        json.loads(body) if body else None,
    )
    return func.HttpResponse(status_code=202)


@app.route(route="rules/release", methods=["POST"])
async def rules_release(req: func.HttpRequest) -> func.HttpResponse:
    """Open both gates: runs on the worker loop while a gated activity is in flight."""
    CALLS.append(("rules_release", None))
    _async_gate().set()
    _SYNC_GATE.set()
    return func.HttpResponse("released")


# ---------------------------------------------------------------- activities


@app.activity_trigger(input_name="value")
def rules_echo(value: str) -> str:
    CALLS.append(("rules_echo", value))
    return value


@app.activity_trigger(input_name="payload")
def rules_blow_up(payload: str) -> str:
    """Returns a result as large as its input, twice over."""
    CALLS.append(("rules_blow_up", len(payload)))
    return payload + payload


@app.activity_trigger(input_name="tag")
async def rules_gate_async(tag: str) -> str:
    """Awaits the gate (I/O, in effect): only an HTTP call on the same loop can open it."""
    CALLS.append(("rules_gate_async", tag))
    await asyncio.wait_for(_async_gate().wait(), GATE_WAIT_SECONDS)
    return f"async gate opened for {tag}"


@app.activity_trigger(input_name="tag")
def rules_gate_sync(tag: str) -> str:
    """Blocks its executor thread on the gate; the loop stays free for the HTTP call."""
    CALLS.append(("rules_gate_sync", tag))
    if not _SYNC_GATE.wait(GATE_WAIT_SECONDS):
        raise TimeoutError("the sync gate was never opened")
    return f"sync gate opened for {tag}"


# ---------------------------------------------------------------- orchestrators


@app.orchestration_trigger(context_name="context")
def status_setter(context: df.DurableOrchestrationContext) -> Orchestration:
    """Sets `status` as custom status, first or after one activity; may raise afterwards."""
    options = context.get_input()
    if options.get("after_activity"):
        yield context.call_activity("rules_echo", "before status")
    context.set_custom_status(options["status"])
    if options.get("activity_after"):
        yield context.call_activity("rules_echo", "after status")
    if options.get("raise_after"):
        raise ValueError("the orchestrator failed after setting its status")
    if options.get("wait_for"):
        yield context.wait_for_external_event(options["wait_for"])
    return "done"


@app.orchestration_trigger(context_name="context")
def big_payloads(context: df.DurableOrchestrationContext) -> Orchestration:
    """A large activity input and result, a large event, a large output."""
    payload = "p" * int(context.get_input()["chars"])
    result = yield context.call_activity("rules_blow_up", payload)
    event = yield context.wait_for_external_event("big")
    return {"result": len(result), "event": len(event), "echo": result}


@app.orchestration_trigger(context_name="context")
def carry_probe(context: df.DurableOrchestrationContext) -> Orchestration:
    """Generation 0 does some work and continues as new; generation 1 waits 60 s for "ping".

    mode "single": one activity; mode "first_of_two": task_any over two activities, so that
    the event can land between the completing result and the other activity's result.
    """
    state = context.get_input()
    if state["generation"] == 0:
        if state["mode"] == "first_of_two":
            yield context.task_any(
                [
                    context.call_activity("rules_echo", "first"),
                    context.call_activity("rules_echo", "second"),
                ]
            )
        else:
            yield context.call_activity("rules_echo", "work")
        context.continue_as_new({**state, "generation": 1})
        return None
    ping = context.wait_for_external_event("ping")
    timer = context.create_timer(context.current_utc_datetime + timedelta(seconds=60))
    winner = yield context.task_any([ping, timer])
    if winner == ping:
        timer.cancel()
        return {"generation": state["generation"], "ping": ping.result}
    return {"generation": state["generation"], "ping": None}


@app.orchestration_trigger(context_name="context")
def activity_or_event(context: df.DurableOrchestrationContext) -> Orchestration:
    """Waits for whichever comes first: the activity's result or a "ping"."""
    work = context.call_activity("rules_echo", "work")
    ping = context.wait_for_external_event("ping")
    winner = yield context.task_any([work, ping])
    if winner == ping:
        return {"winner": "ping", "ping": ping.result}
    return {"winner": "activity", "result": work.result}


@app.orchestration_trigger(context_name="context")
def activity_then_event(context: df.DurableOrchestrationContext) -> Orchestration:
    """Waits for "ping" only after the activity: the event arrived while nobody waited."""
    result = yield context.call_activity("rules_echo", "work")
    ping = yield context.wait_for_external_event("ping")
    return {"result": result, "ping": ping}


@app.orchestration_trigger(context_name="context")
def gated(context: df.DurableOrchestrationContext) -> Orchestration:
    result = yield context.call_activity(context.get_input()["activity"], "tag-1")
    return result


def _poll_for_pokes(context: df.DurableOrchestrationContext, renew: bool) -> Orchestration:
    """Poll every 30 s for `window_seconds`, counting "poke" events.

    renew=True creates a new wait after each poke (the pattern that spins when the event was
    deferred by the SDK); renew=False keeps the one wait and stops waiting once it fired.
    """
    options = context.get_input()
    yield context.call_activity("rules_echo", "work")  # the poke arrives while this runs
    deadline = context.current_utc_datetime + timedelta(seconds=options["window_seconds"])
    wait = context.wait_for_external_event("poke")
    pokes = 0
    turns = 0
    while turns < options["max_turns"] and context.current_utc_datetime < deadline:
        timer = context.create_timer(context.current_utc_datetime + timedelta(seconds=30))
        tasks = [timer] if wait.is_completed and not renew else [wait, timer]
        winner = yield context.task_any(tasks)
        turns += 1
        if winner == wait:
            timer.cancel()
            pokes += 1
            if renew:
                wait = context.wait_for_external_event("poke")
    return {"pokes": pokes, "turns": turns}


@app.orchestration_trigger(context_name="context")
def renewing_waiter(context: df.DurableOrchestrationContext) -> Orchestration:
    return (yield from _poll_for_pokes(context, renew=True))


@app.orchestration_trigger(context_name="context")
def single_waiter(context: df.DurableOrchestrationContext) -> Orchestration:
    return (yield from _poll_for_pokes(context, renew=False))

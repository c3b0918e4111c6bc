"""A well-formed sample app exercising the emulated host end to end."""

# mypy: disallow-untyped-decorators=False

from __future__ import annotations

import json
from collections.abc import Generator
from datetime import timedelta
from typing import Any

import azure.durable_functions as df
import azure.functions as func

app = df.DFApp(http_auth_level=func.AuthLevel.FUNCTION)

# Observations for tests (process state of the emulated worker).
CALLS: list[tuple[str, Any]] = []
EVENTS_SEEN: list[dict[str, Any]] = []
FLAKY_FAILURES_LEFT: dict[str, int] = {}

Orchestration = Generator[Any, Any, Any]


def reset_state() -> None:
    CALLS.clear()
    EVENTS_SEEN.clear()
    FLAKY_FAILURES_LEFT.clear()


# ---------------------------------------------------------------- HTTP functions


@app.route(route="orchestrators/{name}", methods=["POST"])
@app.durable_client_input(client_name="client")
async def http_start(
    req: func.HttpRequest, client: df.DurableOrchestrationClient
) -> func.HttpResponse:
    body = req.get_body()
    payload = json.loads(body) if body else None
    instance_id = await client.start_new(
        req.route_params["name"], req.params.get("instance_id"), payload
    )
    response: func.HttpResponse = client.create_check_status_response(req, instance_id)
    return response


@app.route(route="instances/{instance_id}", methods=["GET"])
@app.durable_client_input(client_name="client")
async def http_status(
    req: func.HttpRequest, client: df.DurableOrchestrationClient
) -> func.HttpResponse:
    status = await client.get_status(req.route_params["instance_id"], show_input=True)
    if not status:
        return func.HttpResponse("not found", status_code=404)
    body = {
        "runtimeStatus": status.runtime_status.value if status.runtime_status else None,
        "output": status.output,
        "input": status.input_,
        "customStatus": status.custom_status,
        "createdTime": status.created_time.isoformat() if status.created_time else None,
    }
    return func.HttpResponse(json.dumps(body), mimetype="application/json")


@app.route(route="instances/{instance_id}/events/{event}", methods=["POST"])
@app.durable_client_input(client_name="client")
async def http_raise(
    req: func.HttpRequest, client: df.DurableOrchestrationClient
) -> func.HttpResponse:
    body = req.get_body()
    try:
        await client.raise_event(
            req.route_params["instance_id"],
            req.route_params["event"],
            json.loads(body) if body else None,
        )
    except Exception as exc:
        return func.HttpResponse(str(exc), status_code=409)
    return func.HttpResponse(status_code=202)


@app.route(route="instances/{instance_id}/terminate", methods=["POST"])
@app.durable_client_input(client_name="client")
async def http_terminate(
    req: func.HttpRequest, client: df.DurableOrchestrationClient
) -> func.HttpResponse:
    await client.terminate(req.route_params["instance_id"], req.params.get("reason", "by test"))
    return func.HttpResponse(status_code=202)


@app.route(route="instances", methods=["GET"])
@app.durable_client_input(client_name="client")
async def http_list(
    req: func.HttpRequest, client: df.DurableOrchestrationClient
) -> func.HttpResponse:
    statuses = await client.get_status_all()
    return func.HttpResponse(json.dumps(sorted(s.instance_id for s in statuses)))


@app.route(route="ping", methods=["GET"], auth_level=func.AuthLevel.ANONYMOUS)
def ping(req: func.HttpRequest) -> func.HttpResponse:
    return func.HttpResponse("pong")


@app.route(route="items/{id:int}", methods=["GET"], auth_level=func.AuthLevel.ANONYMOUS)
def item_by_id(req: func.HttpRequest) -> func.HttpResponse:
    return func.HttpResponse(f"id={req.route_params['id']}")


@app.route(route="items/new", methods=["GET"], auth_level=func.AuthLevel.ANONYMOUS)
def item_new(req: func.HttpRequest) -> func.HttpResponse:
    return func.HttpResponse("new")


@app.route(route="admin-only", methods=["GET"], auth_level=func.AuthLevel.ADMIN)
def admin_only(req: func.HttpRequest) -> func.HttpResponse:
    return func.HttpResponse("admin")


@app.route(route="boom", methods=["GET"])
def boom(req: func.HttpRequest) -> func.HttpResponse:
    raise RuntimeError("kaboom")


@app.route(route="whoami", methods=["GET"])
def whoami(req: func.HttpRequest, context: func.Context) -> func.HttpResponse:
    return func.HttpResponse(f"{context.function_name}:{context.invocation_id}")


@app.event_grid_trigger(arg_name="event")
def on_grid_event(event: func.EventGridEvent) -> None:
    data = event.get_json()
    if isinstance(data, dict) and data.get("fail"):
        raise ValueError("event handler failed")
    EVENTS_SEEN.append({"id": event.id, "type": event.event_type, "data": data})


# ---------------------------------------------------------------- activities


@app.activity_trigger(input_name="city")
def say_hello(city: str) -> str:
    CALLS.append(("say_hello", city))
    return f"Hello {city}!"


# Plain dict: the worker refuses dict[str, Any] on a binding parameter (as the host does here).
@app.activity_trigger(input_name="payload")
async def check_status(payload: dict) -> dict[str, Any]:  # type: ignore[type-arg]
    CALLS.append(("check_status", payload))
    done = payload["poll"] >= payload["done_after"]
    return {"status": "done" if done else "pending", "poll": payload["poll"]}


@app.activity_trigger(input_name="message")
def fail_always(message: str) -> str:
    CALLS.append(("fail_always", message))
    raise ValueError(f"activity refused: {message}")


@app.activity_trigger(input_name="key")
def flaky(key: str) -> str:
    CALLS.append(("flaky", key))
    left = FLAKY_FAILURES_LEFT.get(key, 0)
    if left > 0:
        FLAKY_FAILURES_LEFT[key] = left - 1
        raise ConnectionError(f"transient failure for {key}")
    return f"ok:{key}"


@app.activity_trigger(input_name="value")
def double(value: int) -> int:
    CALLS.append(("double", value))
    return value * 2


# ---------------------------------------------------------------- orchestrators


@app.orchestration_trigger(context_name="context")
def hello_sequence(context: df.DurableOrchestrationContext) -> Orchestration:
    cities = context.get_input() or ["Tokyo", "Seattle", "London"]
    results = []
    for city in cities:
        results.append((yield context.call_activity("say_hello", city)))
    return results


@app.orchestration_trigger(context_name="context")
def fan_out(context: df.DurableOrchestrationContext) -> Orchestration:
    values = context.get_input()
    results = yield context.task_all([context.call_activity("double", v) for v in values])
    return sum(results)


@app.orchestration_trigger(context_name="context")
def poller(context: df.DurableOrchestrationContext) -> Orchestration:
    """Poll every 30 s; continue-as-new every `per_generation` polls, carrying state."""
    state = context.get_input()
    for _ in range(state["per_generation"]):
        fire_at = context.current_utc_datetime + timedelta(seconds=30)
        yield context.create_timer(fire_at)
        state["poll"] += 1
        result = yield context.call_activity(
            "check_status", {"poll": state["poll"], "done_after": state["done_after"]}
        )
        context.set_custom_status({"poll": state["poll"], "generation": state["generation"]})
        if result["status"] == "done":
            return {"polls": state["poll"], "generations": state["generation"] + 1}
    state["generation"] += 1
    context.continue_as_new(state)
    return None


@app.orchestration_trigger(context_name="context")
def wait_for_go(context: df.DurableOrchestrationContext) -> Orchestration:
    payload = yield context.wait_for_external_event("go")
    return {"got": payload}


@app.orchestration_trigger(context_name="context")
def approval(context: df.DurableOrchestrationContext) -> Orchestration:
    """One wait created once and kept across loop turns; a fresh 60 s timer per turn."""
    options = context.get_input() or {}
    cancel_losers = bool(options.get("cancel_timers", True))
    approved = context.wait_for_external_event("approval")
    turns = 0
    while True:
        timer = context.create_timer(context.current_utc_datetime + timedelta(seconds=60))
        winner = yield context.task_any([approved, timer])
        turns += 1
        if winner == approved:
            if cancel_losers:
                timer.cancel()
            return {"approved": approved.result, "turns": turns}
        if turns >= options.get("max_turns", 10):
            return {"approved": None, "turns": turns}


@app.orchestration_trigger(context_name="context")
def catch_failure(context: df.DurableOrchestrationContext) -> Orchestration:
    try:
        yield context.call_activity("fail_always", "nope")
    except Exception as exc:
        return {"caught": str(exc)}
    return {"caught": None}


@app.orchestration_trigger(context_name="context")
def uncaught_failure(context: df.DurableOrchestrationContext) -> Orchestration:
    yield context.call_activity("fail_always", "unhandled")
    return "unreachable"


@app.orchestration_trigger(context_name="context")
def with_retry(context: df.DurableOrchestrationContext) -> Orchestration:
    options = df.RetryOptions(first_retry_interval_in_milliseconds=5000, max_number_of_attempts=3)
    try:
        result = yield context.call_activity_with_retry("flaky", options, context.get_input())
    except Exception as exc:
        return {"error": str(exc)}
    return {"result": result}


@app.orchestration_trigger(context_name="context")
def calls_unknown_activity(context: df.DurableOrchestrationContext) -> Orchestration:
    result = yield context.call_activity("no_such_activity", 1)
    return result


@app.orchestration_trigger(context_name="context")
def approval_then_sleep(context: df.DurableOrchestrationContext) -> Orchestration:
    """The event wins, the timer is cancelled, and the orchestration keeps running past it."""
    approved = context.wait_for_external_event("approval")
    timer = context.create_timer(context.current_utc_datetime + timedelta(seconds=60))
    winner = yield context.task_any([approved, timer])
    if winner == approved:
        timer.cancel()
    yield context.create_timer(context.current_utc_datetime + timedelta(seconds=120))
    greeting = yield context.call_activity("say_hello", "after sleep")
    return {"approved": approved.result, "greeting": greeting}


@app.event_grid_trigger(arg_name="event")
@app.durable_client_input(client_name="client")
async def start_from_grid_event(
    event: func.EventGridEvent, client: df.DurableOrchestrationClient
) -> None:
    await client.start_new("wait_for_go", event.id, event.get_json())

"""agent-run relay: the Functions app. Wiring only; the logic lives in `shared/`."""

from collections.abc import Generator
from typing import Any

import azure.durable_functions as df
import azure.functions as func

from shared.adapters import configure_telemetry, get_settings, install_log_fields
from shared.durable import activities, relay_orchestrator
from shared.http import api as http_api
from shared.subscriber import blueprint as subscriber_blueprint

# Fail at startup, naming the setting, rather than on the first request.
get_settings()
install_log_fields()
configure_telemetry()

app = df.DFApp(http_auth_level=func.AuthLevel.FUNCTION)


@app.route(route="runs", methods=["POST"])
@app.durable_client_input(client_name="client")
async def submit_run(
    req: func.HttpRequest, client: df.DurableOrchestrationClient
) -> func.HttpResponse:
    return await http_api.submit_run(req, client)


@app.route(route="runs/{id}", methods=["GET"])
@app.durable_client_input(client_name="client")
async def get_run(
    req: func.HttpRequest, client: df.DurableOrchestrationClient
) -> func.HttpResponse:
    return await http_api.get_run(req, client)


@app.route(route="runs/{id}/cancel", methods=["POST"])
@app.durable_client_input(client_name="client")
async def cancel_run(
    req: func.HttpRequest, client: df.DurableOrchestrationClient
) -> func.HttpResponse:
    return await http_api.cancel_run(req, client)


@app.route(route="runs/{id}/tool-outputs", methods=["POST"])
@app.durable_client_input(client_name="client")
async def submit_run_tool_outputs(
    req: func.HttpRequest, client: df.DurableOrchestrationClient
) -> func.HttpResponse:
    return await http_api.submit_tool_outputs(req, client)


@app.orchestration_trigger(context_name="context")
def agent_run_orchestrator(
    context: df.DurableOrchestrationContext,
) -> Generator[Any, Any, dict[str, Any] | None]:
    return (yield from relay_orchestrator(context))


# The Python worker refuses a binding parameter annotated dict[str, Any] ("invalid non-type
# annotation"), so payloads are plain dict; tests/project/test_worker_indexing.py runs its indexing.
@app.activity_trigger(input_name="payload")
async def start_agent_run(payload: dict) -> dict[str, Any]:  # type: ignore[type-arg]
    return await activities.start_agent_run(payload)


@app.activity_trigger(input_name="payload")
async def poll_agent_run(payload: dict) -> dict[str, Any]:  # type: ignore[type-arg]
    return await activities.poll_agent_run(payload)


@app.activity_trigger(input_name="payload")
async def cancel_agent_run(payload: dict) -> dict[str, Any]:  # type: ignore[type-arg]
    return await activities.cancel_agent_run(payload)


@app.activity_trigger(input_name="payload")
async def submit_tool_outputs(payload: dict) -> dict[str, Any]:  # type: ignore[type-arg]
    return await activities.submit_tool_outputs(payload)


@app.activity_trigger(input_name="payload")
async def publish_run_event(payload: dict) -> dict[str, Any]:  # type: ignore[type-arg]
    return await activities.publish_run_event(payload)


# The sample Event Grid subscriber (delete this line and shared/subscriber/ to remove it).
app.register_functions(subscriber_blueprint)

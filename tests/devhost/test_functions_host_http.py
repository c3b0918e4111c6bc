"""HTTP functions on the emulated host: the real DurableOrchestrationClient, keys, routes,
Event Grid webhooks, and the one-event-loop rule."""

from __future__ import annotations

import asyncio
import json
from collections.abc import Iterator
from pathlib import Path

import pytest
from aiohttp import web

from devhost.functions_host import EmulatedHost
from devhost.server_thread import ServerThread
from tests.functions_host_samples import aio_client_app, basic_app

BASIC = "tests.functions_host_samples.basic_app"


@pytest.fixture
def host() -> Iterator[EmulatedHost]:
    basic_app.reset_state()
    with EmulatedHost(BASIC) as emulated:
        yield emulated


# ------------------------------------------------------------------ the real durable client


def test_client_starts_queries_raises_and_lists(host: EmulatedHost) -> None:
    response = host.http(
        "POST", "/api/orchestrators/wait_for_go", query={"instance_id": "order-42"}, body="{}"
    )
    assert response.status_code == 202, host.http_errors
    payload = json.loads(response.get_body())
    assert payload["id"] == "order-42"
    # create_check_status_response: URLs carry the extension's system key, origin of the request.
    assert response.headers["Location"] == payload["statusQueryGetUri"]
    assert payload["statusQueryGetUri"].startswith(
        "http://localhost:7071/runtime/webhooks/durabletask/instances/order-42?"
    )
    assert f"code={host.keys.durable_system_key}" in payload["statusQueryGetUri"]

    status = json.loads(host.http("GET", "/api/instances/order-42").get_body())
    assert status["runtimeStatus"] == "Pending"
    assert status["input"] == {}
    host.run_until_idle()
    status = json.loads(host.http("GET", "/api/instances/order-42").get_body())
    assert status["runtimeStatus"] == "Running"

    raised = host.http("POST", "/api/instances/order-42/events/go", body=json.dumps({"ok": 1}))
    assert raised.status_code == 202
    view = host.run_until_complete("order-42")
    assert view.output == {"got": {"ok": 1}}
    status = json.loads(host.http("GET", "/api/instances/order-42").get_body())
    assert (status["runtimeStatus"], status["output"]) == ("Completed", {"got": {"ok": 1}})

    # raise_event to a finished instance: the extension answers 410, the SDK raises.
    late = host.http("POST", "/api/instances/order-42/events/go", body="1")
    assert late.status_code == 409
    assert b"is gone" in late.get_body()
    listed = json.loads(host.http("GET", "/api/instances").get_body())
    assert listed == ["order-42"]


def test_client_status_of_unknown_instance_is_falsy(host: EmulatedHost) -> None:
    response = host.http("GET", "/api/instances/nobody")
    assert (response.status_code, response.get_body()) == (404, b"not found")


def test_client_terminates(host: EmulatedHost) -> None:
    host.http("POST", "/api/orchestrators/wait_for_go", query={"instance_id": "t1"})
    host.run_until_idle()
    response = host.http("POST", "/api/instances/t1/terminate", query={"reason": "stop now"})
    assert response.status_code == 202, host.http_errors
    host.run_until_idle()
    view = host.instance("t1")
    assert view is not None
    assert (view.runtime_status, view.output) == ("Terminated", "stop now")
    # terminate of a finished instance: 410, which the client accepts silently.
    assert host.http("POST", "/api/instances/t1/terminate").status_code == 202


def test_client_input_is_double_encoded_and_decoded_back(host: EmulatedHost) -> None:
    host.http(
        "POST", "/api/orchestrators/hello_sequence", query={"instance_id": "h"}, body='["Oslo"]'
    )
    view = host.run_until_complete("h")
    assert view.history[1]["Input"] == '["Oslo"]'
    assert view.output == ["Hello Oslo!"]


def test_starting_an_unknown_orchestrator_fails_in_the_client(host: EmulatedHost) -> None:
    response = host.http("POST", "/api/orchestrators/nope")
    assert response.status_code == 500
    assert "The function 'nope' doesn't exist" in str(host.http_errors[-1])


def test_any_state_setting_replaces_a_running_instance(tmp_path: Path) -> None:
    # The extension's default is NonRunningStates (tests/devhost/test_functions_host_rules.py).
    host_json = tmp_path / "host.json"
    host_json.write_text(
        json.dumps(
            {
                "version": "2.0",
                "extensions": {
                    "http": {"routePrefix": "api"},
                    "durableTask": {"overridableExistingInstanceStates": "AnyState"},
                },
            }
        )
    )
    basic_app.reset_state()
    with EmulatedHost(BASIC, host_json=host_json) as host:
        host.http("POST", "/api/orchestrators/wait_for_go", query={"instance_id": "dup"})
        host.run_until_idle()
        again = host.http("POST", "/api/orchestrators/hello_sequence", query={"instance_id": "dup"})
        assert again.status_code == 202
        view = host.run_until_complete("dup")
        assert (view.name, view.output) == (
            "hello_sequence",
            ["Hello Tokyo!", "Hello Seattle!", "Hello London!"],
        )


def test_non_running_states_setting_refuses_a_running_instance(tmp_path: Path) -> None:
    host_json = tmp_path / "host.json"
    host_json.write_text(
        json.dumps(
            {
                "version": "2.0",
                "extensions": {
                    "http": {"routePrefix": "api"},
                    "durableTask": {
                        "hubName": "Hub",
                        "overridableExistingInstanceStates": "NonRunningStates",
                    },
                },
            }
        )
    )
    with EmulatedHost(BASIC, host_json=host_json) as host:
        first = host.http("POST", "/api/orchestrators/wait_for_go", query={"instance_id": "one"})
        assert first.status_code == 202
        second = host.http("POST", "/api/orchestrators/wait_for_go", query={"instance_id": "one"})
        assert second.status_code == 500
        assert "already exists" in str(host.http_errors[-1])


def test_management_webhooks_need_the_system_key(host: EmulatedHost) -> None:
    payload = json.loads(host.http("POST", "/api/orchestrators/wait_for_go").get_body())
    status_url = payload["statusQueryGetUri"]
    response = host.http("GET", status_url, key=None)
    assert response.status_code == 202
    assert json.loads(response.get_body())["runtimeStatus"] == "Pending"
    path = status_url.split("?")[0].removeprefix(host.base_url)
    assert host.http("GET", path, key=None).status_code == 401
    assert host.http("GET", path).status_code == 401  # a function key is not a system key
    host.http("POST", payload["terminatePostUri"].replace("{text}", "bye"), key=None)
    host.run_until_idle()
    assert host.http("GET", status_url, key=None).status_code == 200
    base = f"/runtime/webhooks/durabletask/instances?code={host.keys.durable_system_key}"
    listed = json.loads(host.http("GET", f"{base}&runtimeStatus=Terminated", key=None).get_body())
    assert [item["instanceId"] for item in listed] == [payload["id"]]
    assert json.loads(host.http("GET", f"{base}&runtimeStatus=Running", key=None).get_body()) == []
    prefix = json.loads(
        host.http("GET", f"{base}&instanceIdPrefix={payload['id'][:6]}", key=None).get_body()
    )
    assert len(prefix) == 1
    purge = host.http("DELETE", payload["purgeHistoryDeleteUri"], key=None)
    assert json.loads(purge.get_body()) == {"instancesDeleted": 1}
    gone = host.http("GET", status_url, key=None)
    assert (gone.status_code, gone.get_body()) == (404, b"")


# ------------------------------------------------------------------ keys and routes


def test_function_keys(host: EmulatedHost) -> None:
    path = "/api/instances/someone"
    for key in (None, "wrong"):
        denied = host.http("GET", path, key=key)
        assert (denied.status_code, denied.get_body()) == (401, b"")
    assert host.http("GET", path).status_code == 404  # function key: through to the function
    assert host.http("GET", path, key=host.keys.master_key).status_code == 404
    assert (
        host.http("GET", path, key=None, query={"code": host.keys.function_key}).status_code == 404
    )
    assert host.http("GET", "/api/ping", key=None).get_body() == b"pong"
    assert host.http("GET", "/api/admin-only").status_code == 401
    assert host.http("GET", "/api/admin-only", key=host.keys.master_key).get_body() == b"admin"


def test_routes_methods_and_precedence(host: EmulatedHost) -> None:
    assert host.http("GET", "/api/items/new").get_body() == b"new"
    assert host.http("GET", "/api/items/17").get_body() == b"id=17"
    assert host.http("GET", "/api/items/abc").status_code == 404  # {id:int}
    assert host.http("GET", "/API/Ping").get_body() == b"pong"  # literals are case-insensitive
    assert host.http("POST", "/api/ping").status_code == 404  # method not accepted
    assert host.http("GET", "/api/nowhere").status_code == 404


def test_unhandled_exception_is_a_500_and_kept(host: EmulatedHost) -> None:
    response = host.http("GET", "/api/boom")
    assert (response.status_code, response.get_body()) == (500, b"")
    assert isinstance(host.http_errors[-1], RuntimeError)


def test_context_parameter(host: EmulatedHost) -> None:
    name, invocation_id = host.http("GET", "/api/whoami").get_body().decode().split(":")
    assert name == "whoami"
    assert len(invocation_id) == 36


# ------------------------------------------------------------------ Event Grid webhook


def grid_event(event_id: str, data: object) -> dict[str, object]:
    return {
        "id": event_id,
        "topic": "/subscriptions/x/resourceGroups/y/providers/Microsoft.EventGrid/topics/z",
        "subject": "runs/1",
        "eventType": "AgentRunCompleted",
        "eventTime": "2026-01-01T00:00:00Z",
        "data": data,
        "dataVersion": "1.0",
    }


def test_eventgrid_webhook(host: EmulatedHost) -> None:
    url = host.eventgrid_webhook_url("on_grid_event")
    validation = host.http(
        "POST",
        url,
        key=None,
        headers={"aeg-event-type": "SubscriptionValidation"},
        body=json.dumps([{"id": "v", "data": {"validationCode": "abc"}}]),
    )
    assert validation.status_code == 200
    assert json.loads(validation.get_body()) == {"validationResponse": "abc"}

    notify = {"aeg-event-type": "Notification"}
    body = json.dumps([grid_event("e1", {"n": 1}), grid_event("e2", {"n": 2})])
    assert host.http("POST", url, key=None, headers=notify, body=body).status_code == 202
    assert sorted(e["id"] for e in basic_app.EVENTS_SEEN) == ["e1", "e2"]
    assert basic_app.EVENTS_SEEN[0]["type"] == "AgentRunCompleted"

    failing = json.dumps([grid_event("e3", {"fail": True})])
    response = host.http("POST", url, key=None, headers=notify, body=failing)
    assert response.status_code == 500
    assert b"event handler failed" in response.get_body()

    no_key = url.split("&code=")[0]
    assert host.http("POST", no_key, key=None, headers=notify, body=body).status_code == 401
    unknown = url.replace("on_grid_event", "missing")
    assert host.http("POST", unknown, key=None, headers=notify, body=body).status_code == 404


def test_eventgrid_function_with_a_durable_client(host: EmulatedHost) -> None:
    response = host.http(
        "POST",
        host.eventgrid_webhook_url("start_from_grid_event"),
        key=None,
        headers={"aeg-event-type": "Notification"},
        body=json.dumps(grid_event("from-grid", {"n": 7})),  # a single event object is accepted
    )
    assert response.status_code == 202, host.http_errors
    view = host.instance("from-grid")
    assert view is not None
    assert (view.name, view.input) == ("wait_for_go", {"n": 7})


def test_eventgrid_delivery_target(host: EmulatedHost) -> None:
    deliver = host.eventgrid_webhook_target("on_grid_event")
    status, _, _ = deliver(
        host.eventgrid_webhook_url("on_grid_event"),
        {"aeg-event-type": "Notification", "Content-Type": "application/json"},
        json.dumps([grid_event("t1", {"ok": True})]).encode(),
    )
    assert status == 202
    assert [e["id"] for e in basic_app.EVENTS_SEEN] == ["t1"]
    status, _, _ = deliver("http://localhost:7071/hook", {"aeg-event-type": "Notification"}, b"[]")
    assert status == 401


# ------------------------------------------------------------------ one persistent event loop


@pytest.fixture
def echo_server() -> Iterator[ServerThread]:
    async def echo(request: web.Request) -> web.Response:
        return web.Response(text=request.match_info["word"].upper())

    def factory() -> web.Application:
        app = web.Application()
        app.router.add_get("/echo/{word}", echo)
        return app

    with ServerThread(factory) as server:
        yield server


def test_cached_aio_client_works_across_many_invocations(echo_server: ServerThread) -> None:
    aio_client_app.reset_cache()
    aio_client_app.SESSIONS_CREATED.clear()
    with EmulatedHost(
        "tests.functions_host_samples.aio_client_app",
        env={"ECHO_URL": echo_server.base_url},
        worker_reset_hooks=[aio_client_app.reset_cache],
    ) as host:
        for word in ("a", "b", "c", "d", "e"):
            assert host.http("GET", f"/api/echo/{word}").get_body() == word.upper().encode()
        instance_id = host.start_orchestration("echo_all", ["x", "y", "z"])
        assert host.run_until_complete(instance_id).output == ["X", "Y", "Z"]
        # One session, created on the worker's loop, served HTTP functions and activities.
        created_on = aio_client_app.SESSIONS_CREATED
        assert created_on == [host.worker_loop]
        host.restart_worker()  # a new worker process: the cache is gone
        assert host.http("GET", "/api/echo/again").get_body() == b"AGAIN"
        assert len(aio_client_app.SESSIONS_CREATED) == 2
    # A second host is a new process with a new loop: the reset hook ran at its start.
    with EmulatedHost(
        "tests.functions_host_samples.aio_client_app",
        env={"ECHO_URL": echo_server.base_url},
        worker_reset_hooks=[aio_client_app.reset_cache],
    ) as host:
        assert host.http("GET", "/api/echo/new").get_body() == b"NEW"
        assert aio_client_app.SESSIONS_CREATED[-1] is host.worker_loop
    aio_client_app.reset_cache()


def test_a_loop_per_call_would_break_the_same_app(echo_server: ServerThread) -> None:
    # Why the host keeps one loop: the cached session is bound to the loop that created it.
    import os

    aio_client_app.reset_cache()
    os.environ["ECHO_URL"] = echo_server.base_url
    try:
        assert asyncio.run(aio_client_app.fetch("one")) == "ONE"
        with pytest.raises(RuntimeError):
            asyncio.run(aio_client_app.fetch("two"))
    finally:
        del os.environ["ECHO_URL"]
        aio_client_app.reset_cache()

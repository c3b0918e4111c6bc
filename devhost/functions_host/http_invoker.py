"""The host's HTTP front door: routes, keys, HTTP-triggered functions and built-in webhooks.

- `/{routePrefix}/{route}` goes to httpTrigger functions (ASP.NET route precedence; a method
  the function does not accept does not match, so the host answers 404).
- authLevel function/admin need a key in `x-functions-key` or `?code=`; a missing or wrong key
  gets 401 with an empty body. The master key opens everything.
- `/runtime/webhooks/durabletask/...` is the extension's management API (system key).
- `/runtime/webhooks/EventGrid?functionName=...` is the Event Grid extension's webhook
  (system key): SubscriptionValidation handshake, Notification → one invocation per event,
  202 on success, 500 with the error message if any invocation failed, 404 for an unknown
  function (Microsoft.Azure.WebJobs.Extensions.EventGrid HttpRequestProcessor and
  EventGridExtensionConfigProvider).
- An unhandled exception in a function becomes a 500 with an empty body; the exception is
  kept for the test to show.
"""

from __future__ import annotations

import asyncio
import json
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import Any
from urllib.parse import urlencode, urlsplit

import azure.functions as func
from azure.functions.eventgrid import EventGridEventInConverter
from azure.functions.http import HttpResponseConverter
from azure.functions.meta import Datum

from .indexing import IndexedFunction
from .rpc_api import DurableHttpApi
from .worker import InvocationContext, InvocationFailure, WorkerLoop, failure_from

DURABLE_WEBHOOK_PREFIX = "/runtime/webhooks/durabletask/"
EVENTGRID_WEBHOOK = "/runtime/webhooks/eventgrid"


@dataclass(frozen=True)
class HostKeys:
    function_key: str
    master_key: str
    durable_system_key: str
    eventgrid_system_key: str


def _empty(status: int) -> func.HttpResponse:
    return func.HttpResponse(body=b"", status_code=status)


class HttpFrontDoor:
    def __init__(
        self,
        *,
        worker: WorkerLoop,
        functions: Mapping[str, IndexedFunction],
        base_url: str,
        keys: HostKeys,
        durable_api: DurableHttpApi,
        client_json: Callable[[], str],
        errors: list[BaseException],
    ) -> None:
        self._worker = worker
        self._functions = dict(functions)
        self._http_functions = [f for f in functions.values() if f.route_template is not None]
        self._base_url = base_url.rstrip("/")
        self._keys = keys
        self._durable_api = durable_api
        self._client_json = client_json
        self._errors = errors

    async def handle(
        self,
        method: str,
        path: str,
        body: bytes,
        headers: Mapping[str, str],
        query: Mapping[str, str],
    ) -> func.HttpResponse:
        method = method.upper()
        path_only = "/" + path.strip("/")
        lower_path = path_only.lower()
        lower_headers = {k.lower(): v for k, v in headers.items()}
        # The header wins even when empty (AuthenticationLevelHandler: TryGetValue, then First()).
        provided = lower_headers.get("x-functions-key", query.get("code"))
        if lower_path == EVENTGRID_WEBHOOK:
            if method not in ("POST", "OPTIONS"):
                return _empty(404)
            if provided not in (self._keys.eventgrid_system_key, self._keys.master_key):
                return _empty(401)
            if method == "OPTIONS":
                # CloudEvents abuse-protection handshake, answered by the Event Grid
                # extension itself (HttpRequestProcessor): echo the requesting origin.
                origin = lower_headers.get("webhook-request-origin")
                if not origin:
                    return _empty(400)
                return func.HttpResponse(
                    status_code=200,
                    headers={"WebHook-Allowed-Origin": origin, "WebHook-Allowed-Rate": "*"},
                )
            return await self._eventgrid(query, lower_headers, body)
        if lower_path.startswith(DURABLE_WEBHOOK_PREFIX):
            if provided not in (self._keys.durable_system_key, self._keys.master_key):
                return _empty(401)
            response = self._durable_api.handle(
                method,
                path_only[len(DURABLE_WEBHOOK_PREFIX) :],
                query,
                body,
                lower_headers.get("content-type"),
            )
            return func.HttpResponse(
                body=response.body, status_code=response.status, headers=response.headers
            )
        return await self._function(method, path_only, body, headers, query, provided)

    def _authorized(self, level: str | None, provided: str | None) -> bool:
        if level == "anonymous":
            return True
        if provided is None:
            return False
        if provided == self._keys.master_key:
            return True
        return level == "function" and provided == self._keys.function_key

    async def _function(
        self,
        method: str,
        path: str,
        body: bytes,
        headers: Mapping[str, str],
        query: Mapping[str, str],
        provided: str | None,
    ) -> func.HttpResponse:
        candidates: list[tuple[tuple[int, ...], IndexedFunction, dict[str, str]]] = []
        for function in self._http_functions:
            assert function.route_template is not None
            if function.methods is not None and method not in function.methods:
                continue
            values = function.route_template.match(path)
            if values is not None:
                candidates.append((function.route_template.precedence, function, values))
        if not candidates:
            return _empty(404)
        candidates.sort(key=lambda c: c[0])
        _, function, route_params = candidates[0]
        if not self._authorized(function.auth_level, provided):
            return _empty(401)
        query_string = urlencode(dict(query))
        url = f"{self._base_url}{path}" + (f"?{query_string}" if query_string else "")
        request_headers = {"host": urlsplit(self._base_url).netloc, **headers}
        request = func.HttpRequest(
            method,
            url,
            headers=request_headers,
            params=dict(query),
            route_params=route_params,
            body=body,
        )
        kwargs: dict[str, Any] = {function.trigger_binding_name: request}
        for binding in function.durable_client_bindings:
            kwargs[binding] = self._client_json()
        if function.requires_context:
            kwargs["context"] = InvocationContext(function.name)
        try:
            result = await self._worker.call(function.user_function, kwargs)
            if isinstance(result, str):
                return func.HttpResponse(body=result, status_code=200, mimetype="text/plain")
            try:
                # The worker encodes the $return value with the http converter; anything but
                # HttpResponse/str (None included) is an invocation failure.
                HttpResponseConverter.encode(result, expected_type=None)
            except NotImplementedError:
                raise TypeError(
                    f'unable to encode outgoing TypedData: unsupported type "http" for Python '
                    f'type "{type(result).__name__}"'
                ) from None
        except Exception as exc:
            self._errors.append(exc)
            return _empty(500)
        assert isinstance(result, func.HttpResponse)
        return result

    async def _eventgrid(
        self, query: Mapping[str, str], headers: Mapping[str, str], body: bytes
    ) -> func.HttpResponse:
        name = query.get("functionName") or ""
        function = self._functions.get(name)
        if function is None or function.trigger_type != "eventGridTrigger":
            return func.HttpResponse(body=f"cannot find function: '{name}'", status_code=404)
        event_type = (headers.get("aeg-event-type") or "").lower()
        try:
            payload = json.loads(body.decode("utf-8"))
        except ValueError as exc:
            self._errors.append(exc)
            return _empty(500)
        if event_type == "subscriptionvalidation":
            if isinstance(payload, list):
                code = payload[0]["data"]["validationCode"]
            else:
                data = payload["data"]
                code = (json.loads(data) if isinstance(data, str) else data)["validationCode"]
            return func.HttpResponse(
                body=json.dumps({"validationResponse": code}),
                status_code=200,
                mimetype="application/json",
            )
        if event_type == "notification":
            events = payload if isinstance(payload, list) else [payload]
            failures = await asyncio.gather(*(self._invoke_eventgrid(function, e) for e in events))
            for failure in failures:
                if failure is not None:
                    return func.HttpResponse(body=failure.host_message, status_code=500)
            return _empty(202)
        if event_type == "unsubscribe":
            return _empty(202)
        return _empty(400)

    async def _invoke_eventgrid(
        self, function: IndexedFunction, event: Any
    ) -> InvocationFailure | None:
        try:
            value = EventGridEventInConverter.decode(
                Datum(json.dumps(event), "json"), trigger_metadata=None
            )
            kwargs: dict[str, Any] = {function.trigger_binding_name: value}
            for binding in function.durable_client_bindings:
                kwargs[binding] = self._client_json()
            if function.requires_context:
                kwargs["context"] = InvocationContext(function.name)
            await self._worker.call(function.user_function, kwargs)
        except Exception as exc:
            self._errors.append(exc)
            return failure_from(exc)
        return None

"""The Durable extension's HTTP API (HttpApiHandler), served on loopback for the SDK client.

`DurableOrchestrationClient` talks plain HTTP to `rpcBaseUrl` (…/durabletask/). The same
handler serves the public webhook paths (/runtime/webhooks/durabletask/…) through the
emulated host's HTTP front door. Status codes and bodies are the ones the SDK's client code
branches on: start 202/400, or 500 when the id exists and may not be replaced
(overridableExistingInstanceStates; HttpApiHandler.HandleRequestAsync's catch-all),
status 200/202/404-with-empty-body, raiseEvent 202/404/410, terminate 202/404/410,
purge 200/404. Error bodies have the extension's own CreateErrorResponse shape
(HttpRequestMessageExtensions: Message, ExceptionMessage, ExceptionType, StackTrace).
No request or payload size is checked: the extension has none for starts and events.
"""

from __future__ import annotations

import json
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any
from urllib.parse import unquote

from aiohttp import web

from .durable_engine import ApiError, DurableEngine, error_body
from .history import parse_timestamp


@dataclass
class ApiResponse:
    status: int
    body: bytes = b""
    headers: dict[str, str] = field(default_factory=dict)

    def json(self) -> Any:
        return json.loads(self.body) if self.body else None


def _json_response(
    status: int, payload: Any, headers: Mapping[str, str] | None = None
) -> ApiResponse:
    all_headers = {"Content-Type": "application/json; charset=utf-8", **(headers or {})}
    return ApiResponse(status, json.dumps(payload).encode(), all_headers)


def _flag(query: Mapping[str, str], name: str, default: bool) -> bool:
    value = query.get(name)
    if value is None or value == "":
        return default
    return value.strip().lower() == "true"


def _time(query: Mapping[str, str], name: str) -> datetime | None:
    value = query.get(name)
    if not value:
        return None
    try:
        return parse_timestamp(value)
    except ValueError as exc:
        raise ApiError(400, {"Message": f"{name} is not a valid date: {value!r}"}) from exc


def _payload_json(body: bytes) -> str | None:
    """The client double-encodes: the body is a JSON string literal holding the JSON.

    The extension hands the inner string on unchanged (context input, EventRaised Input); a
    body that is not a string literal is passed as compact JSON.
    """
    text = body.decode("utf-8").strip()
    if not text:
        return None
    try:
        value = json.loads(text)
    except ValueError as exc:
        raise ApiError(
            400,
            error_body("Invalid JSON content", str(exc), "Newtonsoft.Json.JsonReaderException"),
        ) from exc
    if isinstance(value, str):
        return value
    return json.dumps(value, separators=(",", ":"))


class DurableHttpApi:
    def __init__(
        self, engine: DurableEngine, management_payload: Callable[[str], dict[str, str]]
    ) -> None:
        self._engine = engine
        self._payload = management_payload

    def handle(
        self,
        method: str,
        subpath: str,
        query: Mapping[str, str],
        body: bytes,
        content_type: str | None = None,
    ) -> ApiResponse:
        method = method.upper()
        stripped = subpath.strip("/")
        parts = [unquote(p) for p in stripped.split("/")] if stripped else []
        lowered = [p.lower() for p in parts]
        try:
            if lowered[:1] == ["orchestrators"] and method == "POST" and len(parts) in (2, 3):
                return self._start(parts[1], parts[2] if len(parts) == 3 else None, body)
            if lowered[:1] == ["instances"]:
                if len(parts) == 1:
                    if method == "GET":
                        return self._list(query)
                    if method == "DELETE":
                        return self._purge_many(query)
                elif len(parts) == 2:
                    if method == "GET":
                        return self._status(parts[1], query)
                    if method == "DELETE":
                        return self._purge(parts[1])
                elif len(parts) == 4 and lowered[2] == "raiseevent" and method == "POST":
                    return self._raise(parts[1], parts[3], body, content_type)
                elif len(parts) == 3 and lowered[2] == "terminate" and method == "POST":
                    self._engine.terminate(parts[1], query.get("reason"))
                    return ApiResponse(202)
                elif len(parts) == 3 and lowered[2] in ("suspend", "resume", "rewind", "restart"):
                    return _json_response(
                        501, {"Message": f"{parts[2]} is not emulated by the test host"}
                    )
        except ApiError as exc:
            if exc.body is None:
                return ApiResponse(exc.status)
            return _json_response(exc.status, exc.body)
        return _json_response(404, {"Message": f"No route for {method} {subpath}"})

    def _start(self, name: str, instance_id: str | None, body: bytes) -> ApiResponse:
        instance_id = self._engine.start_new(name, _payload_json(body), instance_id)
        payload = self._payload(instance_id)
        return _json_response(
            202,
            payload,
            {"Location": payload["statusQueryGetUri"], "Retry-After": "10"},
        )

    def _status(self, instance_id: str, query: Mapping[str, str]) -> ApiResponse:
        status = self._engine.status_json(
            instance_id,
            show_input=_flag(query, "showInput", True),
            show_history=_flag(query, "showHistory", False),
            show_history_output=_flag(query, "showHistoryOutput", False),
        )
        if status is None:
            return ApiResponse(404)  # empty body: the SDK turns it into a falsy status
        runtime = status["runtimeStatus"]
        if runtime in ("Running", "Pending"):
            location = self._payload(instance_id)["statusQueryGetUri"]
            return _json_response(202, status, {"Location": location, "Retry-After": "10"})
        if runtime == "Failed" and _flag(query, "returnInternalServerErrorOnFailure", False):
            return _json_response(500, status)
        return _json_response(200, status)

    def _list(self, query: Mapping[str, str]) -> ApiResponse:
        statuses = query.get("runtimeStatus")
        status_set = {s.strip() for s in statuses.split(",") if s.strip()} if statuses else None
        items = self._engine.list_status_json(
            statuses=status_set,
            created_from=_time(query, "createdTimeFrom"),
            created_to=_time(query, "createdTimeTo"),
            prefix=query.get("instanceIdPrefix") or None,
            show_input=_flag(query, "showInput", True),
        )
        top = query.get("top")
        if top and top.isdigit():
            items = items[: int(top)]
        return _json_response(200, items)

    def _purge(self, instance_id: str) -> ApiResponse:
        deleted = self._engine.purge(instance_id)
        if deleted == 0:
            return ApiResponse(404)
        return _json_response(200, {"instancesDeleted": deleted})

    def _purge_many(self, query: Mapping[str, str]) -> ApiResponse:
        statuses = query.get("runtimeStatus")
        deleted = self._engine.purge_many(
            created_from=_time(query, "createdTimeFrom"),
            created_to=_time(query, "createdTimeTo"),
            statuses={s.strip() for s in statuses.split(",") if s.strip()} if statuses else None,
        )
        if deleted == 0:
            return ApiResponse(404)
        return _json_response(200, {"instancesDeleted": deleted})

    def _raise(
        self, instance_id: str, event_name: str, body: bytes, content_type: str | None
    ) -> ApiResponse:
        if body.strip() and "json" not in (content_type or "").lower():
            return _json_response(
                400, {"Message": "Only application/json request content is supported"}
            )
        self._engine.raise_event(instance_id, event_name, _payload_json(body))
        return ApiResponse(202)


RPC_PREFIX = "/durabletask/"


def make_rpc_app(api: DurableHttpApi) -> web.Application:
    """aiohttp application serving the API under /durabletask/ (the client's rpcBaseUrl)."""

    async def handler(request: web.Request) -> web.StreamResponse:
        raw_path = request.rel_url.raw_path
        subpath = raw_path[len(RPC_PREFIX) :] if raw_path.startswith(RPC_PREFIX) else ""
        body = await request.read()
        response = api.handle(
            request.method,
            subpath,
            dict(request.query),
            body,
            request.headers.get("Content-Type"),
        )
        return web.Response(status=response.status, body=response.body, headers=response.headers)

    app = web.Application()
    app.router.add_route("*", "/durabletask/{tail:.*}", handler)
    return app

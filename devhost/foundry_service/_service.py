"""HTTP front of the loopback Foundry project service: routing, auth, faults, streams, recording.

Paths (relative to `/api/projects/<project>`), as the openai 3.x SDK (through
`AIProjectClient.get_openai_client()`, base URL `<endpoint>/openai/v1`, no api-version) and the
azure-ai-projects 2.x agents operations (`?api-version=v1`) send them.
"""

from __future__ import annotations

import asyncio
import contextlib
import copy
import json
import random
import re
import ssl
import threading
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import timedelta
from typing import Any

from aiohttp import web

from devhost.lifecycle import StartStop
from devhost.server_thread import ServerThread

from ._models import JSON, TERMINAL_STATUSES, Clock, FaultRule, RecordedRequest, ResponseScript
from ._store import ApiError, Call, ResponseRecord, Store, bad_request

DEFAULT_PROJECT = "local"
# api-versions of the agents operations: 2.x sends v1; the 2.0.0b1 beta sent the preview one.
AGENT_API_VERSIONS = frozenset({"v1", "2025-11-15-preview"})

_ID = r"(?P<{}>[^/]+)"
_RESP = "/openai/v1/responses/" + _ID.format("response_id")
_CONV = "/openai/v1/conversations/" + _ID.format("conversation_id")
_AGENT = "/agents/" + _ID.format("agent_name")
_ROUTES: list[tuple[str, str, str]] = [
    ("POST", "/openai/v1/responses", "responses.create"),
    ("GET", _RESP, "responses.retrieve"),
    ("DELETE", _RESP, "responses.delete"),
    ("POST", _RESP + "/cancel", "responses.cancel"),
    ("POST", "/openai/v1/conversations", "conversations.create"),
    ("GET", _CONV, "conversations.retrieve"),
    ("DELETE", _CONV, "conversations.delete"),
    ("POST", _CONV + "/items", "conversations.items.create"),
    ("GET", _CONV + "/items", "conversations.items.list"),
    ("GET", _AGENT, "agents.get"),
    ("POST", _AGENT + "/versions", "agents.create_version"),
    ("GET", _AGENT + "/versions", "agents.list_versions"),
    ("GET", _AGENT + "/versions/" + _ID.format("version"), "agents.get_version"),
]
_AGENT_ENDPOINT = re.compile(r"^/agents/(?P<agent>[^/]+)/endpoint/protocols/openai(?P<rest>/.*)$")
_COMPILED = [(m, re.compile(f"^{p}$"), op) for m, p, op in _ROUTES]
OPERATIONS: tuple[str, ...] = tuple(op for _, _, op in _ROUTES)


def route(method: str, path: str) -> tuple[str, dict[str, str]] | None:
    """(operation, path params) for a request, or None. Raises a 405 ApiError on a wrong verb."""
    path_matched = False
    for verb, pattern, operation in _COMPILED:
        match = pattern.match(path)
        if match is None:
            continue
        path_matched = True
        if verb == method:
            return operation, match.groupdict()
    if path_matched:
        raise ApiError(405, "method_not_allowed", f"Method {method} is not allowed on {path}.")
    return None


_FAULT_ERRORS: dict[str, ApiError] = {
    "429": ApiError(
        429, "rate_limit_exceeded", "Rate limit reached. Try again later.", None, "requests"
    ),
    "500": ApiError(
        500,
        "server_error",
        "The server had an error while processing your request.",
        None,
        "server_error",
    ),
    "503": ApiError(
        503,
        "service_unavailable",
        "The service is temporarily unavailable.",
        None,
        "server_error",
    ),
    "404": ApiError(404, "not_found", "The requested resource was not found."),
    "401": ApiError(
        401,
        "unauthorized",
        "Access token is missing, invalid, audience is incorrect, or have expired.",
    ),
    # What a Foundry project answers while the caller's role assignment has not propagated.
    "403": ApiError(
        403,
        "PermissionDenied",
        "The principal lacks the required data action "
        "Microsoft.CognitiveServices/accounts/AIServices/agents/write to perform this operation.",
    ),
}
_FAULT_ERRORS["429_retry_after"] = _FAULT_ERRORS["429_retry_after_ms"] = _FAULT_ERRORS["429"]
_FAULT_ERRORS["500_after_apply"] = _FAULT_ERRORS["500"]


@dataclass
class _Reply:
    status: int
    body: bytes
    headers: dict[str, str] = field(default_factory=dict)
    parsed: Any = None
    # Answer with the response's event stream: (response id, starting_after).
    stream: tuple[str, int] | None = None
    # A synchronous (background=false, stream=false) create: answer once it has ended.
    wait_for: str | None = None


def _json_reply(status: int, payload: Any, headers: dict[str, str] | None = None) -> _Reply:
    return _Reply(status, json.dumps(payload).encode(), dict(headers or {}), payload)


def _error_reply(error: ApiError, headers: dict[str, str] | None = None) -> _Reply:
    return _json_reply(error.status, error.body(), headers)


@dataclass
class _Pending:
    record: RecordedRequest
    operation: str
    params: dict[str, str]
    fault: FaultRule | None
    # `get_openai_client(agent_name=X)`: the agent named by the path, not by the body.
    agent: str | None = None


class FoundryService(StartStop):
    """The Foundry project endpoint (Responses, Conversations, agents) on loopback.

    `endpoint` is `http://127.0.0.1:PORT/api/projects/<project>` (https with `ssl_context`).
    Any non-empty bearer token is accepted unless `accept_token` is given.
    """

    # While a stream or a synchronous create is open the clock follows the wall (a virtual
    # clock is moved forward by the wall time elapsed), as in the classic service.
    STREAM_TICK_SECONDS = 0.02

    def __init__(
        self,
        clock: Clock,
        *,
        seed: int = 0,
        port: int = 0,
        project: str = DEFAULT_PROJECT,
        ssl_context: ssl.SSLContext | None = None,
        accept_token: Callable[[str], bool] | None = None,
    ) -> None:
        self.clock = clock
        self.project = project
        self.default_script = ResponseScript()
        self.scripts_by_agent: dict[str, ResponseScript] = {}
        # Called with the create body; a non-None result wins over the others.
        self.script_for: Callable[[JSON], ResponseScript | None] | None = None
        self.faults: list[FaultRule] = []
        self.fault_counts: dict[str, int] = {}
        self.requests: list[RecordedRequest] = []
        self._fault_rng = random.Random(f"faults:{seed}")
        self._store = Store(random.Random(f"ids:{seed}"), self._choose_script)
        self._lock = threading.RLock()
        self._port = port
        self._ssl_context = ssl_context
        self._accept_token = accept_token
        self._server: ServerThread | None = None
        self._release: asyncio.Event | None = None
        self._in_flight = 0
        self._handlers: dict[str, Callable[[Call], Any]] = {
            op: getattr(self._store, op.replace(".", "_")) for op in OPERATIONS
        }

    # ------------------------------------------------------------------ lifecycle

    def start(self) -> FoundryService:
        if self._server is None:
            self._server = ServerThread(
                self._app, port=self._port, ssl_context=self._ssl_context
            ).start()
        return self

    def stop(self) -> None:
        if self._server is not None:
            self._server.run(self._drain())
            self._server.stop()
            self._server = None
            self._release = None

    async def _drain(self) -> None:
        if self._release is not None:
            self._release.set()
        for _ in range(100):
            if self._in_flight == 0:
                return
            await asyncio.sleep(0.01)

    async def _hold(self, seconds: float) -> None:
        if self._release is None:
            self._release = asyncio.Event()
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(self._release.wait(), seconds)

    @property
    def project_path(self) -> str:
        return f"/api/projects/{self.project}"

    @property
    def endpoint(self) -> str:
        """The project endpoint, as `AIProjectClient(endpoint=...)` takes it."""
        if self._server is None:
            raise RuntimeError("the service is not started")
        return self._server.base_url + self.project_path

    @property
    def openai_base_url(self) -> str:
        """What `get_openai_client()` uses: `<endpoint>/openai/v1`."""
        return self.endpoint + "/openai/v1"

    # ------------------------------------------------------------------ test helpers

    def create_agent_version(
        self, name: str, model: str = "gpt-4o-mini", instructions: str = "", **definition: Any
    ) -> JSON:
        """Create a prompt agent version directly (as `agents.create_version` would)."""
        body = {
            "definition": {
                "kind": "prompt",
                "model": model,
                "instructions": instructions,
                **definition,
            }
        }
        with self._lock:
            now = self.clock.now()
            return copy.deepcopy(
                self._store.agents_create_version(Call({"agent_name": name}, {}, body, now))
            )

    @property
    def responses(self) -> dict[str, JSON]:
        """Every stored response as `GET /responses/{id}` would return it now."""
        with self._lock:
            now = self.clock.now()
            self._store.advance_all(now)
            return {rid: self._store.render(r, now) for rid, r in self._store.responses.items()}

    def conversation_items(self, conversation_id: str) -> list[JSON]:
        """A conversation's items as of now, oldest first."""
        with self._lock:
            self._store.advance_all(self.clock.now())
            return copy.deepcopy(self._store.conversations[conversation_id].items)

    def events(self, response_id: str) -> list[JSON]:
        """The stream events the response has produced by now."""
        with self._lock:
            record = self._store.responses[response_id]
            return copy.deepcopy(self._store.events_until(record, self.clock.now()))

    def calls(self, operation: str) -> list[RecordedRequest]:
        with self._lock:
            return [r for r in self.requests if r.operation == operation]

    def _choose_script(self, body: JSON) -> ResponseScript:
        if self.script_for is not None:
            chosen = self.script_for(body)
            if chosen is not None:
                return chosen
        reference = body.get("agent_reference")
        name = reference.get("name") if isinstance(reference, dict) else None
        by_agent = self.scripts_by_agent.get(str(name)) if name is not None else None
        return by_agent if by_agent is not None else self.default_script

    # ------------------------------------------------------------------ HTTP

    def _app(self) -> web.Application:
        app = web.Application(client_max_size=64 * 1024 * 1024)
        app.router.add_route("*", "/{tail:.*}", self._handle)
        return app

    async def _handle(self, request: web.Request) -> web.StreamResponse:
        self._in_flight += 1
        try:
            reply, pending = await self._respond(request)
            if reply.stream is not None and pending is not None:
                return await self._stream(request, pending.record, *reply.stream)
            if reply.wait_for is not None and pending is not None:
                reply = await self._wait_sync(request, pending.record, reply.wait_for)
        finally:
            self._in_flight -= 1
        headers = {
            "Content-Type": "application/json",
            "x-request-id": f"req_{random.getrandbits(64):016x}",
            **reply.headers,
        }
        return web.Response(status=reply.status, body=reply.body, headers=headers)

    def _follow_wall(self, wall_start: float, virtual_start: Any, loop_time: float) -> None:
        advance_to = getattr(self.clock, "advance_to", None)
        if advance_to is not None:
            advance_to(virtual_start + timedelta(seconds=loop_time - wall_start))

    async def _wait_sync(self, request: web.Request, record: RecordedRequest, rid: str) -> _Reply:
        """A foreground create answers when the response has ended (spec: background=false)."""
        loop = asyncio.get_running_loop()
        wall_start, virtual_start = loop.time(), self.clock.now()
        while True:
            self._follow_wall(wall_start, virtual_start, loop.time())
            with self._lock:
                now = self.clock.now()
                self._store.advance_all(now)
                response = self._store.responses[rid]
                if self._store.status_at(response, now) in TERMINAL_STATUSES:
                    reply = _json_reply(200, self._store.render(response, now))
                    record.response = reply.parsed
                    return reply
            if request.transport is None or request.transport.is_closing():
                return _json_reply(499, {})
            await asyncio.sleep(self.STREAM_TICK_SECONDS)

    async def _stream(
        self, request: web.Request, record: RecordedRequest, rid: str, after: int
    ) -> web.StreamResponse:
        response = web.StreamResponse(
            status=200,
            headers={
                "Content-Type": "text/event-stream; charset=utf-8",
                "Cache-Control": "no-cache",
                "x-accel-buffering": "no",
            },
        )
        await response.prepare(request)
        with contextlib.suppress(ConnectionError):
            await self._stream_events(request, response, record, rid, after)
        return response

    async def _stream_events(
        self,
        request: web.Request,
        response: web.StreamResponse,
        record: RecordedRequest,
        rid: str,
        after: int,
    ) -> None:
        loop = asyncio.get_running_loop()
        wall_start, virtual_start = loop.time(), self.clock.now()
        while True:
            if request.transport is None or request.transport.is_closing():
                return
            self._follow_wall(wall_start, virtual_start, loop.time())
            with self._lock:
                now = self.clock.now()
                self._store.advance_all(now)
                stored: ResponseRecord = self._store.responses[rid]
                events = copy.deepcopy(
                    [
                        e
                        for e in self._store.events_until(stored, now)
                        if e["sequence_number"] > after
                    ]
                )
                drop_at = stored.script.stream_drop_after
            for event in events:
                payload = json.dumps(event)
                await response.write(f"event: {event['type']}\ndata: {payload}\n\n".encode())
                record.events.append(event)
                after = event["sequence_number"]
                if drop_at is not None and after >= drop_at:
                    with self._lock:
                        if not stored.stream_dropped:
                            stored.stream_dropped = True
                            # Cut the connection mid-stream, as a network failure would.
                            if request.transport is not None:
                                request.transport.close()
                            return
                if event["type"] in (
                    "response.completed",
                    "response.failed",
                    "response.incomplete",
                ):
                    await response.write_eof()
                    return
            await asyncio.sleep(self.STREAM_TICK_SECONDS)

    async def _respond(self, request: web.Request) -> tuple[_Reply, _Pending | None]:
        raw = await request.read()
        pending, reply = self._admit(request, raw)
        if pending is None:
            assert reply is not None
            return reply, None
        if pending.fault is not None and pending.fault.kind == "timeout":
            await self._hold(pending.fault.delay_seconds)
        return self._complete(pending), pending

    def _admit(self, request: web.Request, raw: bytes) -> tuple[_Pending | None, _Reply | None]:
        path = request.path
        base = self.project_path
        rel = path[len(base) :] if path.startswith(base + "/") else None
        sent_rel = rel  # recorded as sent; `rel` is what is routed
        query = dict(request.query)
        # The 2.0.0b1 beta's `<endpoint>/openai/...?api-version=...` (reference note §1).
        agent_path = _AGENT_ENDPOINT.match(rel) if rel is not None else None
        agent = agent_path.group("agent") if agent_path is not None else None
        if agent_path is not None:
            # `{endpoint}/agents/X/endpoint/protocols/openai/...?api-version=v1` (note §1).
            rel = "/openai/v1" + agent_path.group("rest")
        beta = rel is not None and rel.startswith("/openai/") and not rel.startswith("/openai/v1/")
        if beta and rel is not None and "api-version" in query:
            rel = "/openai/v1/" + rel[len("/openai/") :]
        try:
            body: Any = json.loads(raw) if raw else None
            body_ok = True
        except ValueError:
            body, body_ok = None, False
        auth = request.headers.get("Authorization", "")
        bearer = auth[:7].lower() == "bearer " and bool(auth[7:].strip())
        with self._lock:
            record = RecordedRequest(
                method=request.method,
                path=sent_rel if sent_rel is not None else path,
                query=query,
                operation="unknown",
                body=body,
                time=self.clock.now(),
                bearer=bearer,
                user_agent=request.headers.get("User-Agent"),
                retry_count=request.headers.get("x-stainless-retry-count"),
            )
            self.requests.append(record)
            try:
                if rel is None:
                    raise ApiError(404, "not_found", f"Unknown project path {path}.")
                routed = route(request.method, rel)
                if routed is not None:
                    record.operation = routed[0]
                if not bearer:
                    raise ApiError(
                        401, "unauthorized", "Access denied: a bearer token is required."
                    )
                if self._accept_token is not None and not self._accept_token(auth[7:].strip()):
                    raise ApiError(
                        401,
                        "unauthorized",
                        "Access token is missing, invalid, audience is incorrect, or have expired.",
                    )
                if routed is None:
                    raise ApiError(404, "not_found", f"Resource not found: {rel}.")
                if routed[0].startswith("agents.") and query.get("api-version") not in (
                    AGENT_API_VERSIONS
                ):
                    raise bad_request(
                        "Missing or unsupported 'api-version' query parameter; use 'v1'.",
                        "api-version",
                    )
                if not body_ok:
                    raise bad_request("We could not parse the JSON body of your request.")
            except ApiError as error:
                reply = _error_reply(error)
                self._finish_record(record, reply)
                return None, reply
            fault = self._pick_fault(routed[0])
            record.fault = fault.kind if fault is not None else None
            return _Pending(record, routed[0], routed[1], fault, agent), None

    def _pick_fault(self, operation: str) -> FaultRule | None:
        for rule in self.faults:
            if rule.operation not in ("*", operation) or rule.exhausted:
                continue
            if rule.rate < 1.0 and self._fault_rng.random() >= rule.rate:
                continue
            rule.fired += 1
            self.fault_counts[rule.kind] = self.fault_counts.get(rule.kind, 0) + 1
            return rule
        return None

    def _complete(self, pending: _Pending) -> _Reply:
        fault = pending.fault
        kind = fault.kind if fault is not None else None
        with self._lock:
            if kind in _FAULT_ERRORS and kind != "500_after_apply":
                assert fault is not None
                headers: dict[str, str] = {}
                delay = 1.0 if fault.retry_after is None else fault.retry_after
                if kind == "429_retry_after":
                    headers["Retry-After"] = f"{delay:g}"
                elif kind == "429_retry_after_ms":
                    headers["retry-after-ms"] = str(round(delay * 1000))
                reply = _error_reply(_FAULT_ERRORS[kind], headers)
            elif kind == "malformed_json":
                reply = self._malformed(pending)
            else:
                reply = self._apply(pending)
                if kind == "500_after_apply":
                    reply = _error_reply(_FAULT_ERRORS[kind])
            self._finish_record(pending.record, reply)
            return reply

    def _apply(self, pending: _Pending) -> _Reply:
        now = self.clock.now()
        self._store.advance_all(now)
        call = Call(pending.params, pending.record.query, pending.record.body, now)
        try:
            if pending.operation == "responses.create":
                body = call.body
                if pending.agent is not None and isinstance(body, dict):
                    # The SDK sends no agent_reference there; what Foundry does with one is
                    # not known, so one in the body is kept.
                    reference = {"type": "agent_reference", "name": pending.agent}
                    call.body = {"agent_reference": reference, **body}
                return self._create(call)
            if pending.operation == "responses.retrieve" and call.query.get("stream") == "true":
                stored = self._store.response(call.params["response_id"])
                after = self._store.check_resumable(stored, call.query)
                return _Reply(200, b"", stream=(stored.id, after))
            result = self._handlers[pending.operation](call)
        except ApiError as error:
            return _error_reply(error)
        except Exception as error:  # e.g. a failing script_for: still answer in JSON
            internal = ApiError(
                500, "server_error", f"{type(error).__name__}: {error}", None, "server_error"
            )
            return _error_reply(internal)
        return _json_reply(200, copy.deepcopy(result))

    def _create(self, call: Call) -> _Reply:
        stored = self._store.responses_create(call)
        if stored.stream:
            return _Reply(200, b"", stream=(stored.id, -1))
        if not stored.background:
            return _Reply(200, b"", wait_for=stored.id)
        return _json_reply(200, self._store.render(stored, call.now))

    def _malformed(self, pending: _Pending) -> _Reply:
        """A 200 whose JSON is cut short. Reads show a truncated real body; writes are dropped."""
        if pending.record.method == "GET":
            full = self._apply(pending).body
            return _Reply(200, full[: max(1, len(full) // 2)])
        return _Reply(200, b'{"id": "')

    @staticmethod
    def _finish_record(record: RecordedRequest, reply: _Reply) -> None:
        record.status = reply.status
        record.response = reply.parsed

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
from dataclasses import dataclass, replace
from datetime import datetime
from pathlib import Path
from typing import Any

from aiohttp import web

from devhost.loopback_api import (
    SHARED_FAULT_ERRORS,
    Call,
    LoopbackServer,
    Pending,
    Reply,
    answer_with_fault,
    bearer_token,
    compile_routes,
    draw_fault,
    finish_record,
    json_reply,
    match_route,
    parse_json_body,
    truncated_json,
)

from ._models import (
    JSON,
    TERMINAL_STATUSES,
    Clock,
    FaultRule,
    RecordedRequest,
    ResponseRecord,
    ResponseScript,
)
from ._snapshot import export_state, import_state, load_snapshot, save_snapshot
from ._store import ApiError, Store, bad_request

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
_COMPILED = compile_routes(_ROUTES)
OPERATIONS: tuple[str, ...] = tuple(op for _, _, op in _ROUTES)


def route(method: str, path: str) -> tuple[str, dict[str, str]] | None:
    """(operation, path params) for a request, or None. Raises a 405 ApiError on a wrong verb."""
    routed, path_matched = match_route(_COMPILED, method, path)
    if routed is not None:
        return routed
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
    **{kind: ApiError(*error) for kind, error in SHARED_FAULT_ERRORS.items()},
}
_FAULT_ERRORS["429_retry_after"] = _FAULT_ERRORS["429_retry_after_ms"] = _FAULT_ERRORS["429"]
_FAULT_ERRORS["500_after_apply"] = _FAULT_ERRORS["500"]


@dataclass
class _Reply(Reply):
    # Answer with the response's event stream: (response id, starting_after).
    stream: tuple[str, int] | None = None
    # A synchronous (background=false, stream=false) create: answer once it has ended.
    wait_for: str | None = None


def _json_reply(status: int, payload: Any, headers: dict[str, str] | None = None) -> _Reply:
    return json_reply(_Reply, status, payload, headers)


def _error_reply(error: ApiError, headers: dict[str, str] | None = None) -> _Reply:
    return _json_reply(error.status, error.body(), headers)


@dataclass
class _Pending(Pending[RecordedRequest, FaultRule]):
    # `get_openai_client(agent_name=X)`: the agent named by the path, not by the body.
    agent: str | None = None


class FoundryService(LoopbackServer):
    """The Foundry project endpoint (Responses, Conversations, agents) on loopback.

    `endpoint` is `http://127.0.0.1:PORT/api/projects/<project>` (https with `ssl_context`).
    Any non-empty bearer token is accepted unless `accept_token` is given. With `state_file`
    (local development: devhost/offline.py) responses, conversations and agent versions are
    kept in that JSON file across restarts (`_snapshot.py`); tests keep them in memory.
    """

    # While a stream or a synchronous create is open the clock follows the wall (a virtual
    # clock is moved forward by the wall time elapsed), as in the classic service.
    CLIENT_MAX_SIZE = 64 * 1024 * 1024

    def __init__(
        self,
        clock: Clock,
        *,
        seed: int = 0,
        port: int = 0,
        project: str = DEFAULT_PROJECT,
        ssl_context: ssl.SSLContext | None = None,
        accept_token: Callable[[str], bool] | None = None,
        state_file: Path | None = None,
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
        self._init_server(port, ssl_context, accept_token)
        self._handlers: dict[str, Callable[[Call], Any]] = {
            op: getattr(self._store, op.replace(".", "_")) for op in OPERATIONS
        }
        self._state_file = state_file
        if state_file is not None:
            state = load_snapshot(state_file)
            if state is not None:
                import_state(self._store, state)

    # ------------------------------------------------------------------ persistence

    def _save_state(self) -> None:
        """Write the snapshot (if there is a state file); the service's lock is held."""
        if self._state_file is not None:
            save_snapshot(self._state_file, export_state(self._store))

    def _advance(self, now: datetime) -> None:
        """Append finished responses' items to their conversations; save if that changed any."""
        if self._store.advance_all(now):
            self._save_state()

    def _after_apply(self, pending: _Pending) -> None:
        # Reads change nothing but what `_advance` already saved.
        if pending.record.method != "GET":
            self._save_state()

    def has_agent(self, name: str) -> bool:
        """Whether an agent of this name has a version (e.g. one loaded from the state file)."""
        with self._lock:
            return bool(self._store.agents.get(name))

    # ------------------------------------------------------------------ lifecycle

    @property
    def project_path(self) -> str:
        return f"/api/projects/{self.project}"

    @property
    def endpoint(self) -> str:
        """The project endpoint, as `AIProjectClient(endpoint=...)` takes it."""
        return self._started().base_url + self.project_path

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
            version = self._store.agents_create_version(Call({"agent_name": name}, {}, body, now))
            self._save_state()
            return copy.deepcopy(version)

    @property
    def responses(self) -> dict[str, JSON]:
        """Every stored response as `GET /responses/{id}` would return it now."""
        with self._lock:
            now = self.clock.now()
            self._advance(now)
            return {rid: self._store.render(r, now) for rid, r in self._store.responses.items()}

    def conversation_items(self, conversation_id: str) -> list[JSON]:
        """A conversation's items as of now, oldest first."""
        with self._lock:
            self._advance(self.clock.now())
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

    async def _wait_sync(self, request: web.Request, record: RecordedRequest, rid: str) -> _Reply:
        """A foreground create answers when the response has ended (spec: background=false)."""
        loop = asyncio.get_running_loop()
        wall_start, virtual_start = loop.time(), self.clock.now()
        while True:
            self.follow_wall(wall_start, virtual_start, loop.time())
            with self._lock:
                now = self.clock.now()
                self._advance(now)
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
            self.follow_wall(wall_start, virtual_start, loop.time())
            with self._lock:
                now = self.clock.now()
                self._advance(now)
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
        await self._hold_if_timeout(pending.fault)
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
        body, body_ok = parse_json_body(raw)
        token = bearer_token(request.headers)
        bearer = token is not None
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
                refusal = self._auth_refusal(token)
                if refusal is not None:
                    raise ApiError(401, "unauthorized", refusal)
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
                finish_record(record, reply)
                return None, reply
            fault = self._pick_fault(routed[0])
            record.fault = fault.kind if fault is not None else None
            return _Pending(record, routed[0], routed[1], fault, agent), None

    def _pick_fault(self, operation: str) -> FaultRule | None:
        return draw_fault(self.faults, operation, self._fault_rng, self.fault_counts)

    def _complete(self, pending: _Pending) -> _Reply:
        with self._lock:
            reply = answer_with_fault(
                pending.fault,
                _FAULT_ERRORS,
                _error_reply,
                malformed=lambda: self._malformed(pending),
                apply=lambda: self._apply(pending),
                after_apply=lambda: self._after_apply(pending),
            )
            finish_record(pending.record, reply)
            return reply

    def _apply(self, pending: _Pending) -> _Reply:
        now = self.clock.now()
        self._advance(now)
        call = Call(pending.params, pending.record.query, pending.record.body, now)
        try:
            if pending.operation == "responses.create":
                body = call.body
                if pending.agent is not None and isinstance(body, dict):
                    # The SDK sends no agent_reference there; what Foundry does with one is
                    # not known, so one in the body is kept.
                    reference = {"type": "agent_reference", "name": pending.agent}
                    call = replace(call, body={"agent_reference": reference, **body})
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
        return _Reply(200, truncated_json(pending.record.method, lambda: self._apply(pending).body))

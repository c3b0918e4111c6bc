"""HTTP front of the loopback Agents service: routing, auth, faults, recording."""

from __future__ import annotations

import asyncio
import contextlib
import copy
import json
import os
import pickle
import random
import ssl
import tempfile
import threading
from collections.abc import Callable
from dataclasses import dataclass
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
from devhost.server_thread import ConnectionStats

from ._models import FINAL_STATUSES, JSON, Clock, FaultRule, RecordedRequest, RunScript
from ._store import ApiError, Store, bad_request

PROJECT_PATH = "/api/projects/local"
API_VERSION = "v1"

Handler = Callable[[Call], JSON]

_ID = r"(?P<{}>[^/]+)"
_T = _ID.format("thread_id")
_R = _ID.format("run_id")
# (method, path pattern relative to the endpoint, operation name)
_ROUTES: list[tuple[str, str, str]] = [
    ("POST", "/assistants", "assistants.create"),
    ("GET", "/assistants", "assistants.list"),
    ("GET", "/assistants/" + _ID.format("assistant_id"), "assistants.get"),
    ("DELETE", "/assistants/" + _ID.format("assistant_id"), "assistants.delete"),
    ("POST", "/threads", "threads.create"),
    ("GET", "/threads", "threads.list"),
    ("POST", "/threads/runs", "threads.create_and_run"),
    ("GET", f"/threads/{_T}", "threads.get"),
    ("DELETE", f"/threads/{_T}", "threads.delete"),
    ("POST", f"/threads/{_T}/messages", "messages.create"),
    ("GET", f"/threads/{_T}/messages", "messages.list"),
    ("GET", f"/threads/{_T}/messages/" + _ID.format("message_id"), "messages.get"),
    ("POST", f"/threads/{_T}/runs", "runs.create"),
    ("GET", f"/threads/{_T}/runs", "runs.list"),
    ("GET", f"/threads/{_T}/runs/{_R}", "runs.get"),
    ("POST", f"/threads/{_T}/runs/{_R}/cancel", "runs.cancel"),
    ("POST", f"/threads/{_T}/runs/{_R}/submit_tool_outputs", "runs.submit_tool_outputs"),
    ("GET", f"/threads/{_T}/runs/{_R}/steps", "run_steps.list"),
    ("GET", f"/threads/{_T}/runs/{_R}/steps/" + _ID.format("step_id"), "run_steps.get"),
]
_COMPILED = compile_routes(_ROUTES)
OPERATIONS: tuple[str, ...] = tuple(op for _, _, op in _ROUTES)


def _not_a_thread(operation: str, params: dict[str, str]) -> bool:
    """Skip a thread called "runs": "/threads/runs" is create_thread_and_run."""
    return params.get("thread_id") == "runs" and operation != "threads.create_and_run"


def route(method: str, path: str) -> tuple[str, dict[str, str]] | None:
    """(operation, path params) for a request, or None. Raises a 405 ApiError on a wrong verb."""
    routed, path_matched = match_route(_COMPILED, method, path, _not_a_thread)
    if routed is not None:
        return routed
    if path_matched:
        raise ApiError(405, "method_not_allowed", f"Method {method} is not allowed on {path}.")
    return None


def _error_bytes(error: ApiError) -> bytes:
    return json.dumps(error.body()).encode()


_FAULT_ERRORS: dict[str, ApiError] = {
    "429": ApiError(429, "rate_limit_exceeded", "Rate limit is exceeded. Try again later."),
    "429_retry_after": ApiError(
        429, "rate_limit_exceeded", "Rate limit is exceeded. Try again in a moment."
    ),
    "500": ApiError(500, "server_error", "The server had an error while processing your request."),
    "500_after_apply": ApiError(
        500, "server_error", "The server had an error while processing your request."
    ),
    "503": ApiError(503, "service_unavailable", "The service is temporarily unavailable."),
    **{kind: ApiError(*error) for kind, error in SHARED_FAULT_ERRORS.items()},
}


@dataclass
class _Reply(Reply):
    # Set when the request asked for `stream: true`: answer with the run's event stream.
    stream_run_id: str | None = None
    stream_fault: str | None = None


def _json_reply(status: int, payload: Any, headers: dict[str, str] | None = None) -> _Reply:
    return json_reply(_Reply, status, payload, headers)


def _error_reply(error: ApiError, headers: dict[str, str] | None = None) -> _Reply:
    return _json_reply(error.status, error.body(), headers)


_Pending = Pending[RecordedRequest, FaultRule]


class AgentsService(LoopbackServer):
    """Azure AI Agents v1 REST protocol on loopback, driven by a (virtual) clock.

    Plain http unless `ssl_context` is given (then `endpoint` is https). Any non-empty bearer
    token is accepted unless `accept_token` is given: then only tokens it approves (e.g. the
    loopback managed identity endpoint's `issued`) are, others get a 401.
    """

    def __init__(
        self,
        clock: Clock,
        *,
        seed: int = 0,
        port: int = 0,
        ssl_context: ssl.SSLContext | None = None,
        accept_token: Callable[[str], bool] | None = None,
        state_file: Path | None = None,
    ) -> None:
        self.clock = clock
        self.default_script = RunScript()
        self.scripts_by_agent: dict[str, RunScript] = {}
        # Called with (run create body, thread id); a non-None result wins over the others.
        self.script_for: Callable[[JSON, str], RunScript | None] | None = None
        self.faults: list[FaultRule] = []
        self.fault_counts: dict[str, int] = {}
        self.requests: list[RecordedRequest] = []
        # Separate generators so that adding faults does not change the ids handed out.
        self._fault_rng = random.Random(f"faults:{seed}")
        self._store = Store(random.Random(f"ids:{seed}"), self._choose_script)
        self._lock = threading.RLock()
        self._init_server(port, ssl_context, accept_token)
        self._handlers: dict[str, Handler] = {
            op: getattr(self._store, op.replace(".", "_")) for op in OPERATIONS
        }
        # Local dev (devhost/offline.py): agents, threads and runs kept in a file across
        # restarts, saved after every request (tests keep them in memory).
        self._state_file = state_file
        if state_file is not None:
            self._load_state(state_file)

    # ------------------------------------------------------------------ persistence

    def _load_state(self, path: Path) -> None:
        try:
            data = path.read_bytes()
        except FileNotFoundError:
            return
        # The service's own file, written by _save_state (local dev only, never shared).
        agents, threads, runs = pickle.loads(data)  # noqa: S301
        with self._lock:
            self._store.agents, self._store.threads, self._store.runs = agents, threads, runs

    def _save_state(self) -> None:
        """Atomically (temporary file, then rename); the service's lock is held."""
        path = self._state_file
        if path is None:
            return
        path.parent.mkdir(parents=True, exist_ok=True)
        data = pickle.dumps((self._store.agents, self._store.threads, self._store.runs))
        fd, temporary = tempfile.mkstemp(prefix=path.name, suffix=".tmp", dir=path.parent)
        try:
            with os.fdopen(fd, "wb") as handle:
                handle.write(data)
            os.replace(temporary, path)
        except BaseException:
            Path(temporary).unlink(missing_ok=True)
            raise

    def agent_named(self, name: str) -> str | None:
        """The id of the first agent with this name, if any (e.g. one loaded from the state)."""
        with self._lock:
            for agent_id, agent in self._store.agents.items():
                if agent.get("name") == name:
                    return agent_id
            return None

    # ------------------------------------------------------------------ lifecycle

    @property
    def endpoint(self) -> str:
        return self._started().base_url + PROJECT_PATH

    @property
    def connection_stats(self) -> ConnectionStats:
        """Connections (and TLS handshakes) that carried requests so far."""
        return self._started().stats.snapshot()

    # ------------------------------------------------------------------ test helpers

    @property
    def enforce_single_active_run(self) -> bool:
        """Like Agents: no new run, and no new message, while a thread has an active run."""
        return self._store.enforce_single_active_run

    @enforce_single_active_run.setter
    def enforce_single_active_run(self, value: bool) -> None:
        self._store.enforce_single_active_run = value

    @property
    def runs(self) -> dict[str, JSON]:
        """Every run as `runs.get` would return it now."""
        with self._lock:
            self._store.advance_all(self.clock.now())
            runs = {rid: self._store.render_run(run) for rid, run in self._store.runs.items()}
            return copy.deepcopy(runs)

    def messages(self, thread_id: str) -> list[JSON]:
        """A thread's messages as of now, oldest first."""
        with self._lock:
            self._store.advance_all(self.clock.now())
            thread = self._store.threads[thread_id]
            return copy.deepcopy(thread.messages)

    def calls(self, operation: str) -> list[RecordedRequest]:
        with self._lock:
            return [r for r in self.requests if r.operation == operation]

    def set_run_script(self, run_id: str, script: RunScript) -> None:
        """Change a live run's future; what already happened by now stays as it was."""
        with self._lock:
            self._store.advance_all(self.clock.now())
            self._store.set_script(run_id, script)

    def _choose_script(self, body: JSON, thread_id: str) -> RunScript:
        if self.script_for is not None:
            chosen = self.script_for(body, thread_id)
            if chosen is not None:
                return chosen
        by_agent = self.scripts_by_agent.get(str(body.get("assistant_id")))
        return by_agent if by_agent is not None else self.default_script

    # ------------------------------------------------------------------ HTTP

    async def _handle(self, request: web.Request) -> web.StreamResponse:
        self._in_flight += 1
        try:
            reply = await self._respond(request)
            if reply.stream_run_id is not None:
                return await self._stream_run(request, reply.stream_run_id, reply.stream_fault)
        finally:
            self._in_flight -= 1
        headers = {"Content-Type": "application/json", **reply.headers}
        request_id = request.headers.get("x-ms-client-request-id")
        if request_id:
            headers["x-ms-client-request-id"] = request_id
        return web.Response(status=reply.status, body=reply.body, headers=headers)

    async def _stream_run(
        self, request: web.Request, run_id: str, fault: str | None
    ) -> web.StreamResponse:
        """Stream a new run's events until it ends (or waits for tool outputs).

        Events go out every STREAM_TICK_SECONDS; the SDK splits blocks on exactly one blank line.

        While the stream is open the clock follows the wall: a virtual clock is moved forward
        by the wall time elapsed, so runs progress as they would for a streaming client.
        """
        response = web.StreamResponse(
            status=200, headers={"Content-Type": "text/event-stream", "Cache-Control": "no-cache"}
        )
        await response.prepare(request)
        # The client may go away mid-stream (e.g. its fast-path window closed).
        with contextlib.suppress(ConnectionError):
            await self._stream_events(request, response, run_id, fault)
        return response

    async def _stream_events(
        self, request: web.Request, response: web.StreamResponse, run_id: str, fault: str | None
    ) -> None:
        loop = asyncio.get_running_loop()
        wall_start, virtual_start = loop.time(), self.clock.now()
        sent_status: str | None = None
        sent_messages: set[str] = set()

        async def send(event: str, data: Any) -> None:
            payload = data if isinstance(data, str) else json.dumps(data)
            await response.write(f"event: {event}\ndata: {payload}\n\n".encode())

        while True:
            if request.transport is None or request.transport.is_closing():
                return
            self.follow_wall(wall_start, virtual_start, loop.time())
            with self._lock:
                self._store.advance_all(self.clock.now())
                run = self._store.runs[run_id]
                rendered = self._store.render_run(run)
                thread = self._store.threads[run.thread_id]
                new_messages = [
                    copy.deepcopy(m)
                    for m in thread.messages
                    if m.get("run_id") == run_id and m["id"] not in sent_messages
                ]
            status = str(rendered["status"])
            if sent_status is None:
                await send("thread.run.created", {**rendered, "status": "queued"})
                if fault == "stream_drop":
                    # Cut the connection mid-stream, as a network failure would.
                    if request.transport is not None:
                        request.transport.close()
                    return
                if fault == "stream_end_early":
                    await send("done", "[DONE]")
                    await response.write_eof()
                    return
            for message in new_messages:
                sent_messages.add(message["id"])
                await send("thread.message.created", message)
                await send("thread.message.completed", message)
            if status != sent_status and not (sent_status is None and status == "queued"):
                await send(f"thread.run.{status}", rendered)
            sent_status = status
            if status in FINAL_STATUSES or status == "requires_action":
                await send("done", "[DONE]")
                await response.write_eof()
                return
            await asyncio.sleep(self.STREAM_TICK_SECONDS)

    async def _respond(self, request: web.Request) -> _Reply:
        raw = await request.read()
        pending, reply = self._admit(request, raw)
        if pending is None:
            assert reply is not None
            return reply
        await self._hold_if_timeout(pending.fault)
        reply = self._complete(pending)
        body = pending.record.body
        streaming = isinstance(body, dict) and body.get("stream") is True
        if streaming and reply.status == 200 and isinstance(reply.parsed, dict):
            reply.stream_run_id = str(reply.parsed["id"])
            reply.stream_fault = pending.fault.kind if pending.fault is not None else None
        return reply

    def _admit(self, request: web.Request, raw: bytes) -> tuple[_Pending | None, _Reply | None]:
        """Record the request and check auth, api-version and route; pick a fault."""
        path = request.path
        rel = path[len(PROJECT_PATH) :] if path.startswith(PROJECT_PATH + "/") else None
        body, body_ok = parse_json_body(raw)
        token = bearer_token(request.headers)
        bearer = token is not None
        with self._lock:
            record = RecordedRequest(
                method=request.method,
                path=rel if rel is not None else path,
                query=dict(request.query),
                operation="unknown",
                body=body,
                time=self.clock.now(),
                bearer=bearer,
                client_request_id=request.headers.get("x-ms-client-request-id"),
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
                if request.query.get("api-version") != API_VERSION:
                    raise bad_request(
                        "Missing or unsupported 'api-version' query parameter; use 'v1'.",
                        "api-version",
                    )
                if routed is None:
                    raise ApiError(404, "not_found", f"Resource not found: {rel}.")
                if not body_ok:
                    raise bad_request("The request body is not valid JSON.")
            except ApiError as error:
                reply = _error_reply(error)
                finish_record(record, reply)
                return None, reply
            fault = self._pick_fault(routed[0])
            record.fault = fault.kind if fault is not None else None
            return _Pending(record, routed[0], routed[1], fault), None

    def _pick_fault(self, operation: str) -> FaultRule | None:
        return draw_fault(self.faults, operation, self._fault_rng, self.fault_counts)

    def _complete(self, pending: _Pending) -> _Reply:
        """Apply the request (unless a fault says otherwise) and build the answer."""
        with self._lock:
            reply = answer_with_fault(
                pending.fault,
                _FAULT_ERRORS,
                _error_reply,
                malformed=lambda: self._malformed(pending),
                apply=lambda: self._apply(pending),
                after_apply=self._save_state,
            )
            finish_record(pending.record, reply)
            return reply

    def _apply(self, pending: _Pending) -> _Reply:
        now = self.clock.now()
        self._store.advance_all(now)
        handler = self._handlers[pending.operation]
        try:
            result = handler(Call(pending.params, pending.record.query, pending.record.body, now))
        except ApiError as error:
            return _error_reply(error)
        except Exception as error:  # e.g. a failing script_for: still answer in JSON
            internal = ApiError(500, "loopback_internal_error", f"{type(error).__name__}: {error}")
            return _error_reply(internal)
        # Copy so later state changes cannot alter what this response recorded.
        return _json_reply(200, copy.deepcopy(result))

    def _malformed(self, pending: _Pending) -> _Reply:
        """A 200 whose JSON is cut short. Reads show a truncated real body; writes are dropped."""
        return _Reply(200, truncated_json(pending.record.method, lambda: self._apply(pending).body))

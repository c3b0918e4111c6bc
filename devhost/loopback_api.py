"""What the loopback REST services (agents_service, foundry_service) share.

Fault rules, the seeded fault draw and what a fault answers (retry headers, truncated JSON,
500 after apply); the routed `Call`, route matching, request parsing (bearer, JSON body), JSON
replies and their recording; and the server lifecycle: a `ServerThread` running an aiohttp app,
requests held by "timeout" faults and released when the service stops, and a virtual clock that
follows the wall while a stream is open. Each service keeps its own routes, fault kinds, error
bodies, streams and store.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import math
import random
import re
import ssl
import threading
from collections.abc import Awaitable, Callable, Mapping, Sequence
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from typing import Any, ClassVar, Generic, Protocol, Self, TypeVar

from aiohttp import web

from devhost.lifecycle import StartStop
from devhost.server_thread import ServerThread


def check_seconds(name: str, value: float) -> None:
    if not (value >= 0 and math.isfinite(value)):
        raise ValueError(f"{name} must be a finite number of seconds >= 0, got {value!r}")


@dataclass(kw_only=True)
class FaultRuleBase:
    """Make matching requests fail in a given way (`kind`, one of the service's `kinds`).

    `operation` is an operation name or "*"; `rate` is the chance per matching request (drawn
    from the service's seeded generator); `count` caps how often the rule fires. Apart from
    "timeout" and "500_after_apply", a faulted request is not applied.
    """

    kinds: ClassVar[frozenset[str]] = frozenset()

    operation: str = "*"
    kind: str
    rate: float = 1.0
    count: int | None = None
    retry_after: float | None = None
    delay_seconds: float = 5.0
    fired: int = field(default=0, compare=False)

    def __post_init__(self) -> None:
        if self.kind not in self.kinds:
            raise ValueError(f"unknown fault kind {self.kind!r}; known: {sorted(self.kinds)}")
        if not 0.0 <= self.rate <= 1.0:
            raise ValueError("rate must be within [0, 1]")
        check_seconds("delay_seconds", self.delay_seconds)
        if self.retry_after is not None:
            check_seconds("retry_after", self.retry_after)

    @property
    def exhausted(self) -> bool:
        return self.count is not None and self.fired >= self.count


RuleT = TypeVar("RuleT", bound=FaultRuleBase)


def draw_fault(
    rules: Sequence[RuleT], operation: str, rng: random.Random, counts: dict[str, int]
) -> RuleT | None:
    """The first rule that fires for `operation` (counted in `rule.fired` and `counts`)."""
    for rule in rules:
        if rule.operation not in ("*", operation) or rule.exhausted:
            continue
        # Draw only for partial rates so that rate=1 rules do not shift the sequence.
        if rule.rate < 1.0 and rng.random() >= rule.rate:
            continue
        rule.fired += 1
        counts[rule.kind] = counts.get(rule.kind, 0) + 1
        return rule
    return None


@dataclass(frozen=True)
class Call:
    """One routed request: path parameters, query, parsed JSON body and the current time."""

    params: dict[str, str]
    query: dict[str, str]
    body: Any
    now: datetime


Route = tuple[str, re.Pattern[str], str]


def compile_routes(routes: Sequence[tuple[str, str, str]]) -> list[Route]:
    """(method, path pattern, operation) rows, patterns anchored."""
    return [(m, re.compile(f"^{p}$"), op) for m, p, op in routes]


def match_route(
    routes: Sequence[Route],
    method: str,
    path: str,
    skip: Callable[[str, dict[str, str]], bool] | None = None,
) -> tuple[tuple[str, dict[str, str]] | None, bool]:
    """((operation, path params) or None, whether the path matched some route at all)."""
    path_matched = False
    for verb, pattern, operation in routes:
        match = pattern.match(path)
        if match is None:
            continue
        params = match.groupdict()
        if skip is not None and skip(operation, params):
            continue
        path_matched = True
        if verb == method:
            return (operation, params), True
    return None, path_matched


@dataclass
class Reply:
    """A JSON answer (each service adds what its streams need)."""

    status: int
    body: bytes
    headers: dict[str, str] = field(default_factory=dict)
    parsed: Any = None  # what `body` decodes to, kept for the recording


AnyReply = TypeVar("AnyReply", bound=Reply)


def json_reply(
    reply_type: type[AnyReply], status: int, payload: Any, headers: dict[str, str] | None = None
) -> AnyReply:
    return reply_type(status, json.dumps(payload).encode(), dict(headers or {}), payload)


class Recorded(Protocol):
    """What `finish_record` fills in on a service's recorded request."""

    status: int | None
    response: Any


def finish_record(record: Recorded, reply: Reply) -> None:
    record.status = reply.status
    record.response = reply.parsed


RecordT = TypeVar("RecordT")


@dataclass
class Pending(Generic[RecordT, RuleT]):
    """A request that passed auth and routing, waiting to be applied."""

    record: RecordT
    operation: str
    params: dict[str, str]
    fault: RuleT | None


def parse_json_body(raw: bytes) -> tuple[Any, bool]:
    """(parsed body or None, whether the body was empty or valid JSON)."""
    try:
        return (json.loads(raw) if raw else None), True
    except ValueError:
        return None, False


def bearer_token(headers: Mapping[str, str]) -> str | None:
    """The non-empty bearer token of the Authorization header, if any."""
    auth = headers.get("Authorization", "")
    if auth[:7].lower() == "bearer " and auth[7:].strip():
        return auth[7:].strip()
    return None


TOKEN_REFUSED = "Access token is missing, invalid, audience is incorrect, or have expired."

# (status, code, message) of the fault kinds both services answer alike.
SHARED_FAULT_ERRORS: dict[str, tuple[int, str, str]] = {
    "404": (404, "not_found", "The requested resource was not found."),
    "401": (401, "unauthorized", TOKEN_REFUSED),
    # What a Foundry project answers while the caller's role assignment has not propagated.
    "403": (
        403,
        "PermissionDenied",
        "The principal lacks the required data action "
        "Microsoft.CognitiveServices/accounts/AIServices/agents/write to perform this operation.",
    ),
}


def retry_headers(fault: FaultRuleBase) -> dict[str, str]:
    """What a 429 fault sends: `Retry-After` seconds or `retry-after-ms` (default 1 s)."""
    delay = 1.0 if fault.retry_after is None else fault.retry_after
    if fault.kind == "429_retry_after":
        return {"Retry-After": f"{delay:g}"}
    if fault.kind == "429_retry_after_ms":
        return {"retry-after-ms": str(round(delay * 1000))}
    return {}


ReplyT = TypeVar("ReplyT")
ErrorT = TypeVar("ErrorT")


def answer_with_fault(
    fault: FaultRuleBase | None,
    fault_errors: Mapping[str, ErrorT],
    error_reply: Callable[[ErrorT, dict[str, str]], ReplyT],
    *,
    malformed: Callable[[], ReplyT],
    apply: Callable[[], ReplyT],
    after_apply: Callable[[], None] | None = None,
) -> ReplyT:
    """The answer to an admitted request under its fault (if any).

    A fault with an error (`fault_errors`) answers it without applying the request;
    "malformed_json" answers `malformed()`; otherwise the request is applied, and
    "500_after_apply" replaces the answer with its error. `after_apply` runs after applying.
    """
    kind = fault.kind if fault is not None else None
    if fault is not None and kind in fault_errors and kind != "500_after_apply":
        return error_reply(fault_errors[fault.kind], retry_headers(fault))
    if kind == "malformed_json":
        return malformed()
    reply = apply()
    if kind == "500_after_apply":
        reply = error_reply(fault_errors["500_after_apply"], {})
    if after_apply is not None:
        after_apply()
    return reply


def truncated_json(method: str, full_body: Callable[[], bytes]) -> bytes:
    """A 200's JSON cut short. Reads show a truncated real body; writes are dropped."""
    if method == "GET":
        full = full_body()
        return full[: max(1, len(full) // 2)]
    return b'{"id": "'


class LoopbackServer(StartStop):
    """A loopback aiohttp service on a `ServerThread` (https with `ssl_context`)."""

    # While a stream is open the clock follows the wall (see `follow_wall`).
    STREAM_TICK_SECONDS = 0.02
    CLIENT_MAX_SIZE: int | None = None  # aiohttp's default unless set

    clock: Any

    def _init_server(
        self,
        port: int,
        ssl_context: ssl.SSLContext | None,
        accept_token: Callable[[str], bool] | None,
    ) -> None:
        self._port = port
        self._ssl_context = ssl_context
        self._accept_token = accept_token
        self._server: ServerThread | None = None
        # Requests held by "timeout" faults, released early when the service stops.
        self._release: asyncio.Event | None = None
        self._in_flight = 0

    def _handle(self, request: web.Request) -> Awaitable[web.StreamResponse]:
        raise NotImplementedError

    def _app(self) -> web.Application:
        if self.CLIENT_MAX_SIZE is None:
            app = web.Application()
        else:
            app = web.Application(client_max_size=self.CLIENT_MAX_SIZE)
        app.router.add_route("*", "/{tail:.*}", self._handle)
        return app

    def start(self) -> Self:
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
            self._release = None  # bound to the stopped loop

    def _auth_refusal(self, token: str | None) -> str | None:
        """Why a request's bearer token gets a 401, or None when it is accepted.

        Any non-empty token passes unless `accept_token` was given; then only those it approves.
        """
        if token is None:
            return "Access denied: a bearer token is required."
        if self._accept_token is not None and not self._accept_token(token):
            return TOKEN_REFUSED
        return None

    def _started(self) -> ServerThread:
        if self._server is None:
            raise RuntimeError("the service is not started")
        return self._server

    async def _drain(self) -> None:
        """Let held requests finish so that shutdown leaves no handler task behind."""
        if self._release is not None:
            self._release.set()
        for _ in range(100):
            if self._in_flight == 0:
                return
            await asyncio.sleep(0.01)

    async def _hold_if_timeout(self, fault: FaultRuleBase | None) -> None:
        """A "timeout" fault holds the answer past the client's timeout (applied after)."""
        if fault is not None and fault.kind == "timeout":
            await self._hold(fault.delay_seconds)

    async def _hold(self, seconds: float) -> None:
        if self._release is None:
            self._release = asyncio.Event()  # created on the server's loop
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(self._release.wait(), seconds)

    def follow_wall(self, wall_start: float, virtual_start: datetime, loop_time: float) -> None:
        """Move a virtual clock (one with `advance_to`) by the wall time elapsed."""
        advance_to = getattr(self.clock, "advance_to", None)
        if advance_to is not None:
            advance_to(virtual_start + timedelta(seconds=loop_time - wall_start))


def serve_until_interrupted(banner: str) -> None:
    """For `python -m devhost.<service>`: print where it listens, then wait for Ctrl-C."""
    print(banner, flush=True)
    with contextlib.suppress(KeyboardInterrupt):
        threading.Event().wait()


__all__ = [
    "SHARED_FAULT_ERRORS",
    "TOKEN_REFUSED",
    "Call",
    "FaultRuleBase",
    "LoopbackServer",
    "Pending",
    "Recorded",
    "Reply",
    "answer_with_fault",
    "bearer_token",
    "check_seconds",
    "compile_routes",
    "draw_fault",
    "finish_record",
    "json_reply",
    "match_route",
    "parse_json_body",
    "retry_headers",
    "serve_until_interrupted",
    "truncated_json",
]

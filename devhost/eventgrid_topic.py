"""A local Event Grid custom topic on loopback: publish API, auth, limits, faults and delivery.

There is no official Event Grid emulator, so this stands in for a basic custom topic. It speaks
the 2018-01-01 publish API the way `azure-eventgrid` expects (see
shared/reference/eventgrid-wire.md), so the real SDK, sync or aio, can publish to it. Accepted
events are recorded and can be delivered to subscribers (loopback webhooks or in-process
callables) with Event Grid's handshake, headers and retry schedule, in virtual time.

Secrets (keys, SAS tokens, bearer tokens) are checked and then forgotten: nothing recorded or
raised by this module carries them.

Standalone (local dev): `python -m devhost.eventgrid_topic --port 8092 --deliver-to URL`.
"""

from __future__ import annotations

import argparse
import asyncio
import base64
import binascii
import hashlib
import hmac
import json
import os
import re
import secrets
import signal
import threading
import urllib.error
import urllib.parse
import urllib.request
import uuid
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from functools import lru_cache
from pathlib import Path
from typing import Any, Literal, Protocol, cast

import jsonschema
from aiohttp import web

from devhost.clock import WallClock
from devhost.server_thread import ServerThread

Schema = Literal["eventgrid", "cloudevents"]
AuthKind = Literal["key", "sas", "bearer"]
DeliveryResponse = tuple[int, dict[str, str], bytes]
DeliveryCallable = Callable[[str, dict[str, str], bytes], DeliveryResponse]
Target = str | DeliveryCallable

API_VERSION = "2018-01-01"
MAX_REQUEST_BYTES = 1_048_576
MAX_EVENT_BYTES = 1_048_576
DEFAULT_TOPIC_ID = (
    "/subscriptions/00000000-0000-0000-0000-000000000000/resourceGroups/local"
    "/providers/Microsoft.EventGrid/topics/local"
)
# Delays between consecutive delivery attempts (Event Grid's documented schedule).
RETRY_DELAYS_SECONDS: tuple[int, ...] = (10, 30, 60, 300, 600, 1800, 3600, 10800, 21600)
RETRY_DELAY_AFTER_SCHEDULE_SECONDS = 12 * 3600
# Event Grid dead-letters these at once instead of retrying.
NO_RETRY_STATUSES: frozenset[int] = frozenset({400, 413})
WEBHOOK_ORIGIN = "eventgrid.azure.net"
VALIDATION_EVENT_TYPE = "Microsoft.EventGrid.SubscriptionValidationEvent"

_EVENTGRID_CT = "application/json"
_CLOUDEVENTS_BATCH_CT = "application/cloudevents-batch+json"
_CLOUDEVENT_SINGLE_CT = "application/cloudevents+json"
_LOOPBACK_HOSTS = frozenset({"127.0.0.1", "localhost", "::1"})


class Clock(Protocol):
    """Anything with `now()`: the VirtualClock in tests, a wall clock when run standalone."""

    def now(self) -> datetime: ...


class SubscriptionValidationError(RuntimeError):
    """The subscriber did not complete Event Grid's validation handshake."""


@dataclass(frozen=True)
class ReceivedEvent:
    """One accepted event exactly as published (before Event Grid stamps topic/metadata)."""

    event: dict[str, Any]
    schema: Schema
    received_at: datetime
    auth: AuthKind
    content_type: str


@dataclass(frozen=True)
class PublishRequest:
    """One publish request as seen by the topic; never holds credential values."""

    received_at: datetime
    status: int
    auth: AuthKind | None
    event_count: int
    fault: str | None = None
    error_code: str | None = None
    error: str | None = None
    content_type: str = ""


@dataclass(frozen=True)
class DeliveryAttempt:
    """One attempt to deliver one event to one subscription."""

    subscription: str
    event_id: str
    attempt: int  # 1-based; the request carried aeg-delivery-count = attempt - 1
    status: int | None  # None when the request failed without a response
    at: datetime
    outcome: Literal["delivered", "retry", "dead-lettered"]
    error: str | None = None


@dataclass(frozen=True)
class DeadLetter:
    """An event Event Grid gave up on for one subscription."""

    subscription: str
    event_id: str
    event: dict[str, Any]
    reason: str
    attempts: int
    last_status: int | None
    dead_lettered_at: datetime


@dataclass
class _Subscription:
    name: str
    target: Target
    delivery_schema: Schema
    event_types: frozenset[str] | None
    max_attempts: int
    ttl: timedelta


@dataclass
class _Pending:
    seq: int
    subscription: str
    event_id: str
    payload: dict[str, Any]  # the event in the subscription's delivery schema
    data_version: str
    expires_at: datetime
    next_at: datetime
    attempts: int = 0
    in_flight: bool = False
    last_status: int | None = None


@dataclass
class _Faults:
    fail_remaining: int = 0
    fail_status: int = 500
    refuse_until: datetime | None = None
    refuse_status: int = 503
    hang_remaining: int = 0
    hang_seconds: float = 0.0
    counts: dict[str, int] = field(default_factory=lambda: {"fail": 0, "refuse": 0, "hang": 0})


class _Rejected(Exception):
    """A publish request refused with an Event Grid style JSON error."""

    def __init__(self, status: int, code: str, message: str) -> None:
        super().__init__(message)
        self.status = status
        self.code = code
        self.message = message


# --- specs ---------------------------------------------------------------------------------


def _specs_dir() -> Path:
    # The specs ship with the test bed (devhost/specs/, sources in SOURCES.md there).
    override = os.environ.get("TESTBED_SPECS_DIR")
    if override:
        return Path(override)
    return Path(__file__).resolve().parent / "specs"


def _is_rfc3339(value: object) -> bool:
    """RFC 3339 date-time (what `format: date-time` means); non-strings are left to `type`."""
    if not isinstance(value, str):
        return True
    match = re.fullmatch(
        r"(\d{4}-\d{2}-\d{2})[Tt](\d{2}:\d{2}:\d{2})(?:\.(\d+))?([Zz]|[+-]\d{2}:\d{2})", value
    )
    if match is None:
        return False
    date, clock, fraction, offset = match.groups()
    # fromisoformat wants at most 6 fraction digits; .NET producers send 7.
    micro = f".{fraction[:6].ljust(6, '0')}" if fraction else ""
    offset = "+00:00" if offset in ("Z", "z") else offset
    try:
        datetime.fromisoformat(f"{date}T{clock}{micro}{offset}")
    except ValueError:
        return False
    return True


def _format_checker() -> Any:
    # jsonschema only checks date-time when optional packages are installed; check it ourselves
    # so the result does not depend on what else is in the venv.
    checker = jsonschema.FormatChecker(formats=())
    checker.checks("date-time")(_is_rfc3339)
    return checker


@lru_cache(maxsize=1)
def _eventgrid_validator() -> Any:
    swagger = json.loads((_specs_dir() / "eventgrid-publish.2018-01-01.swagger.json").read_text())
    schema = swagger["definitions"]["EventGridEvent"]
    # Swagger 2.0 schemas are JSON Schema draft 4.
    return jsonschema.Draft4Validator(schema, format_checker=_format_checker())


@lru_cache(maxsize=1)
def _cloudevents_validator() -> Any:
    schema = json.loads((_specs_dir() / "cloudevents-1.0.schema.json").read_text())
    return jsonschema.Draft7Validator(schema, format_checker=_format_checker())


def _schema_errors(validator: Any, event: object, index: int) -> list[str]:
    errors = sorted(validator.iter_errors(event), key=lambda e: list(e.absolute_path))
    out = []
    for error in errors:
        where = "/".join(str(p) for p in error.absolute_path)
        out.append(f"events[{index}]{'.' + where if where else ''}: {error.message}")
    return out


# --- SAS -----------------------------------------------------------------------------------


def _sign(key: bytes, message: str) -> bytes:
    # Same construction as azure.eventgrid generate_sas: base64(HMAC-SHA256(b64decode(key), msg)).
    return base64.b64encode(hmac.new(key, message.encode("ascii"), hashlib.sha256).digest())


def _parse_sas_expiry(text: str) -> datetime | None:
    # generate_sas writes str(datetime) ("2026-01-01 00:00:00+00:00"); the .NET samples write
    # the en-US form ("1/1/2026 12:00:00 AM"). Naive values are UTC, as the SDK's name says.
    parsed: datetime | None = None
    try:
        parsed = datetime.fromisoformat(text)
    except ValueError:
        try:
            parsed = datetime.strptime(f"{text} +0000", "%m/%d/%Y %I:%M:%S %p %z")
        except ValueError:
            return None
    if parsed.tzinfo is None:
        parsed = parsed.replace(tzinfo=UTC)
    return parsed


def _utc_iso(moment: datetime) -> str:
    return moment.astimezone(UTC).isoformat().replace("+00:00", "Z")


def _error_body(code: str, message: str) -> bytes:
    return json.dumps({"error": {"code": code, "message": message}}).encode()


def _header(headers: Mapping[str, str], name: str) -> str | None:
    lowered = name.lower()
    for key, value in headers.items():
        if key.lower() == lowered:
            return value
    return None


class EventGridTopic:
    """A basic Event Grid custom topic served on 127.0.0.1 (see module docstring)."""

    def __init__(
        self,
        clock: Clock,
        *,
        key: str | None = None,
        input_schema: Schema = "eventgrid",
        accept_bearer: Callable[[str], bool] | None = None,
        topic_id: str = DEFAULT_TOPIC_ID,
        port: int = 0,
        max_request_bytes: int = MAX_REQUEST_BYTES,
        max_event_bytes: int = MAX_EVENT_BYTES,
        delivery_timeout: float = 30.0,
    ) -> None:
        if input_schema not in ("eventgrid", "cloudevents"):
            raise ValueError(
                f"input_schema must be 'eventgrid' or 'cloudevents', not {input_schema!r}"
            )
        key = key if key is not None else base64.b64encode(secrets.token_bytes(32)).decode()
        try:
            # generate_sas base64-decodes the key, so a real topic key is always base64.
            self._key_bytes = base64.b64decode(key, validate=True)
        except binascii.Error:
            raise ValueError("the topic key must be base64, as Event Grid keys are") from None
        self._key = key
        self._clock = clock
        self.input_schema: Schema = input_schema
        self.topic_id = topic_id
        self._accept_bearer = accept_bearer or (lambda token: bool(token))
        self._max_request_bytes = max_request_bytes
        self._max_event_bytes = max_event_bytes
        self._delivery_timeout = delivery_timeout
        self._server = ServerThread(self._make_app, port=port)
        self._lock = threading.Lock()
        self._events: list[ReceivedEvent] = []
        self._requests: list[PublishRequest] = []
        self._faults = _Faults()
        self._subscriptions: dict[str, _Subscription] = {}
        self._pending: list[_Pending] = []
        self._deliveries: list[DeliveryAttempt] = []
        self._dead_letters: list[DeadLetter] = []
        self._seq = 0
        # Webhook deliveries go straight to loopback; never through an environment proxy.
        self._opener = urllib.request.build_opener(urllib.request.ProxyHandler({}))

    def __repr__(self) -> str:
        # Deliberately omits the key.
        return f"<EventGridTopic schema={self.input_schema} port={self._server.port}>"

    # --- lifecycle -------------------------------------------------------------------------

    def start(self) -> EventGridTopic:
        self._server.start()
        return self

    def stop(self) -> None:
        self._server.stop()

    def __enter__(self) -> EventGridTopic:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()

    @property
    def key(self) -> str:
        """The topic access key (for building credentials in tests)."""
        return self._key

    @property
    def base_url(self) -> str:
        return self._server.base_url

    @property
    def endpoint(self) -> str:
        return f"{self._server.base_url}/api/events"

    # --- records ---------------------------------------------------------------------------

    @property
    def events(self) -> list[ReceivedEvent]:
        with self._lock:
            return list(self._events)

    @property
    def publish_requests(self) -> list[PublishRequest]:
        with self._lock:
            return list(self._requests)

    @property
    def deliveries(self) -> list[DeliveryAttempt]:
        with self._lock:
            return list(self._deliveries)

    @property
    def dead_letters(self) -> list[DeadLetter]:
        with self._lock:
            return list(self._dead_letters)

    @property
    def fault_counts(self) -> dict[str, int]:
        with self._lock:
            return dict(self._faults.counts)

    # --- fault injection -------------------------------------------------------------------

    def fail_next(self, n: int, status: int = 500) -> None:
        """Answer the next `n` publish requests with `status` (no events stored)."""
        with self._lock:
            self._faults.fail_remaining = n
            self._faults.fail_status = status

    def refuse_until(self, moment: datetime, status: int = 503) -> None:
        """Refuse every publish while the virtual clock is before `moment`."""
        with self._lock:
            self._faults.refuse_until = moment
            self._faults.refuse_status = status

    def hang_next(self, n: int, seconds: float) -> None:
        """Process the next `n` publishes normally but hold each response for real `seconds`.

        Events are stored before the hold, as a real service may commit a request whose
        response the client then times out on; a client retry therefore duplicates them.
        """
        with self._lock:
            self._faults.hang_remaining = n
            self._faults.hang_seconds = seconds

    def clear_faults(self) -> None:
        with self._lock:
            counts = self._faults.counts
            self._faults = _Faults(counts=counts)

    # --- publish API -----------------------------------------------------------------------

    def _make_app(self) -> web.Application:
        # Room above the 1 MB limit so oversized bodies get Event Grid's JSON 413, not aiohttp's.
        app = web.Application(client_max_size=max(self._max_request_bytes, MAX_REQUEST_BYTES) * 4)
        app.router.add_post("/api/events", self._handle_publish)
        return app

    def _take_fault(self, now: datetime) -> tuple[str | None, int, float]:
        """Consume the fault (if any) that applies to the request arriving at `now`."""
        with self._lock:
            faults = self._faults
            if faults.refuse_until is not None and now < faults.refuse_until:
                faults.counts["refuse"] += 1
                return "refuse", faults.refuse_status, 0.0
            if faults.fail_remaining > 0:
                faults.fail_remaining -= 1
                faults.counts["fail"] += 1
                return "fail", faults.fail_status, 0.0
            if faults.hang_remaining > 0:
                faults.hang_remaining -= 1
                faults.counts["hang"] += 1
                return "hang", 0, faults.hang_seconds
        return None, 0, 0.0

    async def _handle_publish(self, request: web.Request) -> web.Response:
        now = self._clock.now()
        content_type = request.headers.get("Content-Type", "")
        fault, fault_status, hold = self._take_fault(now)
        if fault in ("refuse", "fail"):
            code = "ServiceUnavailable" if fault_status == 503 else "InternalServerError"
            self._record(
                PublishRequest(now, fault_status, None, 0, fault, code, None, content_type)
            )
            return self._json_error(fault_status, code, f"Injected fault ({fault}).")

        auth: AuthKind | None = None
        try:
            if request.query.get("api-version") != API_VERSION:
                raise _Rejected(
                    400,
                    "BadRequest",
                    f"The api-version query parameter is missing or not {API_VERSION}.",
                )
            auth, reason = self._authenticate(request.headers)
            if auth is None:
                raise _Rejected(
                    401,
                    "Unauthorized",
                    "The request authorization is not valid for this topic: "
                    f"{reason}. Send aeg-sas-key, aeg-sas-token or Authorization: Bearer.",
                )
            declared = request.content_length
            if declared is not None and declared > self._max_request_bytes:
                raise self._too_large(declared)
            try:
                body = await request.read()
            except web.HTTPRequestEntityTooLarge:
                raise self._too_large(None) from None
            if len(body) > self._max_request_bytes:
                raise self._too_large(len(body))
            schema, events = self._parse_events(content_type, body)
        except _Rejected as rejected:
            self._record(
                PublishRequest(
                    now,
                    rejected.status,
                    auth,
                    0,
                    fault,
                    rejected.code,
                    rejected.message,
                    content_type,
                )
            )
            if hold:
                await asyncio.sleep(hold)
            return self._json_error(rejected.status, rejected.code, rejected.message)

        with self._lock:
            for event in events:
                self._events.append(ReceivedEvent(event, schema, now, auth, content_type))
                self._fan_out_locked(event, schema, now)
            self._requests.append(
                PublishRequest(now, 200, auth, len(events), fault, None, None, content_type)
            )
        if hold:
            await asyncio.sleep(hold)
        return web.Response(status=200)

    def _too_large(self, size: int | None) -> _Rejected:
        got = f" ({size} bytes)" if size is not None else ""
        return _Rejected(
            413,
            "RequestEntityTooLarge",
            f"The request body{got} exceeds the limit of {self._max_request_bytes} bytes.",
        )

    def _record(self, entry: PublishRequest) -> None:
        with self._lock:
            self._requests.append(entry)

    @staticmethod
    def _json_error(status: int, code: str, message: str) -> web.Response:
        return web.Response(
            status=status, body=_error_body(code, message), content_type="application/json"
        )

    def _authenticate(self, headers: Mapping[str, str]) -> tuple[AuthKind | None, str]:
        """Which credential authorised the request, or None and a reason (never a value)."""
        reasons: list[str] = []
        key = headers.get("aeg-sas-key")
        if key is not None:
            if hmac.compare_digest(key.encode("utf-8", "replace"), self._key.encode()):
                return "key", ""
            reasons.append("aeg-sas-key does not match the topic key")
        token = headers.get("aeg-sas-token")
        if token is not None:
            problem = self._check_sas(token)
            if problem is None:
                return "sas", ""
            reasons.append(f"aeg-sas-token {problem}")
        authorization = headers.get("Authorization")
        if authorization is not None:
            scheme, _, bearer = authorization.partition(" ")
            bearer = bearer.strip()
            if scheme.lower() == "bearer" and bearer and self._accept_bearer(bearer):
                return "bearer", ""
            reasons.append("the Authorization header is not an accepted bearer token")
        return None, "; ".join(reasons) or "no credential was sent"

    def _check_sas(self, token: str) -> str | None:
        """None if the token is valid for this topic, else what is wrong with it."""
        unsigned, sep, signature = token.rpartition("&s=")
        if not sep or not unsigned.startswith("r="):
            return "is malformed (expected r=...&e=...&s=...)"
        try:
            expected = _sign(self._key_bytes, unsigned)
            provided = urllib.parse.unquote(signature).encode("ascii")
        except UnicodeError:
            return "is malformed (non-ASCII)"
        if not hmac.compare_digest(expected, provided):
            return "signature is not valid for the topic key"
        fields = dict(part.partition("=")[::2] for part in unsigned.split("&"))
        resource = urllib.parse.unquote(fields.get("r", ""))
        expiry = _parse_sas_expiry(urllib.parse.unquote(fields.get("e", "")))
        if expiry is None:
            return "expiry is missing or unreadable"
        # The SDK builds the expiry from the real clock, so compare with the real clock.
        if expiry <= datetime.now(UTC):
            return "has expired"
        if not self._resource_matches(resource):
            return "was issued for another resource"
        return None

    def _resource_matches(self, resource: str) -> bool:
        base = resource.partition("?")[0].rstrip("/").lower()
        port = self._server.port
        allowed = {
            self.endpoint.lower(),
            f"http://127.0.0.1:{port}/api/events",
            f"http://localhost:{port}/api/events",
        }
        return base in allowed

    def _parse_events(self, content_type: str, body: bytes) -> tuple[Schema, list[dict[str, Any]]]:
        mime = content_type.partition(";")[0].strip().lower()
        schema: Schema
        if mime in ("", _EVENTGRID_CT):
            schema = "eventgrid"
        elif mime in (_CLOUDEVENTS_BATCH_CT, _CLOUDEVENT_SINGLE_CT):
            schema = "cloudevents"
        else:
            raise _Rejected(400, "BadRequest", f"Unsupported Content-Type {mime!r}.")
        if schema != self.input_schema:
            expected = (
                "Event Grid schema events (application/json)"
                if self.input_schema == "eventgrid"
                else "CloudEvents 1.0 (application/cloudevents-batch+json)"
            )
            raise _Rejected(
                400,
                "BadRequest",
                f"This topic's input schema is {self.input_schema}; it accepts {expected}, "
                f"not {schema} events.",
            )
        try:
            parsed: object = json.loads(body.decode("utf-8"))
        except (UnicodeDecodeError, json.JSONDecodeError):
            raise _Rejected(400, "BadRequest", "The request body is not valid JSON.") from None
        if mime == _CLOUDEVENT_SINGLE_CT and isinstance(parsed, dict):
            parsed = [parsed]  # structured-mode single CloudEvent
        if not isinstance(parsed, list):
            raise _Rejected(400, "BadRequest", "The request body must be a JSON array of events.")
        if not parsed:
            raise _Rejected(400, "BadRequest", "The request body must contain at least one event.")
        for index, event in enumerate(parsed):
            size = len(json.dumps(event, separators=(",", ":")).encode())
            if size > self._max_event_bytes:
                raise _Rejected(
                    413,
                    "RequestEntityTooLarge",
                    f"events[{index}] is {size} bytes; the limit is {self._max_event_bytes} bytes.",
                )
        problems: list[str] = []
        for index, event in enumerate(parsed):
            problems.extend(self._event_problems(schema, event, index))
        if problems:
            shown = "; ".join(problems[:10])
            more = f" (and {len(problems) - 10} more)" if len(problems) > 10 else ""
            raise _Rejected(400, "BadRequest", f"Invalid events: {shown}{more}")
        return schema, cast(list[dict[str, Any]], parsed)

    @staticmethod
    def _event_problems(schema: Schema, event: object, index: int) -> list[str]:
        if schema == "eventgrid":
            problems = _schema_errors(_eventgrid_validator(), event, index)
            if isinstance(event, dict) and event.get("metadataVersion", "1") != "1":
                problems.append(f"events[{index}].metadataVersion: must be '1' if present")
            return problems
        problems = _schema_errors(_cloudevents_validator(), event, index)
        if isinstance(event, dict):
            if "specversion" in event and event["specversion"] != "1.0":
                problems.append(f"events[{index}].specversion: must be '1.0'")
            if "data" in event and "data_base64" in event:
                problems.append(f"events[{index}]: only one of data and data_base64 may be set")
        return problems

    # --- subscriptions and delivery --------------------------------------------------------

    def add_subscription(
        self,
        name: str,
        target: Target,
        *,
        delivery_schema: Schema | None = None,
        event_types: list[str] | None = None,
        max_attempts: int = 30,
        ttl_minutes: int = 1440,
        backfill: bool = False,
    ) -> None:
        """Validate the endpoint (handshake) and start delivering events published from now on.

        `backfill` also queues the events accepted before (local dev: a subscriber that came up
        after the first publish still gets it; Azure has no such option).
        """
        schema: Schema = delivery_schema or self.input_schema
        if schema not in ("eventgrid", "cloudevents"):
            raise ValueError(
                f"delivery_schema must be 'eventgrid' or 'cloudevents', not {schema!r}"
            )
        if self.input_schema == "cloudevents" and schema == "eventgrid":
            # Event Grid cannot turn CloudEvents input into Event Grid schema output.
            raise ValueError("a CloudEvents topic can only deliver CloudEvents")
        if not 1 <= max_attempts <= 30:
            raise ValueError("max_attempts must be between 1 and 30")
        if not 1 <= ttl_minutes <= 1440:
            raise ValueError("ttl_minutes must be between 1 and 1440")
        if isinstance(target, str):
            parsed = urllib.parse.urlsplit(target)
            if parsed.scheme != "http" or parsed.hostname not in _LOOPBACK_HOSTS:
                raise ValueError("webhook targets must be http URLs on loopback")
        with self._lock:
            if name in self._subscriptions:
                raise ValueError(f"subscription {name!r} already exists")
        self._handshake(name, target, schema)
        subscription = _Subscription(
            name=name,
            target=target,
            delivery_schema=schema,
            event_types=frozenset(t.lower() for t in event_types) if event_types else None,
            max_attempts=max_attempts,
            ttl=timedelta(minutes=ttl_minutes),
        )
        with self._lock:
            self._subscriptions[name] = subscription
            if backfill:
                now = self._clock.now()
                for received in self._events:
                    self._fan_out_locked(received.event, received.schema, now, only=name)

    def remove_subscription(self, name: str) -> None:
        """Delete a subscription and drop its pending deliveries."""
        with self._lock:
            self._subscriptions.pop(name, None)
            self._pending = [p for p in self._pending if p.subscription != name]

    @property
    def subscription_names(self) -> list[str]:
        with self._lock:
            return list(self._subscriptions)

    def _handshake(self, name: str, target: Target, schema: Schema) -> None:
        if schema == "cloudevents":
            # CloudEvents webhook abuse protection: OPTIONS with WebHook-Request-Origin.
            headers = {"WebHook-Request-Origin": WEBHOOK_ORIGIN, "WebHook-Request-Rate": "120"}
            try:
                status, reply_headers, _ = self._call(target, "OPTIONS", headers, b"")
            except OSError as exc:
                raise SubscriptionValidationError(
                    f"{name}: validation request failed: {type(exc).__name__}"
                ) from None
            allowed = _header(reply_headers, "WebHook-Allowed-Origin")
            if status != 200 or allowed not in (WEBHOOK_ORIGIN, "*"):
                raise SubscriptionValidationError(
                    f"{name}: OPTIONS answered {status} with WebHook-Allowed-Origin={allowed!r}"
                )
            return
        code = str(uuid.uuid4()).upper()
        event = {
            "id": str(uuid.uuid4()),
            "topic": self.topic_id,
            "subject": "",
            "data": {"validationCode": code},
            "eventType": VALIDATION_EVENT_TYPE,
            "eventTime": _utc_iso(self._clock.now()),
            "metadataVersion": "1",
            "dataVersion": "2",
        }
        headers = self._notification_headers(name, "SubscriptionValidation", 0, "2", "1")
        headers["Content-Type"] = "application/json; charset=utf-8"
        try:
            status, _, body = self._call(target, "POST", headers, json.dumps([event]).encode())
        except OSError as exc:
            raise SubscriptionValidationError(
                f"{name}: validation request failed: {type(exc).__name__}"
            ) from None
        try:
            answer = json.loads(body.decode("utf-8")) if body else None
        except (UnicodeDecodeError, json.JSONDecodeError):
            answer = None
        echoed = answer.get("validationResponse") if isinstance(answer, dict) else None
        if status != 200 or echoed != code:
            raise SubscriptionValidationError(
                f"{name}: validation answered {status} without the validation code"
            )

    @staticmethod
    def _notification_headers(
        name: str, event_type: str, delivery_count: int, data_version: str, metadata_version: str
    ) -> dict[str, str]:
        return {
            "aeg-event-type": event_type,
            # Event Grid sends the subscription name upper-cased.
            "aeg-subscription-name": name.upper(),
            "aeg-delivery-count": str(delivery_count),
            "aeg-data-version": data_version,
            "aeg-metadata-version": metadata_version,
        }

    def _fan_out_locked(
        self, event: dict[str, Any], schema: Schema, now: datetime, only: str | None = None
    ) -> None:
        """Queue an accepted event for every matching subscription (caller holds the lock)."""
        event_type = str(event.get("eventType" if schema == "eventgrid" else "type", ""))
        for sub in self._subscriptions.values():
            if only is not None and sub.name != only:
                continue
            if sub.event_types is not None and event_type.lower() not in sub.event_types:
                continue
            payload, data_version = self._to_delivery_schema(event, schema, sub.delivery_schema)
            self._seq += 1
            self._pending.append(
                _Pending(
                    seq=self._seq,
                    subscription=sub.name,
                    event_id=str(event.get("id", "")),
                    payload=payload,
                    data_version=data_version,
                    expires_at=now + sub.ttl,
                    next_at=now,
                )
            )

    def _to_delivery_schema(
        self, event: dict[str, Any], source: Schema, target: Schema
    ) -> tuple[dict[str, Any], str]:
        if source == "cloudevents":
            return dict(event), ""
        if target == "eventgrid":
            # Event Grid stamps the topic and metadata version on what it delivers.
            stamped = dict(event)
            stamped["topic"] = self.topic_id
            stamped["metadataVersion"] = "1"
            return stamped, str(event.get("dataVersion", ""))
        # Event Grid schema in, CloudEvents out: Event Grid maps the envelope fields.
        converted: dict[str, Any] = {
            "specversion": "1.0",
            "id": event.get("id"),
            "source": self.topic_id,
            "type": event.get("eventType"),
            "time": event.get("eventTime"),
            "subject": event.get("subject"),
            "datacontenttype": "application/json",
            "data": event.get("data"),
        }
        return converted, str(event.get("dataVersion", ""))

    def next_delivery_at(self) -> datetime | None:
        """When the earliest pending delivery is due (virtual time), or None."""
        with self._lock:
            waiting = [p.next_at for p in self._pending if not p.in_flight]
        return min(waiting) if waiting else None

    def deliver_due(self) -> list[DeliveryAttempt]:
        """Attempt every delivery due at `clock.now()`; returns the attempts made."""
        now = self._clock.now()
        with self._lock:
            due = sorted(
                (p for p in self._pending if not p.in_flight and p.next_at <= now),
                key=lambda p: (p.next_at, p.seq),
            )
            for pending in due:
                pending.in_flight = True
        made: list[DeliveryAttempt] = []
        for pending in due:
            attempt = self._deliver_one(pending)
            if attempt is not None:
                made.append(attempt)
        return made

    def _deliver_one(self, pending: _Pending) -> DeliveryAttempt | None:
        with self._lock:
            sub = self._subscriptions.get(pending.subscription)
        if sub is None:  # removed meanwhile
            return None
        now = self._clock.now()
        if now > pending.expires_at:
            with self._lock:
                self._dead_letter_locked(pending, "TimeToLiveExceeded", now)
            return None
        if sub.delivery_schema == "eventgrid":
            headers = self._notification_headers(
                sub.name, "Notification", pending.attempts, pending.data_version, "1"
            )
            headers["Content-Type"] = "application/json; charset=utf-8"
            body = json.dumps([pending.payload]).encode()
        else:
            # For CloudEvents the metadata version is the spec version.
            headers = self._notification_headers(
                sub.name, "Notification", pending.attempts, pending.data_version, "1.0"
            )
            headers["Content-Type"] = "application/cloudevents+json; charset=utf-8"
            body = json.dumps(pending.payload).encode()
        status: int | None
        error: str | None = None
        try:
            status, _, _ = self._call(sub.target, "POST", headers, body)
        except Exception as exc:  # any failure to get a response is retried, as Event Grid does
            status, error = None, type(exc).__name__
        at = self._clock.now()
        with self._lock:
            pending.attempts += 1
            pending.last_status = status
            outcome: Literal["delivered", "retry", "dead-lettered"]
            if status is not None and 200 <= status < 300:
                outcome = "delivered"
                self._pending.remove(pending)
            elif status in NO_RETRY_STATUSES:
                outcome = "dead-lettered"
                reason = "BadRequest" if status == 400 else "RequestEntityTooLarge"
                self._dead_letter_locked(pending, reason, at)
            elif pending.attempts >= sub.max_attempts:
                outcome = "dead-lettered"
                self._dead_letter_locked(pending, "MaxDeliveryAttemptsExceeded", at)
            else:
                index = pending.attempts - 1
                delay = (
                    RETRY_DELAYS_SECONDS[index]
                    if index < len(RETRY_DELAYS_SECONDS)
                    else RETRY_DELAY_AFTER_SCHEDULE_SECONDS
                )
                next_at = at + timedelta(seconds=delay)
                if next_at > pending.expires_at:
                    outcome = "dead-lettered"
                    self._dead_letter_locked(pending, "TimeToLiveExceeded", at)
                else:
                    outcome = "retry"
                    pending.next_at = next_at
                    pending.in_flight = False
            attempt = DeliveryAttempt(
                sub.name, pending.event_id, pending.attempts, status, at, outcome, error
            )
            self._deliveries.append(attempt)
        return attempt

    def _dead_letter_locked(self, pending: _Pending, reason: str, at: datetime) -> None:
        if pending in self._pending:
            self._pending.remove(pending)
        self._dead_letters.append(
            DeadLetter(
                pending.subscription,
                pending.event_id,
                pending.payload,
                reason,
                pending.attempts,
                pending.last_status,
                at,
            )
        )

    def _call(
        self, target: Target, method: str, headers: dict[str, str], body: bytes
    ) -> DeliveryResponse:
        if not isinstance(target, str):
            return target(method, dict(headers), body)
        request = urllib.request.Request(  # noqa: S310 - target is checked to be http loopback
            target, data=body if method != "OPTIONS" else None, headers=headers, method=method
        )
        try:
            with self._opener.open(request, timeout=self._delivery_timeout) as response:
                return response.status, dict(response.headers.items()), response.read()
        except urllib.error.HTTPError as error:
            return error.code, dict(error.headers.items()), error.read()


def main(argv: list[str] | None = None) -> None:
    """Run a topic on a fixed port following the wall clock, delivering every second."""
    parser = argparse.ArgumentParser(description="Local Event Grid custom topic (loopback).")
    parser.add_argument("--port", type=int, default=8092)
    parser.add_argument("--key", default=os.environ.get("EVENTGRID_TOPIC_KEY"))
    parser.add_argument("--schema", choices=("eventgrid", "cloudevents"), default="eventgrid")
    parser.add_argument("--deliver-to", action="append", default=[], metavar="URL")
    args = parser.parse_args(argv)
    schema = cast(Schema, args.schema)
    topic = EventGridTopic(WallClock(), key=args.key, input_schema=schema, port=args.port)
    with topic:
        print(f"Event Grid topic ({schema}) at {topic.endpoint}", flush=True)
        if args.key is None:
            # Nothing else can tell a local developer the generated key.
            print(f"generated key (set EVENTGRID_TOPIC_KEY to choose one): {topic.key}", flush=True)
        for index, url in enumerate(args.deliver_to):
            topic.add_subscription(f"local-{index}", url)
            print(f"delivering to {url}", flush=True)
        # Stop on Ctrl-C or SIGTERM (background jobs of a script never see SIGINT).
        stopping = threading.Event()
        signal.signal(signal.SIGTERM, lambda *_: stopping.set())
        try:
            while not stopping.wait(1.0):
                topic.deliver_due()
        except KeyboardInterrupt:
            pass


if __name__ == "__main__":
    main()

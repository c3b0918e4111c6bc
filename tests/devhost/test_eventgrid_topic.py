"""The loopback Event Grid topic, driven by the real azure-eventgrid SDK (sync and aio)."""

from __future__ import annotations

import asyncio
import base64
import json
import threading
import urllib.error
import urllib.request
from collections.abc import Iterator, Mapping
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from typing import Any, Literal

import pytest
from aiohttp import web
from azure.core.credentials import AzureKeyCredential, AzureSasCredential
from azure.core.exceptions import (
    ClientAuthenticationError,
    HttpResponseError,
    ServiceResponseError,
)
from azure.core.messaging import CloudEvent
from azure.eventgrid import EventGridEvent, EventGridPublisherClient, generate_sas
from azure.eventgrid.aio import EventGridPublisherClient as AioEventGridPublisherClient
from multidict import CIMultiDict

from devhost.clock import VirtualClock
from devhost.credentials import AsyncStaticTokenCredential, StaticTokenCredential
from devhost.eventgrid_topic import (
    DEFAULT_TOPIC_ID,
    DeliveryResponse,
    EventGridTopic,
    Schema,
    SubscriptionValidationError,
)
from devhost.server_thread import ServerThread

BEARER = "test-bearer-token-0123456789"
AuthName = Literal["key", "sas", "bearer"]


# --- helpers -------------------------------------------------------------------------------


def wall_in(hours: float) -> datetime:
    return datetime.now(UTC) + timedelta(hours=hours)


def sas_for(topic: EventGridTopic, *, key: str | None = None, endpoint: str | None = None) -> str:
    return generate_sas(endpoint or topic.endpoint, key or topic.key, wall_in(1))


def credential_for(topic: EventGridTopic, auth: AuthName) -> Any:
    if auth == "key":
        return AzureKeyCredential(topic.key)
    if auth == "sas":
        return AzureSasCredential(sas_for(topic))
    return StaticTokenCredential(BEARER)


def per_call(auth: AuthName) -> dict[str, Any]:
    # Bearer over plain http must be allowed per call (the basic-topic wrapper drops constructor
    # kwargs), and only for bearer: without a token policy to consume it, `enforce_https`
    # reaches the transport and requests rejects it.
    return {"enforce_https": False} if auth == "bearer" else {}


def eg_event(event_type: str = "Relay.AgentRunCompleted", **data: Any) -> EventGridEvent:
    return EventGridEvent(
        subject="runs/run_1",
        event_type=event_type,
        data={"runId": "run_1", **data},
        data_version="1.0",
    )


def cloud_event(event_type: str = "Relay.AgentRunCompleted") -> CloudEvent[Any]:
    return CloudEvent(source="/relay/runs", type=event_type, data={"runId": "run_1"})


def raw_post(
    url: str, body: bytes, headers: dict[str, str], method: str = "POST"
) -> tuple[int, dict[str, Any]]:
    """A plain HTTP request for what the SDK will not send; returns status and JSON body."""
    opener = urllib.request.build_opener(urllib.request.ProxyHandler({}))
    request = urllib.request.Request(url, data=body, headers=headers, method=method)  # noqa: S310
    try:
        with opener.open(request, timeout=5) as response:
            status, payload = response.status, response.read()
    except urllib.error.HTTPError as error:
        status, payload = error.code, error.read()
    return status, (json.loads(payload) if payload else {})


def publish_raw(
    topic: EventGridTopic,
    events: object,
    *,
    content_type: str = "application/json; charset=utf-8",
    query: str = "?api-version=2018-01-01",
    headers: dict[str, str] | None = None,
) -> tuple[int, dict[str, Any]]:
    sent = {"Content-Type": content_type, "aeg-sas-key": topic.key}
    if headers is not None:
        sent = {"Content-Type": content_type, **headers}
    body = events if isinstance(events, bytes) else json.dumps(events).encode()
    return raw_post(topic.endpoint + query, body, sent)


def valid_eg_dict(**overrides: Any) -> dict[str, Any]:
    event: dict[str, Any] = {
        "id": "evt-1",
        "subject": "runs/run_1",
        "data": {"runId": "run_1"},
        "eventType": "Relay.AgentRunCompleted",
        "eventTime": "2026-01-01T00:00:00.1234567Z",
        "dataVersion": "1.0",
    }
    event.update(overrides)
    return event


def valid_ce_dict(**overrides: Any) -> dict[str, Any]:
    event: dict[str, Any] = {
        "specversion": "1.0",
        "id": "evt-1",
        "source": "/relay/runs",
        "type": "Relay.AgentRunCompleted",
        "time": "2026-01-01T00:00:00Z",
        "data": {"runId": "run_1"},
    }
    event.update(overrides)
    return event


@dataclass
class Received:
    method: str
    headers: Mapping[str, str]
    body: bytes


class Subscriber:
    """A loopback webhook that does Event Grid's handshakes and answers with scripted statuses."""

    def __init__(self) -> None:
        self.requests: list[Received] = []
        self.statuses: list[int] = []  # consumed per notification; 200 once empty
        self._lock = threading.Lock()
        self.server = ServerThread(self._app)

    def _app(self) -> web.Application:
        app = web.Application()
        app.router.add_route("*", "/hook", self._handle)
        return app

    async def _handle(self, request: web.Request) -> web.Response:
        body = await request.read()
        with self._lock:
            # urllib re-cases header names; HTTP header names are case-insensitive anyway.
            self.requests.append(Received(request.method, CIMultiDict(request.headers), body))
        if request.method == "OPTIONS":
            origin = request.headers.get("WebHook-Request-Origin", "")
            return web.Response(
                headers={"WebHook-Allowed-Origin": origin, "WebHook-Allowed-Rate": "*"}
            )
        if request.headers.get("aeg-event-type") == "SubscriptionValidation":
            code = json.loads(body)[0]["data"]["validationCode"]
            return web.json_response({"validationResponse": code})
        with self._lock:
            status = self.statuses.pop(0) if self.statuses else 200
        return web.Response(status=status)

    @property
    def url(self) -> str:
        return f"{self.server.base_url}/hook"

    def notifications(self) -> list[Received]:
        with self._lock:
            return [r for r in self.requests if r.headers.get("aeg-event-type") == "Notification"]


class CallableSubscriber:
    """An in-process target, as an emulated Functions host would be."""

    def __init__(self, statuses: list[int] | None = None) -> None:
        self.calls: list[Received] = []
        self.statuses = list(statuses or [])
        self.validation_code_override: str | None = None

    def __call__(self, method: str, headers: dict[str, str], body: bytes) -> DeliveryResponse:
        self.calls.append(Received(method, headers, body))
        if method == "OPTIONS":
            return 200, {"WebHook-Allowed-Origin": "*"}, b""
        if headers.get("aeg-event-type") == "SubscriptionValidation":
            code = self.validation_code_override or json.loads(body)[0]["data"]["validationCode"]
            return (
                200,
                {"Content-Type": "application/json"},
                json.dumps({"validationResponse": code}).encode(),
            )
        status = self.statuses.pop(0) if self.statuses else 200
        return status, {}, b""

    def notifications(self) -> list[Received]:
        return [c for c in self.calls if c.headers.get("aeg-event-type") == "Notification"]


@pytest.fixture
def clock() -> VirtualClock:
    return VirtualClock()


@pytest.fixture
def topic(clock: VirtualClock) -> Iterator[EventGridTopic]:
    with EventGridTopic(clock) as running:
        yield running


@pytest.fixture
def ce_topic(clock: VirtualClock) -> Iterator[EventGridTopic]:
    with EventGridTopic(clock, input_schema="cloudevents") as running:
        yield running


@pytest.fixture
def subscriber() -> Iterator[Subscriber]:
    hook = Subscriber()
    with hook.server:
        yield hook


# --- publishing with the real SDK ----------------------------------------------------------


def test_default_key_is_random_base64_and_endpoint_is_loopback(topic: EventGridTopic) -> None:
    assert len(topic.key) == 44
    assert len(base64.b64decode(topic.key)) == 32
    assert topic.endpoint.startswith("http://127.0.0.1:")
    assert topic.endpoint.endswith("/api/events")
    assert topic.key not in repr(topic)
    with pytest.raises(ValueError, match="base64"):
        EventGridTopic(VirtualClock(), key="not base64!")


@pytest.mark.parametrize("sdk", ["sync", "aio"])
@pytest.mark.parametrize("auth", ["key", "sas", "bearer"])
@pytest.mark.parametrize("schema", ["eventgrid", "cloudevents"])
def test_sdk_publishes_with_each_credential(
    clock: VirtualClock, schema: Schema, auth: AuthName, sdk: str
) -> None:
    with EventGridTopic(clock, input_schema=schema) as topic:
        clock.advance(42)
        events: list[Any] = (
            [eg_event(), eg_event()] if schema == "eventgrid" else [cloud_event(), cloud_event()]
        )
        if sdk == "sync":
            client = EventGridPublisherClient(topic.endpoint, credential_for(topic, auth))
            client.send(events, **per_call(auth))
            client.close()
        else:
            credential: Any = (
                AsyncStaticTokenCredential(BEARER)
                if auth == "bearer"
                else credential_for(topic, auth)
            )

            async def publish() -> None:
                async with AioEventGridPublisherClient(topic.endpoint, credential) as aio:
                    await aio.send(events, **per_call(auth))

            asyncio.run(publish())

        received = topic.events
        assert [r.auth for r in received] == [auth, auth]
        assert {r.schema for r in received} == {schema}
        assert {r.received_at for r in received} == {clock.now()}
        expected_ct = (
            "application/json; charset=utf-8"
            if schema == "eventgrid"
            else "application/cloudevents-batch+json; charset=utf-8"
        )
        assert {r.content_type for r in received} == {expected_ct}
        type_field = "eventType" if schema == "eventgrid" else "type"
        assert received[0].event[type_field] == "Relay.AgentRunCompleted"
        assert received[0].event["data"] == {"runId": "run_1"}
        [request] = topic.publish_requests
        assert (request.status, request.auth, request.event_count) == (200, auth, 2)


def test_bearer_tokens_are_checked_by_accept_bearer(clock: VirtualClock) -> None:
    with EventGridTopic(clock, accept_bearer=lambda token: token == BEARER) as topic:
        good = EventGridPublisherClient(topic.endpoint, StaticTokenCredential(BEARER))
        good.send(eg_event(), enforce_https=False)
        bad = EventGridPublisherClient(topic.endpoint, StaticTokenCredential("someone-else"))
        with pytest.raises(ClientAuthenticationError):
            bad.send(eg_event(), enforce_https=False)
        assert [r.status for r in topic.publish_requests] == [200, 401]
        assert len(topic.events) == 1


def test_wrong_key_or_no_credential_is_401(topic: EventGridTopic) -> None:
    wrong_key = base64.b64encode(b"k" * 32).decode()
    client = EventGridPublisherClient(topic.endpoint, AzureKeyCredential(wrong_key))
    with pytest.raises(ClientAuthenticationError) as caught:
        client.send(eg_event())
    assert caught.value.status_code == 401

    status, body = publish_raw(topic, [valid_eg_dict()], headers={})
    assert status == 401
    assert body["error"]["code"] == "Unauthorized"
    assert "no credential" in body["error"]["message"]
    status, body = publish_raw(topic, [valid_eg_dict()], headers={"aeg-sas-key": wrong_key})
    assert status == 401
    assert wrong_key not in json.dumps(body)
    assert topic.events == []


def test_forged_expired_or_foreign_sas_tokens_are_refused(topic: EventGridTopic) -> None:
    other_key = base64.b64encode(b"x" * 32).decode()
    valid = sas_for(topic)
    # Re-point a valid token at another resource without re-signing it.
    tampered = valid.replace("127.0.0.1", "127.0.0.2", 1)
    assert tampered != valid
    tokens = {
        "wrong key": sas_for(topic, key=other_key),
        "tampered resource": tampered,
        "other resource": sas_for(
            topic, endpoint="https://other.westus-1.eventgrid.azure.net/api/events"
        ),
        "expired": generate_sas(topic.endpoint, topic.key, wall_in(-1)),
    }
    for label, token in tokens.items():
        client = EventGridPublisherClient(topic.endpoint, AzureSasCredential(token))
        with pytest.raises(ClientAuthenticationError):
            client.send(eg_event())
        assert topic.publish_requests[-1].status == 401, label
    messages = [r.error or "" for r in topic.publish_requests]
    assert "signature is not valid" in messages[0]
    assert "signature is not valid" in messages[1]
    assert "another resource" in messages[2]
    assert "expired" in messages[3]
    assert topic.events == []

    # The valid token still works, and so does one whose expiry is a naive UTC datetime.
    naive = generate_sas(topic.endpoint, topic.key, wall_in(1).replace(tzinfo=None))
    EventGridPublisherClient(topic.endpoint, AzureSasCredential(valid)).send(eg_event())
    EventGridPublisherClient(topic.endpoint, AzureSasCredential(naive)).send(eg_event())
    assert [r.auth for r in topic.events] == ["sas", "sas"]


def test_api_version_is_required(topic: EventGridTopic) -> None:
    for query in ("", "?api-version=2024-06-01"):
        status, body = publish_raw(topic, [valid_eg_dict()], query=query)
        assert status == 400
        assert "api-version" in body["error"]["message"]
    assert topic.events == []


def test_eventgrid_schema_violations_are_400(topic: EventGridTopic) -> None:
    # The SDK passes a dict it does not recognise straight through.
    missing = valid_eg_dict()
    del missing["eventType"]
    client = EventGridPublisherClient(topic.endpoint, AzureKeyCredential(topic.key))
    with pytest.raises(HttpResponseError) as caught:
        client.send([missing])
    assert caught.value.status_code == 400
    assert "eventType" in str(caught.value)

    cases: list[tuple[object, str]] = [
        ([valid_eg_dict(eventTime="yesterday")], "date-time"),
        ([valid_eg_dict(eventTime="2026-01-01T00:00:00")], "date-time"),
        ([valid_eg_dict(data="text")], "data"),
        ([valid_eg_dict(dataVersion=1)], "dataVersion"),
        ([valid_eg_dict(metadataVersion="2")], "metadataVersion"),
        ([valid_eg_dict(), {"id": "x"}], "events[1]"),
        (valid_eg_dict(), "JSON array"),
        ([], "at least one"),
        (b"[{not json", "not valid JSON"),
    ]
    for events, expected in cases:
        status, body = publish_raw(topic, events)
        assert status == 400, expected
        assert body["error"]["code"] == "BadRequest"
        assert expected in body["error"]["message"], body
    assert topic.events == []
    assert publish_raw(topic, [valid_eg_dict()])[0] == 200


def test_cloudevents_schema_violations_are_400(ce_topic: EventGridTopic) -> None:
    batch = "application/cloudevents-batch+json; charset=utf-8"
    no_source = valid_ce_dict()
    del no_source["source"]
    cases: list[tuple[object, str]] = [
        ([no_source], "source"),
        ([valid_ce_dict(specversion="0.3")], "specversion"),
        ([valid_ce_dict(id="")], "id"),
        ([valid_ce_dict(time="noon")], "date-time"),
        ([valid_ce_dict(data_base64="eHg=")], "data_base64"),
    ]
    for events, expected in cases:
        status, body = publish_raw(ce_topic, events, content_type=batch)
        assert status == 400, expected
        assert expected in body["error"]["message"], body
    assert ce_topic.events == []
    assert publish_raw(ce_topic, [valid_ce_dict()], content_type=batch)[0] == 200
    # Structured mode: one CloudEvent, not in an array.
    single = "application/cloudevents+json; charset=utf-8"
    assert publish_raw(ce_topic, valid_ce_dict(id="evt-2"), content_type=single)[0] == 200
    assert [r.event["id"] for r in ce_topic.events] == ["evt-1", "evt-2"]


def test_events_in_the_wrong_schema_for_the_topic_are_400(
    topic: EventGridTopic, ce_topic: EventGridTopic
) -> None:
    to_eg = EventGridPublisherClient(topic.endpoint, AzureKeyCredential(topic.key))
    with pytest.raises(HttpResponseError) as caught:
        to_eg.send(cloud_event())
    assert caught.value.status_code == 400
    assert "input schema is eventgrid" in str(caught.value)

    to_ce = EventGridPublisherClient(ce_topic.endpoint, AzureKeyCredential(ce_topic.key))
    with pytest.raises(HttpResponseError) as caught:
        to_ce.send(eg_event())
    assert caught.value.status_code == 400
    assert topic.events == []
    assert ce_topic.events == []


def test_oversized_events_are_413(clock: VirtualClock, topic: EventGridTopic) -> None:
    client = EventGridPublisherClient(topic.endpoint, AzureKeyCredential(topic.key))
    with pytest.raises(HttpResponseError) as caught:
        client.send(eg_event(blob="x" * 1_100_000))
    assert caught.value.status_code == 413
    assert topic.publish_requests[-1].error_code == "RequestEntityTooLarge"

    with EventGridTopic(clock, max_event_bytes=1000) as small:
        status, body = publish_raw(small, [valid_eg_dict(), valid_eg_dict(data={"b": "x" * 2000})])
        assert status == 413
        assert "events[1]" in body["error"]["message"]
        assert small.events == []
    assert topic.events == []


# --- faults --------------------------------------------------------------------------------


def test_fail_next_is_retried_by_azure_core(topic: EventGridTopic) -> None:
    topic.fail_next(1)
    client = EventGridPublisherClient(topic.endpoint, AzureKeyCredential(topic.key))
    client.send(eg_event())
    assert [(r.status, r.fault) for r in topic.publish_requests] == [(500, "fail"), (200, None)]
    assert topic.fault_counts["fail"] == 1
    assert len(topic.events) == 1

    topic.fail_next(1, status=503)

    async def publish() -> None:
        credential = AzureKeyCredential(topic.key)
        async with AioEventGridPublisherClient(topic.endpoint, credential) as aio_client:
            await aio_client.send(eg_event())

    asyncio.run(publish())
    assert topic.fault_counts["fail"] == 2
    assert [r.status for r in topic.publish_requests][-2:] == [503, 200]


def test_refuse_until_holds_until_the_virtual_clock_gets_there(
    clock: VirtualClock, topic: EventGridTopic
) -> None:
    until = clock.now() + timedelta(minutes=5)
    topic.refuse_until(until)
    client = EventGridPublisherClient(topic.endpoint, AzureKeyCredential(topic.key))
    with pytest.raises(HttpResponseError) as caught:
        client.send(eg_event(), retry_total=0)
    assert caught.value.status_code == 503
    clock.advance(299)
    with pytest.raises(HttpResponseError):
        client.send(eg_event(), retry_total=0)
    clock.advance_to(until)
    client.send(eg_event(), retry_total=0)
    assert topic.fault_counts["refuse"] == 2
    assert [r.status for r in topic.publish_requests] == [503, 503, 200]
    assert [r.received_at for r in topic.events] == [until]


def test_hang_next_trips_client_timeouts(topic: EventGridTopic) -> None:
    client = EventGridPublisherClient(topic.endpoint, AzureKeyCredential(topic.key))
    event = eg_event()
    topic.hang_next(1, 0.3)
    # azure-core does not retry a POST whose response timed out (not idempotent).
    with pytest.raises(ServiceResponseError):
        client.send(event, read_timeout=0.1)
    assert [r.fault for r in topic.publish_requests] == ["hang"]
    # The topic committed the batch before holding the response, as a real timeout can, so
    # the caller's own retry of the same event duplicates it: subscribers de-duplicate on id.
    client.send(event, read_timeout=0.1)
    assert topic.fault_counts["hang"] == 1
    first, second = topic.events
    assert first.event["id"] == second.event["id"]


# --- delivery ------------------------------------------------------------------------------


def test_eventgrid_delivery_to_a_loopback_webhook(
    clock: VirtualClock, topic: EventGridTopic, subscriber: Subscriber
) -> None:
    topic.add_subscription("relay-sub", subscriber.url)
    [validation] = subscriber.requests
    assert validation.method == "POST"
    assert validation.headers["aeg-event-type"] == "SubscriptionValidation"
    [validation_event] = json.loads(validation.body)
    assert validation_event["eventType"] == "Microsoft.EventGrid.SubscriptionValidationEvent"

    EventGridPublisherClient(topic.endpoint, AzureKeyCredential(topic.key)).send(eg_event())
    assert topic.next_delivery_at() == clock.now()
    [attempt] = topic.deliver_due()
    assert (attempt.subscription, attempt.attempt, attempt.status) == ("relay-sub", 1, 200)
    assert attempt.outcome == "delivered"

    [note] = subscriber.notifications()
    assert note.headers["Content-Type"].startswith("application/json")
    assert note.headers["aeg-subscription-name"] == "RELAY-SUB"
    assert note.headers["aeg-delivery-count"] == "0"
    assert note.headers["aeg-data-version"] == "1.0"
    assert note.headers["aeg-metadata-version"] == "1"
    [delivered] = json.loads(note.body)
    published = topic.events[0].event
    assert delivered == {**published, "topic": DEFAULT_TOPIC_ID, "metadataVersion": "1"}
    assert topic.next_delivery_at() is None
    assert topic.deliver_due() == []


def test_cloudevents_delivery_to_a_loopback_webhook(
    ce_topic: EventGridTopic, subscriber: Subscriber
) -> None:
    ce_topic.add_subscription("ce-sub", subscriber.url)
    [options] = subscriber.requests
    assert options.method == "OPTIONS"
    assert options.headers["WebHook-Request-Origin"] == "eventgrid.azure.net"

    EventGridPublisherClient(ce_topic.endpoint, AzureKeyCredential(ce_topic.key)).send(
        cloud_event()
    )
    [attempt] = ce_topic.deliver_due()
    assert attempt.status == 200
    [note] = subscriber.notifications()
    assert note.headers["Content-Type"] == "application/cloudevents+json; charset=utf-8"
    assert note.headers["aeg-delivery-count"] == "0"
    assert json.loads(note.body) == ce_topic.events[0].event  # one structured event


def test_delivery_to_a_callable_with_schema_conversion_and_filters(
    topic: EventGridTopic,
) -> None:
    eg_target = CallableSubscriber()
    ce_target = CallableSubscriber()
    topic.add_subscription("all", eg_target)
    topic.add_subscription(
        "completed-as-ce",
        ce_target,
        delivery_schema="cloudevents",
        event_types=["relay.agentruncompleted"],  # Event Grid matches types case-insensitively
    )
    client = EventGridPublisherClient(topic.endpoint, AzureKeyCredential(topic.key))
    client.send([eg_event(), eg_event("Relay.Other")])
    attempts = topic.deliver_due()
    assert sorted(a.subscription for a in attempts) == ["all", "all", "completed-as-ce"]

    assert len(eg_target.notifications()) == 2
    [note] = ce_target.notifications()
    assert note.headers["Content-Type"] == "application/cloudevents+json; charset=utf-8"
    converted = json.loads(note.body)
    published = topic.events[0].event
    assert converted["specversion"] == "1.0"
    assert converted["type"] == "Relay.AgentRunCompleted"
    assert converted["id"] == published["id"]
    assert converted["source"] == DEFAULT_TOPIC_ID
    assert converted["subject"] == published["subject"]
    assert converted["data"] == published["data"]


def test_failed_handshakes_raise(topic: EventGridTopic, ce_topic: EventGridTopic) -> None:
    liar = CallableSubscriber()
    liar.validation_code_override = "not-the-code"
    with pytest.raises(SubscriptionValidationError):
        topic.add_subscription("liar", liar)

    def no_origin(method: str, headers: dict[str, str], body: bytes) -> DeliveryResponse:
        return 200, {}, b""

    with pytest.raises(SubscriptionValidationError):
        ce_topic.add_subscription("no-origin", no_origin)
    with pytest.raises(ValueError, match="loopback"):
        topic.add_subscription("remote", "http://example.com/hook")
    with pytest.raises(ValueError, match="CloudEvents"):
        ce_topic.add_subscription("eg", CallableSubscriber(), delivery_schema="eventgrid")
    assert topic.subscription_names == []
    assert ce_topic.subscription_names == []


def test_retry_schedule_runs_in_virtual_time(
    clock: VirtualClock, topic: EventGridTopic, subscriber: Subscriber
) -> None:
    start = clock.now()
    topic.add_subscription("flaky", subscriber.url)
    subscriber.statuses = [500, 503, 429]
    EventGridPublisherClient(topic.endpoint, AzureKeyCredential(topic.key)).send(eg_event())

    seen_at: list[timedelta] = []
    for attempt_number in range(1, 5):
        due = topic.next_delivery_at()
        assert due is not None
        if attempt_number > 1:
            clock.advance_to(due - timedelta(seconds=1))
            assert topic.deliver_due() == []  # nothing early
            clock.advance_to(due)
        [attempt] = topic.deliver_due()
        seen_at.append(attempt.at - start)
    assert seen_at == [timedelta(seconds=s) for s in (0, 10, 40, 100)]
    assert [d.status for d in topic.deliveries] == [500, 503, 429, 200]
    assert [d.outcome for d in topic.deliveries] == ["retry", "retry", "retry", "delivered"]
    counts = [n.headers["aeg-delivery-count"] for n in subscriber.notifications()]
    assert counts == ["0", "1", "2", "3"]
    assert topic.next_delivery_at() is None
    assert topic.dead_letters == []


def test_exceptions_are_retried_and_400_is_dead_lettered_at_once(
    clock: VirtualClock, topic: EventGridTopic
) -> None:
    calls = {"n": 0}

    def broken(method: str, headers: dict[str, str], body: bytes) -> DeliveryResponse:
        if headers.get("aeg-event-type") == "SubscriptionValidation":
            code = json.loads(body)[0]["data"]["validationCode"]
            return 200, {}, json.dumps({"validationResponse": code}).encode()
        calls["n"] += 1
        raise ConnectionRefusedError

    topic.add_subscription("broken", broken)
    topic.add_subscription("rejecting", CallableSubscriber(statuses=[400]))
    EventGridPublisherClient(topic.endpoint, AzureKeyCredential(topic.key)).send(eg_event())
    topic.deliver_due()

    [dead] = topic.dead_letters
    assert (dead.subscription, dead.reason, dead.attempts, dead.last_status) == (
        "rejecting",
        "BadRequest",
        1,
        400,
    )
    broken_attempt = next(d for d in topic.deliveries if d.subscription == "broken")
    assert (broken_attempt.status, broken_attempt.error) == (None, "ConnectionRefusedError")
    assert topic.next_delivery_at() == clock.now() + timedelta(seconds=10)


def test_max_attempts_and_ttl_dead_letter(clock: VirtualClock, topic: EventGridTopic) -> None:
    topic.add_subscription("two-tries", CallableSubscriber(statuses=[500] * 5), max_attempts=2)
    topic.add_subscription("short-ttl", CallableSubscriber(statuses=[500] * 5), ttl_minutes=1)
    EventGridPublisherClient(topic.endpoint, AzureKeyCredential(topic.key)).send(eg_event())
    while (due := topic.next_delivery_at()) is not None:
        clock.advance_to(due)
        topic.deliver_due()
    reasons = {d.subscription: (d.reason, d.attempts) for d in topic.dead_letters}
    # 0 s, +10 s, +40 s; the next try (+100 s) would be past the 60 s TTL.
    assert reasons == {
        "two-tries": ("MaxDeliveryAttemptsExceeded", 2),
        "short-ttl": ("TimeToLiveExceeded", 3),
    }


def test_secrets_never_appear_in_records(
    clock: VirtualClock, topic: EventGridTopic, subscriber: Subscriber
) -> None:
    topic.add_subscription("sub", subscriber.url)
    good_sas = sas_for(topic)
    forged_sas = sas_for(topic, key=base64.b64encode(b"f" * 32).decode())
    EventGridPublisherClient(topic.endpoint, AzureKeyCredential(topic.key)).send(eg_event())
    EventGridPublisherClient(topic.endpoint, AzureSasCredential(good_sas)).send(eg_event())
    EventGridPublisherClient(topic.endpoint, StaticTokenCredential(BEARER)).send(
        eg_event(), enforce_https=False
    )
    with pytest.raises(ClientAuthenticationError):
        EventGridPublisherClient(topic.endpoint, AzureSasCredential(forged_sas)).send(eg_event())
    topic.fail_next(1)
    EventGridPublisherClient(topic.endpoint, AzureKeyCredential(topic.key)).send(eg_event())
    subscriber.statuses = [400]
    topic.deliver_due()

    recorded = repr(
        (
            topic.events,
            topic.publish_requests,
            topic.deliveries,
            topic.dead_letters,
            topic.fault_counts,
            topic,
        )
    )
    assert {r.auth for r in topic.events} == {"key", "sas", "bearer"}
    signature = good_sas.rpartition("&s=")[2]
    for secret in (topic.key, good_sas, signature, forged_sas, BEARER):
        assert secret not in recorded
    for note in subscriber.requests:  # nor do deliveries forward them
        assert topic.key not in repr(note)

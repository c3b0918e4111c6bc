"""The Foundry project's settings, its OpenAI client, and how openai failures are classified."""

from __future__ import annotations

import asyncio
import json
from typing import Any, ClassVar, cast

import httpx2
import openai
import pytest
from azure.core.exceptions import HttpResponseError

from devhost.clock import VirtualClock
from devhost.foundry_service import FoundryService
from shared.adapters.clients import build_openai_client, close_clients, get_clients
from shared.adapters.failures import describe_failure
from shared.adapters.foundry_requests import refused_outright
from shared.adapters.loopback import LoopbackCredential
from shared.adapters.runtime import reset_worker_state
from shared.adapters.settings import SettingsError, load_settings
from shared.contract import error_code, error_message

BASE = {
    "AZURE_AI_PROJECT_ENDPOINT": "https://x.services.ai.azure.com/api/projects/p",
    "EVENTGRID_TOPIC_ENDPOINT": "https://t.westus-1.eventgrid.azure.net/api/events",
}

# ---------------------------------------------------------------------------- settings


def test_the_foundry_endpoint_defaults_to_the_project_endpoint() -> None:
    settings = load_settings(BASE)
    assert settings.foundry_endpoint == BASE["AZURE_AI_PROJECT_ENDPOINT"]
    assert not settings.foundry_is_loopback
    own = load_settings(
        {**BASE, "FOUNDRY_PROJECT_ENDPOINT": "http://127.0.0.1:8093/api/projects/local/"}
    )
    assert own.foundry_endpoint == "http://127.0.0.1:8093/api/projects/local"
    assert own.foundry_is_loopback
    assert not own.agents_is_loopback


@pytest.mark.parametrize(
    "value", ["http://foundry.example.com/api/projects/p", "ftp://x/y", "not a url"]
)
def test_a_bad_foundry_endpoint_is_named(value: str) -> None:
    with pytest.raises(SettingsError, match="FOUNDRY_PROJECT_ENDPOINT") as raised:
        load_settings({**BASE, "FOUNDRY_PROJECT_ENDPOINT": value})
    assert raised.value.names == ("FOUNDRY_PROJECT_ENDPOINT",)


# ---------------------------------------------------------------------------- the client


def test_the_openai_client_is_built_like_get_openai_client() -> None:
    settings = load_settings({**BASE, "SERVICE_READ_TIMEOUT_SECONDS": "30"})

    async def build() -> openai.AsyncOpenAI:
        async with build_openai_client(settings, LoopbackCredential()) as client:
            return client

    client = asyncio.run(build())
    assert str(client.base_url) == BASE["AZURE_AI_PROJECT_ENDPOINT"] + "/openai/v1/"
    assert client.max_retries == 0
    assert isinstance(client.timeout, httpx2.Timeout)
    assert client.timeout.read == 30.0
    assert client.timeout.connect == 10.0
    assert client.api_key == ""  # a token provider, asked before every request


def test_clients_build_the_openai_client_on_first_use_with_a_bearer_token(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    tokens: list[str] = []

    def accept(token: str) -> bool:
        tokens.append(token)
        return True

    with FoundryService(VirtualClock(), accept_token=accept) as service:
        monkeypatch.setenv("AZURE_AI_PROJECT_ENDPOINT", "http://127.0.0.1:9/api/projects/c")
        monkeypatch.setenv("FOUNDRY_PROJECT_ENDPOINT", service.endpoint)
        monkeypatch.setenv("EVENTGRID_TOPIC_ENDPOINT", "http://127.0.0.1:9/api/events")
        monkeypatch.setenv("EVENTGRID_TOPIC_KEY", "topic-key")
        reset_worker_state()

        async def scenario() -> tuple[bool, bool, str, int, bool]:
            clients = get_clients()
            built_before = clients._openai is not None
            client = clients.openai
            same = get_clients().openai is client
            conversation = await client.conversations.create()
            shared = len(clients.credentials)
            await close_clients()
            return built_before, same, conversation.id, shared, client.is_closed()

        try:
            built_before, same, conversation_id, credentials, closed = asyncio.run(scenario())
        finally:
            reset_worker_state()
    assert not built_before
    assert same
    assert conversation_id.startswith("conv_")
    assert credentials == 1  # both loopback: the classic client's credential is shared
    assert closed
    assert tokens == ["loopback-dev-token"]
    (request,) = service.requests
    assert request.path == "/openai/v1/conversations"
    assert request.retry_count == "0"
    assert "loopback-dev-token" not in repr(service.requests)


# ---------------------------------------------------------------------------- failures

REQUEST = httpx2.Request("POST", "https://x.services.ai.azure.com/api/projects/p/openai/v1/x")


def status_error(
    status: int, code: str | None = "some_code", headers: dict[str, str] | None = None
) -> openai.APIStatusError:
    body = {"message": f"It went {status}.", "type": "x", "param": None, "code": code}
    response = httpx2.Response(status, headers=headers or {}, json={"error": body}, request=REQUEST)
    kinds: dict[int, type[openai.APIStatusError]] = {
        400: openai.BadRequestError,
        404: openai.NotFoundError,
        409: openai.ConflictError,
        429: openai.RateLimitError,
    }
    kind = kinds.get(status, openai.InternalServerError if status >= 500 else openai.APIStatusError)
    return kind(f"Error code: {status} - It went {status}.", response=response, body=body)


@pytest.mark.parametrize(
    ("error", "outcome", "code", "retry_after"),
    [
        (status_error(400), "permanent", "some_code", None),
        (status_error(400, "conversation_locked"), "transient", "conversation_locked", None),
        (status_error(401, None), "permanent", "http_401", None),
        (status_error(404), "not_found", "some_code", None),
        (status_error(408), "transient", "some_code", None),
        (status_error(409), "transient", "some_code", None),
        (status_error(422), "permanent", "some_code", None),
        (status_error(429, headers={"Retry-After": "7"}), "transient", "some_code", 7.0),
        (status_error(429, headers={"retry-after-ms": "1500"}), "transient", "some_code", 1.5),
        (status_error(500), "transient", "some_code", None),
        (status_error(529), "transient", "some_code", None),
        (status_error(503, headers={"x-should-retry": "false"}), "permanent", "some_code", None),
        (status_error(400, headers={"X-Should-Retry": "true"}), "transient", "some_code", None),
    ],
)
def test_openai_status_errors(
    error: openai.APIStatusError, outcome: str, code: str, retry_after: float | None
) -> None:
    described = describe_failure(error)
    assert described["outcome"] == outcome
    assert error_code(described.get("error")) == code
    assert described.get("httpStatus") == error.status_code
    message = error_message(described.get("error"))
    assert message.endswith(f"It went {error.status_code}.")
    assert not message.startswith("Error code")
    if outcome == "transient":
        assert described.get("retryAfter") == retry_after
    if code == "conversation_locked":
        assert "another response is running on the conversation" in message


def connection_error(cause: BaseException, timeout: bool = False) -> openai.APIConnectionError:
    error: openai.APIConnectionError = (
        openai.APITimeoutError(REQUEST) if timeout else openai.APIConnectionError(request=REQUEST)
    )
    error.__cause__ = cause
    return error


def decode_error() -> json.JSONDecodeError:
    try:
        json.loads('{"id": "resp_')
    except json.JSONDecodeError as error:
        return error
    raise AssertionError("unreachable")


@pytest.mark.parametrize(
    ("error", "code", "refused"),
    [
        (connection_error(httpx2.ConnectError("refused")), "transport_error", False),
        (connection_error(httpx2.ConnectTimeout("slow"), timeout=True), "transport_error", False),
        (connection_error(httpx2.ReadTimeout("slow"), timeout=True), "transport_error", False),
        (connection_error(httpx2.RemoteProtocolError("cut")), "transport_error", False),
        (decode_error(), "malformed_response", False),
        (
            openai.APIResponseValidationError(
                httpx2.Response(200, request=REQUEST), body={"id": 1}
            ),
            "malformed_response",
            False,
        ),
        (
            openai.APIError("stream failed", REQUEST, body={"code": "server_error"}),
            "server_error",
            False,
        ),
        (TimeoutError(), "transport_error", False),
    ],
)
def test_transport_failures_are_transient(error: Exception, code: str, refused: bool) -> None:
    described = describe_failure(error)
    assert described["outcome"] == "transient"
    assert error_code(described.get("error")) == code
    # A connection never made did not create, but another execution of the attempt may have.
    assert refused_outright(error) is refused


@pytest.mark.parametrize(
    ("status", "refused"),
    [(400, True), (404, True), (408, False), (409, False), (429, False), (500, False)],
)
def test_which_refusals_rule_out_a_response_for_the_attempt(status: int, refused: bool) -> None:
    assert refused_outright(status_error(status)) is refused
    # The lock may be held by the response another execution of the attempt made.
    assert refused_outright(status_error(400, code="conversation_locked")) is False


def test_azure_core_failures_are_classified_as_before() -> None:
    class Response:
        status_code = 409
        reason = "Conflict"
        headers: ClassVar[dict[str, Any]] = {}

        def text(self) -> str:
            return ""

    error = HttpResponseError(message="conflict", response=cast(Any, Response()))
    assert describe_failure(error)["outcome"] == "permanent"

"""TLS and managed identity on loopback, driven by the real azure-identity and azure-ai-agents.

The loopback App Service managed identity endpoint (`devhost/managed_identity.py`) issues
tokens to the real `ManagedIdentityCredential` / `DefaultAzureCredential` (aio), refuses a
wrong or missing `X-IDENTITY-HEADER`, and the https Agents service (certificate from
`devhost/tls.py`) accepts only the tokens it issued. This is the setup the client reuse
benchmark (bench/client_reuse.py) measures on.
"""

from __future__ import annotations

import asyncio
import http.client
import json
import os
import ssl
import urllib.error
import urllib.parse
import urllib.request
from collections.abc import Iterator
from typing import Any

import aiohttp
import pytest
from aiohttp import web
from azure.ai.agents.aio import AgentsClient
from azure.core.exceptions import ClientAuthenticationError
from azure.core.pipeline.transport import AioHttpTransport
from azure.identity.aio import DefaultAzureCredential, ManagedIdentityCredential
from cryptography import x509

from devhost.agents_service import (
    AgentsService,
    AsyncDummyTokenCredential,
    RunScript,
)
from devhost.clock import VirtualClock
from devhost.managed_identity import API_VERSION, ManagedIdentityEndpoint
from devhost.server_thread import ServerThread
from devhost.tls import LoopbackTls
from shared.adapters.clients import azure_credential
from shared.adapters.settings import MANAGED_IDENTITY_VARIABLES, load_settings

SCOPE = "https://ai.azure.com/.default"
RESOURCE = "https://ai.azure.com"


@pytest.fixture(scope="module")
def tls() -> LoopbackTls:
    return LoopbackTls.generate()


@pytest.fixture
def identity(monkeypatch: pytest.MonkeyPatch) -> Iterator[ManagedIdentityEndpoint]:
    """The endpoint, with the environment App Service gives the app (and nothing else)."""
    for name in (
        "AZURE_CLIENT_ID",
        "AZURE_CLIENT_SECRET",
        "AZURE_TENANT_ID",
        "AZURE_CLIENT_CERTIFICATE_PATH",
        "AZURE_FEDERATED_TOKEN_FILE",
        "AZURE_TOKEN_CREDENTIALS",
        "IDENTITY_SERVER_THUMBPRINT",
        "IMDS_ENDPOINT",
        "MSI_ENDPOINT",
        "MSI_SECRET",
    ):
        monkeypatch.delenv(name, raising=False)
    with ManagedIdentityEndpoint() as endpoint:
        for name, value in endpoint.environment().items():
            monkeypatch.setenv(name, value)
        yield endpoint


@pytest.fixture
def agents(tls: LoopbackTls, identity: ManagedIdentityEndpoint) -> Iterator[AgentsService]:
    service = AgentsService(
        VirtualClock(),
        ssl_context=tls.server_context(),
        accept_token=lambda token: identity.issued(token, RESOURCE),
    )
    service.default_script = RunScript(queued_seconds=0, duration_seconds=3600)
    with service:
        yield service


def _transport(tls: LoopbackTls) -> AioHttpTransport:
    """An aio transport whose one session trusts the generated CA (made on the running loop)."""
    connector = aiohttp.TCPConnector(ssl=tls.client_context())
    return AioHttpTransport(session=aiohttp.ClientSession(connector=connector))


def _get_token_raw(
    identity: ManagedIdentityEndpoint, params: dict[str, str], headers: dict[str, str]
) -> tuple[int, dict[str, Any]]:
    url = identity.endpoint + "?" + urllib.parse.urlencode(params)
    request = urllib.request.Request(url, headers=headers)  # noqa: S310 (http on loopback)
    try:
        with urllib.request.urlopen(request, timeout=10) as response:  # noqa: S310
            return int(response.status), json.loads(response.read())
    except urllib.error.HTTPError as error:
        return error.code, json.loads(error.read())


def _settings_values(agents: AgentsService) -> dict[str, str]:
    return {
        "AZURE_AI_PROJECT_ENDPOINT": agents.endpoint,
        "EVENTGRID_TOPIC_ENDPOINT": "https://127.0.0.1:9/api/events",
    }


def _settings(agents: AgentsService, identity: ManagedIdentityEndpoint) -> Any:
    """The app's settings as in Azure, with the platform's identity endpoint."""
    return load_settings({**_settings_values(agents), **identity.environment()})


def test_the_certificate_names_loopback_by_ip_and_name(tls: LoopbackTls) -> None:
    cert = x509.load_pem_x509_certificate(tls.cert_pem)
    san = cert.extensions.get_extension_for_class(x509.SubjectAlternativeName).value
    assert [str(ip) for ip in san.get_values_for_type(x509.IPAddress)] == ["127.0.0.1", "::1"]
    assert san.get_values_for_type(x509.DNSName) == ["localhost"]
    assert cert.public_key().key_size == 2048  # type: ignore[union-attr]


def test_https_server_thread_is_trusted_only_through_the_ca(tls: LoopbackTls) -> None:
    def app() -> web.Application:
        application = web.Application()

        async def ok(_request: web.Request) -> web.Response:
            return web.Response(text="ok")

        application.router.add_get("/", ok)
        return application

    with ServerThread(app, ssl_context=tls.server_context()) as server:
        assert server.base_url == f"https://127.0.0.1:{server.port}"
        with pytest.raises(urllib.error.URLError) as refused:  # the system store lacks the CA
            urllib.request.urlopen(server.base_url, timeout=10)  # noqa: S310 (loopback)
        assert isinstance(refused.value.reason, ssl.SSLCertVerificationError)
        context = tls.client_context()
        assert context.verify_mode == ssl.CERT_REQUIRED
        assert context.check_hostname
        for host in ("127.0.0.1", "localhost"):  # IP SAN and DNS SAN
            connection = http.client.HTTPSConnection(host, server.port, context=context)
            for _ in range(3):  # keep-alive: one connection, one handshake
                connection.request("GET", "/")
                assert connection.getresponse().read() == b"ok"
            connection.close()
        stats = server.stats.snapshot()
    assert (stats.connections, stats.tls_connections, stats.resumed_tls_sessions) == (2, 2, 0)
    assert sum(stats.tls_versions.values()) == 2


def test_plain_http_stays_the_default() -> None:
    with ServerThread(web.Application) as server:
        assert server.base_url == f"http://127.0.0.1:{server.port}"


def test_managed_identity_credential_gets_a_token_from_the_endpoint(
    identity: ManagedIdentityEndpoint,
) -> None:
    async def scenario() -> tuple[Any, Any]:
        async with ManagedIdentityCredential() as credential:
            first = await credential.get_token(SCOPE)
            again = await credential.get_token(SCOPE)
        return first, again

    first, again = asyncio.run(scenario())
    assert identity.issued(first.token, RESOURCE)
    assert again.token == first.token  # cached by the credential instance
    assert identity.token_requests == 1
    assert first.expires_on > 0
    (seen,) = identity.requests
    assert (seen.resource, seen.client_id, seen.status) == (RESOURCE, None, 200)


def test_default_azure_credential_resolves_to_the_app_service_identity(
    identity: ManagedIdentityEndpoint,
) -> None:
    async def scenario() -> tuple[str, str, str]:
        async with DefaultAzureCredential() as one, DefaultAzureCredential() as other:
            a = (await one.get_token(SCOPE)).token
            b = (await one.get_token(SCOPE)).token
            c = (await other.get_token(SCOPE)).token
        return a, b, c

    a, b, c = asyncio.run(scenario())
    # Each credential instance starts with an empty cache: one token request per instance.
    assert a == b != c
    assert identity.token_requests == 2
    assert identity.issued(a, RESOURCE)
    assert identity.issued(c, RESOURCE)


def test_a_user_assigned_identity_is_asked_for_by_client_id(
    identity: ManagedIdentityEndpoint,
) -> None:
    identity.user_assigned_client_ids = frozenset({"11111111-2222-3333-4444-555555555555"})

    async def scenario(client_id: str) -> str:
        async with ManagedIdentityCredential(client_id=client_id) as credential:
            token: str = (await credential.get_token(SCOPE)).token
            return token

    token = asyncio.run(scenario("11111111-2222-3333-4444-555555555555"))
    assert identity.issued(token, RESOURCE)
    with pytest.raises(ClientAuthenticationError):
        asyncio.run(scenario("99999999-2222-3333-4444-555555555555"))
    assert [(r.client_id, r.status) for r in identity.requests] == [
        ("11111111-2222-3333-4444-555555555555", 200),
        ("99999999-2222-3333-4444-555555555555", 400),
    ]


@pytest.mark.parametrize("header", ["wrong-value", None])
def test_a_wrong_or_missing_identity_header_is_refused(
    monkeypatch: pytest.MonkeyPatch, identity: ManagedIdentityEndpoint, header: str | None
) -> None:
    params = {"api-version": API_VERSION, "resource": RESOURCE}
    sent = {} if header is None else {"X-IDENTITY-HEADER": header}
    status, body = _get_token_raw(identity, params, sent)
    assert status == (400 if header is None else 401)
    assert "access_token" not in body
    if header is not None:
        monkeypatch.setenv("IDENTITY_HEADER", header)

        async def scenario() -> None:
            async with ManagedIdentityCredential() as credential:
                await credential.get_token(SCOPE)

        with pytest.raises(ClientAuthenticationError):
            asyncio.run(scenario())
    assert identity.token_requests == 0
    assert identity.refused == (1 if header is None else 2)


def test_the_identity_endpoint_speaks_only_its_api_version(
    identity: ManagedIdentityEndpoint,
) -> None:
    headers = {"X-IDENTITY-HEADER": identity.header}
    old, _ = _get_token_raw(identity, {"api-version": "2017-09-01", "resource": RESOURCE}, headers)
    no_resource, _ = _get_token_raw(identity, {"api-version": API_VERSION}, headers)
    ok, body = _get_token_raw(identity, {"api-version": API_VERSION, "resource": RESOURCE}, headers)
    assert (old, no_resource, ok) == (400, 400, 200)
    assert set(body) == {"access_token", "expires_on", "resource", "token_type", "client_id"}
    assert body["expires_on"].isdigit()  # epoch seconds, as a string like App Service
    assert (body["resource"], body["token_type"], body["client_id"]) == (
        RESOURCE,
        "Bearer",
        identity.client_id,
    )
    assert identity.token_requests == 1


USER_ASSIGNED = "11111111-2222-3333-4444-555555555555"


def test_in_azure_the_app_uses_its_managed_identity_and_nothing_else(
    monkeypatch: pytest.MonkeyPatch, identity: ManagedIdentityEndpoint, agents: AgentsService
) -> None:
    """Where the platform sets its identity endpoint (IDENTITY_ENDPOINT / IDENTITY_HEADER, as
    App Service and Functions do for an app with a managed identity), the app's credential is
    a ManagedIdentityCredential for AZURE_CLIENT_ID. A service principal's variables in the
    environment, which DefaultAzureCredential's chain would try first, are not used."""
    identity.user_assigned_client_ids = frozenset({USER_ASSIGNED})
    monkeypatch.setenv("AZURE_TENANT_ID", "00000000-0000-0000-0000-000000000001")
    monkeypatch.setenv("AZURE_CLIENT_ID", USER_ASSIGNED)
    monkeypatch.setenv("AZURE_CLIENT_SECRET", "not-a-secret")
    settings = load_settings({**os.environ, **_settings_values(agents)})
    assert settings.managed_identity
    assert settings.azure_client_id == USER_ASSIGNED

    async def scenario() -> str:
        async with azure_credential(settings) as credential:
            assert isinstance(credential, ManagedIdentityCredential)
            token: str = (await credential.get_token(SCOPE)).token
            return token

    assert identity.issued(asyncio.run(scenario()), RESOURCE)
    assert [(r.client_id, r.status) for r in identity.requests] == [(USER_ASSIGNED, 200)]


@pytest.mark.parametrize("variable", ["IDENTITY_ENDPOINT", "MSI_ENDPOINT"])
def test_either_identity_endpoint_variable_means_azure(variable: str) -> None:
    base = {
        "AZURE_AI_PROJECT_ENDPOINT": "https://x.services.ai.azure.com/api/projects/p",
        "EVENTGRID_TOPIC_ENDPOINT": "https://t.westeurope-1.eventgrid.azure.net/api/events",
    }
    settings = load_settings({**base, variable: "http://127.0.0.1:41741/msi/token"})
    assert settings.managed_identity
    credential = azure_credential(settings)
    assert isinstance(credential, ManagedIdentityCredential)
    asyncio.run(credential.close())
    local = load_settings({**base, variable: " "})
    assert not local.managed_identity


def test_outside_azure_the_app_uses_the_developer_credential_chain(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    for name in MANAGED_IDENTITY_VARIABLES:
        monkeypatch.delenv(name, raising=False)
    settings = load_settings(
        {
            **os.environ,
            "AZURE_AI_PROJECT_ENDPOINT": "https://x.services.ai.azure.com/api/projects/p",
            "EVENTGRID_TOPIC_ENDPOINT": "https://t.westeurope-1.eventgrid.azure.net/api/events",
        }
    )
    assert not settings.managed_identity
    credential = azure_credential(settings)
    assert isinstance(credential, DefaultAzureCredential)
    asyncio.run(credential.close())


def test_the_aio_agents_client_talks_https_with_a_managed_identity_token(
    tls: LoopbackTls, identity: ManagedIdentityEndpoint, agents: AgentsService
) -> None:
    settings = _settings(agents, identity)
    assert settings.agents_endpoint.startswith("https://127.0.0.1:")

    async def scenario() -> list[str]:
        statuses = []
        async with (
            azure_credential(settings) as credential,
            AgentsClient(
                endpoint=agents.endpoint, credential=credential, transport=_transport(tls)
            ) as client,
        ):
            agent = await client.create_agent(model="gpt-4o-mini", name="tls")
            thread = await client.threads.create()
            run = await client.runs.create(thread.id, agent_id=agent.id)
            for _ in range(3):
                statuses.append((await client.runs.get(thread.id, run.id)).as_dict()["status"])
        return statuses

    assert asyncio.run(scenario()) == ["in_progress"] * 3
    stats = agents.connection_stats
    # One client kept one TLS connection for its six calls; one credential, one token.
    assert (stats.connections, stats.tls_connections, stats.resumed_tls_sessions) == (1, 1, 0)
    assert identity.token_requests == 1
    assert all(r.bearer and r.status == 200 for r in agents.requests)


def test_each_new_client_opens_a_connection_and_each_new_credential_fetches_a_token(
    tls: LoopbackTls, identity: ManagedIdentityEndpoint, agents: AgentsService
) -> None:
    settings = _settings(agents, identity)

    async def scenario() -> None:
        kept = azure_credential(settings)
        for fresh_credential in (True, True, False, False):
            credential = azure_credential(settings) if fresh_credential else kept
            async with AgentsClient(
                endpoint=agents.endpoint, credential=credential, transport=_transport(tls)
            ) as client:
                await client.threads.create()
            if fresh_credential:
                await credential.close()
        await kept.close()

    asyncio.run(scenario())
    assert agents.connection_stats.tls_connections == 4
    # Two new credentials, plus the kept one's first token (cached for its second client).
    assert identity.token_requests == 3


def test_the_service_refuses_tokens_the_identity_endpoint_did_not_issue(
    tls: LoopbackTls, agents: AgentsService
) -> None:
    async def scenario() -> None:
        async with AgentsClient(
            endpoint=agents.endpoint,
            credential=AsyncDummyTokenCredential(),
            transport=_transport(tls),
            retry_total=0,
        ) as client:
            await client.threads.create()

    with pytest.raises(ClientAuthenticationError):
        asyncio.run(scenario())
    (seen,) = agents.requests
    assert (seen.operation, seen.bearer, seen.status) == ("threads.create", True, 401)

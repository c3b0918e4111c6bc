"""SDK clients, created lazily once per worker process and reused across invocations.

aio clients are bound to the event loop that created them; the Functions worker runs every
invocation on one persistent loop, so one set per loop is one set per process.
"""

from __future__ import annotations

import asyncio
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

from azure.ai.agents.aio import AgentsClient
from azure.core.credentials import AzureKeyCredential
from azure.eventgrid.aio import EventGridPublisherClient
from azure.identity.aio import DefaultAzureCredential, ManagedIdentityCredential

from .loopback import AllowHttpOnLoopbackPolicy, LoopbackCredential
from .settings import Settings, get_settings

if TYPE_CHECKING:
    from openai import AsyncOpenAI

# Retries happen in the orchestration on durable timers (no compute held while waiting, and
# Retry-After honoured durably), so the SDK pipelines make a single attempt.
SDK_RETRY_OPTIONS: dict[str, Any] = {"retry_total": 0}
# The token scope of the Foundry project's OpenAI endpoint (what azure-ai-projects asks for).
FOUNDRY_SCOPE = "https://ai.azure.com/.default"


def _pipeline_options(settings: Settings) -> dict[str, Any]:
    return {
        **SDK_RETRY_OPTIONS,
        "connection_timeout": min(10.0, settings.read_timeout_seconds),
        "read_timeout": settings.read_timeout_seconds,
        # Proxies and netrc from the environment only when configured (see settings.py).
        "use_env_settings": settings.http_environment,
    }


@dataclass
class ProcessClients:
    agents: AgentsClient
    publisher: EventGridPublisherClient
    credentials: list[Any]
    settings: Settings | None = None
    # The classic client's credential, shared with the OpenAI client when both are (or are
    # not) loopback.
    agents_credential: Any = None
    _openai: AsyncOpenAI | None = field(default=None, repr=False)

    @property
    def openai(self) -> AsyncOpenAI:
        """The Foundry project's OpenAI client, built on first use.

        (Importing `openai` takes about 0.7 s: a worker that only runs classic agents never
        pays it.)
        """
        if self._openai is None:
            settings = self.settings or get_settings()
            credential = self.agents_credential
            if credential is None or settings.foundry_is_loopback != settings.agents_is_loopback:
                credential = _token_credential(settings, settings.foundry_is_loopback)
                self.credentials.append(credential)
            self._openai = build_openai_client(settings, credential)
        return self._openai


_clients: dict[int, tuple[asyncio.AbstractEventLoop, ProcessClients]] = {}


def azure_credential(settings: Settings) -> ManagedIdentityCredential | DefaultAzureCredential:
    """The credential for real endpoints: the app's managed identity in Azure, dev logins
    elsewhere.

    In Azure (the platform sets its managed identity endpoint, `settings.managed_identity`)
    it is `ManagedIdentityCredential` for AZURE_CLIENT_ID (the user-assigned identity; unset:
    the system-assigned one): one token source, nothing else in the environment (a service
    principal's variables, a developer login) can be picked up instead, and a missing
    identity fails as such. Only for local development is it `DefaultAzureCredential`, whose
    chain finds the developer's Azure CLI / azd / IDE login.
    """
    if settings.managed_identity:
        return ManagedIdentityCredential(client_id=settings.azure_client_id)
    return DefaultAzureCredential(managed_identity_client_id=settings.azure_client_id)


def _token_credential(settings: Settings, loopback: bool) -> Any:
    if loopback:
        return LoopbackCredential()
    return azure_credential(settings)


def build_agents_client(settings: Settings, credential: Any) -> AgentsClient:
    """The Agents client for `settings.agents_endpoint`, authenticating with `credential`."""
    agents_policies = [AllowHttpOnLoopbackPolicy()] if settings.agents_is_loopback else []
    return AgentsClient(
        endpoint=settings.agents_endpoint,
        credential=credential,
        per_call_policies=agents_policies,
        **_pipeline_options(settings),
    )


def build_openai_client(settings: Settings, credential: Any) -> AsyncOpenAI:
    """An `openai.AsyncOpenAI` on `<foundry_endpoint>/openai/v1`, as
    `AIProjectClient.get_openai_client()` builds it (no api-version), bearer tokens from
    `credential`.

    - `max_retries=0`: the SDK would retry POST /responses (no idempotency key, so a retry can
      create a second response); the orchestration retries on durable timers instead.
    - The read timeout applies between received bytes (per stream chunk, too); the fast path's
      window bounds a stream's total time.
    - `api_key` is an async callable: openai 3.60 takes `api_key: str | Callable[[],
      Awaitable[str]]` (openai/_client.py, `AsyncOpenAI.__init__`, line 815) and awaits it
      before every request (openai/lib/_client_auth.py, `async_refresh_api_key`), so tokens
      are refreshed by the azure-identity policy's cache. Tokens are never logged.
    """
    import openai
    from azure.identity.aio import get_bearer_token_provider

    read = settings.read_timeout_seconds
    return openai.AsyncOpenAI(
        base_url=settings.foundry_endpoint.rstrip("/") + "/openai/v1",
        api_key=get_bearer_token_provider(credential, FOUNDRY_SCOPE),
        max_retries=0,
        timeout=openai.Timeout(read, connect=min(10.0, read)),
    )


def _build(settings: Settings) -> ProcessClients:
    credentials: list[Any] = []
    agents_credential = _token_credential(settings, settings.agents_is_loopback)
    credentials.append(agents_credential)
    agents = build_agents_client(settings, agents_credential)
    publisher_credential: Any
    if settings.eventgrid_key:
        publisher_credential = AzureKeyCredential(settings.eventgrid_key)
    else:
        publisher_credential = _token_credential(settings, settings.eventgrid_is_loopback)
        credentials.append(publisher_credential)
    publisher = EventGridPublisherClient(
        settings.eventgrid_endpoint, publisher_credential, **_pipeline_options(settings)
    )
    return ProcessClients(
        agents=agents,
        publisher=publisher,
        credentials=credentials,
        settings=settings,
        agents_credential=agents_credential,
    )


def get_clients() -> ProcessClients:
    loop = asyncio.get_running_loop()
    cached = _clients.get(id(loop))
    if cached is not None and cached[0] is loop:
        return cached[1]
    clients = _build(get_settings())
    _clients[id(loop)] = (loop, clients)
    return clients


def publish_call_options(settings: Settings) -> dict[str, Any]:
    """Per-call options for `send`: bearer over plain http, for a loopback topic only.

    (`enforce_https` is only consumed by the bearer policy; with a key it would reach the
    transport and fail, and per-call options also leak into each CloudEvent's attributes.)
    """
    if settings.eventgrid_is_loopback and not settings.eventgrid_key:
        return {"enforce_https": False}
    return {}


async def close_clients() -> None:
    """Close this loop's clients (worker shutdown); the next call builds new ones."""
    loop = asyncio.get_running_loop()
    cached = _clients.pop(id(loop), None)
    if cached is None:
        return
    clients = cached[1]
    await clients.agents.close()
    await clients.publisher.close()
    if clients._openai is not None:
        await clients._openai.close()
    for credential in clients.credentials:
        await credential.close()


def reset_clients() -> None:
    """Forget every cached client (a new worker process starts without them)."""
    _clients.clear()

"""What a client needs to talk to the loopback service with the real azure-ai-agents SDK."""

from __future__ import annotations

from typing import TYPE_CHECKING, Any
from urllib.parse import urlparse

from azure.core.pipeline import PipelineRequest
from azure.core.pipeline.policies import SansIOHTTPPolicy

from devhost.credentials import AsyncStaticTokenCredential, StaticTokenCredential

if TYPE_CHECKING:
    import azure.ai.agents
    import azure.ai.agents.aio

    from ._service import AgentsService

# 2100-01-01T00:00:00Z: the token never needs refreshing during a test.
DUMMY_TOKEN = "dummy-token"
_LOOPBACK_HOSTS = frozenset({"127.0.0.1", "localhost", "::1"})


class AllowHttpPolicy(SansIOHTTPPolicy[Any, Any]):
    """Let the bearer policy send a token over plain http, for loopback hosts only.

    azure-core refuses bearer tokens on non-https URLs and ignores the client-level
    `enforce_https=False`; setting the pipeline context flag per request is what works for
    both the sync and the aio pipelines.
    """

    def on_request(self, request: PipelineRequest[Any]) -> None:
        if urlparse(request.http_request.url).hostname in _LOOPBACK_HOSTS:
            request.context["enforce_https"] = False


class DummyTokenCredential(StaticTokenCredential):
    """A TokenCredential whose token the loopback service accepts."""

    def __init__(self, token: str = DUMMY_TOKEN) -> None:
        super().__init__(token)


class AsyncDummyTokenCredential(AsyncStaticTokenCredential):
    """The AsyncTokenCredential counterpart of DummyTokenCredential."""

    def __init__(self, token: str = DUMMY_TOKEN) -> None:
        super().__init__(token)


def make_sync_client(service: AgentsService, **kwargs: Any) -> azure.ai.agents.AgentsClient:
    """A sync AgentsClient for the service; kwargs go to the client (e.g. retry_total=0)."""
    from azure.ai.agents import AgentsClient

    return AgentsClient(
        service.endpoint,
        DummyTokenCredential(),
        per_call_policies=[AllowHttpPolicy()],
        **kwargs,
    )


def make_async_client(service: AgentsService, **kwargs: Any) -> azure.ai.agents.aio.AgentsClient:
    """An aio AgentsClient for the service; create and use it on the caller's event loop."""
    from azure.ai.agents.aio import AgentsClient

    return AgentsClient(
        service.endpoint,
        AsyncDummyTokenCredential(),
        per_call_policies=[AllowHttpPolicy()],
        **kwargs,
    )

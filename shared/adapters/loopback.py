"""Plain-http support for loopback endpoints only (local development and the test bed).

azure-core refuses bearer tokens over http; for a loopback service we send a dummy token and
lift that check per request. Settings refuse http for every other host, so this never applies
to a real endpoint.
"""

from __future__ import annotations

import time
from typing import Any

from azure.core.credentials import AccessToken
from azure.core.pipeline import PipelineRequest
from azure.core.pipeline.policies import SansIOHTTPPolicy


class AllowHttpOnLoopbackPolicy(SansIOHTTPPolicy):  # type: ignore[type-arg]
    def on_request(self, request: PipelineRequest[Any]) -> None:
        request.context["enforce_https"] = False


class LoopbackCredential:
    """An async token credential for loopback services, which accept any bearer token."""

    async def get_token(self, *scopes: str, **kwargs: Any) -> AccessToken:
        return AccessToken("loopback-dev-token", int(time.time()) + 3600)

    async def close(self) -> None:
        return None

    async def __aenter__(self) -> LoopbackCredential:
        return self

    async def __aexit__(self, *args: object) -> None:
        return None

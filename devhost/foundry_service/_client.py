"""Real SDK clients for the loopback Foundry project service (openai 3.x, azure-ai-projects 2.x)."""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from devhost.agents_service._client import (
    DUMMY_TOKEN,
    AllowHttpPolicy,
    AsyncDummyTokenCredential,
    DummyTokenCredential,
)

if TYPE_CHECKING:
    import openai
    from azure.ai.projects import AIProjectClient
    from azure.ai.projects.aio import AIProjectClient as AsyncAIProjectClient

    from ._service import FoundryService

# The scope azure-ai-projects asks tokens for (reference note §1); loopback tokens are dummies.
FOUNDRY_SCOPE = "https://ai.azure.com/.default"


def make_openai_client(service: FoundryService, **kwargs: Any) -> openai.OpenAI:
    """A sync `openai.OpenAI` on the project's `/openai/v1` (no retries unless asked)."""
    import openai

    kwargs.setdefault("max_retries", 0)
    return openai.OpenAI(base_url=service.openai_base_url, api_key=DUMMY_TOKEN, **kwargs)


def make_async_openai_client(service: FoundryService, **kwargs: Any) -> openai.AsyncOpenAI:
    """An `openai.AsyncOpenAI` for the service; use it on the caller's event loop."""
    import openai

    kwargs.setdefault("max_retries", 0)
    return openai.AsyncOpenAI(base_url=service.openai_base_url, api_key=DUMMY_TOKEN, **kwargs)


def make_project_client(service: FoundryService, **kwargs: Any) -> AIProjectClient:
    """A sync `AIProjectClient`; its agents operations may send the token over loopback http."""
    from azure.ai.projects import AIProjectClient

    return AIProjectClient(
        service.endpoint,
        DummyTokenCredential(),
        per_call_policies=[AllowHttpPolicy()],
        **kwargs,
    )


def make_async_project_client(service: FoundryService, **kwargs: Any) -> AsyncAIProjectClient:
    """The aio `AIProjectClient` counterpart; create and use it on the caller's event loop."""
    from azure.ai.projects.aio import AIProjectClient

    return AIProjectClient(
        service.endpoint,
        AsyncDummyTokenCredential(),
        per_call_policies=[AllowHttpPolicy()],
        **kwargs,
    )


__all__ = [
    "FOUNDRY_SCOPE",
    "make_async_openai_client",
    "make_async_project_client",
    "make_openai_client",
    "make_project_client",
]

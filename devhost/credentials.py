"""Token credentials that hand out one fixed token, for loopback services (no Entra ID here)."""

from __future__ import annotations

from types import TracebackType
from typing import Any

from azure.core.credentials import AccessToken

FAR_FUTURE = 4102444800  # 2100-01-01: never refreshed during a test


class StaticTokenCredential:
    """A sync TokenCredential returning `token`."""

    def __init__(self, token: str) -> None:
        self._token = token

    def get_token(
        self,
        *scopes: str,
        claims: str | None = None,
        tenant_id: str | None = None,
        enable_cae: bool = False,
        **kwargs: Any,
    ) -> AccessToken:
        return AccessToken(self._token, FAR_FUTURE)


class AsyncStaticTokenCredential:
    """The AsyncTokenCredential counterpart of StaticTokenCredential."""

    def __init__(self, token: str) -> None:
        self._token = token

    async def get_token(
        self,
        *scopes: str,
        claims: str | None = None,
        tenant_id: str | None = None,
        enable_cae: bool = False,
        **kwargs: Any,
    ) -> AccessToken:
        return AccessToken(self._token, FAR_FUTURE)

    async def close(self) -> None:
        return None

    async def __aenter__(self) -> AsyncStaticTokenCredential:
        return self

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None = None,
        exc_value: BaseException | None = None,
        traceback: TracebackType | None = None,
    ) -> None:
        return None

"""Run an aiohttp application on loopback in a background thread with its own event loop.

The loopback services live on their own loop so that synchronous SDK clients in tests and the
emulated worker's persistent loop can both call them without deadlocking. Plain http unless an
`ssl.SSLContext` is given (see `devhost/tls.py`); `stats` counts the connections that
carried requests, so tests can see whether a client reused its connection.
"""

from __future__ import annotations

import asyncio
import concurrent.futures
import ssl
import threading
import weakref
from collections import Counter
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from typing import Any, TypeVar

from aiohttp import web

from devhost.lifecycle import StartStop

T = TypeVar("T")


@dataclass
class ConnectionStats:
    """Connections that carried at least one request (counted when their first one arrives)."""

    connections: int = 0
    tls_connections: int = 0  # each one a TLS handshake
    resumed_tls_sessions: int = 0  # handshakes that resumed an earlier session (abbreviated)
    tls_versions: Counter[str] = field(default_factory=Counter)

    def snapshot(self) -> ConnectionStats:
        return ConnectionStats(
            self.connections,
            self.tls_connections,
            self.resumed_tls_sessions,
            Counter(self.tls_versions),
        )


class ServerThread(StartStop):
    """Serves `app_factory()` on 127.0.0.1 (an ephemeral port unless one is given)."""

    def __init__(
        self,
        app_factory: Callable[[], web.Application],
        host: str = "127.0.0.1",
        port: int = 0,
        ssl_context: ssl.SSLContext | None = None,
    ) -> None:
        if host not in ("127.0.0.1", "localhost", "::1"):
            raise ValueError("loopback services bind to loopback addresses only")
        self._app_factory = app_factory
        self._host = host
        self._port = port
        self._ssl_context = ssl_context
        self._loop = asyncio.new_event_loop()
        self._thread = threading.Thread(target=self._loop.run_forever, daemon=True)
        self._runner: web.AppRunner | None = None
        self.port = 0
        self.stats = ConnectionStats()
        self._seen: weakref.WeakSet[asyncio.BaseTransport] = weakref.WeakSet()

    @property
    def base_url(self) -> str:
        host = f"[{self._host}]" if ":" in self._host else self._host
        scheme = "https" if self._ssl_context is not None else "http"
        return f"{scheme}://{host}:{self.port}"

    def start(self) -> ServerThread:
        self._thread.start()
        self.run(self._start())
        return self

    async def _start(self) -> None:
        app = self._app_factory()
        app.middlewares.insert(0, self._count_connection)
        self._runner = web.AppRunner(app, access_log=None, shutdown_timeout=0.1)
        await self._runner.setup()
        site = web.TCPSite(self._runner, self._host, self._port, ssl_context=self._ssl_context)
        await site.start()
        server = site._server
        assert server is not None
        sockets: Any = getattr(server, "sockets", None)
        self.port = int(sockets[0].getsockname()[1])

    @web.middleware
    async def _count_connection(
        self, request: web.Request, handler: Callable[[web.Request], Awaitable[web.StreamResponse]]
    ) -> web.StreamResponse:
        transport = request.transport
        if transport is not None and transport not in self._seen:
            self._seen.add(transport)
            self.stats.connections += 1
            tls: ssl.SSLObject | None = transport.get_extra_info("ssl_object")
            if tls is not None:
                self.stats.tls_connections += 1
                self.stats.resumed_tls_sessions += int(tls.session_reused)
                self.stats.tls_versions[tls.version() or "unknown"] += 1
        return await handler(request)

    def run(self, coro: Awaitable[T], timeout: float = 30.0) -> T:
        """Run a coroutine on the server's loop and wait for its result."""
        future: concurrent.futures.Future[T] = asyncio.run_coroutine_threadsafe(
            coro,  # type: ignore[arg-type]
            self._loop,
        )
        return future.result(timeout)

    def stop(self) -> None:
        if not self._thread.is_alive():
            return
        if self._runner is not None:
            self.run(self._runner.cleanup())
        self._loop.call_soon_threadsafe(self._loop.stop)
        self._thread.join(timeout=5)
        self._loop.close()

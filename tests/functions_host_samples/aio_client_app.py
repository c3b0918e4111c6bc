"""An app that caches one aiohttp session per worker process, like cached aio SDK clients.

Such a client is bound to the event loop that created it: it keeps working only because the
worker runs every invocation on one persistent loop.
"""

# mypy: disallow-untyped-decorators=False

from __future__ import annotations

import asyncio
import os
from collections.abc import Coroutine, Generator
from typing import Any

import aiohttp
import azure.durable_functions as df
import azure.functions as func

app = df.DFApp(http_auth_level=func.AuthLevel.ANONYMOUS)

_session: aiohttp.ClientSession | None = None
_session_loop: asyncio.AbstractEventLoop | None = None
SESSIONS_CREATED: list[asyncio.AbstractEventLoop] = []


async def get_session() -> aiohttp.ClientSession:
    global _session, _session_loop
    if _session is None or _session.closed:
        _session = aiohttp.ClientSession()
        _session_loop = asyncio.get_running_loop()
        SESSIONS_CREATED.append(_session_loop)
    return _session


def reset_cache() -> Coroutine[Any, Any, None] | None:
    """Worker reset hook: a new worker process starts without the cached session."""
    global _session, _session_loop
    session, loop = _session, _session_loop
    _session, _session_loop = None, None
    if session is None or session.closed or loop is None or loop.is_closed():
        return None
    return session.close()


async def fetch(word: str) -> str:
    session = await get_session()
    async with session.get(f"{os.environ['ECHO_URL']}/echo/{word}") as response:
        response.raise_for_status()
        return await response.text()


@app.route(route="echo/{word}", methods=["GET"])
async def http_echo(req: func.HttpRequest) -> func.HttpResponse:
    return func.HttpResponse(await fetch(req.route_params["word"]))


@app.activity_trigger(input_name="word")
async def echo_activity(word: str) -> str:
    return await fetch(word)


@app.orchestration_trigger(context_name="context")
def echo_all(context: df.DurableOrchestrationContext) -> Generator[Any, Any, Any]:
    words = context.get_input()
    results = yield context.task_all([context.call_activity("echo_activity", w) for w in words])
    return results

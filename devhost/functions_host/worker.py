"""The emulated Python worker process: one persistent event loop and the converters.

The real worker (azure_functions_worker.dispatcher) runs every invocation on ONE event loop
that lives as long as the process: async functions are awaited on it, sync functions run in
the loop's thread-pool executor. aio SDK clients cached at module level (and the Durable
SDK's shared aiohttp session) are bound to that loop, so an emulator that used a fresh loop
per call would either break such apps or hide the bugs of apps that create a loop per call.
Inputs and outputs go through the same azure.functions converters the worker uses.
"""

from __future__ import annotations

import asyncio
import concurrent.futures
import functools
import importlib
import inspect
import threading
import traceback
import uuid
from collections.abc import Callable, Coroutine
from dataclasses import dataclass
from pathlib import Path
from typing import Any, TypeVar

import azure.functions as func
from azure.functions._abc import RetryContext, TraceContext
from azure.functions.durable_functions import (
    ActivityTriggerConverter,
    OrchestrationTriggerConverter,
)
from azure.functions.meta import Datum

from .indexing import IndexedFunction

T = TypeVar("T")


class _TraceContext(TraceContext):
    def __init__(self, trace_parent: str) -> None:
        self._trace_parent = trace_parent

    @property
    def trace_state(self) -> str:
        return ""

    @property
    def trace_parent(self) -> str:
        return self._trace_parent

    @property
    def attributes(self) -> dict[str, str]:
        return {}


class _RetryContext(RetryContext):
    @property
    def retry_count(self) -> int:
        return 0

    @property
    def max_retry_count(self) -> int:
        return 0

    @property
    def exception(self) -> Any:
        return None


class InvocationContext(func.Context):
    """What the worker passes to a `context` parameter that has no binding."""

    def __init__(self, function_name: str, invocation_id: str | None = None) -> None:
        self._invocation_id = invocation_id or str(uuid.uuid4())
        self._function_name = function_name
        self._tls = threading.local()
        self._tls.invocation_id = self._invocation_id
        trace_id, span_id = uuid.uuid4().hex, uuid.uuid4().hex[:16]
        self._trace_context = _TraceContext(f"00-{trace_id}-{span_id}-00")
        self._retry_context = _RetryContext()

    @property
    def invocation_id(self) -> str:
        return self._invocation_id

    @property
    def thread_local_storage(self) -> Any:
        return self._tls

    @property
    def function_name(self) -> str:
        return self._function_name

    @property
    def function_directory(self) -> str:
        return "/home/site/wwwroot"

    @property
    def trace_context(self) -> Any:
        return self._trace_context

    @property
    def retry_context(self) -> Any:
        return self._retry_context


@dataclass
class InvocationFailure:
    """An exception raised by user code, kept with the text the worker would report."""

    exception: BaseException
    traceback_text: str

    @property
    def worker_message(self) -> str:
        # azure_functions_worker.dispatcher._serialize_exception
        return f"{type(self.exception).__name__}: {self.exception}"

    @property
    def host_message(self) -> str:
        # The host wraps worker failures in RpcException("Result: Failure\nException: ...").
        return f"Result: Failure\nException: {self.worker_message}\nStack: {self.traceback_text}"


_EMULATOR_DIR = str(Path(__file__).resolve().parent)


def failure_from(exc: BaseException) -> InvocationFailure:
    """The stack as the worker's marshall_exception_trace formats it (frames only).

    Frames of this emulator and of the thread pool are left out: they stand in for the
    worker's own dispatcher frames, which are not the app's concern.
    """
    frames = [
        frame
        for frame in traceback.extract_tb(exc.__traceback__)
        if not frame.filename.startswith(_EMULATOR_DIR)
        and not frame.filename.endswith(("concurrent/futures/thread.py", "asyncio/events.py"))
    ]
    return InvocationFailure(exc, "".join(traceback.format_list(frames)))


class WorkerLoop:
    """A persistent asyncio loop in its own thread, like the worker's main loop."""

    def __init__(self, invocation_timeout: float = 60.0) -> None:
        self.invocation_timeout = invocation_timeout
        self.loop = asyncio.new_event_loop()
        self.loop.set_default_executor(
            concurrent.futures.ThreadPoolExecutor(thread_name_prefix="emulated-worker-sync")
        )
        self._thread = threading.Thread(target=self._run, name="emulated-worker-loop", daemon=True)

    def _run(self) -> None:
        asyncio.set_event_loop(self.loop)
        self.loop.run_forever()

    def start(self) -> None:
        self._thread.start()

    @property
    def thread(self) -> threading.Thread:
        return self._thread

    def run(self, coro: Coroutine[Any, Any, T], timeout: float | None = None) -> T:
        """Run `coro` on the worker loop and wait (from another thread) for its result."""
        if threading.current_thread() is self._thread:
            coro.close()
            raise RuntimeError(
                "called the emulated host synchronously from code running on its own worker loop"
            )
        return self.wait(self.submit(coro), timeout)

    def submit(self, coro: Coroutine[Any, Any, T]) -> concurrent.futures.Future[T]:
        """Start `coro` on the worker loop without waiting (the caller may do other work)."""
        if threading.current_thread() is self._thread:
            coro.close()
            raise RuntimeError(
                "called the emulated host synchronously from code running on its own worker loop"
            )
        return asyncio.run_coroutine_threadsafe(coro, self.loop)

    def wait(self, future: concurrent.futures.Future[T], timeout: float | None = None) -> T:
        """Wait (from another thread) for a future returned by `submit`."""
        try:
            return future.result(self.invocation_timeout if timeout is None else timeout)
        except concurrent.futures.TimeoutError:
            future.cancel()
            raise TimeoutError(
                f"an invocation did not finish within {self.invocation_timeout} s of real time"
            ) from None

    async def call(
        self,
        function: Callable[..., Any],
        kwargs: dict[str, Any],
        on_start: Callable[[], None] | None = None,
    ) -> Any:
        """Invoke user code as the worker does: await coroutines, run sync code in the executor.

        `on_start` runs right before the user function, in the thread that runs it.
        """
        if inspect.iscoroutinefunction(function):
            if on_start is not None:
                on_start()
            return await function(**kwargs)
        if on_start is None:
            return await self.loop.run_in_executor(None, functools.partial(function, **kwargs))

        def run() -> Any:
            on_start()
            return function(**kwargs)

        return await self.loop.run_in_executor(None, run)

    def stop(self) -> None:
        if not self._thread.is_alive():
            return

        async def _drain() -> None:
            current = asyncio.current_task()
            tasks = [t for t in asyncio.all_tasks() if t is not current and not t.done()]
            for task in tasks:
                task.cancel()
            await asyncio.gather(*tasks, return_exceptions=True)
            await self.loop.shutdown_default_executor()

        try:
            self.run(_drain(), timeout=10)
        finally:
            self.loop.call_soon_threadsafe(self.loop.stop)
            self._thread.join(timeout=10)
            self.loop.close()


@dataclass
class ActivityResult:
    result_json: str | None = None
    failure: InvocationFailure | None = None


@dataclass
class OrchestratorResult:
    state_json: str | None = None
    failure: InvocationFailure | None = None


async def invoke_orchestrator(
    worker: WorkerLoop, function: IndexedFunction, context_json: str
) -> OrchestratorResult:
    """One orchestrator invocation: the user function gets the converter-built context."""
    try:
        context = OrchestrationTriggerConverter.decode(
            Datum(context_json, "json"), trigger_metadata=None
        )
        kwargs: dict[str, Any] = {function.trigger_binding_name: context}
        returned = await worker.call(function.user_function, kwargs)
        datum = OrchestrationTriggerConverter.encode(returned, expected_type=None)
    except Exception as exc:
        return OrchestratorResult(failure=failure_from(exc))
    value = datum.value
    return OrchestratorResult(state_json=value if isinstance(value, str) else str(value))


async def invoke_activity(
    worker: WorkerLoop,
    function: IndexedFunction,
    input_json: str | None,
    extra_inputs: dict[str, Any] | None = None,
    started: threading.Event | None = None,
) -> ActivityResult:
    """One activity invocation, decoded/encoded with azure.functions' ActivityTriggerConverter.

    `started` is set just before the user function is called (the engine waits for it before
    running its `during_activity` hook, so the hook runs while the activity is in flight).
    """
    try:
        value = ActivityTriggerConverter.decode(
            Datum("null" if input_json is None else input_json, "json"), trigger_metadata=None
        )
        kwargs: dict[str, Any] = {function.trigger_binding_name: value, **(extra_inputs or {})}
        if function.requires_context:
            kwargs["context"] = InvocationContext(function.name)
        returned = await worker.call(
            function.user_function, kwargs, started.set if started is not None else None
        )
        datum = ActivityTriggerConverter.encode(returned, expected_type=None)
    except Exception as exc:
        return ActivityResult(failure=failure_from(exc))
    finally:
        if started is not None:
            started.set()  # also when decoding failed before the call
    return ActivityResult(result_json=str(datum.value))


async def close_sdk_session() -> None:
    """Close the Durable SDK's process-wide aiohttp session (http_utils._close_session)."""
    from azure.durable_functions.models.utils import http_utils

    await http_utils._close_session()


def reset_sdk_session_lock() -> None:
    """A new worker process starts with a fresh module-level asyncio.Lock in http_utils."""
    from azure.durable_functions.models.utils import http_utils

    if http_utils._client_session is None or http_utils._client_session.closed:
        http_utils._session_lock = asyncio.Lock()


_speedups_installed = False


def install_sdk_speedups() -> None:
    """Memoize the SDK's timestamp parser (dateutil, ~25 us per history event).

    Every replay re-parses every Timestamp of the generation's history; with virtual time the
    same strings recur constantly. `dateutil.parser.parse` is a pure function returning an
    immutable datetime, so caching it changes no result, only wall time.
    """
    global _speedups_installed
    if _speedups_installed:
        return
    module: Any = importlib.import_module("azure.durable_functions.models.history.HistoryEvent")
    module.dt_parse = functools.lru_cache(maxsize=16384)(module.dt_parse)
    _speedups_installed = True


__all__ = [
    "ActivityResult",
    "InvocationContext",
    "InvocationFailure",
    "OrchestratorResult",
    "WorkerLoop",
    "close_sdk_session",
    "install_sdk_speedups",
    "invoke_activity",
    "invoke_orchestrator",
    "reset_sdk_session_lock",
]

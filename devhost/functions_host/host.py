"""EmulatedHost: the Functions host + Durable extension around the real SDKs, for tests.

One host = one Functions host process with one Python worker process:

- the app module is imported once (reused if already imported) and indexed like the worker;
- every invocation runs on one persistent asyncio loop (worker.WorkerLoop);
- the Durable extension's HTTP API listens on loopback (rpc_api) for the real
  DurableOrchestrationClient, which runs inside HTTP functions on the worker loop;
- durable time is the shared VirtualClock: timers fire only when a test advances it.
"""

from __future__ import annotations

import concurrent.futures
import inspect
import json
import os
import threading
from collections.abc import Callable, Mapping, Sequence
from datetime import datetime
from pathlib import Path
from typing import Any
from urllib.parse import parse_qsl, urlencode, urlsplit

import azure.functions as func
from aiohttp import web

from ..clock import VirtualClock
from ..lifecycle import StartStop
from ..server_thread import ServerThread
from .durable_engine import (
    DEFAULT_OVERRIDABLE_STATES,
    ApiError,
    CrashPoint,
    DurableEngine,
    FaultPolicy,
    HostStats,
    InstanceView,
)
from .errors import (
    HostError,
    InstanceAlreadyExistsError,
    InstanceGoneError,
    InstanceNotFoundError,
)
from .http_invoker import HostKeys, HttpFrontDoor
from .indexing import AppIndex, IndexedFunction, index_module, route_prefix_from_host_json
from .persistence import DurableStateFile
from .rpc_api import DurableHttpApi, make_rpc_app
from .worker import (
    ActivityResult,
    OrchestratorResult,
    WorkerLoop,
    close_sdk_session,
    install_sdk_speedups,
    invoke_activity,
    invoke_orchestrator,
    reset_sdk_session_lock,
)

_REPO_ROOT = Path(__file__).resolve().parents[2]
_open_host: EmulatedHost | None = None


class _DefaultKey:
    """Sentinel: send the host's function key."""


DEFAULT_KEY = _DefaultKey()
WeekSeconds = 7 * 24 * 3600


def _find_host_json(host_json: str | Path) -> Path:
    path = Path(host_json)
    for candidate in (path, _REPO_ROOT / path) if not path.is_absolute() else (path,):
        if candidate.is_file():
            return candidate
    raise FileNotFoundError(f"host.json not found: {host_json} (the Functions host requires one)")


class EmulatedHost(StartStop):
    """See tests/README.md, section "Emulated Functions host"."""

    def __init__(
        self,
        app_module: str = "function_app",
        *,
        clock: VirtualClock | None = None,
        host_json: str | Path = "host.json",
        env: Mapping[str, str] | None = None,
        function_key: str = "test-function-key",
        master_key: str = "test-master-key",
        worker_reset_hooks: Sequence[Callable[[], object]] = (),
        strict_determinism: bool = True,
        durable_system_key: str = "test-durabletask-extension-key",
        eventgrid_system_key: str = "test-eventgrid-extension-key",
        base_url: str = "http://localhost:7071",
        invocation_timeout: float = 60.0,
        state_file: str | Path | None = None,
    ) -> None:
        self.app_module = app_module
        self.clock = clock or VirtualClock()
        self._host_json_arg = host_json
        self._env = dict(env or {})
        self.keys = HostKeys(
            function_key=function_key,
            master_key=master_key,
            durable_system_key=durable_system_key,
            eventgrid_system_key=eventgrid_system_key,
        )
        self.worker_reset_hooks = list(worker_reset_hooks)
        self.strict_determinism = strict_determinism
        self.base_url = base_url.rstrip("/")
        self.invocation_timeout = invocation_timeout
        self.policy = FaultPolicy()
        self.stats = HostStats()
        self.http_errors: list[BaseException] = []
        self.host_json: dict[str, Any] = {}
        self.hub_name = "TestHubName"
        self._saved_env: dict[str, str | None] = {}
        self._index: AppIndex | None = None
        self._worker: WorkerLoop | None = None
        self._engine: DurableEngine | None = None
        self._rpc: ServerThread | None = None
        self._front: HttpFrontDoor | None = None
        self._started = False
        # The wall-clock runner (devhost/start.py) keeps the durable state in a file and
        # is woken after each commit; tests keep everything in memory.
        self._state_file = Path(state_file) if state_file is not None else None
        self.loaded_instances = 0
        self.on_commit: Callable[[], None] | None = None

    # ------------------------------------------------------------------ fault injection

    @property
    def duplicate_activities(self) -> bool | Callable[[str, Any], bool]:
        return self.policy.duplicate_activities

    @duplicate_activities.setter
    def duplicate_activities(self, value: bool | Callable[[str, Any], bool]) -> None:
        self.policy.duplicate_activities = value

    @property
    def crash_when(self) -> Callable[[CrashPoint], bool] | None:
        return self.policy.crash_when

    @crash_when.setter
    def crash_when(self, value: Callable[[CrashPoint], bool] | None) -> None:
        self.policy.crash_when = value

    @property
    def max_messages_per_episode(self) -> int | None:
        return self.policy.max_messages_per_episode

    @max_messages_per_episode.setter
    def max_messages_per_episode(self, value: int | None) -> None:
        self.policy.max_messages_per_episode = value

    @property
    def during_activity(self) -> Callable[[str, Any], object] | None:
        """Called as (activity name, decoded input) while an activity runs, before its result
        is committed (see FaultPolicy.during_activity)."""
        return self.policy.during_activity

    @during_activity.setter
    def during_activity(self, value: Callable[[str, Any], object] | None) -> None:
        self.policy.during_activity = value

    # ------------------------------------------------------------------ lifecycle

    def start(self) -> EmulatedHost:
        global _open_host
        if self._started:
            return self
        if _open_host is not None:
            # The SDKs keep process-wide state (the Durable client's aiohttp session, cached
            # app clients) bound to one worker loop: two open hosts would share it, which two
            # real host processes never do.
            raise HostError("another EmulatedHost is open; close it first (one host per process)")
        _open_host = self
        self._apply_env()
        try:
            self.host_json = json.loads(_find_host_json(self._host_json_arg).read_text())
            durable = (self.host_json.get("extensions") or {}).get("durableTask") or {}
            self.hub_name = self._resolve_setting(str(durable.get("hubName") or "TestHubName"))
            # DurableTaskOptions.OverridableExistingInstanceStates defaults to NonRunningStates.
            overridable = str(
                durable.get("overridableExistingInstanceStates") or DEFAULT_OVERRIDABLE_STATES
            )
            self._index = index_module(
                self.app_module, route_prefix=route_prefix_from_host_json(self.host_json)
            )
            self._worker = WorkerLoop(self.invocation_timeout)
            self._worker.start()
            reset_sdk_session_lock()
            install_sdk_speedups()
            self._engine = DurableEngine(
                clock=self.clock,
                hub_name=self.hub_name,
                functions=self._index.functions,
                orchestrators=self._index.orchestrators,
                activities=self._index.activities,
                overridable_states=overridable,
                policy=self.policy,
                stats=self.stats,
                run_orchestrator=self._run_orchestrator,
                start_activity=self._start_activity,
                wait_activity=self._wait_activity,
                on_crash=self._on_crash,
                strict_determinism=self.strict_determinism,
            )
            if self._state_file is not None:
                self.loaded_instances = DurableStateFile(self._state_file).attach(self._engine)
            saved = self._engine.on_commit

            def committed() -> None:
                if saved is not None:
                    saved()
                if self.on_commit is not None:
                    self.on_commit()

            self._engine.on_commit = committed
            api = DurableHttpApi(self._engine, self.management_payload)

            def rpc_factory() -> web.Application:
                return make_rpc_app(api)

            self._rpc = ServerThread(rpc_factory).start()
            self._front = HttpFrontDoor(
                worker=self._worker,
                functions=self._index.functions,
                base_url=self.base_url,
                keys=self.keys,
                durable_api=api,
                client_json=self.durable_client_json,
                errors=self.http_errors,
            )
            self._started = True
            self._run_reset_hooks()
        except BaseException:
            self._shutdown()
            raise
        return self

    def stop(self) -> None:
        self._shutdown()

    def close(self) -> None:
        self.stop()

    def _shutdown(self) -> None:
        global _open_host
        self._started = False
        try:
            if self._worker is not None:
                # Close the SDK's keep-alive session before its server goes away.
                self._worker.run(close_sdk_session(), timeout=10)
        finally:
            if self._rpc is not None:
                self._rpc.stop()
                self._rpc = None
            if self._worker is not None:
                self._worker.stop()
                self._worker = None
            self._restore_env()
            if _open_host is self:
                _open_host = None

    def _apply_env(self) -> None:
        for key, value in self._env.items():
            self._saved_env.setdefault(key, os.environ.get(key))
            os.environ[key] = value

    def _restore_env(self) -> None:
        for key, value in self._saved_env.items():
            if value is None:
                os.environ.pop(key, None)
            else:
                os.environ[key] = value
        self._saved_env.clear()

    @staticmethod
    def _resolve_setting(value: str) -> str:
        if value.startswith("%") and value.endswith("%") and len(value) > 2:
            return os.environ.get(value[1:-1], value)
        return value

    # ------------------------------------------------------------------ internals

    def _require(self) -> tuple[AppIndex, WorkerLoop, DurableEngine, HttpFrontDoor]:
        index, worker, engine, front = self._index, self._worker, self._engine, self._front
        if not self._started or index is None or worker is None or engine is None or front is None:
            raise HostError("the emulated host is not started (use start() or a with block)")
        return index, worker, engine, front

    def _run_orchestrator(self, function: IndexedFunction, context_json: str) -> OrchestratorResult:
        _, worker, _, _ = self._require()
        return worker.run(invoke_orchestrator(worker, function, context_json))

    def _start_activity(
        self, function: IndexedFunction, input_json: str | None, started: threading.Event
    ) -> concurrent.futures.Future[ActivityResult]:
        _, worker, _, _ = self._require()
        # An activity may also take a durable client binding (the DFApp wrapper builds it).
        clients = {name: self.durable_client_json() for name in function.durable_client_bindings}
        return worker.submit(invoke_activity(worker, function, input_json, clients, started))

    def _wait_activity(self, future: concurrent.futures.Future[ActivityResult]) -> ActivityResult:
        _, worker, _, _ = self._require()
        return worker.wait(future)

    def _on_crash(self, point: CrashPoint) -> None:
        self.restart_worker()

    def _run_reset_hooks(self) -> None:
        _, worker, _, _ = self._require()
        for hook in self.worker_reset_hooks:
            result = hook()
            if inspect.isawaitable(result):

                async def _await(awaitable: Any = result) -> None:
                    await awaitable

                worker.run(_await())

    def restart_worker(self) -> None:
        """What a worker crash does to process state: reset hooks, SDK session closed."""
        _, worker, _, _ = self._require()
        self._run_reset_hooks()
        worker.run(close_sdk_session())

    # ------------------------------------------------------------------ public API

    @property
    def functions(self) -> dict[str, IndexedFunction]:
        index, _, _, _ = self._require()
        return index.functions

    @property
    def worker_loop(self) -> Any:
        """The worker's persistent asyncio loop (for assertions, never to block on)."""
        _, worker, _, _ = self._require()
        return worker.loop

    def run_on_worker(self, coro: Any) -> Any:
        """Run a coroutine on the worker loop (e.g. to inspect loop-bound state)."""
        _, worker, _, _ = self._require()
        return worker.run(coro)

    @property
    def rpc_base_url(self) -> str:
        if self._rpc is None:
            raise HostError("the emulated host is not started")
        return f"{self._rpc.base_url}/durabletask/"

    def http(
        self,
        method: str,
        path: str,
        *,
        body: bytes | str | None = None,
        headers: Mapping[str, str] | None = None,
        query: Mapping[str, str] | None = None,
        key: str | _DefaultKey | None = DEFAULT_KEY,
    ) -> func.HttpResponse:
        """Send one HTTP request through the host (key: function key by default; None: none)."""
        _, worker, _, front = self._require()
        split = urlsplit(path)
        all_query = dict(parse_qsl(split.query, keep_blank_values=True))
        all_query.update(query or {})
        all_headers = dict(headers or {})
        key_value = self.keys.function_key if isinstance(key, _DefaultKey) else key
        if key_value is not None and not any(k.lower() == "x-functions-key" for k in all_headers):
            all_headers["x-functions-key"] = key_value
        data = body.encode("utf-8") if isinstance(body, str) else (body or b"")
        return worker.run(front.handle(method, split.path, data, all_headers, all_query))

    def durable_client_json(self) -> str:
        """What a durable_client_input parameter receives (DurableOrchestrationBindings JSON)."""
        base = f"{self.base_url}/runtime/webhooks/durabletask"
        code = self.keys.durable_system_key
        common = f"taskHub={self.hub_name}&connection=Storage&code={code}"
        return json.dumps(
            {
                "taskHubName": self.hub_name,
                "creationUrls": {
                    "createNewInstancePostUri": (
                        f"{base}/orchestrators/{{functionName}}[/{{instanceId}}]?code={code}"
                    ),
                    "createAndWaitOnNewInstancePostUri": (
                        f"{base}/orchestrators/{{functionName}}[/{{instanceId}}]?timeout="
                        f"{{timeoutInSeconds}}&pollingInterval={{intervalInSeconds}}&code={code}"
                    ),
                },
                "managementUrls": {
                    "id": "INSTANCEID",
                    "statusQueryGetUri": f"{base}/instances/INSTANCEID?{common}",
                    "sendEventPostUri": f"{base}/instances/INSTANCEID/raiseEvent/{{eventName}}?{common}",
                    "terminatePostUri": f"{base}/instances/INSTANCEID/terminate?reason={{text}}&{common}",
                    "rewindPostUri": f"{base}/instances/INSTANCEID/rewind?reason={{text}}&{common}",
                    "purgeHistoryDeleteUri": f"{base}/instances/INSTANCEID?{common}",
                    "restartPostUri": f"{base}/instances/INSTANCEID/restart?{common}",
                    "suspendPostUri": f"{base}/instances/INSTANCEID/suspend?reason={{text}}&{common}",
                    "resumePostUri": f"{base}/instances/INSTANCEID/resume?reason={{text}}&{common}",
                },
                "baseUrl": base,
                "requiredQueryStringParameters": f"code={code}",
                "rpcBaseUrl": self.rpc_base_url,
                "httpBaseUrl": "",
                "maxGrpcMessageSizeInBytes": 0,
                "grpcHttpClientTimeout": "00:01:40",
            }
        )

    def management_payload(self, instance_id: str) -> dict[str, str]:
        """HttpManagementPayload: the URLs (with the system key) the start API returns."""
        urls = json.loads(self.durable_client_json())["managementUrls"]
        return {key: str(value).replace("INSTANCEID", instance_id) for key, value in urls.items()}

    def start_orchestration(
        self, name: str, input: Any = None, instance_id: str | None = None
    ) -> str:
        """Start directly, as DurableOrchestrationClient.start_new would (input df_dumps'ed)."""
        from azure.durable_functions.models.utils.df_serialization import df_dumps

        _, _, engine, _ = self._require()
        try:
            return engine.start_new(name, None if input is None else df_dumps(input), instance_id)
        except ApiError as exc:
            raise self._translate(exc) from None

    def raise_event(self, instance_id: str, name: str, data: Any = None) -> None:
        """Raise an event as DurableOrchestrationClient.raise_event does (json.dumps payload)."""
        _, _, engine, _ = self._require()
        try:
            engine.raise_event(instance_id, name, json.dumps(data))
        except ApiError as exc:
            raise self._translate(exc) from None

    def terminate(self, instance_id: str, reason: str) -> None:
        """Queue a termination; like the client, a finished instance is not an error (410)."""
        _, _, engine, _ = self._require()
        try:
            engine.terminate(instance_id, reason)
        except ApiError as exc:
            if exc.status != 410:
                raise self._translate(exc) from None

    @staticmethod
    def _translate(exc: ApiError) -> HostError:
        body = exc.body or {}
        message = str(body.get("ExceptionMessage") or body.get("Message") or exc)
        if exc.status == 404:
            return InstanceNotFoundError(message)
        if exc.status == 410:
            return InstanceGoneError(message)
        if body.get("ExceptionType") == (
            "DurableTask.Core.Exceptions.OrchestrationAlreadyExistsException"
        ):
            return InstanceAlreadyExistsError(message)
        return HostError(message)

    def instance(self, instance_id: str) -> InstanceView | None:
        _, _, engine, _ = self._require()
        return engine.snapshot(instance_id)

    def instances(self) -> list[InstanceView]:
        _, _, engine, _ = self._require()
        return engine.snapshots()

    def run_until_idle(self, max_steps: int = 100_000) -> int:
        _, _, engine, _ = self._require()
        return engine.run_until_idle(max_steps)

    def next_timer_at(self) -> datetime | None:
        _, _, engine, _ = self._require()
        return engine.next_timer_at()

    def has_ready_work(self) -> bool:
        """Activities, due timers or queued messages ready at the clock's current time."""
        _, _, engine, _ = self._require()
        return engine.has_ready_work()

    def advance_to_next_timer(self) -> bool:
        _, _, engine, _ = self._require()
        return engine.advance_to_next_timer()

    def advance(self, seconds: float) -> None:
        _, _, engine, _ = self._require()
        engine.advance(seconds)

    def run_until_complete(
        self,
        instance_id: str,
        *,
        max_virtual_seconds: float = WeekSeconds,
        max_steps: int = 1_000_000,
    ) -> InstanceView:
        _, _, engine, _ = self._require()
        views = engine.run_until_complete(
            [instance_id], max_virtual_seconds=max_virtual_seconds, max_steps=max_steps
        )
        return views[0]

    def run_all_until_complete(
        self, *, max_virtual_seconds: float = WeekSeconds, max_steps: int = 1_000_000
    ) -> list[InstanceView]:
        _, _, engine, _ = self._require()
        return engine.run_until_complete(
            None, max_virtual_seconds=max_virtual_seconds, max_steps=max_steps
        )

    # ------------------------------------------------------------------ Event Grid delivery

    def eventgrid_webhook_url(self, function_name: str) -> str:
        """The subscription endpoint Event Grid would call (carries the extension system key)."""
        query = urlencode({"functionName": function_name, "code": self.keys.eventgrid_system_key})
        return f"{self.base_url}/runtime/webhooks/EventGrid?{query}"

    def eventgrid_webhook_target(
        self, function_name: str
    ) -> Callable[[str, dict[str, str], bytes], tuple[int, dict[str, str], bytes]]:
        """An in-process delivery target: (url, headers, body) -> (status, headers, body).

        `url` is the subscription endpoint (use eventgrid_webhook_url); its query string, with
        the system key, is honoured, so a wrong or missing key is refused with 401 as in Azure.
        """
        index, _, _, _ = self._require()
        function = index.functions.get(function_name)
        if function is None or function.trigger_type != "eventGridTrigger":
            raise KeyError(f"{function_name!r} is not an eventGridTrigger function")

        def deliver(
            url: str, headers: dict[str, str], body: bytes
        ) -> tuple[int, dict[str, str], bytes]:
            split = urlsplit(url)
            query = dict(parse_qsl(split.query, keep_blank_values=True))
            if query.get("functionName", function_name) != function_name:
                raise ValueError(f"url targets {query['functionName']!r}, not {function_name!r}")
            query["functionName"] = function_name
            response = self.http(
                "POST",
                "/runtime/webhooks/EventGrid",
                body=body,
                headers=headers,
                query=query,
                key=None,
            )
            return response.status_code, dict(response.headers), response.get_body()

        return deliver

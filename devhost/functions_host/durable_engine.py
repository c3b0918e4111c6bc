"""The Durable Task side of the emulated host: instances, queues, episodes, timers.

Modelled on DurableTask.Core + DurableTask.AzureStorage as driven by the Functions extension:

- Every orchestration step is an *episode*: a batch of queued messages for one instance is
  appended to its history after a new OrchestratorStarted, the orchestrator user function is
  invoked with the whole generation's history (earlier events IsPlayed=true), the extension's
  replay shim (shim.py) turns the returned actions into decisions, and the decisions are
  committed together: TaskScheduled/TimerCreated events, activity work items, timer messages,
  then OrchestratorCompleted. Nothing is committed if the worker "crashes" first, and the
  consumed messages stay queued (at-least-once delivery, as with Azure Storage queues).
- Activities are work items executed separately; their TaskCompleted/TaskFailed come back as
  messages. A result is lost if the worker crashes before it is committed: the activity runs
  again (at-least-once).
- Timers are messages that become visible at fireAt on the *virtual* clock.
- Messages for another execution (after continue-as-new or a replaced instance) and messages
  for finished instances are dropped, as DTFx does.
- Continue-as-new follows DTFx with the Azure Storage backend: EventRaised events that the
  replay reaches after the shim called ContinueAsNew are carried into the new generation
  (right after its ExecutionStarted, in its first episode); earlier ones are lost with the old
  history; messages still queued are addressed to the instance and go to the new generation.
- Payload sizes: only the custom status is limited (16 KB of UTF-16, the extension's
  SetCustomStatus); large queue messages and table properties are offloaded to blobs by the
  Azure Storage provider (counted in HostStats) and never fail.

Sources are cited next to each rule: azure-functions-durable-extension v2.13.7 (commit
a7c6d69) and durabletask tags durabletask.core-v2.17.1 / durabletask.azurestorage-v1.17.5, the
versions that extension references.
"""

from __future__ import annotations

import concurrent.futures
import itertools
import json
import threading
import uuid
from collections import Counter
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any, Literal

from ..clock import VirtualClock
from . import history as h
from .errors import (
    HostError,
    NonDeterminismError,
    OrchestrationStuckError,
    StepLimitError,
    UnsupportedFeatureError,
    VirtualTimeLimitError,
)
from .indexing import IndexedFunction
from .shim import (
    NonDeterminismDetected,
    ShimOutcome,
    ShimReplay,
    dtfx_outcome_without_actions,
)
from .worker import ActivityResult, InvocationFailure, OrchestratorResult

FINISHED = frozenset({"Completed", "Failed", "Terminated"})
# azure-functions-durable-extension src/WebJobs.Extensions.DurableTask/OverridableStates.cs,
# OverridableStatesExtensions.NonRunning: the statuses NonRunningStates refuses to replace
# (Running, ContinuedAsNew, Pending, Suspended; the last two have no equivalent here).
RUNNING_STATES = frozenset({"Running", "Pending"})
# azure-functions-durable-extension src/WebJobs.Extensions.DurableTask/Options/
# DurableTaskOptions.cs, OverridableExistingInstanceStates: default OverridableStates.NonRunningStates.
DEFAULT_OVERRIDABLE_STATES = "NonRunningStates"

# azure-functions-durable-extension src/WebJobs.Extensions.DurableTask/ContextImplementations/
# DurableOrchestrationContext.cs, IDurableOrchestrationContext.SetCustomStatus:
# `const int MaxCustomStatusPayloadSizeInKB = 16`, checked by MessagePayloadDataConverter.
# Serialize(value, 16) (src/WebJobs.Extensions.DurableTask/MessagePayloadDataConverter.cs) as
# `(int)(Encoding.Unicode.GetByteCount(serializedJson) / 1024.0) > maxSizeInKB`: a status
# fails from 17 * 1024 UTF-16 bytes on (the KB count is truncated).
# No other payload is checked by the extension: MessagePayloadDataConverter.Serialize is called
# with a maximum only from SetCustomStatus, and DurableTaskExtension.ValidatePayloadSize (60 KB of
# UTF-32) is defined but never called (`git grep ValidatePayloadSize` finds only its definition).
CUSTOM_STATUS_MAX_KB = 16
CUSTOM_STATUS_MAX_UTF16_BYTES = (CUSTOM_STATUS_MAX_KB + 1) * 1024 - 2  # the largest that passes
# durabletask src/DurableTask.AzureStorage/MessageManager.cs: `MaxStorageQueuePayloadSizeInBytes
# = 45 * 1024`, compared with Encoding.UTF8.GetByteCount of the serialized MessageData in
# SerializeMessageDataAsync/GetMessageFormatFlags: larger messages go to a compressed blob.
QUEUE_MESSAGE_MAX_BYTES = 45 * 1024
# durabletask src/DurableTask.AzureStorage/Tracking/AzureTableTrackingStore.cs:
# `MaxTablePropertySizeInBytes = 60 * 1024`, ExceedsMaxTablePropertySize (Encoding.Unicode) on
# VariableSizeEntityProperties in CompressLargeMessageAsync: larger properties go to a blob.
TABLE_PROPERTY_MAX_BYTES = 60 * 1024
_TABLE_PROPERTIES = ("Name", "Input", "Result", "Output", "Reason", "Details", "Tags")
CRASH_KINDS = (
    "before_episode",
    "after_episode_before_commit",
    "after_activity_before_commit",
    "after_timer_fired",
)
_OUT_OF_PROC_MARKER = "$OutOfProcData$:"
_INVALID_ID_CHARS = set("/\\#?")


def newtonsoft_compact_json(value: Any) -> str:
    """`JToken.ToString(Formatting.None)`: compact, non-ASCII written as is.

    Newtonsoft's default StringEscapeHandling escapes control characters, quote and backslash
    (as json.dumps does) and, beyond ASCII, only U+0085, U+2028 and U+2029
    (JavaScriptUtils.WriteEscapedString). Known approximation: the extension parses the SDK's
    JSON with DateParseHandling.DateTime, so date-like strings may be re-written differently.
    """
    text = json.dumps(value, ensure_ascii=False, separators=(",", ":"))
    for char in ("\u0085", "\u2028", "\u2029"):
        text = text.replace(char, f"\\u{ord(char):04x}")
    return text


def utf16_size(text: str) -> int:
    """Encoding.Unicode.GetByteCount: two bytes per UTF-16 code unit (four per astral char)."""
    return len(text.encode("utf-16-le", errors="surrogatepass"))


def custom_status_utf16_bytes(value: Any) -> int:
    """The size the extension measures for a custom status (see CUSTOM_STATUS_MAX_KB)."""
    return utf16_size(newtonsoft_compact_json(value))


def custom_status_error(value: Any) -> str | None:
    """The ArgumentException message SetCustomStatus throws for `value`, or None if it fits."""
    if value is None:
        return None
    size_kb = int(custom_status_utf16_bytes(value) / 1024.0)
    if size_kb <= CUSTOM_STATUS_MAX_KB:
        return None
    # string.Format("{0:N0} KB ... {1:N0} KB") in MessagePayloadDataConverter.Serialize
    return (
        f"The UTF-16 size of the JSON-serialized payload must not exceed "
        f"{CUSTOM_STATUS_MAX_KB:,} KB. The current payload size is {size_kb:,} KB."
    )


_EVENT_TYPE_NAMES = {
    h.EventType.EXECUTION_STARTED: "ExecutionStartedEvent",
    h.EventType.TASK_SCHEDULED: "TaskScheduledEvent",
    h.EventType.TASK_COMPLETED: "TaskCompletedEvent",
    h.EventType.TASK_FAILED: "TaskFailedEvent",
    h.EventType.TIMER_FIRED: "TimerFiredEvent",
    h.EventType.EVENT_RAISED: "EventRaisedEvent",
    h.EventType.EXECUTION_TERMINATED: "ExecutionTerminatedEvent",
}


def queue_message_bytes(event: dict[str, Any], instance_id: str, execution_id: str | None) -> int:
    """UTF-8 size of the Azure Storage queue message carrying `event`.

    The envelope is DurableTask.AzureStorage's MessageData around a TaskMessage, serialized
    with TypeNameHandling.Objects (Utils.SerializeToJson); its fields are approximated here,
    the payload (Input/Result, a JSON string inside JSON) dominates anyway.
    """
    type_name = _EVENT_TYPE_NAMES.get(h.EventType(event["EventType"]), "HistoryEvent")
    envelope = {
        "$type": "DurableTask.AzureStorage.MessageData, DurableTask.AzureStorage",
        "ActivityId": "00000000-0000-0000-0000-000000000000",
        "TaskMessage": {
            "$type": "DurableTask.Core.TaskMessage, DurableTask.Core",
            "Event": {"$type": f"DurableTask.Core.History.{type_name}, DurableTask.Core", **event},
            "SequenceNumber": 0,
            "OrchestrationInstance": {
                "$type": "DurableTask.Core.OrchestrationInstance, DurableTask.Core",
                "InstanceId": instance_id,
                "ExecutionId": execution_id,
            },
        },
        "CompressedBlobName": None,
        "SequenceNumber": 0,
        "Episode": 0,
        "Sender": {"InstanceId": "", "ExecutionId": None},
        "SerializableTraceContext": None,
    }
    text = json.dumps(envelope, ensure_ascii=False, separators=(",", ":"))
    return len(text.encode("utf-8", errors="surrogatepass"))


@dataclass(frozen=True)
class CrashPoint:
    """Where a simulated worker crash may happen.

    kind: one of CRASH_KINDS; step: the engine's global step number; detail: the activity
    name (activities), the message types of the batch (episodes), or the timer's fireAt.
    """

    kind: str
    instance_id: str
    step: int
    detail: str


@dataclass
class HostStats:
    episodes: int = 0
    replayed_events: int = 0
    activity_executions: Counter[str] = field(default_factory=Counter)
    duplicate_executions: int = 0
    crashes: int = 0
    timers_fired: int = 0
    # TimerCreated decisions committed, over every instance (per instance: InstanceView).
    timers_created: int = 0
    non_determinism: int = 0
    steps: int = 0
    # Queue messages over QUEUE_MESSAGE_MAX_BYTES that the Azure Storage provider would have
    # offloaded to a compressed blob (MessageManager), and history/instance table properties
    # over TABLE_PROPERTY_MAX_BYTES offloaded likewise (AzureTableTrackingStore).
    large_messages: int = 0
    large_table_properties: int = 0
    # Generations closed by continue-as-new, and EventRaised events carried over into the next
    # generation (read after the orchestrator continued as new; see ShimOutcome).
    continued_as_new: int = 0
    events_carried: int = 0


@dataclass
class FaultPolicy:
    """Fault injection knobs, read at each step (so a test may change them mid-run)."""

    duplicate_activities: bool | Callable[[str, Any], bool] = False
    crash_when: Callable[[CrashPoint], bool] | None = None
    # None: an episode takes every queued message (a batch), like a busy control queue.
    max_messages_per_episode: int | None = None
    # Called as (activity name, decoded input) on the engine thread while the activity runs
    # on the worker loop, before its result is committed: it may raise events, call
    # host.http, terminate... (whatever it queues lands before the activity's TaskCompleted).
    during_activity: Callable[[str, Any], object] | None = None


@dataclass(frozen=True)
class InstanceView:
    """A consistent snapshot of one orchestration instance."""

    instance_id: str
    name: str
    runtime_status: str
    input: Any
    output: Any
    custom_status: Any
    created_time: datetime
    last_updated_time: datetime
    history: list[dict[str, Any]]
    generation: int
    history_lengths: list[int]
    failure: str | None
    execution_id: str
    last_context: dict[str, Any] | None
    diagnostics: tuple[str, ...]
    # Per generation (index = generation): episodes committed and TimerCreated decisions.
    episodes_by_generation: tuple[int, ...] = ()
    timers_by_generation: tuple[int, ...] = ()

    @property
    def is_finished(self) -> bool:
        return self.runtime_status in FINISHED

    @property
    def episodes(self) -> int:
        """Episodes committed for this instance, over all generations."""
        return sum(self.episodes_by_generation)

    @property
    def timers_created(self) -> int:
        """TimerCreated decisions committed for this instance, over all generations."""
        return sum(self.timers_by_generation)


class ApiError(Exception):
    """An HTTP API refusal: status code and the JSON body the extension would send."""

    def __init__(self, status: int, body: dict[str, Any] | None) -> None:
        super().__init__(f"{status}: {body}")
        self.status = status
        self.body = body


def error_body(
    message: str, exception_message: str, exception_type: str, stack_trace: str | None = None
) -> dict[str, Any]:
    """The extension's own CreateErrorResponse(status, message, exception) body.

    azure-functions-durable-extension src/WebJobs.Extensions.DurableTask/
    HttpRequestMessageExtensions.cs, CreateErrorResponse: {Message, ExceptionMessage,
    ExceptionType (FullName), StackTrace}.
    """
    return {
        "Message": message,
        "ExceptionMessage": exception_message,
        "ExceptionType": exception_type,
        "StackTrace": stack_trace,
    }


@dataclass
class _Message:
    seq: int
    kind: Literal["start", "event", "task", "timer", "terminate"]
    event: dict[str, Any]
    execution_id: str | None  # None: addressed to the instance (client events, terminate)
    # A continue-as-new start: DTFx runs the new generation's first episode in the same work
    # item, from [OrchestratorStarted, ExecutionStarted, *carried, OrchestratorCompleted].
    continued: bool = False
    carried: list[dict[str, Any]] = field(default_factory=list)


@dataclass
class _Timer:
    fire_at: datetime
    seq: int
    instance_id: str
    execution_id: str
    timer_id: int
    created: datetime


@dataclass
class _WorkItem:
    seq: int
    instance_id: str
    execution_id: str
    task_id: int
    name: str
    input: str | None


@dataclass
class _Instance:
    instance_id: str
    name: str
    status: str
    input: str | None
    created_time: datetime
    last_updated_time: datetime
    execution_id: str
    output: str | None = None
    custom_status: Any = None
    generation: int = 0
    history: list[dict[str, Any]] = field(default_factory=list)
    history_lengths: list[int] = field(default_factory=lambda: [0])
    failure: str | None = None
    inbox: list[_Message] = field(default_factory=list)
    last_context: dict[str, Any] | None = None
    diagnostics: list[str] = field(default_factory=list)
    episodes_by_generation: list[int] = field(default_factory=lambda: [0])
    timers_by_generation: list[int] = field(default_factory=lambda: [0])
    # A custom status committed after the activity messages of its episode (see
    # _commit_episode): (the status, the work items that may run before it is visible).
    staged_status: tuple[Any, set[int]] | None = None


def _loads_or_raw(text: str | None) -> Any:
    if text is None:
        return None
    try:
        return json.loads(text)
    except ValueError:
        return text


def _failure_details_json(activity: str, failure: InvocationFailure) -> str:
    """Utils.SerializeCause of the host's RpcException, roughly as Newtonsoft writes it."""
    return json.dumps(
        {
            "$type": "Microsoft.Azure.WebJobs.Script.Workers.Rpc.RpcException, "
            "Microsoft.Azure.WebJobs.Script",
            "ClassName": "Microsoft.Azure.WebJobs.Script.Workers.Rpc.RpcException",
            "Message": failure.host_message,
            "RemoteMessage": failure.worker_message,
            "RemoteTypeName": type(failure.exception).__name__,
            "IsUserException": True,
            "Source": activity,
        }
    )


STATE_VERSION = 1


def _time_to_json(moment: datetime) -> str:
    return moment.isoformat()


def _time_from_json(text: str) -> datetime:
    return datetime.fromisoformat(text)


def _message_to_json(message: _Message) -> dict[str, Any]:
    return {
        "seq": message.seq,
        "kind": message.kind,
        "event": message.event,
        "executionId": message.execution_id,
        "continued": message.continued,
        "carried": message.carried,
    }


def _message_from_json(data: Mapping[str, Any]) -> _Message:
    return _Message(
        seq=int(data["seq"]),
        kind=data["kind"],
        event=dict(data["event"]),
        execution_id=data["executionId"],
        continued=bool(data["continued"]),
        carried=[dict(e) for e in data["carried"]],
    )


def _instance_to_json(instance: _Instance) -> dict[str, Any]:
    staged = instance.staged_status
    return {
        "instanceId": instance.instance_id,
        "name": instance.name,
        "status": instance.status,
        "input": instance.input,
        "createdTime": _time_to_json(instance.created_time),
        "lastUpdatedTime": _time_to_json(instance.last_updated_time),
        "executionId": instance.execution_id,
        "output": instance.output,
        "customStatus": instance.custom_status,
        "generation": instance.generation,
        "history": instance.history,
        "historyLengths": instance.history_lengths,
        "failure": instance.failure,
        "inbox": [_message_to_json(m) for m in instance.inbox],
        "lastContext": instance.last_context,
        "diagnostics": instance.diagnostics,
        "episodesByGeneration": instance.episodes_by_generation,
        "timersByGeneration": instance.timers_by_generation,
        "stagedStatus": None if staged is None else [staged[0], sorted(staged[1])],
    }


def _instance_from_json(data: Mapping[str, Any]) -> _Instance:
    staged = data["stagedStatus"]
    return _Instance(
        instance_id=data["instanceId"],
        name=data["name"],
        status=data["status"],
        input=data["input"],
        created_time=_time_from_json(data["createdTime"]),
        last_updated_time=_time_from_json(data["lastUpdatedTime"]),
        execution_id=data["executionId"],
        output=data["output"],
        custom_status=data["customStatus"],
        generation=int(data["generation"]),
        history=[dict(e) for e in data["history"]],
        history_lengths=[int(n) for n in data["historyLengths"]],
        failure=data["failure"],
        inbox=[_message_from_json(m) for m in data["inbox"]],
        last_context=data["lastContext"],
        diagnostics=[str(d) for d in data["diagnostics"]],
        episodes_by_generation=[int(n) for n in data["episodesByGeneration"]],
        timers_by_generation=[int(n) for n in data["timersByGeneration"]],
        staged_status=None if staged is None else (staged[0], {int(n) for n in staged[1]}),
    )


def _work_to_json(item: _WorkItem) -> dict[str, Any]:
    return {
        "seq": item.seq,
        "instanceId": item.instance_id,
        "executionId": item.execution_id,
        "taskId": item.task_id,
        "name": item.name,
        "input": item.input,
    }


def _work_from_json(data: Mapping[str, Any]) -> _WorkItem:
    return _WorkItem(
        seq=int(data["seq"]),
        instance_id=data["instanceId"],
        execution_id=data["executionId"],
        task_id=int(data["taskId"]),
        name=data["name"],
        input=data["input"],
    )


def _timer_to_json(timer: _Timer) -> dict[str, Any]:
    return {
        "fireAt": _time_to_json(timer.fire_at),
        "seq": timer.seq,
        "instanceId": timer.instance_id,
        "executionId": timer.execution_id,
        "timerId": timer.timer_id,
        "created": _time_to_json(timer.created),
    }


def _timer_from_json(data: Mapping[str, Any]) -> _Timer:
    return _Timer(
        fire_at=_time_from_json(data["fireAt"]),
        seq=int(data["seq"]),
        instance_id=data["instanceId"],
        execution_id=data["executionId"],
        timer_id=int(data["timerId"]),
        created=_time_from_json(data["created"]),
    )


@dataclass
class _Decided:
    """What the extension + DTFx make of one orchestrator invocation (computed without lock)."""

    state: dict[str, Any] | None
    failure: str | None = None
    outcome: ShimOutcome | None = None
    nondeterminism: str | None = None
    unsupported: UnsupportedFeatureError | None = None
    diagnostics: list[str] = field(default_factory=list)


class DurableEngine:
    """Thread-safe store + scheduler. User code is never called with the lock held."""

    def __init__(
        self,
        *,
        clock: VirtualClock,
        hub_name: str,
        functions: Mapping[str, IndexedFunction],
        orchestrators: Mapping[str, str],
        activities: Mapping[str, str],
        overridable_states: str,
        policy: FaultPolicy,
        stats: HostStats,
        run_orchestrator: Callable[[IndexedFunction, str], OrchestratorResult],
        start_activity: Callable[
            [IndexedFunction, str | None, threading.Event],
            concurrent.futures.Future[ActivityResult],
        ],
        wait_activity: Callable[[concurrent.futures.Future[ActivityResult]], ActivityResult],
        on_crash: Callable[[CrashPoint], None],
        strict_determinism: bool,
    ) -> None:
        self.clock = clock
        self.hub_name = hub_name
        self._functions = dict(functions)
        self._orchestrators = dict(orchestrators)
        self._activities = dict(activities)
        self._overridable_states = overridable_states
        self.policy = policy
        self.stats = stats
        self._run_orchestrator = run_orchestrator
        self._start_activity = start_activity
        self._wait_activity = wait_activity
        self._in_hook = False
        self._on_crash = on_crash
        self.strict_determinism = strict_determinism
        self._lock = threading.RLock()
        self._seq = itertools.count()
        self._instances: dict[str, _Instance] = {}
        self._work: list[_WorkItem] = []
        self._timers: list[_Timer] = []
        # Called with the lock held after every committed change (a client operation, a fired
        # timer, an activity result, an episode): the wall-clock runner persists the state
        # (devhost/functions_host/persistence.py) and wakes its driver. None in tests.
        self.on_commit: Callable[[], None] | None = None

    # ---------------------------------------------------------------- client operations

    def start_new(self, name: str, input_json: str | None, instance_id: str | None = None) -> str:
        with self._lock:
            if name.lower() not in self._orchestrators:
                known = "', '".join(sorted(self._orchestrators.values()))
                raise ApiError(
                    400,
                    error_body(
                        "One or more of the arguments submitted is incorrect",
                        f"The function '{name}' doesn't exist, is disabled, or is not an "
                        "orchestrator function. Additional info: The following are the known "
                        f"orchestrator functions: '{known}'.",
                        "System.ArgumentException",
                    ),
                )
            # The extension generates Guid.NewGuid().ToString("N") ids.
            instance_id = instance_id or uuid.uuid4().hex
            self._validate_instance_id(instance_id)
            existing = self._instances.get(instance_id)
            if (
                existing is not None
                and self._overridable_states.lower() == "nonrunningstates"
                and existing.status in RUNNING_STATES
            ):
                # DurableClient.StartNewAsync passes GetStatusesNotToOverride() as dedupe
                # statuses; durabletask AzureStorageOrchestrationService.
                # CreateTaskOrchestrationAsync throws OrchestrationAlreadyExistsException (the
                # extension sets ThrowExceptionOnInvalidDedupeStatus = true in
                # AzureStorageDurabilityProviderFactory.GetAzureStorageOrchestrationServiceSettings).
                # It derives from InvalidOperationException, so HttpApiHandler.HandleRequestAsync
                # answers it with its catch-all: 500 "Something went wrong while processing your
                # request", and the SDK's start_new raises Exception(<that body>).
                raise ApiError(
                    500,
                    error_body(
                        "Something went wrong while processing your request",
                        f"An Orchestration instance with the status {existing.status} already exists.",
                        "DurableTask.Core.Exceptions.OrchestrationAlreadyExistsException",
                        # A one-frame stand-in for the real .NET stack trace.
                        "   at DurableTask.AzureStorage.AzureStorageOrchestrationService."
                        "CreateTaskOrchestrationAsync(TaskMessage creationMessage, "
                        "OrchestrationStatus[] dedupeStatuses)",
                    ),
                )
            now = self.clock.now()
            execution_id = uuid.uuid4().hex
            instance = _Instance(
                instance_id=instance_id,
                name=name,
                status="Pending",
                input=input_json,
                created_time=now,
                last_updated_time=now,
                execution_id=execution_id,
            )
            start = _Message(
                next(self._seq),
                "start",
                h.execution_started(
                    now,
                    instance_id=instance_id,
                    execution_id=execution_id,
                    name=name,
                    input_json=input_json,
                ),
                execution_id,
            )
            self._count_queue_message(instance_id, start)
            instance.inbox.append(start)
            # SetNewExecutionAsync writes the instance row (Input) through
            # CompressLargeMessageAsync.
            self._count_table_properties({"Input": input_json})
            # An existing instance in another state (any state with AnyState) is replaced: its
            # queued work belongs to a dead execution and is dropped.
            self._instances[instance_id] = instance
            self._committed()
            return instance_id

    @staticmethod
    def _validate_instance_id(instance_id: str) -> None:
        bad = (
            not instance_id
            or len(instance_id) > 256
            or instance_id.startswith("@")
            or any(c in _INVALID_ID_CHARS or ord(c) < 32 for c in instance_id)
        )
        if bad:
            raise ApiError(
                400,
                error_body(
                    "One or more of the arguments submitted is incorrect",
                    f"Instance ID '{instance_id}' contains invalid characters.",
                    "System.ArgumentException",
                ),
            )

    def _running_instance(self, instance_id: str) -> _Instance:
        """The instance, or the extension's 404 (unknown) / 410 (finished); lock held."""
        instance = self._instances.get(instance_id)
        if instance is None:
            raise ApiError(404, {"Message": f"No instance with ID '{instance_id}' found."})
        if instance.status in FINISHED:
            raise ApiError(
                410,
                {"Message": "The orchestration instance with the provided ID is not running."},
            )
        return instance

    def raise_event(self, instance_id: str, event_name: str, input_json: str | None) -> None:
        with self._lock:
            instance = self._running_instance(instance_id)
            # DTFx keeps events that arrive before the orchestrator waits: they are appended to
            # history (EventRaised) and both the SDK and the extension buffer them.
            # The message is addressed to the instance, not to an execution (execution_id None):
            # azure-functions-durable-extension DurableClient.RaiseEventInternalAsync clears
            # `status.OrchestrationInstance.ExecutionId = null` ("External events are not
            # supposed to target any particular execution ID"), so an event still queued when
            # the instance continues as new goes to the new generation (_start_generation).
            message = _Message(
                next(self._seq),
                "event",
                h.event_raised(self.clock.now(), event_name, input_json),
                None,
            )
            self._count_queue_message(instance_id, message)
            instance.inbox.append(message)
            self._committed()

    def terminate(self, instance_id: str, reason: str | None) -> None:
        with self._lock:
            instance = self._running_instance(instance_id)
            message = _Message(
                next(self._seq),
                "terminate",
                h.execution_terminated(self.clock.now(), reason),
                None,
            )
            self._count_queue_message(instance_id, message)
            instance.inbox.append(message)
            self._committed()

    def purge(self, instance_id: str) -> int:
        with self._lock:
            instance = self._instances.get(instance_id)
            if instance is None or instance.status not in FINISHED:
                return 0
            del self._instances[instance_id]
            self._committed()
            return 1

    def purge_many(
        self,
        *,
        created_from: datetime | None,
        created_to: datetime | None,
        statuses: set[str] | None,
    ) -> int:
        with self._lock:
            doomed = [
                i.instance_id
                for i in self._instances.values()
                if i.status in FINISHED
                and self._matches(i, statuses, created_from, created_to, None)
            ]
            for instance_id in doomed:
                del self._instances[instance_id]
            if doomed:
                self._committed()
            return len(doomed)

    @staticmethod
    def _matches(
        instance: _Instance,
        statuses: set[str] | None,
        created_from: datetime | None,
        created_to: datetime | None,
        prefix: str | None,
    ) -> bool:
        if statuses and instance.status.lower() not in {s.lower() for s in statuses}:
            return False
        if created_from is not None and instance.created_time < created_from:
            return False
        if created_to is not None and instance.created_time > created_to:
            return False
        return not (prefix and not instance.instance_id.startswith(prefix))

    def status_json(
        self,
        instance_id: str,
        *,
        show_input: bool = True,
        show_history: bool = False,
        show_history_output: bool = False,
    ) -> dict[str, Any] | None:
        with self._lock:
            instance = self._instances.get(instance_id)
            if instance is None:
                return None
            return self._status_of(instance, show_input, show_history, show_history_output)

    def list_status_json(
        self,
        *,
        statuses: set[str] | None = None,
        created_from: datetime | None = None,
        created_to: datetime | None = None,
        prefix: str | None = None,
        show_input: bool = True,
    ) -> list[dict[str, Any]]:
        with self._lock:
            return [
                self._status_of(i, show_input, False, False)
                for i in self._instances.values()
                if self._matches(i, statuses, created_from, created_to, prefix)
            ]

    def _status_of(
        self, instance: _Instance, show_input: bool, show_history: bool, show_output: bool
    ) -> dict[str, Any]:
        # HttpApiHandler's status JSON: JTokens for input/output/customStatus, "s"+"Z" times.
        status: dict[str, Any] = {
            "name": instance.name,
            "instanceId": instance.instance_id,
            "runtimeStatus": instance.status,
            "input": _loads_or_raw(instance.input) if show_input else None,
            "customStatus": instance.custom_status,
            "output": _loads_or_raw(instance.output),
            "createdTime": h.format_status_time(instance.created_time),
            "lastUpdatedTime": h.format_status_time(instance.last_updated_time),
        }
        if show_history:
            status["historyEvents"] = self._history_for_status(instance.history, show_output)
        return status

    @staticmethod
    def _history_for_status(
        events: list[dict[str, Any]], show_output: bool
    ) -> list[dict[str, Any]]:
        """The extension's simplified history (no OrchestratorStarted/Completed, no scheduling)."""
        hidden = {
            h.EventType.ORCHESTRATOR_STARTED,
            h.EventType.ORCHESTRATOR_COMPLETED,
            h.EventType.TASK_SCHEDULED,
            h.EventType.TIMER_CREATED,
        }
        scheduled = {
            e["EventId"]: e for e in events if e["EventType"] == h.EventType.TASK_SCHEDULED
        }
        result: list[dict[str, Any]] = []
        for event in events:
            event_type = h.EventType(event["EventType"])
            if event_type in hidden:
                continue
            item: dict[str, Any] = {
                "EventType": "".join(p.capitalize() for p in event_type.name.split("_")),
                "Timestamp": event["Timestamp"],
            }
            if event_type == h.EventType.EXECUTION_STARTED:
                item["FunctionName"] = event.get("Name")
            elif event_type in (h.EventType.TASK_COMPLETED, h.EventType.TASK_FAILED):
                source = scheduled.get(event.get("TaskScheduledId"))
                item["FunctionName"] = source.get("Name") if source else None
                item["ScheduledTime"] = source.get("Timestamp") if source else None
                if event_type == h.EventType.TASK_COMPLETED and show_output:
                    item["Result"] = _loads_or_raw(event.get("Result"))
                if event_type == h.EventType.TASK_FAILED:
                    item["Reason"] = event.get("Reason")
                    item["Details"] = event.get("Details")
            elif event_type == h.EventType.TIMER_FIRED:
                item["FireAt"] = event.get("FireAt")
            elif event_type == h.EventType.EVENT_RAISED:
                item["Name"] = event.get("Name")
                if show_output:
                    item["Input"] = _loads_or_raw(event.get("Input"))
            elif event_type in (h.EventType.EXECUTION_COMPLETED, h.EventType.CONTINUE_AS_NEW):
                item["OrchestrationStatus"] = event.get("OrchestrationStatus")
                if show_output:
                    item["Result"] = _loads_or_raw(event.get("Result"))
            result.append(item)
        return result

    # ---------------------------------------------------------------- snapshots

    def snapshot(self, instance_id: str) -> InstanceView | None:
        with self._lock:
            instance = self._instances.get(instance_id)
            return None if instance is None else self._view(instance)

    def snapshots(self) -> list[InstanceView]:
        with self._lock:
            return [self._view(i) for i in self._instances.values()]

    @staticmethod
    def _view(instance: _Instance) -> InstanceView:
        return InstanceView(
            instance_id=instance.instance_id,
            name=instance.name,
            runtime_status=instance.status,
            input=_loads_or_raw(instance.input),
            output=_loads_or_raw(instance.output),
            custom_status=instance.custom_status,
            created_time=instance.created_time,
            last_updated_time=instance.last_updated_time,
            history=h.with_played(instance.history, True),
            generation=instance.generation,
            history_lengths=list(instance.history_lengths),
            failure=instance.failure,
            execution_id=instance.execution_id,
            last_context=json.loads(json.dumps(instance.last_context))
            if instance.last_context is not None
            else None,
            diagnostics=tuple(instance.diagnostics),
            episodes_by_generation=tuple(instance.episodes_by_generation),
            timers_by_generation=tuple(instance.timers_by_generation),
        )

    # ---------------------------------------------------------------- persistence

    def _committed(self) -> None:
        """A change is committed (lock held): tell the persistence layer, if any."""
        if self.on_commit is not None:
            self.on_commit()

    def export_state(self) -> dict[str, Any]:
        """Instances (with queued messages), activity work items and timers, as JSON values.

        What Azure Storage keeps in the task hub (instance and history tables, control and
        work-item queues): enough for `import_state` in a new process to carry on. Counters
        (HostStats) are process-local and not included.
        """
        with self._lock:
            return {
                "version": STATE_VERSION,
                "hubName": self.hub_name,
                "nextSeq": next(self._seq),
                "instances": [_instance_to_json(i) for i in self._instances.values()],
                "work": [_work_to_json(w) for w in self._work],
                "timers": [_timer_to_json(t) for t in self._timers],
            }

    def import_state(self, state: Mapping[str, Any]) -> None:
        """Replace everything with what `export_state` returned (at start, before any work)."""
        if state.get("version") != STATE_VERSION:
            raise HostError(
                f"durable state version {state.get('version')!r} is not {STATE_VERSION}"
            )
        with self._lock:
            self._instances = {
                i.instance_id: i for i in map(_instance_from_json, state["instances"])
            }
            self._work = [_work_from_json(w) for w in state["work"]]
            self._timers = [_timer_from_json(t) for t in state["timers"]]
            self._seq = itertools.count(int(state["nextSeq"]))

    # ---------------------------------------------------------------- scheduling

    def next_timer_at(self) -> datetime | None:
        with self._lock:
            live = [t.fire_at for t in self._timers if self._timer_is_live(t)]
            return min(live) if live else None

    def _timer_is_live(self, timer: _Timer) -> bool:
        instance = self._instances.get(timer.instance_id)
        return (
            instance is not None
            and instance.execution_id == timer.execution_id
            and instance.status not in FINISHED
        )

    def has_ready_work(self) -> bool:
        with self._lock:
            now = self.clock.now()
            return (
                bool(self._work)
                or any(t.fire_at <= now for t in self._timers)
                or any(self._live_messages(i) for i in self._instances.values())
            )

    def _live_messages(self, instance: _Instance) -> list[_Message]:
        if instance.status in FINISHED:
            return []
        return [m for m in instance.inbox if m.execution_id in (None, instance.execution_id)]

    def run_until_idle(self, max_steps: int = 100_000) -> int:
        """Run every ready step at the current virtual time until nothing is ready."""
        self._refuse_in_hook()
        start = self.stats.steps
        while True:
            progressed = self._fire_due_timers() > 0
            with self._lock:
                work = list(self._work)
            for item in work:
                self._check_budget(start, max_steps)
                self._run_activity(item)
                progressed = True
            for instance_id in self._ready_instances():
                self._check_budget(start, max_steps)
                self._run_episode(instance_id)
                progressed = True
            if not progressed:
                return self.stats.steps - start

    def _check_budget(self, start: int, max_steps: int) -> None:
        if self.stats.steps - start >= max_steps:
            raise StepLimitError(f"more than {max_steps} steps without becoming idle")

    def _ready_instances(self) -> list[str]:
        with self._lock:
            ready: list[tuple[int, str]] = []
            for instance in self._instances.values():
                live = self._live_messages(instance)
                # DTFx drops messages for finished instances and for other executions.
                instance.inbox = live
                if live:
                    ready.append((live[0].seq, instance.instance_id))
            return [instance_id for _, instance_id in sorted(ready)]

    def _fire_due_timers(self) -> int:
        fired = 0
        while True:
            with self._lock:
                now = self.clock.now()
                due = sorted(
                    (t for t in self._timers if t.fire_at <= now), key=lambda t: (t.fire_at, t.seq)
                )
                if not due:
                    return fired
                timer = due[0]
                self._timers.remove(timer)
                instance = self._instances.get(timer.instance_id)
                if instance is not None and instance.execution_id == timer.execution_id:
                    # DTFx creates the TimerFired message when it commits TimerCreated.
                    message = _Message(
                        next(self._seq),
                        "timer",
                        h.timer_fired(timer.created, timer.timer_id, timer.fire_at),
                        timer.execution_id,
                    )
                    self._count_queue_message(timer.instance_id, message)
                    instance.inbox.append(message)
                self.stats.timers_fired += 1
                fired += 1
                step = self._next_step()
                self._committed()
            # The message is durable: a crash now only restarts the worker.
            self._maybe_crash(
                CrashPoint(
                    "after_timer_fired", timer.instance_id, step, h.format_timestamp(timer.fire_at)
                )
            )

    def _next_step(self) -> int:
        self.stats.steps += 1
        return self.stats.steps

    def _maybe_crash(self, point: CrashPoint) -> bool:
        predicate = self.policy.crash_when
        if predicate is None or not predicate(point):
            return False
        self.stats.crashes += 1
        self._on_crash(point)
        return True

    # ---------------------------------------------------------------- activities

    def _run_activity(self, item: _WorkItem) -> None:
        with self._lock:
            if item not in self._work:
                return
            function_name = self._activities.get(item.name.lower())
            function = self._functions.get(function_name) if function_name else None
            step = self._next_step()
        if function is None:
            outcome = ActivityResult(
                failure=InvocationFailure(
                    LookupError(f"Activity function '{item.name}' does not exist."), ""
                )
            )
        else:
            runs = 2 if self._wants_duplicate(item) else 1
            outcome = ActivityResult()
            for _ in range(runs):
                outcome = self._execute_activity(function, item)
                self.stats.activity_executions[item.name] += 1
            if runs == 2:
                # The first result is lost as after an unacknowledged queue message.
                self.stats.duplicate_executions += 1
        with self._lock:
            staged_for = self._instances.get(item.instance_id)
            staged = staged_for.staged_status if staged_for is not None else None
            if staged_for is not None and staged is not None and item.seq in staged[1]:
                self._apply_staged_status(staged_for)
        if self._maybe_crash(
            CrashPoint("after_activity_before_commit", item.instance_id, step, item.name)
        ):
            return
        with self._lock:
            if item not in self._work:
                return
            self._work.remove(item)
            now = self.clock.now()
            if outcome.failure is None:
                event = h.task_completed(now, item.task_id, outcome.result_json)
            else:
                # TaskActivityShim: TaskFailureException("Activity function 'x' failed: " + msg)
                event = h.task_failed(
                    now,
                    item.task_id,
                    f"Activity function '{item.name}' failed: {outcome.failure.host_message}",
                    _failure_details_json(item.name, outcome.failure),
                )
            instance = self._instances.get(item.instance_id)
            message = _Message(next(self._seq), "task", event, item.execution_id)
            self._count_queue_message(item.instance_id, message)
            if instance is not None and instance.execution_id == item.execution_id:
                instance.inbox.append(message)
            self._committed()

    @staticmethod
    def _apply_staged_status(instance: _Instance) -> None:
        """The checkpoint that followed the outbound messages has landed; lock held."""
        if instance.staged_status is not None:
            instance.custom_status = instance.staged_status[0]
            instance.staged_status = None

    def _execute_activity(self, function: IndexedFunction, item: _WorkItem) -> ActivityResult:
        """One execution on the worker loop, with the during_activity hook while it runs.

        The activity is submitted without blocking; the hook runs on this (engine) thread once
        the user function has been called, so it may drive the host (raise events, call HTTP
        functions on the same worker loop) while an async activity awaits or a sync one runs
        in the loop's executor. Whatever the hook queues is queued before the TaskCompleted.
        """
        started = threading.Event()
        future = self._start_activity(function, item.input, started)
        hook = self.policy.during_activity
        if hook is not None:
            while not started.wait(0.05) and not future.done():
                pass
            self._in_hook = True
            try:
                hook(item.name, _loads_or_raw(item.input))
            except BaseException:
                self._wait_activity(future)  # never leave it running behind the test's back
                raise
            finally:
                self._in_hook = False
        return self._wait_activity(future)

    def _wants_duplicate(self, item: _WorkItem) -> bool:
        policy = self.policy.duplicate_activities
        if isinstance(policy, bool):
            return policy
        return bool(policy(item.name, _loads_or_raw(item.input)))

    # ---------------------------------------------------------------- episodes

    def _run_episode(self, instance_id: str) -> None:
        with self._lock:
            instance = self._instances.get(instance_id)
            if instance is None:
                return
            live = self._live_messages(instance)
            if not live:
                return
            # The previous episode's checkpoint completed before this work item was fetched.
            self._apply_staged_status(instance)
            limit = self.policy.max_messages_per_episode
            batch = live[:limit] if limit else live
            continued = live[0].continued
            if continued:
                # durabletask TaskOrchestrationDispatcher.OnProcessWorkItemAsync (do ... while
                # (continuedAsNew)): the new generation's runtime state is built in memory as
                # OrchestratorStarted, ExecutionStarted, the carried events, OrchestratorCompleted,
                # and executed at once in the same work item: no queued message joins it.
                batch = live[:1]
            step = self._next_step()
            now = self.clock.now()
            execution_id = instance.execution_id
            consumed = {m.seq for m in batch}
            terminate = next((m for m in batch if m.kind == "terminate"), None)
            if terminate is not None:
                self._commit_termination(instance, terminate, consumed, now)
                self.stats.episodes += 1
                self._committed()
                return
            if continued:
                first = batch[0]
                new_events = [
                    h.orchestrator_started(now),
                    first.event,
                    *first.carried,
                    h.orchestrator_completed(now),
                ]
            else:
                new_events = [h.orchestrator_started(now), *(m.event for m in batch)]
            past = h.with_played(instance.history, True)
            context = {
                "history": past + h.with_played(new_events, False),
                "instanceId": instance.instance_id,
                "isReplaying": bool(instance.history),
                "parentInstanceId": None,
                "input": instance.input,
                "upperSchemaVersion": 1,
                "upperSchemaVersionNew": 2,
                "maximumShortTimerDuration": "6.00:00:00",
                "longRunningTimerIntervalDuration": "3.00:00:00",
            }
            function_name = self._orchestrators.get(instance.name.lower())
            function = self._functions[function_name] if function_name else None
            full_history = instance.history + new_events
            detail = ",".join(m.kind for m in batch)
        if self._maybe_crash(CrashPoint("before_episode", instance_id, step, detail)):
            return
        if function is None:
            raise UnsupportedFeatureError(f"orchestrator {instance.name!r} is not registered")
        result = self._run_orchestrator(function, json.dumps(context))
        self.stats.episodes += 1
        self.stats.replayed_events += len(past)
        decided = self._decide(function, result, full_history)
        if self._maybe_crash(CrashPoint("after_episode_before_commit", instance_id, step, detail)):
            return
        with self._lock:
            instance = self._instances.get(instance_id)
            if instance is None or instance.execution_id != execution_id:
                return  # replaced or purged meanwhile: the work item is abandoned
            instance.last_context = context
            self._commit_episode(instance, consumed, new_events, now, decided, continued)
            self._committed()
        if decided.unsupported is not None:
            raise decided.unsupported
        if decided.nondeterminism is not None and self.strict_determinism:
            raise NonDeterminismError(instance_id, decided.nondeterminism)

    def _decide(
        self,
        function: IndexedFunction,
        result: OrchestratorResult,
        full_history: list[dict[str, Any]],
    ) -> _Decided:
        """Parse the invocation result and run the extension's replay over it (no lock held)."""
        name = function.durable_name or function.name
        state: dict[str, Any] | None = None
        if result.failure is None:
            state = json.loads(result.state_json or "null")
        else:
            message = str(result.failure.exception)
            if _OUT_OF_PROC_MARKER in message:
                # The SDK raises with its state after a marker; the extension parses it out.
                state = json.loads(message.split(_OUT_OF_PROC_MARKER, 1)[1])
            else:
                return _Decided(
                    None,
                    failure=f"Orchestrator function '{name}' failed: "
                    f"{result.failure.worker_message}",
                )
        if not isinstance(state, dict):
            return _Decided(
                None, failure=f"Orchestrator function '{name}' returned an invalid state"
            )
        status_error = custom_status_error(state.get("customStatus"))
        if status_error is not None:
            return self._custom_status_failure(
                name, state, status_error, result.failure is not None, full_history
            )
        actions = state.get("actions") or [[]]
        if int(state.get("schemaVersion", 0)) < 1:
            return _Decided(
                state, unsupported=UnsupportedFeatureError("replay schema V1 is not emulated")
            )
        if len(actions) != 1:
            return _Decided(
                state,
                failure=f"With OOProc schema V{state.get('schemaVersion')}, expected actions array "
                f"to be of length 1 in outer layer but got size: {len(actions)}",
            )
        shim = ShimReplay(
            orchestrator_name=name,
            actions=list(actions[0]),
            is_done=bool(state.get("isDone")),
            error=state.get("error"),
            activity_exists=lambda activity: activity.lower() in self._activities,
            known_activities=lambda: sorted(self._activities.values()),
        )
        try:
            return _Decided(state, outcome=shim.replay(full_history))
        except NonDeterminismDetected as exc:
            return _Decided(state, nondeterminism=str(exc))
        except UnsupportedFeatureError as exc:
            return _Decided(state, unsupported=exc)

    @staticmethod
    def _custom_status_failure(
        name: str,
        state: dict[str, Any],
        status_error: str,
        sdk_raised: bool,
        full_history: list[dict[str, Any]],
    ) -> _Decided:
        """The custom status is over the limit: what the extension and DTFx make of it.

        azure-functions-durable-extension src/WebJobs.Extensions.DurableTask/Listener/
        OutOfProcOrchestrationShim.cs, ScheduleDurableTaskEvents: `SetCustomStatus(execution.
        CustomStatus)` runs first, before ReplayOOProcOrchestration has called any API, and
        throws ArgumentException. In TaskOrchestrationShim.InvokeUserCodeAndHandleResults:
        - the SDK returned normally: the `catch (Exception e)` finds no out-of-proc state in
          e.InnerException and throws OrchestrationFailureException("Orchestrator function
          '<name>' failed: " + e.Message);
        - the SDK raised (state carried by the exception): TraceAndReplay runs inside the catch
          block, which only catches OrchestrationFailureException: the ArgumentException
          escapes as is.
        Either way TaskOrchestration.Execute faults at ExecutionStarted, and DTFx replays the
        rest of the history against an empty action map (shim.dtfx_outcome_without_actions).
        The status stays null: TaskOrchestrationShim.GetStatus returns what SetCustomStatus
        never assigned, and the dispatcher stores result.CustomStatus.
        """
        reason = (
            status_error if sdk_raised else f"Orchestrator function '{name}' failed: {status_error}"
        )
        failure, nondeterministic = dtfx_outcome_without_actions(full_history, reason)
        size = custom_status_utf16_bytes(state.get("customStatus"))
        diagnostics = [
            f"the custom status is {size} bytes of UTF-16 ({size // 1024} KB), over the "
            f"extension's {CUSTOM_STATUS_MAX_KB} KB limit: SetCustomStatus threw before the "
            "replay scheduled anything"
            + (
                ", so DTFx reports the first recorded task as non-determinism"
                if nondeterministic
                else ""
            )
        ]
        return _Decided({**state, "customStatus": None}, failure=failure, diagnostics=diagnostics)

    def _commit_termination(
        self, instance: _Instance, message: _Message, consumed: set[int], now: datetime
    ) -> None:
        # No user code runs: the batch is recorded and the execution closes as Terminated.
        reason = message.event.get("Input")
        batch = [m for m in instance.inbox if m.seq in consumed]
        instance.inbox = [m for m in instance.inbox if m.seq not in consumed]
        self._append_history(
            instance,
            [
                h.orchestrator_started(now),
                *(m.event for m in batch),
                h.execution_completed(now, -1, "Terminated", reason),
                h.orchestrator_completed(now),
            ],
        )
        instance.episodes_by_generation[instance.generation] += 1
        instance.status = "Terminated"
        instance.output = json.dumps(reason)
        self._count_table_properties({"Output": instance.output})
        instance.last_updated_time = now
        instance.diagnostics = []

    def _commit_episode(
        self,
        instance: _Instance,
        consumed: set[int],
        new_events: list[dict[str, Any]],
        now: datetime,
        decided: _Decided,
        continued: bool,
    ) -> None:
        state, failure, outcome = decided.state, decided.failure, decided.outcome
        instance.inbox = [m for m in instance.inbox if m.seq not in consumed]
        work_before = len(self._work)
        instance.episodes_by_generation[instance.generation] += 1
        appended = list(new_events)
        if instance.status == "Pending":
            instance.status = "Running"
        self._apply_staged_status(instance)
        previous_status = instance.custom_status
        if state is not None:
            # A fresh shim context per episode: custom status is whatever this episode set...
            status = state.get("customStatus")
            if status is not None or not continued:
                instance.custom_status = status
            # ...except in the first episode of a new generation, run in the same work item as
            # the continue-as-new: durabletask TaskOrchestrationDispatcher keeps the previous
            # generation's status when the new one set none (`runtimeState.Status ??
            # carryOverStatus`).
        if decided.nondeterminism is not None:
            self.stats.non_determinism += 1
            failure = f"Non-Deterministic workflow detected: {decided.nondeterminism}"
        elif decided.unsupported is not None:
            failure = f"Emulator: {decided.unsupported}"
        if failure is not None or outcome is None:
            message = failure or "orchestration failed"
            appended += [
                h.execution_completed(
                    now,
                    -1,
                    "Failed",
                    message,
                    {"ErrorType": "OrchestrationFailureException", "ErrorMessage": message},
                ),
                h.orchestrator_completed(now),
            ]
            self._finish(instance, "Failed", json.dumps(message), message, now, appended)
            instance.diagnostics = list(decided.diagnostics)
            return
        for decision in outcome.new_decisions:
            if decision.kind == "activity":
                scheduled = h.task_scheduled(
                    now, decision.event_id, str(decision.name), decision.input
                )
                appended.append(scheduled)
                work = _WorkItem(
                    next(self._seq),
                    instance.instance_id,
                    instance.execution_id,
                    decision.event_id,
                    str(decision.name),
                    decision.input,
                )
                # The TaskScheduled event travels to the work-item queue.
                self._count_queue_event(instance.instance_id, instance.execution_id, scheduled)
                self._work.append(work)
            else:
                assert decision.fire_at is not None
                appended.append(h.timer_created(now, decision.event_id, decision.fire_at))
                instance.timers_by_generation[instance.generation] += 1
                self.stats.timers_created += 1
                self._timers.append(
                    _Timer(
                        decision.fire_at,
                        next(self._seq),
                        instance.instance_id,
                        instance.execution_id,
                        decision.event_id,
                        now,
                    )
                )
        instance.diagnostics = list(outcome.diagnostics)
        scheduled_work = {w.seq for w in self._work[work_before:]}
        if scheduled_work and state is not None:
            # durabletask AzureStorageOrchestrationService.CompleteTaskOrchestrationWorkItemAsync
            # sends the episode's outbound messages ("First, add new messages into the queue")
            # before trackingStore.UpdateStateAsync checkpoints the instance, custom status
            # included: an activity it scheduled may run, even finish, while readers still see
            # the previous status. The bed shows the new status only once those activities
            # have run (or the instance's next episode begins).
            instance.staged_status = (instance.custom_status, scheduled_work)
            instance.custom_status = previous_status
        if outcome.completion == "completed":
            assert state is not None
            output = state.get("output")
            output_json = None if output is None else json.dumps(output)
            appended += [
                h.execution_completed(now, outcome.completion_event_id, "Completed", output_json),
                h.orchestrator_completed(now),
            ]
            self._finish(instance, "Completed", output_json, None, now, appended)
        elif outcome.completion == "failed":
            message = outcome.failure or "orchestration failed"
            appended += [
                h.execution_completed(
                    now,
                    outcome.completion_event_id,
                    "Failed",
                    message,
                    {"ErrorType": "OrchestrationFailureException", "ErrorMessage": message},
                ),
                h.orchestrator_completed(now),
            ]
            self._finish(instance, "Failed", json.dumps(message), message, now, appended)
        elif outcome.completion == "continued_as_new":
            new_input = outcome.continue_as_new_input
            # durabletask TaskOrchestrationDispatcher.OnProcessWorkItemAsync: a ContinueAsNew
            # event closes the generation and no OrchestratorCompleted follows it (`if
            # (!continuedAsNew && ...) AddEvent(new OrchestratorCompletedEvent(-1))`).
            appended.append(h.continue_as_new(now, outcome.completion_event_id, new_input))
            self._append_history(instance, appended)
            self.stats.continued_as_new += 1
            self.stats.events_carried += len(outcome.carried_events)
            self._start_generation(instance, new_input, now, outcome.carried_events)
        else:
            # No second OrchestratorCompleted when the episode already ends with one (the first
            # episode of a continued generation that scheduled nothing): same condition.
            if appended[-1]["EventType"] != h.EventType.ORCHESTRATOR_COMPLETED:
                appended.append(h.orchestrator_completed(now))
            self._append_history(instance, appended)
            instance.last_updated_time = now

    def _finish(
        self,
        instance: _Instance,
        status: str,
        output_json: str | None,
        failure: str | None,
        now: datetime,
        appended: list[dict[str, Any]],
    ) -> None:
        self._append_history(instance, appended)
        instance.status = status
        instance.output = output_json
        # AzureTableTrackingStore.UpdateStateAsync: the instance row's Output.
        self._count_table_properties({"Output": output_json})
        instance.failure = failure
        instance.last_updated_time = now
        if status in FINISHED:
            instance.diagnostics = [d for d in instance.diagnostics if "open tasks" not in d]

    def _start_generation(
        self,
        instance: _Instance,
        new_input: str | None,
        now: datetime,
        carried: list[dict[str, Any]],
    ) -> None:
        """ContinueAsNew: a fresh history and execution id.

        The carried events (the shim's ShimOutcome.carried_events: EventRaised events the replay
        reached after ContinueAsNew) start the new generation right after its ExecutionStarted
        (durabletask TaskOrchestrationDispatcher.OnProcessWorkItemAsync: `runtimeState.AddEvent(
        continueAsNewExecutionStarted)`, then each of `carryOverEvents`). Queued messages
        addressed to the instance (events, terminate) survive and follow; messages for the old
        execution (its activity results and timers) are dropped.
        """
        instance.generation += 1
        instance.history = []
        instance.history_lengths.append(0)
        instance.episodes_by_generation.append(0)
        instance.timers_by_generation.append(0)
        instance.execution_id = uuid.uuid4().hex
        instance.input = new_input
        self._count_table_properties({"Input": new_input})
        instance.last_updated_time = now
        start = _Message(
            next(self._seq),
            "start",
            h.execution_started(
                now,
                instance_id=instance.instance_id,
                execution_id=instance.execution_id,
                name=instance.name,
                input_json=new_input,
            ),
            instance.execution_id,
            continued=True,
            carried=[dict(event) for event in carried],
        )
        instance.inbox = [start, *(m for m in instance.inbox if m.execution_id is None)]

    def _append_history(self, instance: _Instance, events: list[dict[str, Any]]) -> None:
        """Commit events to the generation's history (Azure Storage's History table)."""
        for event in events:
            self._count_table_properties(event)
        instance.history.extend(events)
        instance.history_lengths[instance.generation] = len(instance.history)

    # ---------------------------------------------------------------- payload offloading

    def _count_queue_event(
        self, instance_id: str, execution_id: str | None, event: dict[str, Any]
    ) -> None:
        """A queue message over 45 KB goes to a blob (MessageManager); it never fails."""
        # Fast path: a JSON-escaped character takes at most 6 UTF-8 bytes (\u00XX), and the
        # envelope with its ids stays under 4 KB.
        chars = sum(len(v) for v in event.values() if isinstance(v, str))
        if chars * 6 + 4096 <= QUEUE_MESSAGE_MAX_BYTES:
            return
        if queue_message_bytes(event, instance_id, execution_id) > QUEUE_MESSAGE_MAX_BYTES:
            self.stats.large_messages += 1

    def _count_queue_message(self, instance_id: str, message: _Message) -> None:
        self._count_queue_event(instance_id, message.execution_id, message.event)

    def _count_table_properties(self, row: Mapping[str, Any]) -> None:
        """Table properties over 60 KB of UTF-16 go to blobs (CompressLargeMessageAsync)."""
        for name in _TABLE_PROPERTIES:
            value = row.get(name)
            if isinstance(value, str) and utf16_size(value) > TABLE_PROPERTY_MAX_BYTES:
                self.stats.large_table_properties += 1

    # ---------------------------------------------------------------- drivers

    def _refuse_in_hook(self) -> None:
        if self._in_hook:
            raise HostError(
                "a during_activity hook may raise events, terminate or call HTTP functions, "
                "but not drive the engine (run_until_idle/advance/run_until_complete)"
            )

    def advance_to_next_timer(self, max_steps: int = 100_000) -> bool:
        self._refuse_in_hook()
        moment = self.next_timer_at()
        if moment is None:
            return False
        self.clock.advance_to(moment)
        self.run_until_idle(max_steps)
        return True

    def advance(self, seconds: float, max_steps: int = 100_000) -> None:
        self._refuse_in_hook()
        target = self.clock.now().timestamp() + seconds
        self.run_until_idle(max_steps)
        while True:
            moment = self.next_timer_at()
            if moment is None or moment.timestamp() > target:
                break
            self.clock.advance_to(moment)
            self.run_until_idle(max_steps)
        remaining = target - self.clock.now().timestamp()
        if remaining > 0:
            self.clock.advance(remaining)
        self.run_until_idle(max_steps)

    def run_until_complete(
        self,
        instance_ids: Iterable[str] | None,
        *,
        max_virtual_seconds: float,
        max_steps: int,
    ) -> list[InstanceView]:
        self._refuse_in_hook()
        deadline = self.clock.now().timestamp() + max_virtual_seconds
        start = self.stats.steps
        while True:
            used = self.stats.steps - start
            self.run_until_idle(max(1, max_steps - used))
            if self.stats.steps - start >= max_steps:
                raise StepLimitError(f"more than {max_steps} steps before completion")
            if self._all_finished(instance_ids):
                return self._views_for(instance_ids)
            moment = self.next_timer_at()
            if moment is None:
                pending = [v for v in self._views_for(instance_ids) if not v.is_finished]
                details = "; ".join(
                    f"{v.instance_id} ({v.name}, {v.runtime_status}): "
                    + ("; ".join(v.diagnostics) or "no diagnostics")
                    for v in pending
                )
                raise OrchestrationStuckError(
                    f"no work is ready and no timer is pending, but instances are unfinished: {details}"
                )
            if moment.timestamp() > deadline:
                raise VirtualTimeLimitError(
                    f"next timer at {moment.isoformat()} is beyond the {max_virtual_seconds} s "
                    "virtual-time budget"
                )
            self.clock.advance_to(moment)

    def _all_finished(self, instance_ids: Iterable[str] | None) -> bool:
        with self._lock:
            if instance_ids is None:
                return all(i.status in FINISHED for i in self._instances.values())
            for instance_id in instance_ids:
                instance = self._instances.get(instance_id)
                if instance is None:
                    raise KeyError(f"no orchestration instance {instance_id!r}")
                if instance.status not in FINISHED:
                    return False
            return True

    def _views_for(self, instance_ids: Iterable[str] | None) -> list[InstanceView]:
        with self._lock:
            if instance_ids is None:
                return [self._view(i) for i in self._instances.values()]
            views = []
            for instance_id in instance_ids:
                instance = self._instances.get(instance_id)
                if instance is None:
                    raise KeyError(f"no orchestration instance {instance_id!r}")
                views.append(self._view(instance))
            return views

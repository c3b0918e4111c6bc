"""The extension side of one orchestrator episode: replaying the SDK's actions in "DTFx".

The real Durable extension does not trust the Python SDK's bookkeeping. After each
invocation it runs its own .NET orchestration (OutOfProcOrchestrationShim) through
DurableTask.Core's replay: every action of the returned list is turned into a DTFx API call,
*awaited one after the other* (ProcessAsyncActionsV2, exceptions swallowed), and the whole
history is replayed against those calls. This module reproduces that model in miniature:

- one id counter (`idCounter++`) for activities and timers, in the order the shim calls them;
  retries (`CallActivityWithRetry`) run DTFx's RetryInterceptor: attempt, failure, timer,
  next attempt, and one last timer after the final failure before the error surfaces;
- a recorded TaskScheduled/TimerCreated must match a call the replay has made with the same
  id, kind and name (DTFx), and here also the same input and fireAt (stricter: a changed
  input or fire time is a determinism bug too, DTFx just does not look);
- completions resolve DTFx tasks; external events resolve the most recent wait for that
  name (a stack, like the extension's pendingExternalEvents) or are buffered;
- timers marked `isCanceled` are cancelled right after creation (removed from the open tasks)
  but were still recorded, so their TimerFired still arrives later and is ignored;
- the orchestration completes only when the shim has awaited every action, the SDK reported
  isDone/error, AND DTFx has no open tasks (TaskOrchestrationExecutor: `if
  (!context.HasOpenTasks)`): an uncancelled timer keeps an instance Running;
- once the shim has called ContinueAsNew, every EventRaised the replay processes is set aside
  for the next generation instead of being raised (carried_events), as DTFx does with the
  Azure Storage backend's default EventBehaviourForContinueAsNew = Carryover.

Whatever the shim has called but history does not yet record becomes this episode's new
TaskScheduled/TimerCreated events.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from typing import Any, Literal

from .errors import UnsupportedFeatureError
from .history import EventType, HistoryEvent, format_timestamp, parse_timestamp

# Azure Storage's limits as the extension reports them to the SDK (context JSON) and applies
# itself (DurableOrchestrationContext.CreateTimer long-timer split).
MAXIMUM_SHORT_TIMER = timedelta(days=6)
LONG_TIMER_INTERVAL = timedelta(days=3)

ACTION_NAMES = {
    0: "CallActivity",
    1: "CallActivityWithRetry",
    2: "CallSubOrchestrator",
    3: "CallSubOrchestratorWithRetry",
    4: "ContinueAsNew",
    5: "CreateTimer",
    6: "WaitForExternalEvent",
    7: "CallEntity",
    8: "CallHttp",
    9: "SignalEntity",
    10: "ScheduledSignalEntity",
    11: "WhenAny",
    12: "WhenAll",
}


class NonDeterminismDetected(Exception):
    """DTFx's NonDeterministicOrchestrationException."""


class _ShimFault(Exception):
    """An exception the shim lets escape (thrown synchronously by InvokeAPIFromAction)."""


@dataclass
class Decision:
    """An activity or timer the shim scheduled; recorded as TaskScheduled/TimerCreated."""

    event_id: int
    kind: Literal["activity", "timer"]
    action_index: int
    origin: str
    name: str | None = None
    input: str | None = None
    fire_at: datetime | None = None

    def describe(self) -> str:
        if self.kind == "activity":
            return f"activity {self.name!r} with input {self.input!r}"
        assert self.fire_at is not None
        return f"timer firing at {format_timestamp(self.fire_at)}"


def describe_recorded(event: HistoryEvent) -> str:
    if event["EventType"] == EventType.TASK_SCHEDULED:
        return f"activity {event.get('Name')!r} with input {event.get('Input')!r}"
    return f"timer firing at {event.get('FireAt')}"


class _Fut:
    """A synchronously resolved task: continuations run inline, as on DTFx's scheduler."""

    __slots__ = ("_callbacks", "done", "ok", "value")

    def __init__(self) -> None:
        self.done = False
        self.ok = True
        self.value: Any = None
        self._callbacks: list[Callable[[_Fut], None]] = []

    def resolve(self, ok: bool, value: Any = None) -> None:
        if self.done:
            return
        self.done, self.ok, self.value = True, ok, value
        callbacks, self._callbacks = self._callbacks, []
        for callback in callbacks:
            callback(self)

    def then(self, callback: Callable[[_Fut], None]) -> None:
        if self.done:
            callback(self)
        else:
            self._callbacks.append(callback)


@dataclass
class _RetryState:
    attempt: int = 0
    last_error: Any = None


@dataclass
class _OpenTask:
    fut: _Fut
    description: str


@dataclass
class ShimOutcome:
    """What DTFx decides at the end of one replay."""

    new_decisions: list[Decision]
    # "completed" / "failed" / "continued_as_new" when DTFx closes the execution now.
    completion: Literal["completed", "failed", "continued_as_new"] | None
    completion_event_id: int
    failure: str | None
    continue_as_new_input: str | None
    diagnostics: list[str] = field(default_factory=list)
    # EventRaised events processed after the shim called ContinueAsNew, in history order: DTFx
    # starts the next generation with them (meaningful when completion == "continued_as_new").
    carried_events: list[HistoryEvent] = field(default_factory=list)


class ShimReplay:
    """Replays one episode's action list against the generation's full history."""

    def __init__(
        self,
        *,
        orchestrator_name: str,
        actions: list[dict[str, Any]],
        is_done: bool,
        error: str | None,
        activity_exists: Callable[[str], bool],
        known_activities: Callable[[], list[str]],
    ) -> None:
        self._name = orchestrator_name
        self._actions = actions
        self._is_done = is_done
        self._error = error
        self._activity_exists = activity_exists
        self._known_activities = known_activities
        self._counter = 0
        self._now: datetime | None = None
        self._pending: dict[int, Decision] = {}
        self._open: dict[int, _OpenTask] = {}
        self._waits: dict[str, list[_Fut]] = {}
        self._wait_names: dict[str, str] = {}
        self._buffered: dict[str, list[str | None]] = {}
        self._index = 0
        self._started = False
        self._finished = False
        self._fault: str | None = None
        self._can_input: str | None = None
        self._can_called = False
        self._carried: list[HistoryEvent] = []
        self._diagnostics: list[str] = []

    # -- replay ---------------------------------------------------------------------------

    def replay(self, events: list[HistoryEvent]) -> ShimOutcome:
        for event in events:
            event_type = event["EventType"]
            if event_type == EventType.ORCHESTRATOR_STARTED:
                self._now = parse_timestamp(event["Timestamp"])
            elif event_type == EventType.EXECUTION_STARTED:
                self._started = True
                self._advance()
            elif event_type in (EventType.TASK_SCHEDULED, EventType.TIMER_CREATED):
                self._match(event)
            elif event_type in (EventType.TASK_COMPLETED, EventType.TASK_FAILED):
                task = self._open.pop(int(event["TaskScheduledId"]), None)
                # DTFx logs a duplicate and ignores completions of unknown ids.
                if task is not None:
                    ok = event_type == EventType.TASK_COMPLETED
                    task.fut.resolve(ok, event.get("Result") if ok else event.get("Reason"))
            elif event_type == EventType.TIMER_FIRED:
                task = self._open.pop(int(event["TimerId"]), None)
                if task is not None:
                    task.fut.resolve(True)
            elif event_type == EventType.EVENT_RAISED:
                self._event_raised(event)
        return self._outcome()

    def _event_raised(self, event: HistoryEvent) -> None:
        """DTFx TaskOrchestrationExecutor.ProcessEvent(EventRaised).

        durabletask src/DurableTask.Core/TaskOrchestrationContext.cs, HandleEventRaisedEvent:
        `if (skipCarryOverEvents || !this.HasContinueAsNew)` raise the event, else
        `AddEventToNextIteration` (continueAsNew.CarryoverEvents). skipCarryOverEvents is
        `eventBehaviourForContinueAsNew == BehaviorOnContinueAsNew.Ignore`
        (TaskOrchestrationExecutor constructor), and the Azure Storage provider's
        AzureStorageOrchestrationServiceSettings.EventBehaviourForContinueAsNew defaults to
        Carryover (the extension does not change it). HasContinueAsNew turns true when the
        extension's shim invokes the ContinueAsNew action (OutOfProcOrchestrationShim.
        InvokeAPIFromAction -> DurableOrchestrationContext.ContinueAsNew ->
        InnerContext.ContinueAsNew), i.e. once every action before it has been awaited.
        The SDK has no preserveUnprocessedEvents: the shim calls ContinueAsNew(input), whose
        default is false, so events buffered before that point are not re-sent
        (DurableTaskExtension: RescheduleBufferedExternalEvents only if PreserveUnprocessedEvents).
        """
        if self._can_called:
            self._carried.append(dict(event))
        else:
            self._raise_event(str(event["Name"]), event.get("Input"))

    def _outcome(self) -> ShimOutcome:
        new_decisions = sorted(self._pending.values(), key=lambda d: d.event_id)
        diagnostics = list(self._diagnostics)
        result_ready = self._finished and (
            self._fault is not None or self._error is not None or self._is_done
        )
        if not self._finished and self._started:
            action = self._actions[self._index - 1] if self._index else None
            if action is not None and self._is_done:
                diagnostics.append(
                    "the orchestrator function returned, but the extension's replay shim is still "
                    f"awaiting action #{self._index - 1} ({self._describe_action(action)}); "
                    "cancel timers you no longer need (timer.cancel())"
                )
            elif action is not None:
                diagnostics.append(
                    f"shim awaiting action #{self._index - 1}: {self._describe_action(action)}"
                )
        for name, waits in self._waits.items():
            if waits:
                diagnostics.append(f"waiting for external event {self._wait_names[name]!r}")
        if result_ready and self._open:
            open_list = ", ".join(task.description for task in self._open.values())
            diagnostics.append(
                "the orchestrator function finished, but DTFx keeps the instance Running "
                f"until its open tasks complete: {open_list}"
            )
        completion: Literal["completed", "failed", "continued_as_new"] | None = None
        failure: str | None = None
        if result_ready and not self._open:
            if self._fault is not None:
                completion, failure = "failed", self._fault
            elif self._error is not None:
                # OutOfProcOrchestrationShim.ScheduleDurableTaskEvents
                completion = "failed"
                failure = f"Orchestrator function '{self._name}' failed: {self._error}"
            elif self._can_called:
                completion = "continued_as_new"
            else:
                completion = "completed"
        return ShimOutcome(
            new_decisions=new_decisions,
            completion=completion,
            completion_event_id=self._counter,
            failure=failure,
            continue_as_new_input=self._can_input,
            diagnostics=diagnostics,
            carried_events=list(self._carried),
        )

    def _match(self, event: HistoryEvent) -> None:
        event_id = int(event["EventId"])
        kind = "activity" if event["EventType"] == EventType.TASK_SCHEDULED else "timer"
        decision = self._pending.pop(event_id, None)
        if decision is None:
            raise NonDeterminismDetected(
                f"a previous execution recorded {describe_recorded(event)} with sequence ID "
                f"{event_id}, but the current replay hasn't (yet?) scheduled anything with that "
                "ID. Was the orchestrator changed, or does it read the clock/random/environment?"
            )
        mismatch = decision.kind != kind
        if not mismatch and kind == "activity":
            mismatch = decision.name != event.get("Name") or decision.input != event.get("Input")
        if not mismatch and kind == "timer":
            assert decision.fire_at is not None
            mismatch = decision.fire_at != parse_timestamp(str(event.get("FireAt")))
        if mismatch:
            raise NonDeterminismDetected(
                f"sequence ID {event_id} (action #{decision.action_index}, {decision.origin}): "
                f"history recorded {describe_recorded(event)} but the replay produced "
                f"{decision.describe()}. Orchestrators must compute actions only from their "
                "input, results and context.current_utc_datetime."
            )

    # -- ProcessAsyncActionsV2 ----------------------------------------------------------------

    def _advance(self) -> None:
        """Invoke actions in order, awaiting each before the next, swallowing task failures."""
        while self._index < len(self._actions):
            action = self._actions[self._index]
            index = self._index
            self._index += 1
            try:
                fut = self._invoke(action, index)
            except _ShimFault as fault:
                self._fault = str(fault)
                self._finished = True
                return
            if not fut.done:
                fut.then(lambda _fut: self._advance())
                return
        self._finished = True

    def _invoke(self, action: dict[str, Any], index: int) -> _Fut:
        action_type = int(action["actionType"])
        if action_type == 0:
            return self._call_activity(str(action["functionName"]), action.get("input"), index)
        if action_type == 1:
            return self._call_activity_with_retry(action, index)
        if action_type == 5:
            return self._create_timer(action, index)
        if action_type == 6:
            return self._wait_for_event(str(action["externalEventName"]))
        if action_type == 4:
            self._can_called = True
            self._can_input = action.get("input")
            done = _Fut()
            done.resolve(True)
            return done
        if action_type in (11, 12):
            children = [self._invoke(child, index) for child in action.get("compoundActions") or []]
            if action_type == 11 and not children:
                # Task.WhenAny throws synchronously on an empty list: this escapes the shim.
                raise _ShimFault("The tasks argument contains no tasks. (Parameter 'tasks')")
            return _when_any(children) if action_type == 11 else _when_all(children)
        raise UnsupportedFeatureError(
            f"orchestrator action {ACTION_NAMES.get(action_type, action_type)} is not emulated"
        )

    def _call_activity(self, name: str, input_json: Any, index: int, origin: str = "") -> _Fut:
        fut = _Fut()
        if not self._activity_exists(name):
            # DurableTaskExtension.ThrowIfFunctionDoesNotExist inside an async method: the
            # ArgumentException faults the task, ProcessAsyncActionsV2 swallows it, and nothing
            # is ever scheduled. The SDK keeps waiting: the instance never progresses.
            known = "', '".join(self._known_activities())
            message = (
                f"The function '{name}' doesn't exist, is disabled, or is not an activity "
                f"function. Additional info: The following are the known activity functions: "
                f"'{known}'."
            )
            self._diagnostics.append(
                f"action #{index}: {message} The extension swallows this error during replay, "
                "so the orchestration waits forever."
            )
            fut.resolve(False, message)
            return fut
        event_id = self._next_id()
        self._pending[event_id] = Decision(
            event_id=event_id,
            kind="activity",
            action_index=index,
            origin=origin or f"CallActivity {name!r}",
            name=name,
            input=input_json if input_json is None else str(input_json),
        )
        self._open[event_id] = _OpenTask(fut, f"activity {name!r} (#{event_id})")
        return fut

    def _dtfx_timer(
        self, fire_at: datetime, index: int, origin: str, canceled: bool = False
    ) -> _Fut:
        fut = _Fut()
        event_id = self._next_id()
        self._pending[event_id] = Decision(
            event_id=event_id, kind="timer", action_index=index, origin=origin, fire_at=fire_at
        )
        self._open[event_id] = _OpenTask(
            fut, f"timer #{event_id} firing at {format_timestamp(fire_at)}"
        )
        if canceled:
            # CancellationToken registration: TrySetCanceled, then openTasks.Remove(id). The
            # CreateTimer action stays in orchestratorActionsMap, so it is still recorded.
            del self._open[event_id]
            fut.resolve(False, "canceled")
        return fut

    def _create_timer(self, action: dict[str, Any], index: int) -> _Fut:
        fire_at = parse_timestamp(str(action["fireAt"]))
        now = self._require_now()
        if fire_at - now > MAXIMUM_SHORT_TIMER:
            # With upperSchemaVersionNew=2 the SDK splits long timers itself (LongTimerTask);
            # the extension's own split loop is not reproduced.
            raise UnsupportedFeatureError(
                "a CreateTimer action longer than maximumShortTimerDuration reached the shim"
            )
        return self._dtfx_timer(
            fire_at, index, "CreateTimer", canceled=bool(action.get("isCanceled", False))
        )

    def _call_activity_with_retry(self, action: dict[str, Any], index: int) -> _Fut:
        """DTFx RetryInterceptor with the extension's defaults (backoff 1, no max interval)."""
        name = str(action["functionName"])
        input_json = action.get("input")
        options = action.get("retryOptions") or {}
        first_interval = timedelta(
            milliseconds=float(options.get("firstRetryIntervalInMilliseconds", 0))
        )
        max_attempts = int(options.get("maxNumberOfAttempts", 0))
        if not self._activity_exists(name):
            return self._call_activity(name, input_json, index)
        outer = _Fut()
        retry = _RetryState()

        def start_attempt() -> None:
            origin = f"CallActivityWithRetry {name!r} attempt {retry.attempt + 1}"
            self._call_activity(name, input_json, index, origin).then(after_attempt)

        def after_attempt(fut: _Fut) -> None:
            if fut.ok:
                outer.resolve(True, fut.value)
                return
            retry.last_error = fut.value
            if first_interval <= timedelta(0):
                outer.resolve(False, fut.value)
                return
            # ComputeNextDelay: FirstRetryInterval * BackoffCoefficient(1)^attempt, from the
            # CurrentUtcDateTime of the episode that saw the failure.
            retry_at = self._require_now() + first_interval
            origin = f"retry timer after attempt {retry.attempt + 1} of {name!r}"
            self._dtfx_timer(retry_at, index, origin).then(after_timer)

        def after_timer(_fut: _Fut) -> None:
            retry.attempt += 1
            if retry.attempt < max_attempts:
                start_attempt()
            else:
                # The loop ends after the timer that follows the last failed attempt.
                outer.resolve(False, retry.last_error)

        if max_attempts <= 0:
            outer.resolve(False, "maxNumberOfAttempts must be at least 1")
            return outer
        start_attempt()
        return outer

    def _wait_for_event(self, name: str) -> _Fut:
        key = name.lower()  # the extension compares event names with OrdinalIgnoreCase
        self._wait_names.setdefault(key, name)
        fut = _Fut()
        self._waits.setdefault(key, []).append(fut)
        buffered = self._buffered.get(key)
        if buffered:
            self._raise_event(name, buffered.pop(0))
        return fut

    def _raise_event(self, name: str, input_json: Any) -> None:
        key = name.lower()
        waits = self._waits.get(key)
        if waits:
            # A stack: the most recently created wait receives the event.
            waits.pop().resolve(True, input_json)
        else:
            self._buffered.setdefault(key, []).append(input_json)

    # -- helpers --------------------------------------------------------------------------------

    def _next_id(self) -> int:
        event_id = self._counter
        self._counter += 1
        return event_id

    def _require_now(self) -> datetime:
        if self._now is None:
            raise RuntimeError("replay reached an action before any OrchestratorStarted event")
        return self._now

    def _describe_action(self, action: dict[str, Any]) -> str:
        action_type = int(action["actionType"])
        label = ACTION_NAMES.get(action_type, str(action_type))
        if action_type in (0, 1):
            return f"{label} {action.get('functionName')!r}"
        if action_type == 5:
            cancelled = " (canceled)" if action.get("isCanceled") else ""
            return f"{label} at {action.get('fireAt')}{cancelled}"
        if action_type == 6:
            return f"{label} {action.get('externalEventName')!r}"
        if action_type in (11, 12):
            inner = ", ".join(self._describe_action(c) for c in action.get("compoundActions") or [])
            return f"{label}[{inner}]"
        return label


def dtfx_outcome_without_actions(history: list[HistoryEvent], reason: str) -> tuple[str, bool]:
    """DTFx's verdict when TaskOrchestration.Execute faulted before calling any API.

    durabletask src/DurableTask.Core/TaskOrchestrationExecutor.cs, ExecuteCore keeps processing
    the generation's history after ExecutionStarted: the first recorded TaskScheduled or
    TimerCreated finds an empty orchestratorActionsMap, and TaskOrchestrationContext.
    HandleTaskScheduledEvent / HandleTimerCreatedEvent throw NonDeterministicOrchestrationException
    ("Non-Deterministic workflow detected: " + details), which ExecuteCore catches and passes to
    FailOrchestration. With nothing recorded, the faulted result fails the orchestration with
    the exception's message (`reason`). Returns (failure reason, whether it is the former).
    """
    prefix = "Non-Deterministic workflow detected: "
    suffix = (
        "Was a change made to the orchestrator code after this instance had already started "
        "running?"
    )
    for event in history:
        event_id = event.get("EventId")
        if event["EventType"] == EventType.TASK_SCHEDULED:
            return (
                f"{prefix}A previous execution of this orchestration scheduled an activity task "
                f"with sequence ID {event_id} and name '{event.get('Name')}' (version "
                f"'{event.get('Version') or ''}'), but the current replay execution hasn't "
                f"(yet?) scheduled this task. {suffix}",
                True,
            )
        if event["EventType"] == EventType.TIMER_CREATED:
            return (
                f"{prefix}A previous execution of this orchestration scheduled a timer task with "
                f"sequence number {event_id} but the current replay execution hasn't (yet?) "
                f"scheduled this task. {suffix}",
                True,
            )
    return reason, False


def _when_any(children: list[_Fut]) -> _Fut:
    """Task.WhenAny: completes (successfully) when the first child completes, whatever its state."""
    result = _Fut()
    for child in children:
        child.then(lambda fut: result.resolve(True, fut))
    return result


def _when_all(children: list[_Fut]) -> _Fut:
    """Task.WhenAll: completes when every child has completed; faulted if any faulted."""
    result = _Fut()
    if not children:
        result.resolve(True, [])
        return result
    remaining = {"count": len(children)}

    def on_child(_fut: _Fut) -> None:
        remaining["count"] -= 1
        if remaining["count"] == 0:
            result.resolve(all(child.ok for child in children), [child.value for child in children])

    for child in children:
        child.then(on_child)
    return result

"""Durable rules of the real runtime that the emulated host enforces, one test per rule.

Custom status limit, large payloads, overridableExistingInstanceStates, events around
continue-as-new, events raised while an activity runs, and the counters that show an
orchestrator spinning on an SDK-deferred event. The sources each rule comes from are cited
in devhost/functions_host/ next to the code that reproduces it.
"""

from __future__ import annotations

import json
from collections.abc import Callable, Iterator
from datetime import timedelta
from pathlib import Path
from typing import Any

import pytest

from devhost.clock import DEFAULT_EPOCH
from devhost.functions_host import (
    CUSTOM_STATUS_MAX_KB,
    CUSTOM_STATUS_MAX_UTF16_BYTES,
    CrashPoint,
    EmulatedHost,
    HostError,
    InstanceAlreadyExistsError,
    InstanceView,
    custom_status_utf16_bytes,
)
from devhost.functions_host.history import EventType
from tests.functions_host_samples import durable_rules_app

RULES = "tests.functions_host_samples.durable_rules_app"

OS, OC = EventType.ORCHESTRATOR_STARTED, EventType.ORCHESTRATOR_COMPLETED
ES, EC = EventType.EXECUTION_STARTED, EventType.EXECUTION_COMPLETED
TS, TC = EventType.TASK_SCHEDULED, EventType.TASK_COMPLETED
TCR, ER = EventType.TIMER_CREATED, EventType.EVENT_RAISED


@pytest.fixture
def host() -> Iterator[EmulatedHost]:
    durable_rules_app.reset_state()
    with EmulatedHost(RULES) as emulated:
        yield emulated


def kinds(history: list[dict[str, Any]]) -> list[int]:
    return [event["EventType"] for event in history]


def view_of(host: EmulatedHost, instance_id: str) -> InstanceView:
    view = host.instance(instance_id)
    assert view is not None
    return view


def batches(host: EmulatedHost) -> list[str]:
    """Record each episode's batch (message kinds, in order) through the crash hook."""
    seen: list[str] = []

    def record(point: CrashPoint) -> bool:
        if point.kind == "before_episode":
            seen.append(point.detail)
        return False

    host.crash_when = record
    return seen


def host_json_with(tmp_path: Path, durable: dict[str, Any]) -> Path:
    path = tmp_path / "host.json"
    path.write_text(
        json.dumps(
            {
                "version": "2.0",
                "extensions": {"http": {"routePrefix": "api"}, "durableTask": durable},
            }
        )
    )
    return path


# ------------------------------------------------------------------ custom status limit

TOO_BIG = (
    "The UTF-16 size of the JSON-serialized payload must not exceed 16 KB. "
    "The current payload size is 17 KB."
)
ASCII_FITS = "x" * 8701  # '"' + 8701 + '"' = 8703 UTF-16 units = 17406 bytes: 16 KB, truncated
ASCII_TOO_BIG = "x" * 8702  # 17408 bytes: 17 KB


def test_custom_status_limit_constants() -> None:
    assert CUSTOM_STATUS_MAX_KB == 16
    assert custom_status_utf16_bytes(ASCII_FITS) == CUSTOM_STATUS_MAX_UTF16_BYTES == 17406
    assert custom_status_utf16_bytes(ASCII_TOO_BIG) == 17 * 1024
    # Compact JSON, as Newtonsoft writes it: no spaces after separators.
    assert custom_status_utf16_bytes({"a": [1, 2]}) == 2 * len('{"a":[1,2]}')


def test_custom_status_just_under_the_limit_is_kept_and_visible(host: EmulatedHost) -> None:
    instance_id = host.start_orchestration(
        "status_setter", {"status": ASCII_FITS, "wait_for": "go"}
    )
    host.run_until_idle()
    view = view_of(host, instance_id)
    assert (view.runtime_status, view.custom_status) == ("Running", ASCII_FITS)
    code = host.keys.durable_system_key
    status = host.http(
        "GET", f"/runtime/webhooks/durabletask/instances/{instance_id}?code={code}", key=None
    )
    assert json.loads(status.get_body())["customStatus"] == ASCII_FITS
    host.raise_event(instance_id, "go")
    final = host.run_until_complete(instance_id)
    assert (final.runtime_status, final.output, final.custom_status) == (
        "Completed",
        "done",
        ASCII_FITS,
    )


def test_custom_status_just_over_the_limit_fails_the_instance(host: EmulatedHost) -> None:
    view = host.run_until_complete(
        host.start_orchestration("status_setter", {"status": ASCII_TOO_BIG})
    )
    # OutOfProcOrchestrationShim.ScheduleDurableTaskEvents -> SetCustomStatus throws; the
    # TaskOrchestrationShim wraps it in OrchestrationFailureException.
    expected = f"Orchestrator function 'status_setter' failed: {TOO_BIG}"
    assert (view.runtime_status, view.failure, view.output) == ("Failed", expected, expected)
    assert view.custom_status is None  # the failed episode set none
    assert kinds(view.history) == [OS, ES, EC, OC]
    assert view.history[2]["OrchestrationStatus"] == "Failed"
    assert any("over the extension's 16 KB limit" in d for d in view.diagnostics)


@pytest.mark.parametrize(
    ("status", "fits"),
    [
        # An astral character is one Python character, two UTF-16 units (4 bytes) as written
        # raw by Newtonsoft; the SDK's ASCII-escaped form ("\ud83d\ude00", 12 characters)
        # would be 24 bytes and 104 KB here.
        ("\U0001f600" * 4350, True),  # 4 * 4350 + 4 = 17404 bytes: 16 KB
        ("\U0001f600" * 4351, False),  # 17408 bytes: 17 KB
        ("é" * 8701, True),  # BMP non-ASCII: 2 bytes each, like ASCII
        ("é" * 8702, False),
    ],
)
def test_custom_status_size_is_utf16_of_raw_non_ascii(
    host: EmulatedHost, status: str, fits: bool
) -> None:
    view = host.run_until_complete(host.start_orchestration("status_setter", {"status": status}))
    if fits:
        assert (view.runtime_status, view.custom_status) == ("Completed", status)
    else:
        assert view.runtime_status == "Failed"
        assert view.failure == f"Orchestrator function 'status_setter' failed: {TOO_BIG}"


def test_custom_status_over_the_limit_later_is_reported_as_non_determinism(
    host: EmulatedHost,
) -> None:
    # SetCustomStatus throws before the shim calls anything, so DTFx finds the recorded
    # TaskScheduled unmatched (HandleTaskScheduledEvent). Not an app determinism bug: the
    # strict mode does not raise, the diagnostics say why.
    view = host.run_until_complete(
        host.start_orchestration("status_setter", {"status": ASCII_TOO_BIG, "after_activity": True})
    )
    assert view.runtime_status == "Failed"
    assert view.failure == (
        "Non-Deterministic workflow detected: A previous execution of this orchestration "
        "scheduled an activity task with sequence ID 0 and name 'rules_echo' (version ''), but "
        "the current replay execution hasn't (yet?) scheduled this task. Was a change made to "
        "the orchestrator code after this instance had already started running?"
    )
    assert any("DTFx reports the first recorded task" in d for d in view.diagnostics)
    assert host.stats.non_determinism == 0


def test_custom_status_over_the_limit_when_the_orchestrator_raised(host: EmulatedHost) -> None:
    # The SDK's state travels in the exception: the ArgumentException escapes the catch block
    # of TaskOrchestrationShim.InvokeUserCodeAndHandleResults unwrapped (no name prefix).
    view = host.run_until_complete(
        host.start_orchestration("status_setter", {"status": ASCII_TOO_BIG, "raise_after": True})
    )
    assert (view.runtime_status, view.failure) == ("Failed", TOO_BIG)


# ------------------------------------------------------------------ large payloads


def test_large_payloads_are_offloaded_not_refused(host: EmulatedHost) -> None:
    chars = 50 * 1024  # input > 45 KB (queue), result 100 K characters (> 60 KB of UTF-16)
    instance_id = host.start_orchestration("big_payloads", {"chars": chars})
    host.run_until_idle()
    big_event = "e" * 70_000  # > 64 KB, through the real client and the extension's HTTP API
    response = host.http("POST", f"/api/rules/raise/{instance_id}/big", body=json.dumps(big_event))
    assert response.status_code == 202, host.http_errors
    view = host.run_until_complete(instance_id)
    assert view.runtime_status == "Completed"
    assert (view.output["result"], view.output["event"]) == (2 * chars, 70_000)
    assert view.output["echo"] == "p" * (2 * chars)
    # Queue messages over 45 KB: TaskScheduled (work-item queue), TaskCompleted, EventRaised.
    assert host.stats.large_messages == 3
    # Table properties over 60 KB of UTF-16: the same three history rows, the
    # ExecutionCompleted row and the instance row's Output.
    assert host.stats.large_table_properties == 5


# ------------------------------------------------------------------ existing instance ids


@pytest.mark.parametrize("state", ["Pending", "Running"])
def test_starting_a_pending_or_running_id_is_refused_by_default(
    host: EmulatedHost, state: str
) -> None:
    instance_id = host.start_orchestration(
        "status_setter", {"status": "a", "wait_for": "go"}, "dup"
    )
    if state == "Running":
        host.run_until_idle()
    before = view_of(host, instance_id)
    assert before.runtime_status == state
    message = f"An Orchestration instance with the status {state} already exists."
    with pytest.raises(InstanceAlreadyExistsError, match=message):
        host.start_orchestration("status_setter", {"status": "b"}, "dup")
    # The real client: HttpApiHandler's catch-all answers 500, start_new raises its body.
    response = host.http("POST", "/api/rules/start/status_setter/dup", body="{}")
    assert response.status_code == 409
    text = response.get_body().decode()
    assert message in text
    assert "Something went wrong while processing your request" in text
    assert "OrchestrationAlreadyExistsException" in text
    after = view_of(host, instance_id)
    assert (after.execution_id, after.input) == (
        before.execution_id,
        {"status": "a", "wait_for": "go"},
    )


@pytest.mark.parametrize("state", ["Completed", "Failed", "Terminated"])
def test_starting_a_finished_id_replaces_it(host: EmulatedHost, state: str) -> None:
    status = ASCII_TOO_BIG if state == "Failed" else "a"
    options: dict[str, Any] = {"status": status}
    if state == "Terminated":
        options["wait_for"] = "go"
    host.start_orchestration("status_setter", options, "again")
    host.run_until_idle()
    if state == "Terminated":
        host.terminate("again", "stop")
        host.run_until_idle()
    first = view_of(host, "again")
    assert first.runtime_status == state
    response = host.http("POST", "/api/rules/start/status_setter/again", body='{"status": "b"}')
    assert response.status_code == 202, response.get_body()
    second = view_of(host, "again")
    assert second.runtime_status == "Pending"
    assert second.execution_id != first.execution_id
    assert host.run_until_complete("again").custom_status == "b"


def test_any_state_in_host_json_replaces_a_running_instance(tmp_path: Path) -> None:
    host_json = host_json_with(tmp_path, {"overridableExistingInstanceStates": "AnyState"})
    durable_rules_app.reset_state()
    with EmulatedHost(RULES, host_json=host_json) as host:
        host.start_orchestration("status_setter", {"status": "a", "wait_for": "go"}, "dup")
        host.run_until_idle()
        response = host.http("POST", "/api/rules/start/status_setter/dup", body='{"status": "b"}')
        assert response.status_code == 202
        view = host.run_until_complete("dup")
        assert (view.output, view.custom_status) == ("done", "b")


# ------------------------------------------------------------------ events and continue-as-new


def test_event_nobody_consumed_before_continue_as_new_is_lost(host: EmulatedHost) -> None:
    # (a) The event arrives in an earlier episode of the generation (with ExecutionStarted),
    # the orchestrator never waits for it: it goes with the old history.
    instance_id = host.start_orchestration("carry_probe", {"generation": 0, "mode": "single"})
    host.raise_event(instance_id, "ping", "early")
    seen = batches(host)
    view = host.run_until_complete(instance_id)
    assert seen[0] == "start,event"
    assert view.output == {"generation": 1, "ping": None}
    assert host.clock.now() == DEFAULT_EPOCH + timedelta(seconds=60)  # the timer won


def test_event_before_the_completing_result_in_the_final_batch_is_lost(
    host: EmulatedHost,
) -> None:
    # (b) Batch [EventRaised, TaskCompleted]: DTFx raises the event before the shim reaches
    # ContinueAsNew, so it is not carried over.
    instance_id = host.start_orchestration("carry_probe", {"generation": 0, "mode": "single"})
    host.during_activity = lambda name, value: host.raise_event(instance_id, "ping", "early")
    seen = batches(host)
    view = host.run_until_complete(instance_id)
    assert seen[:2] == ["start", "event,task"]
    assert view.output == {"generation": 1, "ping": None}
    assert ER not in kinds(view.history)


def test_event_after_the_completing_result_in_the_final_batch_is_carried(
    host: EmulatedHost,
) -> None:
    # (c) Batch [TaskCompleted(first), EventRaised, TaskCompleted(second)]: the first result
    # completes task_any, the shim reaches ContinueAsNew, the event is set aside; the second
    # result closes DTFx's last open task. The new generation starts with the event.
    instance_id = host.start_orchestration("carry_probe", {"generation": 0, "mode": "first_of_two"})

    def raise_during_second(name: str, value: Any) -> None:
        if value == "second":
            host.raise_event(instance_id, "ping", "carried")

    host.during_activity = raise_during_second
    seen = batches(host)
    view = host.run_until_complete(instance_id)
    assert seen[:3] == ["start", "task,event,task", "start"]
    assert view.output == {"generation": 1, "ping": "carried"}
    assert host.clock.now() == DEFAULT_EPOCH  # no timer had to fire
    # TaskOrchestrationDispatcher: OrchestratorStarted, ExecutionStarted, the carried events,
    # OrchestratorCompleted, then the first episode's decisions.
    assert kinds(view.history) == [OS, ES, ER, OC, TCR, EC, OC]
    assert (view.history[2]["Name"], view.history[2]["Input"]) == ("ping", '"carried"')
    assert (host.stats.continued_as_new, host.stats.events_carried) == (1, 1)


def test_event_raised_after_continue_as_new_committed_reaches_the_new_generation(
    host: EmulatedHost,
) -> None:
    # (d) Client events are addressed to the instance, not to an execution.
    instance_id = host.start_orchestration("carry_probe", {"generation": 0, "mode": "single"})
    host.run_until_idle()
    assert view_of(host, instance_id).generation == 1
    host.raise_event(instance_id, "ping", "late")
    view = host.run_until_complete(instance_id)
    assert view.output == {"generation": 1, "ping": "late"}


def test_event_still_queued_when_continue_as_new_commits_reaches_the_new_generation(
    host: EmulatedHost,
) -> None:
    # (d) The event is queued behind the result that completes the generation, but one
    # message per episode leaves it out of the final batch: it survives the old execution.
    host.max_messages_per_episode = 1
    first = host.start_orchestration("carry_probe", {"generation": 0, "mode": "single"})
    other = host.start_orchestration("status_setter", {"status": "s", "after_activity": True})

    def raise_during_the_other_activity(name: str, value: Any) -> None:
        if value == "before status":  # runs after the first instance's activity completed
            host.raise_event(first, "ping", "queued")

    host.during_activity = raise_during_the_other_activity
    view = host.run_until_complete(first)
    assert view.output == {"generation": 1, "ping": "queued"}
    # The new generation's first episode ran alone (same work item as the continue-as-new);
    # the queued event came in the next one.
    assert kinds(view.history)[:6] == [OS, ES, OC, TCR, OC, OS]
    assert view.history[6]["EventType"] == ER
    assert host.run_until_complete(other).output == "done"


# ------------------------------------------------------------------ events during activities


def test_event_raised_during_an_activity_wins_task_any(host: EmulatedHost) -> None:
    instance_id = host.start_orchestration("activity_or_event")
    calls: list[tuple[str, Any]] = []

    def hook(name: str, value: Any) -> None:
        calls.append((name, value))
        host.raise_event(instance_id, "ping", {"from": "hook"})

    host.during_activity = hook
    view = host.run_until_complete(instance_id)
    assert calls == [("rules_echo", "work")]
    assert view.output == {"winner": "ping", "ping": {"from": "hook"}}
    # The event's message was queued before the activity's TaskCompleted.
    assert kinds(view.history) == [OS, ES, TS, OC, OS, ER, TC, EC, OC]


def test_event_raised_during_an_activity_reaches_a_later_wait(host: EmulatedHost) -> None:
    instance_id = host.start_orchestration("activity_then_event")

    def hook(name: str, value: Any) -> None:
        # An HTTP function with the real durable client, on the worker loop.
        response = host.http("POST", f"/api/rules/raise/{instance_id}/ping", body='"via http"')
        assert response.status_code == 202

    host.during_activity = hook
    view = host.run_until_complete(instance_id)
    assert view.output == {"result": "work", "ping": "via http"}


@pytest.mark.parametrize("activity", ["rules_gate_async", "rules_gate_sync"])
def test_http_function_runs_on_the_worker_loop_while_an_activity_is_in_flight(
    host: EmulatedHost, activity: str
) -> None:
    # The activity only finishes when the HTTP function opens its gate: the HTTP invocation
    # has to run on the same worker loop while an async activity awaits, or while a sync one
    # blocks an executor thread.
    responses: list[bytes] = []
    host.during_activity = lambda name, value: responses.append(
        host.http("POST", "/api/rules/release").get_body()
    )
    view = host.run_until_complete(host.start_orchestration("gated", {"activity": activity}))
    assert responses == [b"released"]
    kind = "async" if activity.endswith("async") else "sync"
    assert view.output == f"{kind} gate opened for tag-1"
    # The activity could only finish once the HTTP function had opened its gate.
    assert sorted(durable_rules_app.CALLS, key=str) == sorted(
        [(activity, "tag-1"), ("rules_release", None)], key=str
    )


def test_a_hook_may_not_drive_the_engine(host: EmulatedHost) -> None:
    host.start_orchestration("activity_then_event")
    host.during_activity = lambda name, value: host.run_until_idle()
    with pytest.raises(HostError, match="not drive the engine"):
        host.run_until_idle()


# ------------------------------------------------------------------ counters: deferred events


def poke_during_work(host: EmulatedHost, instance_id: str) -> Callable[[str, Any], None]:
    def hook(name: str, value: Any) -> None:
        if value == "work":
            host.raise_event(instance_id, "poke", "once")

    return hook


def test_a_renewed_wait_spins_on_an_sdk_deferred_event(host: EmulatedHost) -> None:
    # The poke arrives while no wait is open: the SDK keeps it in context.deferred_tasks and
    # hands it to every later wait for "poke" (TaskOrchestrationExecutor.set_task_value,
    # DurableOrchestrationContext._add_to_open_tasks). Renewing the wait replays it forever.
    options = {"max_turns": 50, "window_seconds": 120}
    instance_id = host.start_orchestration("renewing_waiter", options)
    host.during_activity = poke_during_work(host, instance_id)
    view = host.run_until_complete(instance_id)
    assert view.output == {"pokes": 50, "turns": 50}  # one event, counted 50 times
    assert view.timers_by_generation == (50,)  # 50 TimerCreated in one generation...
    assert view.episodes_by_generation == (2,)  # ...in a single episode
    assert (view.timers_created, view.episodes) == (50, 2)
    assert host.stats.timers_created == 50
    assert host.clock.now() == DEFAULT_EPOCH


def test_a_single_kept_wait_does_not_spin(host: EmulatedHost) -> None:
    options = {"max_turns": 50, "window_seconds": 120}
    instance_id = host.start_orchestration("single_waiter", options)
    host.during_activity = poke_during_work(host, instance_id)
    view = host.run_until_complete(instance_id)
    assert view.output == {"pokes": 1, "turns": 5}
    assert view.timers_by_generation == (5,)  # one per 30 s turn over 120 s
    assert view.episodes_by_generation == (6,)
    assert host.clock.now() == DEFAULT_EPOCH + timedelta(seconds=120)


# ------------------------------------------------- custom status vs. the episode's messages


def test_an_activity_may_run_before_its_episodes_custom_status_is_visible(
    host: EmulatedHost,
) -> None:
    # Azure Storage sends the episode's activity messages before it checkpoints the instance
    # (AzureStorageOrchestrationService.CompleteTaskOrchestrationWorkItemAsync).
    seen: list[Any] = []

    def look(name: str, _input: Any) -> None:
        if name == "rules_echo":
            seen.append(view_of(host, instance_id).custom_status)

    host.during_activity = look
    instance_id = host.start_orchestration(
        "status_setter", {"status": "invitation", "activity_after": True}
    )
    final = host.run_until_complete(instance_id)
    assert seen == [None]  # the activity ran while readers still saw the previous status
    assert (final.runtime_status, final.custom_status) == ("Completed", "invitation")

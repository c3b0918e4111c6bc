"""Orchestrations on the emulated host: history, replay rules, timers, events, faults."""

from __future__ import annotations

import time
from collections.abc import Callable, Iterator
from datetime import UTC, datetime, timedelta
from typing import Any

import pytest

from devhost.clock import DEFAULT_EPOCH, VirtualClock
from devhost.functions_host import (
    CRASH_KINDS,
    CrashPoint,
    EmulatedHost,
    InstanceGoneError,
    NonDeterminismError,
    OrchestrationStuckError,
)
from devhost.functions_host.history import EventType, parse_timestamp
from tests.functions_host_samples import basic_app

BASIC = "tests.functions_host_samples.basic_app"

OS, OC = EventType.ORCHESTRATOR_STARTED, EventType.ORCHESTRATOR_COMPLETED
ES, EC = EventType.EXECUTION_STARTED, EventType.EXECUTION_COMPLETED
TS, TC, TF = EventType.TASK_SCHEDULED, EventType.TASK_COMPLETED, EventType.TASK_FAILED
TCR, TFI = EventType.TIMER_CREATED, EventType.TIMER_FIRED
ER, CAN = EventType.EVENT_RAISED, EventType.CONTINUE_AS_NEW


@pytest.fixture
def host() -> Iterator[EmulatedHost]:
    basic_app.reset_state()
    with EmulatedHost(BASIC) as emulated:
        yield emulated


def kinds(history: list[dict[str, Any]]) -> list[int]:
    return [event["EventType"] for event in history]


# ------------------------------------------------------------------ history shapes


def test_history_has_dtfx_episode_structure(host: EmulatedHost) -> None:
    instance_id = host.start_orchestration("hello_sequence", ["A", "B"])
    assert host.instance(instance_id).runtime_status == "Pending"  # type: ignore[union-attr]
    view = host.run_until_complete(instance_id)
    assert view.runtime_status == "Completed"
    assert view.output == ["Hello A!", "Hello B!"]
    assert kinds(view.history) == [
        OS, ES, TS, OC,  # episode 1: start, schedule activity 0
        OS, TC, TS, OC,  # episode 2: result of 0, schedule activity 1
        OS, TC, EC, OC,  # episode 3: result of 1, done
    ]  # fmt: skip
    started = view.history[1]
    assert started["Name"] == "hello_sequence"
    assert started["Version"] == ""
    assert started["Input"] == '["A", "B"]'
    scheduled = [e for e in view.history if e["EventType"] == TS]
    assert [(e["EventId"], e["Name"], e["Input"]) for e in scheduled] == [
        (0, "say_hello", '"A"'),
        (1, "say_hello", '"B"'),
    ]
    completed = [e for e in view.history if e["EventType"] == TC]
    assert [(e["EventId"], e["TaskScheduledId"], e["Result"]) for e in completed] == [
        (-1, 0, '"Hello A!"'),
        (-1, 1, '"Hello B!"'),
    ]
    assert view.history[-2]["EventId"] == 2  # ExecutionCompleted takes the next sequence id
    for event in view.history:
        assert set(event) >= {"EventType", "EventId", "IsPlayed", "Timestamp"}
        assert parse_timestamp(event["Timestamp"]) == DEFAULT_EPOCH
        assert event["Timestamp"] == "2026-01-01T00:00:00.000000Z"
    # The last episode's context: earlier events played, this episode's new, as DTFx sends.
    context = view.last_context
    assert context is not None
    assert [e["IsPlayed"] for e in context["history"]] == [True] * 8 + [False, False]
    assert context["input"] == '["A", "B"]'
    assert context["upperSchemaVersion"] == 1
    assert context["upperSchemaVersionNew"] == 2
    assert context["maximumShortTimerDuration"] == "6.00:00:00"
    assert host.stats.episodes == 3
    assert host.stats.activity_executions["say_hello"] == 2


def test_fan_out_results_arrive_as_one_batch(host: EmulatedHost) -> None:
    instance_id = host.start_orchestration("fan_out", [1, 2, 3])
    view = host.run_until_complete(instance_id)
    assert view.output == 12
    assert kinds(view.history) == [OS, ES, TS, TS, TS, OC, OS, TC, TC, TC, EC, OC]
    assert host.stats.episodes == 2


def test_one_message_per_episode_gives_the_same_result(host: EmulatedHost) -> None:
    host.max_messages_per_episode = 1
    instance_id = host.start_orchestration("fan_out", [1, 2, 3])
    view = host.run_until_complete(instance_id)
    assert view.output == 12
    assert host.stats.episodes == 4


def test_timer_events_and_virtual_time(host: EmulatedHost) -> None:
    instance_id = host.start_orchestration(
        "poller", {"poll": 0, "done_after": 1, "per_generation": 5, "generation": 0}
    )
    host.run_until_idle()
    fire_at = DEFAULT_EPOCH + timedelta(seconds=30)
    assert host.next_timer_at() == fire_at
    host.run_until_idle()
    assert host.instance(instance_id).runtime_status == "Running"  # type: ignore[union-attr]
    assert host.clock.now() == DEFAULT_EPOCH  # nothing moves time but the test
    assert host.advance_to_next_timer()
    view = host.run_until_complete(instance_id)
    assert view.output == {"polls": 1, "generations": 1}
    created = next(e for e in view.history if e["EventType"] == TCR)
    fired = next(e for e in view.history if e["EventType"] == TFI)
    assert created["EventId"] == 0
    assert parse_timestamp(created["FireAt"]) == fire_at
    assert (fired["TimerId"], parse_timestamp(fired["FireAt"])) == (0, fire_at)
    second_episode = view.history.index(fired) - 1
    assert view.history[second_episode]["EventType"] == OS
    assert parse_timestamp(view.history[second_episode]["Timestamp"]) == fire_at
    assert view.custom_status == {"poll": 1, "generation": 0}


# ------------------------------------------------------------------ determinism


@pytest.mark.parametrize("orchestrator", ["wall_clock_timer", "random_input"])
def test_non_deterministic_orchestrators_are_caught(orchestrator: str) -> None:
    # Virtual time far ahead of the wall clock: the wall-clock timer is "in the past" and fires
    # at the next opportunity, and its replay computes a different fireAt.
    clock = VirtualClock(datetime(2100, 1, 1, tzinfo=UTC))
    with EmulatedHost("tests.functions_host_samples.nondeterministic_app", clock=clock) as host:
        instance_id = host.start_orchestration(orchestrator)
        with pytest.raises(NonDeterminismError, match="sequence ID 0") as caught:
            host.run_until_complete(instance_id)
        assert "history recorded" in str(caught.value)
        view = host.instance(instance_id)
        assert view is not None
        assert view.runtime_status == "Failed"
        assert view.failure is not None
        assert view.failure.startswith("Non-Deterministic workflow detected")
        assert host.stats.non_determinism == 1


def test_non_determinism_can_be_observed_without_raising() -> None:
    app = "tests.functions_host_samples.nondeterministic_app"
    with EmulatedHost(app, strict_determinism=False) as host:
        bad = host.start_orchestration("random_input")
        good = host.start_orchestration("deterministic")
        views = {v.instance_id: v for v in host.run_all_until_complete()}
        assert views[bad].runtime_status == "Failed"
        assert views[good].runtime_status == "Completed"
        assert views[good].output == "fine"


# ------------------------------------------------------------------ long polling, continue-as-new


def test_two_hour_polling_with_continue_as_new_is_fast_and_bounded(host: EmulatedHost) -> None:
    state = {"poll": 0, "done_after": 240, "per_generation": 10, "generation": 0}
    started = time.perf_counter()
    instance_id = host.start_orchestration("poller", state)
    view = host.run_until_complete(instance_id)
    elapsed = time.perf_counter() - started
    assert view.runtime_status == "Completed"
    assert view.output == {"polls": 240, "generations": 24}
    assert host.clock.now() - DEFAULT_EPOCH == timedelta(hours=2)
    assert elapsed < 1.0, f"2 h of polling took {elapsed:.2f} s of wall time"
    assert view.generation == 23
    assert len(view.history_lengths) == 24
    # Every full generation: start + 10 x (timer + activity) episodes, closed by ContinueAsNew
    # (DTFx appends no OrchestratorCompleted after it). A continued generation's first episode
    # has one more event: the OrchestratorCompleted DTFx puts after its ExecutionStarted.
    assert view.history_lengths[0] == 4 + 10 * 8 - 1
    assert set(view.history_lengths[1:-1]) == {5 + 10 * 8 - 1}
    assert host.stats.activity_executions["check_status"] == 240
    # Counters per generation: one timer per poll, one episode per message batch.
    assert view.timers_by_generation == (10,) * 24
    assert view.episodes_by_generation == (21,) * 24
    assert (view.timers_created, view.episodes) == (240, 21 * 24)
    assert host.stats.timers_created == 240


def test_continue_as_new_carries_state_into_a_fresh_history(host: EmulatedHost) -> None:
    state = {"poll": 0, "done_after": 5, "per_generation": 2, "generation": 0}
    instance_id = host.start_orchestration("poller", state)
    host.run_until_idle()
    for _ in range(2):
        host.advance_to_next_timer()
    view = host.instance(instance_id)
    assert view is not None
    assert view.generation == 1
    assert view.runtime_status == "Running"
    # The new generation starts from the continue-as-new input.
    assert view.history[1]["EventType"] == ES
    assert view.input == {"poll": 2, "done_after": 5, "per_generation": 2, "generation": 1}
    assert view.history[1]["Input"] == (
        '{"poll": 2, "done_after": 5, "per_generation": 2, "generation": 1}'
    )
    final = host.run_until_complete(instance_id)
    assert final.output == {"polls": 5, "generations": 3}
    assert final.generation == 2
    assert len(final.history_lengths) == 3
    # The first generation was closed by a ContinueAsNew event (DTFx ContinueAsNewEvent), with
    # no OrchestratorCompleted after it.
    assert final.history_lengths[0] == 4 + 2 * 8 - 1
    # DTFx starts a continued generation with OrchestratorStarted, ExecutionStarted (and any
    # carried events) and OrchestratorCompleted, then records the first decisions.
    assert kinds(final.history)[:5] == [OS, ES, OC, TCR, OC]


# ------------------------------------------------------------------ external events


def test_event_raised_before_the_wait_is_kept(host: EmulatedHost) -> None:
    instance_id = host.start_orchestration("wait_for_go")
    host.raise_event(instance_id, "go", {"n": 1})  # still Pending
    view = host.run_until_complete(instance_id)
    assert view.output == {"got": {"n": 1}}
    assert kinds(view.history) == [OS, ES, ER, EC, OC]
    raised = view.history[2]
    assert (raised["Name"], raised["Input"]) == ("go", '{"n": 1}')


def test_event_raised_after_the_wait(host: EmulatedHost) -> None:
    instance_id = host.start_orchestration("wait_for_go")
    host.run_until_idle()
    assert host.instance(instance_id).runtime_status == "Running"  # type: ignore[union-attr]
    with pytest.raises(OrchestrationStuckError, match="waiting for external event 'go'"):
        host.run_until_complete(instance_id)
    host.raise_event(instance_id, "go", "now")
    assert host.run_until_complete(instance_id).output == {"got": "now"}
    with pytest.raises(InstanceGoneError):
        host.raise_event(instance_id, "go", "too late")


def test_when_any_timer_vs_event_with_a_kept_wait(host: EmulatedHost) -> None:
    instance_id = host.start_orchestration("approval", {"cancel_timers": True})
    host.run_until_idle()
    host.advance(60)  # turn 1: the timer wins
    host.advance(30)
    host.raise_event(instance_id, "approval", {"by": "ops"})
    host.run_until_idle()
    view = host.instance(instance_id)
    assert view is not None
    assert view.runtime_status == "Completed"
    assert view.output == {"approved": {"by": "ops"}, "turns": 2}
    # The losing timer was cancelled in the last action list: it still fires later, harmlessly.
    assert host.next_timer_at() is None  # the instance is finished: its timer is dead
    host.advance(3600)
    assert host.instance(instance_id).runtime_status == "Completed"  # type: ignore[union-attr]


def test_an_uncancelled_losing_timer_keeps_the_instance_running(host: EmulatedHost) -> None:
    # DTFx completes an orchestration only when no task is open, and the extension's replay
    # shim awaits each action in turn: the orchestrator returned, the instance is not done.
    instance_id = host.start_orchestration("approval", {"cancel_timers": False})
    host.run_until_idle()
    host.advance(90)
    host.raise_event(instance_id, "approval", "yes")
    host.run_until_idle()
    view = host.instance(instance_id)
    assert view is not None
    assert view.runtime_status == "Running"
    assert any("timer.cancel()" in d for d in view.diagnostics)
    final = host.run_until_complete(instance_id)
    assert final.output == {"approved": "yes", "turns": 2}
    assert host.clock.now() == DEFAULT_EPOCH + timedelta(seconds=120)


def test_a_cancelled_timer_still_fires_and_is_harmless(host: EmulatedHost) -> None:
    instance_id = host.start_orchestration("approval_then_sleep")
    host.run_until_idle()
    host.raise_event(instance_id, "approval", "ok")
    host.run_until_idle()
    view = host.run_until_complete(instance_id)
    assert view.output == {"approved": "ok", "greeting": "Hello after sleep!"}
    # Timer 0 (cancelled at t=0) still fired at t=60, before timer 1 at t=120.
    fired = [(e["TimerId"], e["FireAt"]) for e in view.history if e["EventType"] == TFI]
    assert fired == [(0, "2026-01-01T00:01:00.000000Z"), (1, "2026-01-01T00:02:00.000000Z")]
    assert view.last_context is not None
    cancelled = view.last_context["history"]  # the SDK was given both TimerFired events
    assert sum(e["EventType"] == TFI for e in cancelled) == 2


# ------------------------------------------------------------------ failures and retries


def test_activity_failure_is_thrown_into_the_orchestrator(host: EmulatedHost) -> None:
    view = host.run_until_complete(host.start_orchestration("catch_failure"))
    assert view.runtime_status == "Completed"
    caught = view.output["caught"]
    assert caught.startswith("Activity function 'fail_always' failed: ")
    assert "ValueError: activity refused: nope" in caught
    failed = next(e for e in view.history if e["EventType"] == TF)
    assert failed["TaskScheduledId"] == 0
    assert "ValueError: activity refused: nope" in failed["Reason"]
    assert "RpcException" in failed["Details"]


def test_unhandled_failure_fails_the_instance(host: EmulatedHost) -> None:
    view = host.run_until_complete(host.start_orchestration("uncaught_failure"))
    assert view.runtime_status == "Failed"
    assert view.failure is not None
    assert view.failure.startswith(
        "Orchestrator function 'uncaught_failure' failed: Activity function 'fail_always' failed"
    )
    assert view.history[-2]["OrchestrationStatus"] == "Failed"


def test_retry_schedules_timer_then_new_attempt(host: EmulatedHost) -> None:
    basic_app.FLAKY_FAILURES_LEFT["k"] = 2
    view = host.run_until_complete(host.start_orchestration("with_retry", "k"))
    assert view.output == {"result": "ok:k"}
    sequence = [(e["EventType"], e["EventId"]) for e in view.history if e["EventType"] in (TS, TCR)]
    assert sequence == [(TS, 0), (TCR, 1), (TS, 2), (TCR, 3), (TS, 4)]
    fire_times = [parse_timestamp(e["FireAt"]) for e in view.history if e["EventType"] == TCR]
    assert fire_times == [
        DEFAULT_EPOCH + timedelta(seconds=5),
        DEFAULT_EPOCH + timedelta(seconds=10),
    ]
    assert host.stats.activity_executions["flaky"] == 3


def test_retry_gives_up_after_the_last_attempt_and_one_more_timer(host: EmulatedHost) -> None:
    basic_app.FLAKY_FAILURES_LEFT["z"] = 99
    view = host.run_until_complete(host.start_orchestration("with_retry", "z"))
    assert "transient failure for z" in view.output["error"]
    assert [e["EventType"] for e in view.history if e["EventType"] in (TS, TCR)] == [
        TS, TCR, TS, TCR, TS, TCR,
    ]  # fmt: skip
    assert host.clock.now() == DEFAULT_EPOCH + timedelta(seconds=15)


def test_unknown_activity_leaves_the_instance_waiting_forever(host: EmulatedHost) -> None:
    # The extension's ThrowIfFunctionDoesNotExist fault is swallowed by its replay loop.
    instance_id = host.start_orchestration("calls_unknown_activity")
    with pytest.raises(OrchestrationStuckError, match="'no_such_activity' doesn't exist"):
        host.run_until_complete(instance_id)


def test_terminate(host: EmulatedHost) -> None:
    instance_id = host.start_orchestration("wait_for_go")
    host.run_until_idle()
    host.terminate(instance_id, "operator said so")
    host.run_until_idle()
    view = host.instance(instance_id)
    assert view is not None
    assert view.runtime_status == "Terminated"
    assert view.output == "operator said so"
    assert view.history[-3]["EventType"] == EventType.EXECUTION_TERMINATED
    host.terminate(instance_id, "again")  # 410 is accepted by the client, and here


# ------------------------------------------------------------------ at-least-once and crashes


def test_duplicate_activity_execution(host: EmulatedHost) -> None:
    host.duplicate_activities = lambda name, value: name == "say_hello" and value == "B"
    view = host.run_until_complete(host.start_orchestration("hello_sequence", ["A", "B"]))
    assert view.output == ["Hello A!", "Hello B!"]
    assert basic_app.CALLS == [("say_hello", "A"), ("say_hello", "B"), ("say_hello", "B")]
    assert host.stats.duplicate_executions == 1


def crash_once(kind: str) -> tuple[Callable[[CrashPoint], bool], list[CrashPoint]]:
    seen: list[CrashPoint] = []

    def predicate(point: CrashPoint) -> bool:
        if point.kind == kind and not seen:
            seen.append(point)
            return True
        return False

    return predicate, seen


@pytest.mark.parametrize("kind", CRASH_KINDS)
def test_crashes_replay_from_history_and_reach_the_same_result(kind: str) -> None:
    state = {"poll": 0, "done_after": 3, "per_generation": 2, "generation": 0}
    basic_app.reset_state()
    with EmulatedHost(BASIC) as clean:
        expected = clean.run_until_complete(clean.start_orchestration("poller", state))
        clean_calls = len(basic_app.CALLS)
        clean_episodes = clean.stats.episodes
    basic_app.reset_state()
    resets: list[int] = []
    with EmulatedHost(BASIC, worker_reset_hooks=[lambda: resets.append(1)]) as host:
        predicate, seen = crash_once(kind)
        host.crash_when = predicate
        view = host.run_until_complete(host.start_orchestration("poller", state))
        assert [point.kind for point in seen] == [kind]
        assert host.stats.crashes == 1
        assert resets == [1, 1]  # at start, then at the crash
        assert view.output == expected.output
        assert view.generation == expected.generation
        extra = 1 if kind == "after_activity_before_commit" else 0
        assert len(basic_app.CALLS) == clean_calls + extra  # a lost result runs again
        rerun = 1 if kind == "after_episode_before_commit" else 0
        assert host.stats.episodes == clean_episodes + rerun  # a lost episode is replayed


def test_crash_closes_the_sdk_session(host: EmulatedHost) -> None:
    from azure.durable_functions.models.utils import http_utils

    response = host.http("POST", "/api/orchestrators/wait_for_go", body="{}")
    assert response.status_code == 202
    session = http_utils._client_session
    assert session is not None
    assert not session.closed
    host.restart_worker()
    assert session.closed


def test_virtual_clock_can_be_shared_and_starts_where_given() -> None:
    clock = VirtualClock(DEFAULT_EPOCH + timedelta(days=3))
    with EmulatedHost(BASIC, clock=clock) as host:
        instance_id = host.start_orchestration(
            "poller", {"poll": 0, "done_after": 2, "per_generation": 5, "generation": 0}
        )
        host.run_until_complete(instance_id)
    assert clock.now() == DEFAULT_EPOCH + timedelta(days=3, seconds=60)

"""The development host's wall-clock runner (devhost/start.py) and the durable engine's state
file (devhost/functions_host/persistence.py), in process: state survives a host restart, the
driver runs work and timers on the real clock, the front door serves real TCP with keys."""

from __future__ import annotations

import json
import time
import urllib.error
import urllib.request
from collections.abc import Iterator
from datetime import timedelta
from pathlib import Path

import pytest

from devhost.clock import RealTimeClock, VirtualClock
from devhost.functions_host import CrashPoint, EmulatedHost
from devhost.server_thread import ServerThread
from devhost.start import (
    WallClockDriver,
    apply_settings,
    front_door_app,
    load_or_create_keys,
    load_settings_values,
)
from tests.functions_host_samples import basic_app

BASIC = "tests.functions_host_samples.basic_app"


class ProcessKilledError(Exception):
    """The process died in the middle of a step."""


POLLER_INPUT = {"poll": 0, "done_after": 5, "per_generation": 2, "generation": 0}


def test_orchestrations_survive_a_host_restart_through_the_state_file(tmp_path: Path) -> None:
    state_file = tmp_path / "durable-state.json"
    basic_app.reset_state()
    clock = VirtualClock()
    with EmulatedHost(BASIC, clock=clock, state_file=state_file) as first:
        instance_id = first.start_orchestration("poller", POLLER_INPUT)
        waiting = first.start_orchestration("wait_for_go")
        first.advance(70)  # two polls, then continue-as-new into generation 1
        before = first.instance(instance_id)
        assert before is not None
        assert before.generation == 1
        assert not before.is_finished
        saved = json.loads(state_file.read_text())
    assert {i["instanceId"] for i in saved["instances"]} == {instance_id, waiting}
    assert saved["timers"], "the pending durable timer is part of the state"

    later = VirtualClock(clock.now() + timedelta(seconds=5))
    with EmulatedHost(BASIC, clock=later, state_file=state_file) as second:
        assert second.loaded_instances == 2
        resumed = second.instance(instance_id)
        assert resumed is not None
        assert resumed.history == before.history
        assert resumed.custom_status == before.custom_status
        view = second.run_until_complete(instance_id)
        assert view.runtime_status == "Completed"
        assert view.output == {"polls": 5, "generations": 3}
        second.raise_event(waiting, "go", {"ok": True})
        assert second.run_until_complete(waiting).runtime_status == "Completed"
    final = json.loads(state_file.read_text())
    assert {i["status"] for i in final["instances"]} == {"Completed"}


def test_a_step_not_committed_before_the_process_died_runs_again(tmp_path: Path) -> None:
    state_file = tmp_path / "durable-state.json"
    basic_app.reset_state()

    def die_after_the_first_activity(point: CrashPoint) -> bool:
        if point.kind == "after_activity_before_commit":
            raise ProcessKilledError(point.detail)
        return False

    with EmulatedHost(BASIC, state_file=state_file) as first:
        instance_id = first.start_orchestration("hello_sequence", ["A", "B"])
        first.crash_when = die_after_the_first_activity
        with pytest.raises(ProcessKilledError):
            first.run_until_idle()
    assert basic_app.CALLS == [("say_hello", "A")]
    with EmulatedHost(BASIC, state_file=state_file) as second:
        view = second.run_until_complete(instance_id)
        assert view.output == ["Hello A!", "Hello B!"]
    # The activity whose result was not committed ran again (at-least-once).
    assert basic_app.CALLS == [("say_hello", "A"), ("say_hello", "A"), ("say_hello", "B")]


def test_the_real_time_clock_cannot_be_advanced() -> None:
    clock = RealTimeClock()
    with pytest.raises(RuntimeError, match="cannot be advanced"):
        clock.advance(1)
    assert abs(clock.timestamp() - time.time()) < 1


@pytest.fixture
def wall_host(tmp_path: Path) -> Iterator[tuple[EmulatedHost, str]]:
    basic_app.reset_state()
    keys = load_or_create_keys(tmp_path)
    with EmulatedHost(
        BASIC,
        clock=RealTimeClock(),
        function_key=keys["functionKey"],
        master_key=keys["masterKey"],
        state_file=tmp_path / "durable-state.json",
        strict_determinism=False,
    ) as host:
        driver = WallClockDriver(host).start()
        try:
            yield host, keys["functionKey"]
        finally:
            driver.stop()


def wait_for_status(host: EmulatedHost, instance_id: str, status: str, seconds: float) -> None:
    deadline = time.monotonic() + seconds
    while time.monotonic() < deadline:
        view = host.instance(instance_id)
        if view is not None and view.runtime_status == status:
            return
        time.sleep(0.02)
    raise AssertionError(f"{instance_id} is not {status} after {seconds} s: {view}")


def test_the_driver_runs_work_and_wakes_on_events(wall_host: tuple[EmulatedHost, str]) -> None:
    host, _ = wall_host
    instance_id = host.start_orchestration("hello_sequence", ["A", "B"])
    wait_for_status(host, instance_id, "Completed", 10)
    waiting = host.start_orchestration("wait_for_go")
    wait_for_status(host, waiting, "Running", 10)
    host.raise_event(waiting, "go", {"ok": True})
    wait_for_status(host, waiting, "Completed", 2)


def test_the_front_door_serves_tcp_with_function_keys(
    wall_host: tuple[EmulatedHost, str],
) -> None:
    host, key = wall_host
    with ServerThread(lambda: front_door_app(host)) as server:
        base = server.base_url
        with urllib.request.urlopen(f"{base}/api/ping", timeout=10) as anonymous:  # noqa: S310
            assert anonymous.status == 200
        with pytest.raises(urllib.error.HTTPError) as refused:
            urllib.request.urlopen(f"{base}/api/instances", timeout=10)  # noqa: S310
        assert refused.value.code == 401
        request = urllib.request.Request(  # noqa: S310
            f"{base}/api/orchestrators/hello_sequence",
            data=json.dumps(["C"]).encode(),
            headers={"x-functions-key": key, "Content-Type": "application/json"},
            method="POST",
        )
        with urllib.request.urlopen(request, timeout=10) as started:  # noqa: S310
            assert started.status == 202
            instance_id = json.loads(started.read())["id"]
        wait_for_status(host, instance_id, "Completed", 10)
        with urllib.request.urlopen(f"{base}/api/instances/{instance_id}?code={key}") as status:  # noqa: S310
            assert json.loads(status.read())["runtimeStatus"] == "Completed"


def test_settings_already_in_the_environment_win(tmp_path: Path) -> None:
    settings = tmp_path / "local.settings.json"
    settings.write_text(json.dumps({"IsEncrypted": False, "Values": {"A": "file", "B": "file"}}))
    environ = {"A": "env"}
    assert apply_settings(load_settings_values(settings), environ) == ["A"]
    assert environ == {"A": "env", "B": "file"}
    assert load_or_create_keys(tmp_path) == load_or_create_keys(tmp_path)

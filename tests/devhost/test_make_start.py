"""`make start` on a machine without Core Tools, as a newcomer runs it (README, "The two
commands" and "Offline"): the app on the development host, Azurite and the offline services,
the printed curl, the sample subscriber's `AgentRunCompleted` line; Ctrl-C leaves nothing
running; and a run submitted before a restart of `make start` finishes after it.

Everything runs as processes from the repository root, with a temporary copy of the sample
settings, free ports and temporary state folders (never the developer's own files), a PATH
without `func`, and the install stamps taken as up to date (`make -o`: the test venv is
installed already).
"""

from __future__ import annotations

import json
import os
import re
import shlex
import signal
import subprocess
import threading
import time
import urllib.request
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from tests.processes import free_port, port_open

ROOT = Path(__file__).resolve().parents[2]
READY = "Development host ready."
pytestmark = pytest.mark.slow


def path_without_func() -> str:
    entries = os.environ.get("PATH", "").split(os.pathsep)
    return os.pathsep.join(e for e in entries if e and not (Path(e) / "func").exists())


class MakeStart:
    """One `make start` in a process group of its own, its output collected line by line."""

    def __init__(self, args: list[str], env: dict[str, str]) -> None:
        self.lines: list[str] = []
        self._changed = threading.Condition()
        self.process = subprocess.Popen(
            args,
            cwd=ROOT,
            env=env,
            stdout=subprocess.PIPE,
            stderr=subprocess.STDOUT,
            text=True,
            start_new_session=True,
        )
        self._reader = threading.Thread(target=self._read, daemon=True)
        self._reader.start()

    def _read(self) -> None:
        assert self.process.stdout is not None
        for line in self.process.stdout:
            with self._changed:
                self.lines.append(line.rstrip("\n"))
                self._changed.notify_all()

    @property
    def output(self) -> str:
        with self._changed:
            return "\n".join(self.lines)

    def wait_for(self, pattern: str, seconds: float) -> str:
        """The first output line matching `pattern` (a regex), waiting up to `seconds`."""
        regex = re.compile(pattern)
        deadline = time.monotonic() + seconds
        with self._changed:
            while True:
                for line in self.lines:
                    if regex.search(line):
                        return line
                remaining = deadline - time.monotonic()
                if remaining <= 0 or (
                    self.process.poll() is not None and not self._reader.is_alive()
                ):
                    raise AssertionError(
                        f"no line matching {pattern!r} within {seconds} s; output:\n"
                        + "\n".join(self.lines)
                    )
                self._changed.wait(min(remaining, 0.2))

    def stop(self, sig: signal.Signals = signal.SIGINT, seconds: float = 30) -> int:
        """What Ctrl-C in the terminal does: the signal to the whole foreground group."""
        if self.process.poll() is None:
            os.killpg(self.process.pid, sig)
        try:
            code = self.process.wait(seconds)
        except subprocess.TimeoutExpired:
            os.killpg(self.process.pid, signal.SIGKILL)
            raise
        self._reader.join(5)
        return code


class Sandbox:
    """Temporary settings and state folders, and free ports for everything `make start` runs."""

    def __init__(self, tmp_path: Path, **overrides: str) -> None:
        self.tmp_path = tmp_path
        self.functions_port = free_port()
        self.agents_port = free_port()
        self.eventgrid_port = free_port()
        self.blob_port, self.queue_port, self.table_port = free_port(), free_port(), free_port()
        sample = json.loads((ROOT / "local.settings.sample.json").read_text())
        values: dict[str, str] = sample["Values"]
        values["AZURE_AI_PROJECT_ENDPOINT"] = (
            f"http://127.0.0.1:{self.agents_port}/api/projects/local"
        )
        values["EVENTGRID_TOPIC_ENDPOINT"] = f"http://127.0.0.1:{self.eventgrid_port}/api/events"
        # Azurite's well-known development account, on this test's table port.
        values["AzureWebJobsStorage"] = (
            "DefaultEndpointsProtocol=http;AccountName=devstoreaccount1;AccountKey="
            "Eby8vdM02xNOcqFlqUwJPLlmEtlCDXJ1OUzFT50uSRZ6IFsuFq2UVErCz4I6tq/K1SZFPTOtr/KBHBeksoGMGw==;"
            f"TableEndpoint=http://127.0.0.1:{self.table_port}/devstoreaccount1;"
        )
        values.update(overrides)
        self.settings = tmp_path / "local.settings.json"
        self.settings.write_text(json.dumps(sample, indent=2))
        self.azurite_dir = tmp_path / "azurite"
        self.offline_dir = tmp_path / "offline"
        env = {k: v for k, v in os.environ.items() if k not in values}
        env.pop("MAKEFLAGS", None)
        env.pop("MFLAGS", None)
        env["PATH"] = path_without_func()
        self.env = env
        self.started: list[MakeStart] = []

    @property
    def ports(self) -> list[int]:
        return [
            self.functions_port,
            self.agents_port,
            self.eventgrid_port,
            self.blob_port,
            self.queue_port,
            self.table_port,
        ]

    def make_start(self, offline_args: str = "") -> MakeStart:
        args = [
            "make",
            "--no-print-directory",
            # The test venv and node_modules are installed: never reinstall here.
            "-o",
            ".venv/.installed",
            "-o",
            "node_modules/.installed",
            "start",
            f"SETTINGS={self.settings}",
            f"OFFLINE_DIR={self.offline_dir}",
            f"AZURITE_DIR={self.azurite_dir}",
            f"FUNCTIONS_PORT={self.functions_port}",
            f"AZURITE_ARGS=--blobPort {self.blob_port} --queuePort {self.queue_port} "
            f"--tablePort {self.table_port}",
            f"OFFLINE_ARGS={offline_args}",
        ]
        started = MakeStart(args, self.env)
        self.started.append(started)
        return started

    def leftovers(self) -> list[str]:
        """Processes still running whose command line names this sandbox."""
        found = []
        marker = str(self.tmp_path)
        for entry in Path("/proc").iterdir():
            if not entry.name.isdigit():
                continue
            try:
                cmdline = (entry / "cmdline").read_bytes().replace(b"\0", b" ").decode()
            except OSError:
                continue
            if marker in cmdline:
                found.append(f"{entry.name}: {cmdline}")
        return found

    def assert_nothing_left(self) -> None:
        deadline = time.monotonic() + 20
        while time.monotonic() < deadline:
            if not self.leftovers() and not any(port_open(p) for p in self.ports):
                return
            time.sleep(0.2)
        assert self.leftovers() == []
        assert [p for p in self.ports if port_open(p)] == []


@pytest.fixture
def sandbox(tmp_path: Path) -> Iterator[Sandbox]:
    box = Sandbox(tmp_path)
    yield box
    for started in box.started:
        if started.process.poll() is None:
            os.killpg(started.process.pid, signal.SIGKILL)


def send_curl(command: str) -> tuple[int, dict[str, Any]]:
    """The printed `curl -i -X POST URL -H ... -d BODY`, sent with urllib."""
    words = shlex.split(command)
    assert words[0] == "curl"
    url = next(w for w in words if w.startswith("http://"))
    headers = dict(words[i + 1].split(": ", 1) for i, word in enumerate(words) if word == "-H")
    body = words[words.index("-d") + 1].encode()
    request = urllib.request.Request(url, data=body, headers=headers, method="POST")  # noqa: S310
    with urllib.request.urlopen(request, timeout=30) as response:  # noqa: S310
        return response.status, json.loads(response.read())


def get_json(url: str, key: str) -> dict[str, Any]:
    request = urllib.request.Request(url, headers={"x-functions-key": key})  # noqa: S310
    with urllib.request.urlopen(request, timeout=30) as response:  # noqa: S310
        result: dict[str, Any] = json.loads(response.read())
        return result


def banner_key(started: MakeStart) -> str:
    line = started.wait_for(r"x-functions-key: ", 1)
    match = re.search(r"x-functions-key: ([A-Za-z0-9_-]+)", line)
    assert match is not None
    return match.group(1)


def test_make_start_without_core_tools_runs_the_app_and_delivers_the_event(
    sandbox: Sandbox,
) -> None:
    began = time.monotonic()
    started = sandbox.make_start()
    started.wait_for(re.escape(READY), 90)
    output = started.output
    assert "an emulation of the Functions host for local development" in output
    assert "npm install -g azure-functions-core-tools@4 --unsafe-perm true" in output
    curl = started.wait_for(r"^\s+curl -i -X POST ", 1).strip()
    assert f"http://localhost:{sandbox.functions_port}/api/runs" in curl
    key = banner_key(started)

    # Without the key: 401, as the Functions host answers.
    unkeyed = urllib.request.Request(
        f"http://localhost:{sandbox.functions_port}/api/runs", data=b"{}", method="POST"
    )
    with pytest.raises(urllib.error.HTTPError) as refused:
        urllib.request.urlopen(unkeyed, timeout=10)  # noqa: S310
    assert refused.value.code == 401

    status, accepted = send_curl(curl)
    assert status == 202
    submission = accepted["id"]
    line = started.wait_for(rf"AgentRunCompleted .*{submission}", 60)
    assert "status completed" in line
    assert time.monotonic() - began < 180, "a newcomer sees the event within 3 minutes"
    view = get_json(accepted["statusUrl"], key)
    assert view["status"] == "completed"

    # The banner's second curl: a Foundry echo agent through the Responses API backend.
    foundry = [
        line.strip()
        for line in started.output.splitlines()
        if line.strip().startswith("curl -i -X POST ") and '"agent"' in line
    ]
    assert foundry, "the banner shows a Foundry agent's curl"
    status, accepted = send_curl(foundry[0])
    assert status == 202
    line = started.wait_for(rf"AgentRunCompleted .*{accepted['id']}", 60)
    assert "status completed" in line
    view = get_json(accepted["statusUrl"], key)
    assert view["agentRun"]["api"] == "responses"
    assert view["result"]["output"]["text"].endswith("hello")

    code = started.stop(signal.SIGINT)
    assert code != 0 or "offline services stopped" in started.output
    assert "offline services stopped" in started.output
    sandbox.assert_nothing_left()


def test_a_run_submitted_before_a_restart_finishes_after_it(tmp_path: Path) -> None:
    # A slow agent (10 s), polled every second or two, without the start's fast path.
    box = Sandbox(tmp_path, POLL_INITIAL_SECONDS="1", POLL_MAX_SECONDS="2", FAST_PATH_SECONDS="0")
    agent_seconds = "--agent-seconds slow-echo=10"
    try:
        first = box.make_start(agent_seconds)
        first.wait_for(re.escape(READY), 90)
        key = banner_key(first)
        described = json.loads((box.offline_dir / "services.json").read_text())
        slow = described["agents"]["slow-echo"]
        request = urllib.request.Request(
            f"http://localhost:{box.functions_port}/api/runs",
            data=json.dumps({"agentId": slow, "input": "across a restart"}).encode(),
            headers={"x-functions-key": key, "Content-Type": "application/json"},
            method="POST",
        )
        with urllib.request.urlopen(request, timeout=30) as response:  # noqa: S310
            assert response.status == 202
            accepted = json.loads(response.read())
        submission = accepted["id"]
        first.wait_for(r"agent run run_\w+ started", 30)
        assert get_json(accepted["statusUrl"], key)["status"] not in ("completed", "failed")
        first.stop(signal.SIGTERM)
        assert not re.search(rf"AgentRunCompleted .*{submission}", first.output)
        box.assert_nothing_left()
        saved = json.loads((box.azurite_dir / "devhost" / "durable-state.json").read_text())
        assert any(
            i["instanceId"] == submission and i["status"] == "Running" for i in saved["instances"]
        )

        second = box.make_start(agent_seconds)
        second.wait_for(re.escape(READY), 90)
        assert "Resumed 1 orchestration instance(s)" in second.output
        assert banner_key(second) == key, "the function key is kept across restarts"
        line = second.wait_for(rf"AgentRunCompleted .*{submission}", 60)
        assert "status completed" in line
        view = get_json(accepted["statusUrl"], key)
        assert view["status"] == "completed"
        assert view["result"]["output"]["text"] == "echo: across a restart"
        second.stop(signal.SIGINT)
        box.assert_nothing_left()
    finally:
        for started in box.started:
            if started.process.poll() is None:
                os.killpg(started.process.pid, signal.SIGKILL)


def test_nothing_is_left_running_when_make_itself_is_killed(sandbox: Sandbox) -> None:
    # E.g. a caller's timeout: make gets SIGKILL, its recipe's shell and children do not.
    started = sandbox.make_start()
    started.wait_for(re.escape(READY), 90)
    os.kill(started.process.pid, signal.SIGKILL)
    started.process.wait(10)
    sandbox.assert_nothing_left()

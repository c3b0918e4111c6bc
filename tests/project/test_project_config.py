"""Project configuration: host.json against the Functions host schema, settings documented,
and `make start` explaining itself where Core Tools are missing and leaving nothing running
(Azurite, offline services) when `func` ends."""

from __future__ import annotations

import contextlib
import json
import os
import re
import shutil
import signal
import subprocess
import time
from pathlib import Path

import jsonschema
import pytest

from tests.processes import free_port, port_open, run_captured

ROOT = Path(__file__).resolve().parents[2]
SPECS = ROOT / "devhost" / "specs"


def test_host_json_validates_against_the_host_schema() -> None:
    schema = json.loads((SPECS / "functions-host.schema.json").read_text())
    host = json.loads((ROOT / "host.json").read_text())
    jsonschema.validate(host, schema)
    assert host["extensionBundle"]["id"] == "Microsoft.Azure.Functions.ExtensionBundle"
    assert host["extensionBundle"]["version"].startswith("[4.")
    assert host["extensions"]["durableTask"]["hubName"]


# Microsoft.Extensions.Logging levels, most verbose first.
LOG_LEVELS = ["Trace", "Debug", "Information", "Warning", "Error", "Critical", "None"]


def effective_log_level(log_level: dict[str, str], category: str) -> str:
    """The level host.json gives `category`: its longest matching prefix, else `default`."""
    matches = [key for key in log_level if category == key or category.startswith(f"{key}.")]
    return log_level[max(matches, key=len)] if matches else log_level.get("default", "Information")


def test_host_json_keeps_request_telemetry() -> None:
    """Application Insights `requests` (one per function execution) come from the `Host.Results`
    category, written at Information: above that level only failed executions are recorded
    (https://learn.microsoft.com/azure/azure-functions/configure-monitoring#configure-categories
    and the caution under #configure-log-levels). `Function.<name>` carries dependencies and
    the executions' traces the same way. Requests and exceptions stay out of sampling, so every
    execution and every failure is kept (#configure-sampling)."""
    logging_config = json.loads((ROOT / "host.json").read_text())["logging"]
    levels = logging_config["logLevel"]
    information = LOG_LEVELS.index("Information")
    for category in ("Host.Results", "Function.submit_run", "Host.Aggregator"):
        level = effective_log_level(levels, category)
        assert LOG_LEVELS.index(level) <= information, (category, level)
    sampling = logging_config["applicationInsights"]["samplingSettings"]
    assert sampling["isEnabled"] is True
    assert {"Request", "Exception"} <= set(sampling["excludedTypes"].split(";"))
    # The check itself: the value it replaced would fail.
    assert effective_log_level({**levels, "Host.Results": "Error"}, "Host.Results") == "Error"
    assert effective_log_level({"default": "Warning", "Host": "Error"}, "Host.Results") == "Error"


def test_the_schema_check_would_catch_a_typo() -> None:
    schema = json.loads((SPECS / "functions-host.schema.json").read_text())
    host = json.loads((ROOT / "host.json").read_text())
    host["extensions"]["durableTask"]["hubNmae"] = host["extensions"]["durableTask"].pop("hubName")
    with pytest.raises(jsonschema.ValidationError):
        jsonschema.validate(host, schema)


# What settings.py reads of the machine's environment, not app settings: where a netrc lives,
# and the managed identity endpoint the platform sets in Azure.
MACHINE_ENVIRONMENT = {"HOME", "NETRC", "USERPROFILE", "IDENTITY_ENDPOINT", "MSI_ENDPOINT"}


def test_every_setting_the_app_reads_is_in_the_sample() -> None:
    source = (ROOT / "shared" / "adapters" / "settings.py").read_text()
    read = set(re.findall(r'"([A-Z][A-Z0-9_]{3,})"', source)) - MACHINE_ENVIRONMENT
    sample = json.loads((ROOT / "local.settings.sample.json").read_text())["Values"]
    assert read, "no settings found in shared/adapters/settings.py"
    assert read <= set(sample), sorted(read - set(sample))
    assert sample["AzureWebJobsStorage"] == "UseDevelopmentStorage=true"
    assert sample["FUNCTIONS_WORKER_RUNTIME"] == "python"


# Without `func`, `make start` runs the app on the development host: see
# tests/devhost/test_make_start.py (banner, the printed curl, the event, nothing left running).


# --- make start: nothing left running when `func` ends -----------------------------------

# Stands in for Core Tools: waits until Azurite's blob port answers (so Azurite really is up),
# says so, holds for FAKE_FUNC_HOLD seconds, then exits as `func start` would.
FAKE_FUNC = """#!/usr/bin/env bash
for i in $(seq 1 600); do
  if (exec 3<>"/dev/tcp/127.0.0.1/$FAKE_BLOB_PORT") 2>/dev/null; then
    echo up > "$FAKE_MARKER"; sleep "${FAKE_FUNC_HOLD:-0}"; exit 0
  fi
  sleep 0.1
done
echo never > "$FAKE_MARKER"
"""


def _processes_mentioning(text: str) -> list[str]:
    # ww: full command lines (ps cuts them to 80 columns when not writing to a terminal).
    listed = run_captured(["ps", "-axww", "-o", "pid=,command="], timeout=30)
    assert listed.returncode == 0, listed.stderr
    return [line.strip() for line in listed.stdout.splitlines() if text in line]


def _pid_alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    return True


class _MakeStart:
    """`make start` with a fake `func`, Azurite on free ports and the offline services."""

    def __init__(self, tmp_path: Path) -> None:
        bin_dir = tmp_path / "bin"
        bin_dir.mkdir()
        (bin_dir / "func").write_text(FAKE_FUNC)
        (bin_dir / "func").chmod(0o755)
        self.azurite_dir = tmp_path / "azurite"
        self.offline_dir = tmp_path / "offline"
        self.marker = tmp_path / "func-saw-azurite"
        self.blob_port, queue_port, table_port = free_port(), free_port(), free_port()
        sample = json.loads((ROOT / "local.settings.sample.json").read_text())
        values = sample["Values"]
        values["AZURE_AI_PROJECT_ENDPOINT"] = f"http://127.0.0.1:{free_port()}/api/projects/local"
        values["EVENTGRID_TOPIC_ENDPOINT"] = f"http://127.0.0.1:{free_port()}/api/events"
        settings = tmp_path / "local.settings.json"
        settings.write_text(json.dumps(sample))
        self.args = [
            "make",
            "--no-print-directory",
            "start",
            f"SETTINGS={settings}",
            f"OFFLINE_DIR={self.offline_dir}",
            f"AZURITE_DIR={self.azurite_dir}",
            f"FUNCTIONS_PORT={free_port()}",
            f"AZURITE_ARGS=--blobPort {self.blob_port} --queuePort {queue_port}"
            f" --tablePort {table_port}",
        ]
        self.env = {
            **os.environ,
            "PATH": f"{bin_dir}{os.pathsep}{os.environ['PATH']}",
            "FAKE_BLOB_PORT": str(self.blob_port),
            "FAKE_MARKER": str(self.marker),
        }

    def offline_pid(self) -> int:
        return int((self.offline_dir / "services.pid").read_text())

    def leftovers(self) -> list[str]:
        return _processes_mentioning(str(self.azurite_dir))

    def kill_leftovers(self) -> None:
        for line in self.leftovers():
            with contextlib.suppress(ProcessLookupError, ValueError):
                os.kill(int(line.split()[0]), signal.SIGKILL)


needs_node = pytest.mark.skipif(
    shutil.which("npx") is None or not (ROOT / "node_modules" / ".bin" / "azurite").exists(),
    reason="Azurite (npm) is not installed",
)


@needs_node
def test_make_start_stops_azurite_and_the_offline_services_when_func_exits(
    tmp_path: Path,
) -> None:
    start = _MakeStart(tmp_path)
    try:
        # Output to a file, not a pipe: a leftover Azurite would hold a pipe open.
        with (tmp_path / "make.log").open("w") as log:
            returncode = subprocess.run(
                start.args,
                cwd=ROOT,
                env=start.env,
                stdout=log,
                stderr=subprocess.STDOUT,
                timeout=180,
                check=False,
            ).returncode
        output = (tmp_path / "make.log").read_text()
        assert returncode == 0, output
        assert start.marker.read_text().strip() == "up", "func ran before Azurite answered"
        assert "Offline mode" in output
        assert "offline services stopped" in output
        assert start.leftovers() == [], output
        assert not port_open(start.blob_port)
        assert not (start.offline_dir / "services.pid").exists()
    finally:
        start.kill_leftovers()


@needs_node
def test_make_start_stops_everything_on_ctrl_c(tmp_path: Path) -> None:
    start = _MakeStart(tmp_path)
    start.env["FAKE_FUNC_HOLD"] = "120"
    # Its own process group, so that SIGINT reaches make, its shell and func as Ctrl-C would.
    log_path = tmp_path / "make.log"
    log = log_path.open("w")
    make = subprocess.Popen(
        start.args,
        cwd=ROOT,
        env=start.env,
        stdout=log,
        stderr=subprocess.STDOUT,
        start_new_session=True,
    )
    try:
        deadline = time.monotonic() + 120
        while not start.marker.exists() and time.monotonic() < deadline:
            assert make.poll() is None, log_path.read_text()
            time.sleep(0.1)
        assert start.marker.read_text().strip() == "up"
        offline_pid = start.offline_pid()
        assert _pid_alive(offline_pid)
        assert start.leftovers(), "Azurite is not running"
        os.killpg(make.pid, signal.SIGINT)
        make.wait(timeout=60)
        output = log_path.read_text()
        assert make.returncode != 0, output
        assert start.leftovers() == [], output
        assert not port_open(start.blob_port)
        assert not _pid_alive(offline_pid)
    finally:
        if make.poll() is None:
            os.killpg(make.pid, signal.SIGKILL)
            make.wait()
        log.close()
        start.kill_leftovers()

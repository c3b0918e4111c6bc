"""azure-functions-doctor (PyPI) finds no failure in the app.

`make test` installs the doctor into .venv-doctor (requirements-doctor.txt) and this runs every
rule (`--profile full`) on the repository root, as a developer would. Its settings,
[tool.azure-functions-doctor] in pyproject.toml, keep tests/ out of the scan: the test bed and
its sample apps (deliberately broken or nondeterministic ones included) are not the app, and
.funcignore keeps them out of the deployment.
"""

from __future__ import annotations

import json
import os
from pathlib import Path
from typing import Any

import pytest

from tests.processes import run_captured

ROOT = Path(__file__).resolve().parents[2]
DOCTOR = ROOT / ".venv-doctor" / "bin" / "azure-functions-doctor"
SETUP_HINT = (
    "azure-functions-doctor is not installed; run `make test` (or: python3.11 -m venv "
    ".venv-doctor && .venv-doctor/bin/pip install -r requirements-doctor.txt)"
)


def run_doctor(tmp_path: Path) -> tuple[list[dict[str, Any]], dict[str, int]]:
    if not DOCTOR.is_file():
        pytest.fail(SETUP_HINT)
    report = tmp_path / "doctor.json"
    summary = tmp_path / "doctor-summary.json"
    result = run_captured(
        [
            str(DOCTOR),
            "doctor",
            "--path",
            str(ROOT),
            "--profile",
            "full",
            "--format",
            "json",
            "--output",
            str(report),
            "--summary-json",
            str(summary),
        ],
        env=dict(os.environ),
        timeout=300,
    )
    assert report.is_file(), result.stdout + result.stderr
    items = [
        item for section in json.loads(report.read_text())["results"] for item in section["items"]
    ]
    counts: dict[str, int] = json.loads(summary.read_text())
    assert result.returncode == (1 if counts["failed"] else 0), result.stdout + result.stderr
    return items, counts


@pytest.mark.slow  # about 20 s: the doctor walks the whole tree, .venv and node_modules too
def test_doctor_finds_no_failure_in_the_app(tmp_path: Path) -> None:
    items, counts = run_doctor(tmp_path)
    failures = [f"{item['rule_id']}: {item['value']}" for item in items if item["status"] == "fail"]
    assert failures == []
    assert counts["failed"] == 0
    # It did look at the app: the v2 decorators, host.json's Durable settings, the
    # orchestrator, the requirements.
    status = {item["rule_id"]: item["status"] for item in items}
    for rule in (
        "check_programming_model_v2",
        "check_blueprint_registration",
        "check_durabletask_config",
        "check_durable_nondeterminism",
        "check_azure_functions_library",
        "check_azure_functions_worker",
        "check_unpinned_requirements",
        "check_unused_files",
    ):
        assert status.get(rule) == "pass", rule


def test_the_tool_folders_stay_out_of_the_deployment() -> None:
    funcignore = (ROOT / ".funcignore").read_text().split()
    for entry in ("tests/", ".venv-worker/", ".venv-doctor/"):
        assert entry in funcignore, entry

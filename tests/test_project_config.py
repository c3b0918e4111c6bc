"""Project configuration: host.json against the Functions host schema, settings documented,
and `make start` explaining itself where Core Tools are missing."""

from __future__ import annotations

import json
import os
import re
import shutil
from pathlib import Path

import jsonschema
import pytest

from tests.processes import run_captured

ROOT = Path(__file__).resolve().parents[1]
SPECS = ROOT / "tests" / "testbed" / "specs"


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


# What settings.py reads of the machine's environment, not app settings (where a netrc lives).
MACHINE_ENVIRONMENT = {"HOME", "NETRC", "USERPROFILE"}


def test_every_setting_the_app_reads_is_in_the_sample() -> None:
    source = (ROOT / "shared" / "settings.py").read_text()
    read = set(re.findall(r'"([A-Z][A-Z0-9_]{3,})"', source)) - MACHINE_ENVIRONMENT
    sample = json.loads((ROOT / "local.settings.sample.json").read_text())["Values"]
    assert read, "no settings found in shared/settings.py"
    assert read <= set(sample), sorted(read - set(sample))
    assert sample["AzureWebJobsStorage"] == "UseDevelopmentStorage=true"
    assert sample["FUNCTIONS_WORKER_RUNTIME"] == "python"


@pytest.mark.skipif(shutil.which("func") is not None, reason="Core Tools are installed here")
def test_make_start_says_how_to_install_core_tools() -> None:
    env = dict(os.environ)
    result = run_captured(["make", "--no-print-directory", "start"], env=env, timeout=120)
    assert result.returncode != 0
    assert "Core Tools" in result.stderr
    assert "npm install -g azure-functions-core-tools@4" in result.stderr

"""The Azure deployment (azure.yaml, infra/): parses, passes checkov, and wires what the app reads.

Bicep cannot be compiled here (the Bicep CLI downloads a binary), so the templates are checked
by parsing them with pycep-parser and scanning them with checkov. Both live in their own venv,
`.venv-infra` (checkov pins many dependencies), and run as subprocesses:

    python3.11 -m venv .venv-infra && .venv-infra/bin/pip install -r infra/requirements-checks.txt

`CHECKOV_BIN` overrides the checkov executable; pycep runs with the Python beside it.
"""

from __future__ import annotations

import json
import os
import re
import subprocess
from pathlib import Path
from typing import Any, cast

import pytest

from tests.processes import run_captured

ROOT = Path(__file__).resolve().parents[2]
INFRA = ROOT / "infra"
MAIN_BICEP = INFRA / "main.bicep"
PARAMETERS = INFRA / "main.parameters.json"
AZURE_YAML = ROOT / "azure.yaml"

CHECKOV_BIN = Path(os.environ.get("CHECKOV_BIN", str(ROOT / ".venv-infra" / "bin" / "checkov")))
INFRA_PYTHON = CHECKOV_BIN.parent / "python"
SETUP_HINT = (
    "the infra checkers are not installed; run: python3.11 -m venv .venv-infra && "
    ".venv-infra/bin/pip install -r infra/requirements-checks.txt (or set CHECKOV_BIN)"
)

# Every app setting the app reads that the deployment must provide.
APP_SETTINGS_READ = {
    "AZURE_AI_PROJECT_ENDPOINT",
    "EVENTGRID_TOPIC_ENDPOINT",
    "EVENT_SCHEMA",
    "EVENT_SOURCE",
    "AZURE_CLIENT_ID",
    "APPLICATIONINSIGHTS_CONNECTION_STRING",
    "AzureWebJobsStorage__accountName",
    # Caller isolation, set from azd parameters.
    "ALLOWED_AGENTS",
    "ALLOW_CALLER_THREADS",
    "AUTH_MODE",
}

# Built-in roles: GUID -> name, as the comments in main.bicep name them.
ROLES = {
    "ba92f5b4-2d11-453d-a403-e96b0029c9fe": "Storage Blob Data Contributor",
    "974c5e8b-45b9-4653-ba55-5f855dd0fb88": "Storage Queue Data Contributor",
    "0a9a7e1f-b9d0-4cc4-a60d-0319b160aaa3": "Storage Table Data Contributor",
    "d5a91429-5739-47e2-a06b-3470a27159e7": "EventGrid Data Sender",
    "3913510d-42f4-4e42-8a64-420c390055eb": "Monitoring Metrics Publisher",
    "53ca6127-db72-4b80-b1b0-d745d6d5456d": "Azure AI User",
}

SKIP_COMMENT = re.compile(r"^\s*//\s*checkov:skip=(?P<id>CKV2?_AZURE_\d+):(?P<reason>.*)$")

# Parses every file named on the command line; prints {path: tree} or {path: {"error": ...}}.
PYCEP_SCRIPT = """
import json, sys
from pycep import BicepParser
out = {}
for path in sys.argv[1:]:
    try:
        with open(path, encoding="utf-8") as f:
            out[path] = BicepParser().parse(text=f.read())
    except Exception as e:
        out[path] = {"error": f"{type(e).__name__}: {e}"}
json.dump(out, sys.stdout, default=str)
"""


def _run(args: list[str], timeout: float) -> subprocess.CompletedProcess[str]:
    return run_captured(args, timeout=timeout)


def _as_dict(value: object) -> dict[str, Any]:
    assert isinstance(value, dict), f"expected an object, got {value!r}"
    return cast(dict[str, Any], value)


def _bicep_files() -> list[Path]:
    return sorted(INFRA.rglob("*.bicep"))


@pytest.fixture(scope="module")
def trees() -> dict[str, dict[str, Any]]:
    """pycep's parse of every .bicep file, keyed by path relative to the repo."""
    if not INFRA_PYTHON.exists():
        pytest.fail(f"{INFRA_PYTHON} not found: {SETUP_HINT}")
    files = [str(p.relative_to(ROOT)) for p in _bicep_files()]
    proc = _run([str(INFRA_PYTHON), "-c", PYCEP_SCRIPT, *files], timeout=300)
    assert proc.returncode == 0, proc.stderr[-4000:]
    parsed = _as_dict(json.loads(proc.stdout))
    return {path: _as_dict(tree) for path, tree in parsed.items()}


@pytest.fixture(scope="module")
def main_tree(trees: dict[str, dict[str, Any]]) -> dict[str, Any]:
    return trees[str(MAIN_BICEP.relative_to(ROOT))]


@pytest.fixture(scope="module")
def checkov_report() -> dict[str, Any]:
    """One checkov run over infra/ (bicep framework), as its JSON report."""
    if not CHECKOV_BIN.exists():
        pytest.fail(f"{CHECKOV_BIN} not found: {SETUP_HINT}")
    proc = _run(
        [
            str(CHECKOV_BIN),
            "--directory",
            str(INFRA),
            "--framework",
            "bicep",
            "--output",
            "json",
            "--compact",
            # Offline: no guideline download from the vendor's platform.
            "--skip-download",
        ],
        timeout=300,
    )
    # 0: no failed checks, 1: some failed (reported below); anything else is a crash.
    assert proc.returncode in (0, 1), f"checkov exited {proc.returncode}: {proc.stderr[-4000:]}"
    report = json.loads(proc.stdout)
    if isinstance(report, list):  # one entry per framework when several ran
        (report,) = [r for r in report if r.get("check_type") == "bicep"]
    return _as_dict(report)


def _resources(tree: dict[str, Any]) -> dict[str, dict[str, Any]]:
    return {name: _as_dict(res) for name, res in _as_dict(tree["resources"]).items()}


def _config(resource: dict[str, Any]) -> dict[str, Any]:
    """A resource's body; a conditional resource nests it one level down."""
    config = _as_dict(resource["config"])
    return _as_dict(config["config"]) if "condition" in config else config


def _resolve(tree: dict[str, Any], value: object) -> object:
    """Follows a bare variable reference (pycep renders it as the variable's name)."""
    variables = _as_dict(tree.get("variables", {}))
    if isinstance(value, str) and value in variables:
        return _as_dict(variables[value])["value"]
    return value


def _resource_of_type(tree: dict[str, Any], type_: str) -> dict[str, Any]:
    found = [r for r in _resources(tree).values() if r["type"] == type_ and not r["existing"]]
    assert len(found) == 1, f"expected one {type_}, found {len(found)}"
    return found[0]


def test_every_bicep_file_parses(trees: dict[str, dict[str, Any]]) -> None:
    files = {str(p.relative_to(ROOT)) for p in _bicep_files()}
    assert "infra/main.bicep" in files
    assert set(trees) == files
    errors = {path: tree["error"] for path, tree in trees.items() if "error" in tree}
    assert not errors, errors
    for path, tree in trees.items():
        assert tree.get("resources"), f"{path} declares no resources"


def test_checkov_reports_no_failed_checks(checkov_report: dict[str, Any]) -> None:
    summary = _as_dict(checkov_report["summary"])
    results = _as_dict(checkov_report["results"])
    failed = [
        f"{c['check_id']} {c['resource']} ({c['file_path']}): {c['check_name']}"
        for c in results.get("failed_checks", [])
    ]
    assert summary["parsing_errors"] == 0, summary
    assert summary["failed"] == 0, "\n".join(failed)
    # Not vacuous: checkov parsed the templates and actually evaluated checks.
    assert summary["resource_count"] > 0, summary
    assert summary["passed"] > 0, summary


def test_every_checkov_skip_is_in_the_bicep_with_a_reason(checkov_report: dict[str, Any]) -> None:
    written: set[str] = set()
    for path in _bicep_files():
        for number, line in enumerate(path.read_text(encoding="utf-8").splitlines(), 1):
            if "checkov:skip" not in line:
                continue
            match = SKIP_COMMENT.match(line)
            assert match, f"{path.name}:{number}: not of the form // checkov:skip=ID:reason"
            assert len(match["reason"].strip()) >= 30, f"{path.name}:{number}: give a reason"
            written.add(match["id"])
    skipped = _as_dict(checkov_report["results"]).get("skipped_checks", [])
    for check in skipped:
        comment = check["check_result"].get("suppress_comment", "")
        assert comment, check["check_id"]
        assert comment != "No comment provided", check["check_id"]
    # Each suppression written in the Bicep is one checkov applied, and no skip comes from
    # anywhere else (a config file or a command-line flag).
    assert {c["check_id"] for c in skipped} == written


def test_parameters_file_uses_azd_substitutions(main_tree: dict[str, Any]) -> None:
    document = _as_dict(json.loads(PARAMETERS.read_text(encoding="utf-8")))
    assert "deploymentParameters.json" in document["$schema"]
    parameters = _as_dict(document["parameters"])
    assert parameters["environmentName"] == {"value": "${AZURE_ENV_NAME}"}
    assert parameters["location"] == {"value": "${AZURE_LOCATION}"}
    declared = _as_dict(main_tree["parameters"])
    assert set(parameters) <= set(declared), set(parameters) - set(declared)
    # Every parameter without a default gets its value from the file.
    required = {name for name, p in declared.items() if "default" not in _as_dict(p)}
    assert required <= set(parameters), required - set(parameters)
    for name, entry in parameters.items():
        value = _as_dict(entry)["value"]
        assert isinstance(value, str), name
        assert re.fullmatch(r"\$\{[A-Z][A-Z0-9_]*(=[^}]*)?\}", value), f"{name}: {value}"


def test_app_settings_cover_what_the_app_reads(main_tree: dict[str, Any]) -> None:
    site = _config(_resource_of_type(main_tree, "Microsoft.Web/sites"))
    site_config = _as_dict(_as_dict(site["properties"])["siteConfig"])
    settings = _resolve(main_tree, site_config["appSettings"])
    assert isinstance(settings, list)
    names = [_as_dict(s)["name"] for s in settings]
    assert len(names) == len(set(names)), names
    missing = APP_SETTINGS_READ - set(names)
    assert not missing, missing
    # Identity everywhere: no keys, no storage connection string.
    assert "EVENTGRID_TOPIC_KEY" not in names
    assert "AzureWebJobsStorage" not in names
    assert not [n for n in names if re.search(r"KEY|SECRET|PASSWORD", n, re.IGNORECASE)]
    by_name = {_as_dict(s)["name"]: _as_dict(s)["value"] for s in settings}
    assert by_name["AzureWebJobsStorage__credential"] == "managedidentity"
    assert "AzureWebJobsStorage__clientId" in by_name
    assert str(by_name["APPLICATIONINSIGHTS_AUTHENTICATION_STRING"]).endswith(";Authorization=AAD")
    # Flex Consumption rejects these as app settings (they live in functionAppConfig).
    assert not {"FUNCTIONS_WORKER_RUNTIME", "FUNCTIONS_EXTENSION_VERSION"} & set(names)


def test_function_app_is_flex_consumption(main_tree: dict[str, Any]) -> None:
    plan = _config(_resource_of_type(main_tree, "Microsoft.Web/serverfarms"))
    assert plan["sku"] == {"name": "FC1", "tier": "FlexConsumption"}
    site = _config(_resource_of_type(main_tree, "Microsoft.Web/sites"))
    assert site["kind"] == "functionapp,linux"
    assert "'azd-service-name': 'api'" in MAIN_BICEP.read_text(encoding="utf-8")
    properties = _as_dict(site["properties"])
    assert properties["httpsOnly"] is True
    site_config = _as_dict(properties["siteConfig"])
    assert site_config["minTlsVersion"] == "1.2"
    assert site_config["ftpsState"] == "Disabled"
    assert site_config["remoteDebuggingEnabled"] is False
    app_config = _as_dict(properties["functionAppConfig"])
    assert app_config["runtime"] == {"name": "python", "version": "3.11"}
    storage = _as_dict(_as_dict(app_config["deployment"])["storage"])
    assert storage["type"] == "blobContainer"
    assert _as_dict(storage["authentication"])["type"] == "UserAssignedIdentity"
    scale = _as_dict(app_config["scaleAndConcurrency"])
    parameters = _as_dict(main_tree["parameters"])
    assert _as_dict(parameters[scale["instanceMemoryMB"]])["default"] == 2048
    assert 1 <= _as_dict(parameters[scale["maximumInstanceCount"]])["default"] <= 100


def test_storage_and_topic_are_identity_only(main_tree: dict[str, Any]) -> None:
    storage = _as_dict(
        _config(_resource_of_type(main_tree, "Microsoft.Storage/storageAccounts"))["properties"]
    )
    assert storage["allowSharedKeyAccess"] is False
    assert storage["allowBlobPublicAccess"] is False
    assert storage["minimumTlsVersion"] == "TLS1_2"
    assert storage["supportsHttpsTrafficOnly"] is True
    containers = [
        _config(r)["name"]
        for r in _resources(main_tree).values()
        if r["type"] == "Microsoft.Storage/storageAccounts/blobServices/containers"
    ]
    assert "deadletters" in [_resolve(main_tree, c) for c in containers]
    topic = _config(_resource_of_type(main_tree, "Microsoft.EventGrid/topics"))
    assert topic["identity"] == {"type": "SystemAssigned"}
    topic_properties = _as_dict(topic["properties"])
    assert topic_properties["disableLocalAuth"] is True
    assert topic_properties["minimumTlsVersionAllowed"] == "1.2"
    schema = _as_dict(_as_dict(main_tree["parameters"])["eventSchema"])
    assert schema["default"] == "eventgrid"
    text = MAIN_BICEP.read_text(encoding="utf-8")
    assert "eventSchema == 'cloudevents' ? 'CloudEventSchemaV1_0' : 'EventGridSchema'" in text


def test_roles_are_named_guid_constants() -> None:
    text = "\n".join(p.read_text(encoding="utf-8") for p in _bicep_files())
    for guid, name in ROLES.items():
        assert re.search(rf"'{guid}'\s*//\s*{re.escape(name)}\s*$", text, re.MULTILINE), name
    # No role is looked up by anything but these constants.
    found = set(re.findall(r"[0-9a-f]{8}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{12}", text))
    assert found == set(ROLES)


STORAGE_BLOB_DATA_OWNER = "b7e6dc6d-f1e8-4753-8033-0f276bb0955b"


def _role_assignments(tree: dict[str, Any]) -> dict[str, list[object]]:
    """Each role assignment resource: the role GUIDs it assigns (a loop assigns several)."""
    out: dict[str, list[object]] = {}
    for name, resource in _resources(tree).items():
        if resource["type"] != "Microsoft.Authorization/roleAssignments":
            continue
        config = _as_dict(resource["config"])
        body = _as_dict(config["config"]) if "loop_type" in config else _config(resource)
        role_id = _as_dict(_as_dict(body["properties"])["roleDefinitionId"])
        ref = _as_dict(_as_dict(role_id["function"])["parameters"])["resource_name_1"]
        if "loop_type" in config:
            loop = _as_dict(_as_dict(config["loop_type"])["detail"])
            assert ref == loop["item_name"], name
            items = _resolve(tree, loop["array_name"])
            assert isinstance(items, list), name
            out[name] = [_resolve(tree, item) for item in items]
        else:
            out[name] = [_resolve(tree, ref)]
    return out


def test_storage_roles_are_least_privilege(main_tree: dict[str, Any]) -> None:
    """The host storage identity gets the three data roles the Durable Azure Storage provider
    needs (functions-reference#connecting-to-host-storage-with-an-identity, Durable Functions
    row), not Storage Blob Data Owner; the topic writes dead letters as a Blob Data Contributor
    on its container only."""
    assigned = _role_assignments(main_tree)
    by_name = {
        name: {ROLES.get(str(guid), str(guid)) for guid in guids}
        for name, guids in assigned.items()
    }
    assert by_name["hostStorageRoleAssignments"] == {
        "Storage Blob Data Contributor",
        "Storage Queue Data Contributor",
        "Storage Table Data Contributor",
    }
    assert by_name["deadLetterRoleAssignment"] == {"Storage Blob Data Contributor"}
    assert by_name["publisherRoleAssignment"] == {"EventGrid Data Sender"}
    assert by_name["telemetryRoleAssignment"] == {"Monitoring Metrics Publisher"}
    every_guid = {str(guid) for guids in assigned.values() for guid in guids}
    assert STORAGE_BLOB_DATA_OWNER not in every_guid
    assert every_guid <= set(ROLES), every_guid - set(ROLES)
    text = "\n".join(p.read_text(encoding="utf-8") for p in _bicep_files())
    assert STORAGE_BLOB_DATA_OWNER not in text


def test_ai_project_role_is_optional(main_tree: dict[str, Any]) -> None:
    modules = {name: _as_dict(m) for name, m in _as_dict(main_tree["modules"]).items()}
    (module,) = [
        m
        for m in modules.values()
        if _as_dict(m["detail"])["path"] == "modules/ai-project-role.bicep"
    ]
    config = _as_dict(module["config"])
    assert config["condition"] == _not_empty("aiProjectResourceId")
    params = _as_dict(_as_dict(config["config"])["params"])
    assert (
        _resolve(main_tree, params["roleDefinitionGuid"]) == "53ca6127-db72-4b80-b1b0-d745d6d5456d"
    )


def _not_empty(parameter: str) -> dict[str, Any]:
    """pycep's rendering of `!empty(parameter)`."""
    empty = {"function": {"type": "empty", "parameters": {"item_to_test": parameter}}}
    return {"operator": {"type": "not", "operands": {"bool_value": empty}}}


def test_event_subscriptions(main_tree: dict[str, Any]) -> None:
    subscriptions = {
        name: r
        for name, r in _resources(main_tree).items()
        if r["type"] == "Microsoft.EventGrid/topics/eventSubscriptions"
    }
    assert len(subscriptions) == 2
    endpoint_types = set()
    for name, resource in subscriptions.items():
        config = _as_dict(resource["config"])
        assert "condition" in config, f"{name} must be conditional"
        properties = _as_dict(_config(resource)["properties"])
        destination = _as_dict(properties["destination"])
        endpoint_types.add(destination["endpointType"])
        if destination["endpointType"] == "AzureFunction":
            assert config["condition"] == "deploySubscription"
            target = _as_dict(destination["properties"])["resourceId"]
            assert target == "${functionApp.id}/functions/${subscriberFunctionName}"
        else:
            assert config["condition"] == _not_empty("extraWebhookUrl")
        event_filter = _as_dict(_resolve(main_tree, properties["filter"]))
        assert [_resolve(main_tree, t) for t in event_filter["includedEventTypes"]] == [
            "AgentRunCompleted"
        ]
        retry = _resolve(main_tree, properties["retryPolicy"])
        assert retry == {"maxDeliveryAttempts": 30, "eventTimeToLiveInMinutes": 1440}
        dead_letter = _as_dict(_resolve(main_tree, properties["deadLetterWithResourceIdentity"]))
        assert dead_letter["identity"] == {"type": "SystemAssigned"}
        sink = _as_dict(_as_dict(dead_letter["deadLetterDestination"])["properties"])
        assert _resolve(main_tree, sink["blobContainerName"]) == "deadletters"
        assert "deadLetterDestination" not in properties  # identity-based only
    assert endpoint_types == {"AzureFunction", "WebHook"}
    parameters = _as_dict(main_tree["parameters"])
    assert _as_dict(parameters["deploySubscription"])["default"] is False
    webhook = _as_dict(parameters["extraWebhookUrl"])
    assert webhook["default"] == ""
    assert {"type": "secure"} in webhook["decorators"]
    subscriber = _resolve(main_tree, "subscriberFunctionName")
    assert subscriber == "on_agent_run_completed"


def test_azure_yaml_declares_the_function_service() -> None:
    if not INFRA_PYTHON.exists():
        pytest.fail(f"{INFRA_PYTHON} not found: {SETUP_HINT}")
    # PyYAML comes with checkov; the app's venv does not need it.
    script = "import json, sys, yaml; json.dump(yaml.safe_load(open(sys.argv[1])), sys.stdout)"
    proc = _run([str(INFRA_PYTHON), "-c", script, str(AZURE_YAML)], timeout=60)
    assert proc.returncode == 0, proc.stderr
    project = _as_dict(json.loads(proc.stdout))
    assert _as_dict(project["services"]) == {
        "api": {"project": ".", "language": "python", "host": "function"}
    }
    assert _as_dict(project["infra"])["path"] == "infra"
    hook = _as_dict(_as_dict(project["hooks"])["postdeploy"])
    for platform in ("posix", "windows"):
        run = _as_dict(hook[platform])["run"]
        assert "DEPLOY_SUBSCRIPTION" in run
        assert "azd provision" in run

"""The real Python worker loads every function of the app, with the bindings we mean.

The emulated host reproduces the worker's indexing (devhost/functions_host/indexing.py);
here the worker's own code does it: azure-functions-runtime (requirements-worker.txt, installed
by `make test` into .venv-worker/site-packages), the worker library of
Azure/azure-functions-python-worker, whose loader.index_function_app,
loader.process_indexed_function and functions.Registry apply the Python 3.11 worker's
(azure_functions_worker) indexing and annotation rules; only some messages are worded
differently. tests/worker_indexing_driver.py calls them the way the
worker does when the host asks for the app's functions, in a process of its own with the app's
settings (local.settings.sample.json, what `func start` gives the worker), so the app module is
imported fresh as in a worker process.

One function the worker refuses fails the whole app (no function loads in Azure): an activity
annotated `payload: dict[str, Any]` did (FunctionLoadError: binding payload has invalid
non-type annotation dict[str, typing.Any], Azure/azure-functions-durable-python#468).
"""

from __future__ import annotations

import importlib.util
import json
import os
import sys
import textwrap
from pathlib import Path
from typing import Any

import pytest

from devhost.functions_host import EmulatedHost
from devhost.functions_host.errors import IndexingError
from devhost.functions_host.indexing import check_function, find_app
from tests.processes import run_captured

ROOT = Path(__file__).resolve().parents[2]
WORKER_SITE = ROOT / ".venv-worker" / "site-packages"
DRIVER = ROOT / "tests" / "worker_indexing_driver.py"
SETUP_HINT = (
    "the worker library is not installed; run `make test` (or: .venv/bin/python -m pip install "
    "--no-deps --ignore-requires-python --target .venv-worker/site-packages "
    "-r requirements-worker.txt)"
)

IN, OUT = 0, 1  # BindingInfo.Direction in FunctionRpc.proto


def app_settings_env(**extra: str) -> dict[str, str]:
    """The worker's environment: the machine's, with the app settings `func start` would set."""
    sample = json.loads((ROOT / "local.settings.sample.json").read_text())["Values"]
    env = {**os.environ, **{name: str(value) for name, value in sample.items()}, **extra}
    env["PYTHONPATH"] = str(WORKER_SITE)
    return env


def run_worker_indexing(
    app_dir: Path, tmp_path: Path, *, each: bool = False, **settings: str
) -> dict[str, Any]:
    if not (WORKER_SITE / "azure_functions_runtime" / "loader.py").is_file():
        pytest.fail(SETUP_HINT)
    out = tmp_path / "worker-index.json"
    args = [sys.executable, "-P", str(DRIVER), str(app_dir), str(out)]
    result = run_captured(
        [*args, "--each"] if each else args, env=app_settings_env(**settings), timeout=120
    )
    assert result.returncode == 0, result.stdout + result.stderr
    data: dict[str, Any] = json.loads(out.read_text())
    return data


# ---------------------------------------------------------------- the app


def http(route: str, method: str) -> dict[str, Any]:
    """An HTTP function of the relay: function key, one method, a durable client."""
    return {
        "raw_bindings": [
            {"direction": "IN", "name": "client", "type": "durableClient"},
            {
                "authLevel": "FUNCTION",
                "direction": "IN",
                "methods": [method],
                "name": "req",
                "route": route,
                "type": "httpTrigger",
            },
            {"direction": "OUT", "name": "$return", "type": "http"},
        ],
        "bindings": {
            "client": {"type": "durableClient", "direction": IN, "data_type": None},
            "req": {"type": "httpTrigger", "direction": IN, "data_type": None},
            "$return": {"type": "http", "direction": OUT, "data_type": None},
        },
        # The Durable SDK's durable_client_input wrapper takes the client binding as str (the
        # worker's "generic" binding) and builds the DurableOrchestrationClient itself.
        "input_types": {
            "req": {"binding": "httpTrigger", "pytype": "azure.functions._http.HttpRequest"},
            "client": {"binding": "generic", "pytype": "builtins.str"},
        },
        "return_type": {"binding": "http", "pytype": "azure.functions._http.HttpResponse"},
        "is_http_func": True,
        "is_async": True,
    }


def activity() -> dict[str, Any]:
    """An activity: its JSON payload and result go through azure.functions'
    ActivityTriggerConverter (binding "activityTrigger", not "generic")."""
    return {
        "raw_bindings": [{"direction": "IN", "name": "payload", "type": "activityTrigger"}],
        "bindings": {"payload": {"type": "activityTrigger", "direction": IN, "data_type": None}},
        "input_types": {"payload": {"binding": "activityTrigger", "pytype": "builtins.dict"}},
        "return_type": {"binding": "activityTrigger", "pytype": "dict[str, typing.Any]"},
        "is_http_func": False,
        "is_async": True,
    }


EXPECTED: dict[str, dict[str, Any]] = {
    "submit_run": http("runs", "POST"),
    "get_run": http("runs/{id}", "GET"),
    "cancel_run": http("runs/{id}/cancel", "POST"),
    "submit_run_tool_outputs": http("runs/{id}/tool-outputs", "POST"),
    "agent_run_orchestrator": {
        "raw_bindings": [{"direction": "IN", "name": "context", "type": "orchestrationTrigger"}],
        "bindings": {
            "context": {"type": "orchestrationTrigger", "direction": IN, "data_type": None}
        },
        # The SDK's wrapper, handle(context: OrchestrationContext) -> str, is what the worker
        # loads.
        "input_types": {
            "context": {
                "binding": "orchestrationTrigger",
                "pytype": "azure.functions._durable_functions.OrchestrationContext",
            }
        },
        "return_type": {"binding": "orchestrationTrigger", "pytype": "builtins.str"},
        "is_http_func": False,
        "is_async": False,
    },
    "start_agent_run": activity(),
    "poll_agent_run": activity(),
    "cancel_agent_run": activity(),
    "submit_tool_outputs": activity(),
    "publish_run_event": activity(),
    "on_agent_run_completed": {
        "raw_bindings": [{"direction": "IN", "name": "event", "type": "eventGridTrigger"}],
        "bindings": {"event": {"type": "eventGridTrigger", "direction": IN, "data_type": None}},
        "input_types": {
            "event": {
                "binding": "eventGridTrigger",
                "pytype": "azure.functions._eventgrid.EventGridEvent",
            }
        },
        "return_type": None,
        "is_http_func": False,
        "is_async": True,
    },
}


def test_the_worker_loads_every_function_of_the_app(tmp_path: Path) -> None:
    result = run_worker_indexing(ROOT, tmp_path)
    assert result["ok"], "the worker refuses the app: " + "".join(result["error"]["traceback"])
    functions = {f["name"]: f for f in result["functions"]}
    assert sorted(functions) == sorted(EXPECTED)
    for name, expected in EXPECTED.items():
        function = functions[name]
        registry = function["registry"]
        actual = {
            "raw_bindings": sorted(function["raw_bindings"], key=lambda b: str(b["name"])),
            "bindings": function["bindings"],
            "input_types": registry["input_types"],
            "return_type": registry["return_type"],
            "is_http_func": registry["is_http_func"],
            "is_async": registry["is_async"],
        }
        wanted = {
            **expected,
            "raw_bindings": sorted(expected["raw_bindings"], key=lambda b: str(b["name"])),
        }
        assert actual == wanted, name
        assert registry["output_types"] == {}
        assert not registry["requires_context"]
        # What the host registers: the entry point, the script, worker indexing.
        assert function["entry_point"] == name
        assert function["script_file"] == "function_app.py"
        assert function["language"] == "python"
        assert function["properties"] == {"worker_indexed": "True"}
        assert function["retry_options"] is None


def test_the_emulated_host_sees_the_functions_and_bindings_the_worker_sends(
    tmp_path: Path,
) -> None:
    worker = run_worker_indexing(ROOT, tmp_path)
    assert worker["ok"]
    sample = json.loads((ROOT / "local.settings.sample.json").read_text())["Values"]
    with EmulatedHost("function_app", host_json=ROOT / "host.json", env=sample) as host:
        emulated = {
            name: sorted(function.bindings, key=lambda b: str(b["name"]))
            for name, function in host.functions.items()
        }
    assert emulated == {
        function["name"]: sorted(function["raw_bindings"], key=lambda b: str(b["name"]))
        for function in worker["functions"]
    }


def test_the_worker_refuses_a_parameterised_generic_activity_payload(tmp_path: Path) -> None:
    # What function_app.py looked like: the worker refuses the first such function and, with
    # it, the whole app.
    (tmp_path / "function_app.py").write_text(
        textwrap.dedent(
            """
            from typing import Any

            import azure.durable_functions as df

            app = df.DFApp()

            @app.activity_trigger(input_name="city")
            def say_hello(city: str) -> str:
                return city

            @app.activity_trigger(input_name="payload")
            async def start_agent_run(payload: dict[str, Any]) -> dict[str, Any]:
                return payload
            """
        )
    )
    result = run_worker_indexing(tmp_path, tmp_path)
    assert not result["ok"]
    assert result["error"]["type"] == "FunctionLoadError"
    assert result["error"]["message"] == (
        "cannot load the start_agent_run function: binding payload has invalid non-type "
        "annotation dict[str, typing.Any]"
    )


# ---------------------------------------------------------------- the test bed's copy of the rule

# One function per case; `check_function` (the emulated host) and the worker must agree on
# each. Messages are compared exactly where the Python 3.11 worker and azure-functions-runtime
# word them alike (`exact`); otherwise both must contain `fragment`.
CASES_APP = """
import typing
from typing import Any, Literal, Optional, TypedDict

import azure.durable_functions as df
import azure.functions as func

app = df.DFApp(http_auth_level=func.AuthLevel.ANONYMOUS)


class Payload(TypedDict):
    id: str


def activity(f):
    return app.activity_trigger(input_name="payload")(f)


def http(f):
    return app.route(route=f.__name__, methods=["GET"])(f)


@activity
def a_pep585_dict(payload: dict[str, Any]) -> dict[str, Any]: ...
@activity
def a_pep585_list(payload: list[str]) -> None: ...
@activity
def a_pep585_tuple(payload: tuple[str, int]) -> None: ...
@activity
def a_pipe_union(payload: dict | None) -> None: ...
@activity
def a_optional(payload: Optional[dict]) -> None: ...
@activity
def a_typing_tuple(payload: typing.Tuple[str, int]) -> None: ...
@activity
def a_typing_dict(payload: typing.Dict[str, Any]) -> None: ...
@activity
def a_typing_list(payload: typing.List[str]) -> None: ...
@activity
def a_literal(payload: Literal["a", "b"]) -> None: ...
@activity
def a_plain_dict(payload: dict) -> dict[str, Any]: ...
@activity
def a_plain_list(payload: list) -> list[str]: ...
@activity
def a_str(payload: str) -> str: ...
@activity
def a_int(payload: int) -> int: ...
@activity
def a_any(payload: Any) -> Any: ...
@activity
def a_typed_dict(payload: Payload) -> Payload: ...
@activity
def a_unannotated(payload): ...
@activity
def a_return_union(payload: dict) -> dict[str, Any] | None: ...


@app.orchestration_trigger(context_name="context")
def o_orchestrator(context: df.DurableOrchestrationContext):
    yield context.call_activity("a_str", "x")


@http
def h_ok(req: func.HttpRequest) -> func.HttpResponse: ...
@http
def h_str(req: str) -> str: ...
@http
def h_unannotated(req): ...
@http
def h_request_dict(req: dict) -> func.HttpResponse: ...
@http
def h_request_generic(req: dict[str, Any]) -> func.HttpResponse: ...
@http
def h_request_typing_dict(req: typing.Dict[str, Any]) -> func.HttpResponse: ...
@http
def h_optional_return(req: func.HttpRequest) -> Optional[func.HttpResponse]: ...
@http
def h_pipe_return(req: func.HttpRequest) -> func.HttpResponse | None: ...
@http
def h_dict_return(req: func.HttpRequest) -> dict: ...
@http
def h_none_return(req: func.HttpRequest) -> None: ...
@http
def h_context(req: func.HttpRequest, context: func.Context) -> func.HttpResponse: ...


@app.route(route="client", methods=["POST"])
@app.durable_client_input(client_name="client")
async def h_client(
    req: func.HttpRequest, client: df.DurableOrchestrationClient
) -> func.HttpResponse: ...


@app.event_grid_trigger(arg_name="event")
def e_event(event: func.EventGridEvent) -> None: ...
@app.event_grid_trigger(arg_name="event")
def e_dict(event: dict) -> None: ...
@app.event_grid_trigger(arg_name="event")
def e_generic(event: dict[str, Any]) -> None: ...
@app.event_grid_trigger(arg_name="event")
def e_typing_dict(event: typing.Dict[str, Any]) -> None: ...
"""

ACCEPTED = {
    "a_typing_dict",
    "a_typing_list",
    "a_literal",
    "a_plain_dict",
    "a_plain_list",
    "a_str",
    "a_int",
    "a_any",
    "a_typed_dict",
    "a_unannotated",
    "a_return_union",
    "o_orchestrator",
    "h_ok",
    "h_str",
    "h_unannotated",
    "h_context",
    "h_client",
    "e_event",
}


def _non_type(name: str, annotation: str) -> str:
    return f"cannot load the {name} function: binding payload has invalid non-type annotation {annotation}"


REFUSED: dict[str, dict[str, str]] = {
    "a_pep585_dict": {"exact": _non_type("a_pep585_dict", "dict[str, typing.Any]")},
    "a_pep585_list": {"exact": _non_type("a_pep585_list", "list[str]")},
    "a_pep585_tuple": {"exact": _non_type("a_pep585_tuple", "tuple[str, int]")},
    "a_pipe_union": {"exact": _non_type("a_pipe_union", "dict | None")},
    "a_optional": {"exact": _non_type("a_optional", "typing.Optional[dict]")},
    "a_typing_tuple": {"exact": _non_type("a_typing_tuple", "typing.Tuple[str, int]")},
    "h_request_generic": {
        "exact": "cannot load the h_request_generic function: binding req has invalid non-type "
        "annotation dict[str, typing.Any]"
    },
    "h_optional_return": {
        "exact": "cannot load the h_optional_return function: has invalid non-type return "
        "annotation typing.Optional[azure.functions._http.HttpResponse]"
    },
    "h_pipe_return": {
        "exact": "cannot load the h_pipe_return function: has invalid non-type return "
        "annotation azure.functions._http.HttpResponse | None"
    },
    "h_dict_return": {
        "exact": 'cannot load the h_dict_return function: Python return annotation "dict" does '
        'not match binding type "http"'
    },
    "h_none_return": {
        "exact": 'cannot load the h_none_return function: Python return annotation "NoneType" '
        'does not match binding type "http"'
    },
    # The converter refuses the type; the worker and azure-functions-runtime word it apart.
    "h_request_dict": {"fragment": "do not match the corresponding function parameter's"},
    "e_dict": {"fragment": "do not match the corresponding function parameter's"},
    "e_typing_dict": {"fragment": "do not match the corresponding function parameter's"},
    # HttpRequestConverter's issubclass() raises on a typing generic: the worker fails with
    # that TypeError.
    "h_request_typing_dict": {"fragment": "issubclass() arg 1 must be a class"},
    "e_generic": {
        "exact": "cannot load the e_generic function: binding event has invalid non-type "
        "annotation dict[str, typing.Any]"
    },
}


def _emulated_outcomes(path: Path) -> dict[str, str | None]:
    """check_function on each function of the cases app: None when accepted, else the error."""
    spec = importlib.util.spec_from_file_location("worker_annotation_cases", path)
    assert spec is not None
    assert spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    outcomes: dict[str, str | None] = {}
    for function in find_app(module).get_functions():
        name = str(function.get_function_name())
        bindings = [json.loads(raw) for raw in function.get_raw_bindings()]
        try:
            check_function(name, function.get_user_function(), bindings)
            outcomes[name] = None
        except IndexingError as exc:
            outcomes[name] = str(exc)
    return outcomes


def test_the_emulated_host_applies_the_workers_annotation_rules(tmp_path: Path) -> None:
    app_dir = tmp_path / "app"
    app_dir.mkdir()
    (app_dir / "annotation_cases.py").write_text(CASES_APP)
    worker = run_worker_indexing(
        app_dir, tmp_path, each=True, PYTHON_SCRIPT_FILE_NAME="annotation_cases.py"
    )
    assert worker["ok"], worker
    emulated = _emulated_outcomes(app_dir / "annotation_cases.py")
    assert set(worker["each"]) == set(emulated) == ACCEPTED | set(REFUSED)
    for name in sorted(ACCEPTED):
        assert worker["each"][name] == {"ok": True}, name
        assert emulated[name] is None, name
    for name, expected in sorted(REFUSED.items()):
        outcome = worker["each"][name]
        assert not outcome["ok"], name
        worker_message = outcome["error"]["message"]
        emulated_message = emulated[name]
        assert emulated_message is not None, f"{name}: the emulated host accepts it"
        if "exact" in expected:
            assert worker_message == expected["exact"], name
            assert emulated_message == expected["exact"], name
        else:
            assert expected["fragment"] in worker_message, name
            assert expected["fragment"] in emulated_message, name

"""The emulated host indexes apps like the worker and the host, and refuses what they refuse."""

from __future__ import annotations

from collections.abc import Callable, Iterator
from pathlib import Path

import pytest

from devhost.functions_host import EmulatedHost, IndexingError, UnsupportedFeatureError

SAMPLES = "tests.functions_host_samples"


def test_good_app_is_indexed_with_raw_bindings_routes_and_auth() -> None:
    with EmulatedHost(f"{SAMPLES}.basic_app") as host:
        functions = host.functions
        start = functions["http_start"]
        assert start.trigger_type == "httpTrigger"
        assert start.route == "orchestrators/{name}"
        assert start.methods == ("POST",)
        assert start.auth_level == "function"
        # What the host receives: the parsed get_raw_bindings() JSON.
        assert {"direction": "IN", "type": "durableClient", "name": "client"} in start.bindings
        assert {"direction": "OUT", "type": "http", "name": "$return"} in start.bindings
        assert start.durable_client_bindings == ("client",)
        assert functions["ping"].auth_level == "anonymous"
        assert functions["admin_only"].auth_level == "admin"
        assert functions["whoami"].requires_context
        orchestrator = functions["hello_sequence"]
        assert orchestrator.trigger_type == "orchestrationTrigger"
        assert orchestrator.bindings == [
            {"direction": "IN", "type": "orchestrationTrigger", "name": "context"}
        ]
        assert functions["say_hello"].trigger_type == "activityTrigger"
        assert functions["check_status"].is_async
        assert functions["on_grid_event"].trigger_type == "eventGridTrigger"


def test_the_same_module_indexes_again_in_a_second_host() -> None:
    # FunctionRegister.get_functions() refuses to run twice; one process indexes once.
    with EmulatedHost(f"{SAMPLES}.basic_app") as first:
        names = set(first.functions)
    with EmulatedHost(f"{SAMPLES}.basic_app") as second:
        assert set(second.functions) == names


@pytest.mark.parametrize(
    ("module", "message"),
    [
        ("bad_missing_trigger", "does not have a trigger"),
        ("bad_two_triggers", "A trigger was already registered"),
        ("bad_param_mismatch", "declared in Python but not in the function's bindings"),
        ("bad_binding_without_param", "declared in the function's bindings but not in Python"),
        ("bad_duplicate_names", "does not have a unique function name"),
        ("bad_duplicate_names_case", "does not have a unique function name"),
        ("bad_duplicate_routes", "HTTP route conflict"),
        ("bad_orchestrator_param", "context_name='ctx'"),
        ("bad_two_apps", "More than one"),
        ("bad_no_app", "Could not find top level function app"),
        ("does_not_exist", "importing"),
    ],
)
def test_bad_apps_are_refused(module: str, message: str) -> None:
    host = EmulatedHost(f"{SAMPLES}.{module}")
    with pytest.raises(IndexingError, match=message):
        host.start()
    with pytest.raises(Exception, match="not started"):
        host.functions  # noqa: B018 - the failed host must not look usable


def test_unsupported_bindings_are_refused_loudly() -> None:
    import sys
    import types

    import azure.functions as func

    module = types.ModuleType("emulated_host_queue_app")
    app = func.FunctionApp()

    @app.queue_trigger(arg_name="msg", queue_name="q", connection="Storage")
    def on_message(msg: func.QueueMessage) -> None:
        return None

    module.__dict__["app"] = app
    sys.modules[module.__name__] = module
    try:
        with pytest.raises(UnsupportedFeatureError, match="queueTrigger"):
            EmulatedHost(module.__name__).start()
    finally:
        del sys.modules[module.__name__]


def test_env_is_applied_while_open_and_restored_on_close() -> None:
    import os

    os.environ.pop("EMULATED_HOST_SETTING", None)
    with EmulatedHost(f"{SAMPLES}.basic_app", env={"EMULATED_HOST_SETTING": "on"}):
        assert os.environ["EMULATED_HOST_SETTING"] == "on"
    assert "EMULATED_HOST_SETTING" not in os.environ


def test_route_prefix_and_hub_name_come_from_host_json(tmp_path: Path) -> None:
    host_json = tmp_path / "host.json"
    host_json.write_text(
        '{"version": "2.0", "extensions": {"http": {"routePrefix": ""},'
        ' "durableTask": {"hubName": "OtherHub"}}}'
    )
    with EmulatedHost(f"{SAMPLES}.basic_app", host_json=host_json) as host:
        assert host.http("GET", "/ping", key=None).get_body() == b"pong"
        assert host.http("GET", "/api/ping", key=None).status_code == 404
        assert '"taskHubName": "OtherHub"' in host.durable_client_json()


def test_only_one_host_may_be_open_at_a_time() -> None:
    from devhost.functions_host import HostError

    second = EmulatedHost(f"{SAMPLES}.basic_app")
    with (
        EmulatedHost(f"{SAMPLES}.basic_app"),
        pytest.raises(HostError, match="another EmulatedHost is open"),
    ):
        second.start()
    with EmulatedHost(f"{SAMPLES}.basic_app") as host:  # fine once the first one closed
        assert "ping" in host.functions


# ---------------------------------------------------------------- the worker's annotation rules
# (indexing.check_annotations; tests/project/test_worker_indexing.py runs the real worker on the same
# cases and on the app)

ANNOTATION_APP = """
import typing
from typing import Any, Optional, TypedDict

import azure.durable_functions as df
import azure.functions as func

app = df.DFApp(http_auth_level=func.AuthLevel.ANONYMOUS)


class Payload(TypedDict):
    id: str


{function}
"""


@pytest.fixture
def annotated_app(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> Iterator[Callable[[str], str]]:
    """Writes an app module with one function (source) and returns the module's name."""
    import sys

    monkeypatch.syspath_prepend(str(tmp_path))
    names: list[str] = []

    def make(function: str) -> str:
        name = f"annotation_app_{len(names)}"
        (tmp_path / f"{name}.py").write_text(ANNOTATION_APP.format(function=function))
        names.append(name)
        return name

    yield make
    for name in names:
        sys.modules.pop(name, None)


def activity(annotation: str, returns: str = "None") -> str:
    return (
        '@app.activity_trigger(input_name="payload")\n'
        f"def act(payload: {annotation}) -> {returns}:\n"
        "    return None\n"
    )


@pytest.mark.parametrize(
    ("annotation", "shown"),
    [
        ("dict[str, Any]", "dict[str, typing.Any]"),
        ("list[str]", "list[str]"),
        ("tuple[str, int]", "tuple[str, int]"),
        ("dict | None", "dict | None"),
        ("Optional[dict]", "typing.Optional[dict]"),
    ],
)
def test_a_generic_alias_or_union_on_a_binding_is_refused_as_the_worker_refuses_it(
    annotated_app: Callable[[str], str], annotation: str, shown: str
) -> None:
    # The Python worker's message (functions.Registry.validate_function_params): the whole app
    # fails to load.
    host = EmulatedHost(annotated_app(activity(annotation)))
    with pytest.raises(IndexingError) as raised:
        host.start()
    assert str(raised.value) == (
        f"cannot load the act function: binding payload has invalid non-type annotation {shown}"
    )


@pytest.mark.parametrize(
    ("annotation", "returns"),
    [
        ("dict", "dict[str, Any]"),  # the return of an activity is not checked
        ("typing.Dict[str, Any]", "dict[str, Any] | None"),
        ("typing.List[str]", "list[str]"),
        ("str", "str"),
        ("int", "int"),
        ("Any", "Any"),
        ("Payload", "Payload"),
    ],
)
def test_classes_and_typing_generics_are_accepted(
    annotated_app: Callable[[str], str], annotation: str, returns: str
) -> None:
    with EmulatedHost(annotated_app(activity(annotation, returns))) as host:
        assert host.functions["act"].trigger_type == "activityTrigger"


def test_an_unannotated_binding_is_accepted(annotated_app: Callable[[str], str]) -> None:
    function = '@app.activity_trigger(input_name="payload")\ndef act(payload):\n    return None\n'
    with EmulatedHost(annotated_app(function)) as host:
        assert "act" in host.functions


@pytest.mark.parametrize(
    ("function", "message"),
    [
        (
            '@app.route(route="r")\n'
            "def f(req: func.HttpRequest) -> func.HttpResponse | None:\n    return None\n",
            "cannot load the f function: has invalid non-type return annotation "
            "azure.functions._http.HttpResponse | None",
        ),
        (
            '@app.route(route="r")\ndef f(req: func.HttpRequest) -> dict:\n    return {}\n',
            'cannot load the f function: Python return annotation "dict" does not match '
            'binding type "http"',
        ),
        (
            '@app.event_grid_trigger(arg_name="event")\ndef f(event: dict) -> None:\n'
            "    return None\n",
            "cannot load the f function: 'event' binding type \"eventGridTrigger\" and dataType "
            '"None" in function definition (function.json or function decorators) do not match '
            'the corresponding function parameter\'s Python type annotation "dict"',
        ),
    ],
    ids=["http-union-return", "http-dict-return", "eventgrid-dict-event"],
)
def test_returns_and_converters_are_checked_as_the_worker_checks_them(
    annotated_app: Callable[[str], str], function: str, message: str
) -> None:
    host = EmulatedHost(annotated_app(function))
    with pytest.raises(IndexingError) as raised:
        host.start()
    assert str(raised.value) == message

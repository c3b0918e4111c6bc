"""Index a Python v2-model app the way the worker and the host do at startup.

The worker (azure_functions_worker.loader.index_function_app) imports the script module,
requires exactly one top-level FunctionRegister, calls `app.get_functions()` and sends each
function's raw bindings (JSON strings) to the host. While loading each function it checks
that Python parameters and bindings correspond one to one (a parameter named `context`
without a binding is the invocation context) and that annotations fit the binding's
converter (functions.Registry.add_function). The host then refuses duplicate names and
conflicting HTTP routes, and the Durable extension registers orchestrators and activities.
"""

from __future__ import annotations

import importlib
import inspect
import json
import re
import typing
import weakref
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from types import ModuleType
from typing import Any

from azure.functions import FunctionRegister
from azure.functions.meta import get_binding_registry

from .errors import IndexingError, UnsupportedFeatureError
from .routes import RouteTemplate

# Binding types this emulator can drive. Anything else is refused instead of being ignored.
SUPPORTED_BINDINGS = frozenset(
    {
        "httpTrigger",
        "http",
        "durableClient",
        "orchestrationTrigger",
        "activityTrigger",
        "eventGridTrigger",
    }
)
ALL_METHODS = ("GET", "POST", "PUT", "DELETE", "HEAD", "PATCH", "OPTIONS")
# The host's function-name rule (Microsoft.Azure.WebJobs.Script Utility.IsValidFunctionName).
_FUNCTION_NAME = re.compile(r"^[a-z][a-z0-9_\-]{0,127}$", re.IGNORECASE)

# get_functions() is not idempotent (FunctionRegister.validate_function_names keeps the names
# it saw and refuses them on a second call), and a worker process indexes once: cache per app.
_INDEX_CACHE: weakref.WeakKeyDictionary[FunctionRegister, list[Any]] = weakref.WeakKeyDictionary()


@dataclass(frozen=True)
class IndexedFunction:
    """One function as the host registers it."""

    name: str
    trigger_type: str
    bindings: list[dict[str, Any]]
    user_function: Callable[..., Any]
    route: str | None
    methods: tuple[str, ...] | None
    auth_level: str | None
    trigger_binding_name: str = ""
    durable_name: str | None = None
    requires_context: bool = False
    is_async: bool = False
    durable_client_bindings: tuple[str, ...] = ()
    route_template: RouteTemplate | None = field(default=None, compare=False, repr=False)


@dataclass
class AppIndex:
    module: ModuleType
    app: FunctionRegister
    functions: dict[str, IndexedFunction]
    orchestrators: dict[str, str]  # lower-cased durable name -> function name
    activities: dict[str, str]


def find_app(module: ModuleType) -> FunctionRegister:
    """Exactly one top-level FunctionRegister (DFApp/FunctionApp), like the worker's loader."""
    apps = [
        (attr, value)
        for attr in dir(module)
        if isinstance(value := getattr(module, attr, None), FunctionRegister)
    ]
    if not apps:
        raise IndexingError(
            f"Could not find top level function app instances in {module.__name__} "
            "(a DFApp/FunctionApp must be defined at module level)"
        )
    distinct = {id(value) for _, value in apps}
    if len(distinct) > 1:
        names = ", ".join(attr for attr, _ in apps)
        raise IndexingError(
            f"More than one FunctionApp or other top level function app instances are defined: {names}"
        )
    return apps[0][1]


def _get_functions(app: FunctionRegister) -> list[Any]:
    cached = _INDEX_CACHE.get(app)
    if cached is not None:
        return cached
    try:
        functions = list(app.get_functions())
    except ValueError as exc:  # missing trigger, duplicate names (SDK validation)
        raise IndexingError(str(exc)) from exc
    _INDEX_CACHE[app] = functions
    return functions


def _check_parameters(
    name: str, func: Callable[..., Any], bindings: list[dict[str, Any]]
) -> tuple[bool, dict[str, Any]]:
    """functions.Registry.add_function: parameters vs bindings, context, annotations."""
    try:
        params = dict(inspect.signature(func).parameters)
    except (TypeError, ValueError) as exc:
        raise IndexingError(f"cannot load the {name} function: {exc}") from exc
    try:
        annotations = typing.get_type_hints(func)
    except Exception as exc:
        raise IndexingError(f"cannot load the {name} function: annotations: {exc}") from exc
    bound = {b["name"]: b for b in bindings if b.get("name") != "$return"}
    for binding in bindings:
        if str(binding.get("direction", "")).upper() == "INOUT":
            raise IndexingError(
                f'cannot load the {name} function: "inout" bindings are not supported'
            )
        if binding.get("name") == "$return" and str(binding.get("direction", "")).upper() != "OUT":
            raise IndexingError(
                f'cannot load the {name} function: "$return" binding must have direction "out"'
            )
    requires_context = False
    if "context" in params and "context" not in bound:
        requires_context = True
        params.pop("context")
        annotation = annotations.get("context")
        if annotation is not None and (
            not isinstance(annotation, type) or annotation.__name__ != "Context"
        ):
            raise IndexingError(
                f'cannot load the {name} function: the "context" parameter is expected to be of '
                f"type azure.functions.Context, got {annotation!r}"
            )
    extra_params = set(params) - set(bound)
    if extra_params:
        raise IndexingError(
            f"cannot load the {name} function: the following parameters are declared in Python "
            f"but not in the function's bindings: {sorted(extra_params)!r}"
        )
    extra_bindings = set(bound) - set(params)
    if extra_bindings:
        raise IndexingError(
            f"cannot load the {name} function: the following parameters are declared in the "
            f"function's bindings but not in Python: {sorted(extra_bindings)!r}"
        )
    registry: Any = get_binding_registry()  # type: ignore[no-untyped-call]
    for param_name in params:
        binding = bound[param_name]
        annotation = annotations.get(param_name)
        if annotation is None:
            continue
        if str(binding.get("direction", "")).upper() == "OUT":
            raise UnsupportedFeatureError(f"{name}: output binding parameters are not emulated")
        if not isinstance(annotation, type) and typing.get_origin(annotation) is None:
            raise IndexingError(
                f"cannot load the {name} function: binding {param_name} has invalid non-type "
                f"annotation {annotation!r}"
            )
        # The worker treats str/bytes annotations as the "generic" binding, which accepts them.
        if annotation in (str, bytes):
            continue
        converter = registry.get(binding["type"])
        if converter is None or not hasattr(converter, "check_input_type_annotation"):
            continue
        pytype = annotation if isinstance(annotation, type) else typing.get_origin(annotation)
        try:
            accepted = bool(converter.check_input_type_annotation(pytype))
        except TypeError:
            accepted = False
        if not accepted:
            raise IndexingError(
                f'cannot load the {name} function: type of {param_name} binding "{binding["type"]}" '
                f'does not match its Python annotation "{getattr(pytype, "__name__", pytype)}"'
            )
    return requires_context, bound


def index_module(module_name: str, *, route_prefix: str) -> AppIndex:
    """Import `module_name` (reused if already imported) and index it like the worker + host."""
    try:
        module = importlib.import_module(module_name)
    except Exception as exc:  # the worker reports an import failure as an indexing failure
        raise IndexingError(
            f"importing {module_name!r} failed: {type(exc).__name__}: {exc}"
        ) from exc
    app = find_app(module)
    raw_functions = _get_functions(app)

    functions: dict[str, IndexedFunction] = {}
    lower_names: dict[str, str] = {}
    orchestrators: dict[str, str] = {}
    activities: dict[str, str] = {}
    routes: list[tuple[IndexedFunction, RouteTemplate]] = []
    for function in raw_functions:
        name = str(function.get_function_name())
        if not _FUNCTION_NAME.match(name):
            raise IndexingError(f"'{name}' is not a valid function name")
        if name.lower() in lower_names:
            # The host compares function names case-insensitively.
            raise IndexingError(
                f"Function {name} does not have a unique function name "
                f"(it clashes with {lower_names[name.lower()]})"
            )
        lower_names[name.lower()] = name
        bindings = [json.loads(raw) for raw in function.get_raw_bindings()]
        triggers = [b for b in bindings if str(b.get("type", "")).endswith("Trigger")]
        if len(triggers) != 1:
            raise IndexingError(
                f"Function {name} must have exactly one trigger binding, found {len(triggers)}"
            )
        for binding in bindings:
            if binding.get("type") not in SUPPORTED_BINDINGS:
                raise UnsupportedFeatureError(
                    f"function {name}: binding type {binding.get('type')!r} is not emulated"
                )
        trigger = triggers[0]
        trigger_type = str(trigger["type"])
        user_function = function.get_user_function()
        if trigger_type == "orchestrationTrigger" and trigger["name"] != "context":
            # The SDK wraps the generator in `handle(context: OrchestrationContext)`: the worker
            # passes the trigger under its binding name, so only "context" can bind.
            raise IndexingError(
                f"orchestrator function {name}: orchestration_trigger(context_name="
                f"{trigger['name']!r}) does not match the SDK wrapper's parameter 'context'; "
                "the real worker fails to load it. Use context_name='context'."
            )
        requires_context, _ = _check_parameters(name, user_function, bindings)
        route: str | None = None
        methods: tuple[str, ...] | None = None
        auth_level: str | None = None
        template: RouteTemplate | None = None
        if trigger_type == "httpTrigger":
            route = str(trigger.get("route") or name).strip("/")
            raw_methods = trigger.get("methods")
            methods = tuple(str(m).upper() for m in raw_methods) if raw_methods else None
            auth_level = str(trigger.get("authLevel") or "FUNCTION").lower()
            full = "/".join(part for part in (route_prefix.strip("/"), route) if part)
            template = RouteTemplate(full)
        durable_name: str | None = None
        if trigger_type == "orchestrationTrigger":
            durable_name = str(trigger.get("orchestration") or name)
            if durable_name.lower() in orchestrators:
                raise IndexingError(f"orchestrator {durable_name!r} is registered twice")
            orchestrators[durable_name.lower()] = name
        elif trigger_type == "activityTrigger":
            durable_name = str(trigger.get("activity") or name)
            if durable_name.lower() in activities:
                raise IndexingError(f"activity {durable_name!r} is registered twice")
            activities[durable_name.lower()] = name
        indexed = IndexedFunction(
            name=name,
            trigger_type=trigger_type,
            bindings=bindings,
            user_function=user_function,
            route=route,
            methods=methods,
            auth_level=auth_level,
            trigger_binding_name=str(trigger["name"]),
            durable_name=durable_name,
            requires_context=requires_context,
            is_async=inspect.iscoroutinefunction(user_function),
            durable_client_bindings=tuple(
                str(b["name"]) for b in bindings if b.get("type") == "durableClient"
            ),
            route_template=template,
        )
        if template is not None:
            for other, other_template in routes:
                if other_template.shape != template.shape:
                    continue
                mine = set(methods or ALL_METHODS)
                theirs = set(other.methods or ALL_METHODS)
                if mine & theirs:
                    raise IndexingError(
                        f"HTTP route conflict: functions {other.name} and {name} both serve "
                        f"{sorted(mine & theirs)} on route '{template.template}'"
                    )
            routes.append((indexed, template))
        functions[name] = indexed
    return AppIndex(
        module=module,
        app=app,
        functions=functions,
        orchestrators=orchestrators,
        activities=activities,
    )


def route_prefix_from_host_json(host_json: Mapping[str, Any]) -> str:
    extensions = host_json.get("extensions") or {}
    http = extensions.get("http") or {}
    prefix = http.get("routePrefix", "api")
    return str(prefix if prefix is not None else "api").strip("/")

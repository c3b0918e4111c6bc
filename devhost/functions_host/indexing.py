"""Index a Python v2-model app the way the worker and the host do at startup.

The worker (azure_functions_worker.loader.index_function_app) imports the script module,
requires exactly one top-level FunctionRegister, calls `app.get_functions()` and sends each
function's raw bindings (JSON strings) to the host. While loading each function
(functions.Registry.add_indexed_function) it checks that Python parameters and bindings
correspond one to one (a parameter named `context` without a binding is the invocation
context) and applies its annotation rules (`check_annotations` below, copied from the worker).
One refused function fails the whole app. The host then refuses duplicate names and
conflicting HTTP routes, and the Durable extension registers orchestrators and activities.
tests/project/test_worker_indexing.py runs the worker's own code on the app and checks this copy
against it.
"""

from __future__ import annotations

import collections.abc
import importlib
import inspect
import json
import re
import typing
import weakref
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from types import ModuleType
from typing import Any, ClassVar, Generic, Union

from azure.functions import FunctionRegister
from azure.functions.decorators.core import DataType
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


# ---------------------------------------------------------------- the worker's annotation rules
#
# Copied from the Python 3.11 worker, Azure/azure-functions-python-worker
# workers/azure_functions_worker/functions.py @ d7d9dd53 (Registry.validate_function_params and
# Registry.get_function_return_type), with its vendored typing_inspect
# (azure_functions_worker/_thirdparty/typing_inspect.py) and bindings/meta.py
# (check_input_type_annotation, check_output_type_annotation, has_implicit_output, get_binding).
# azure-functions-runtime 1.3.0 (the worker library on PyPI, azure_functions_runtime/
# functions.py) has the same rules; only the wording of the "does not match" messages differs.
#
# For every parameter bound to an input binding, with annotation A:
# 1. A must be a class or a typing-module generic (`is_generic_type`): a PEP 585 alias such
#    as dict[str, Any] or list[str] (types.GenericAlias), a union (X | None, Optional[X]),
#    a tuple[...] / Tuple[...] or a Callable is refused, whatever the binding:
#    "binding {param} has invalid non-type annotation {A!r}" (Azure/azure-functions-durable-python
#    #468). typing.Dict[str, Any] passes this step; plain dict, str, a TypedDict class and (3.11)
#    Any are classes.
# 2. func.Out[...] only on "out" bindings (and the reverse).
# 3. str and bytes on a binding without implicit output use the "generic" binding.
# 4. The binding's converter (azure.functions, by binding type) must accept A:
#    check_input_type_annotation. activityTrigger accepts anything (ActivityTriggerConverter);
#    orchestrationTrigger only OrchestrationContext; httpTrigger HttpRequest; eventGridTrigger
#    EventGridEvent; "generic" (str/bytes, and durableClient, which the Durable SDK rewrites to
#    str) str or bytes. A converter that raises (issubclass() of a typing generic) fails the
#    indexing with that error.
# Return annotations are checked only for an explicit "$return" binding (HTTP's "http"): a
# class (no union, no generic alias) the output converter accepts (HttpResponse or str for
# "http"). Trigger bindings with implicit output (activity, orchestration) are not checked.


class _GenericBinding:
    """bindings/generic.py GenericBinding: what the worker uses for unregistered types."""

    @staticmethod
    def check_input_type_annotation(pytype: type) -> bool:
        return issubclass(pytype, (str, bytes))

    @staticmethod
    def check_output_type_annotation(pytype: type) -> bool:
        return issubclass(pytype, (str, bytes, bytearray))


# typing's own generic aliases (typing.Dict[str, Any], bare typing.List), the only generics the
# worker's typing_inspect knows; dict[str, Any] is a types.GenericAlias, not one of them.
_GENERIC_ALIAS: type = typing._GenericAlias  # type: ignore[attr-defined]
_SPECIAL_GENERIC_ALIAS: type = typing._SpecialGenericAlias  # type: ignore[attr-defined]


def is_generic_type(tp: Any) -> bool:
    """typing_inspect.is_generic_type as the worker vendors it (Python >= 3.9 branch).

    Only typing-module aliases count: types.GenericAlias (dict[str, Any]) is not one.
    """
    return (isinstance(tp, type) and issubclass(tp, Generic)) or (
        isinstance(tp, (_GENERIC_ALIAS, _SPECIAL_GENERIC_ALIAS))
        and getattr(tp, "__origin__", None)
        not in (Union, tuple, ClassVar, collections.abc.Callable)
    )


def _get_origin(tp: Any) -> Any:
    """typing_inspect.get_origin as the worker vendors it."""
    if isinstance(tp, _GENERIC_ALIAS):
        origin = getattr(tp, "__origin__", None)
        return origin if origin is not ClassVar else None
    if tp is Generic:
        return Generic
    return None


def _get_binding(registry: Any, binding_type: str) -> Any:
    """bindings.meta.get_binding: the app's azure-functions converter, else GenericBinding."""
    return registry.get(binding_type) or _GenericBinding


def _has_implicit_output(registry: Any, binding_type: str) -> bool:
    """bindings.meta.has_implicit_output (GenericBinding: all but durableClient)."""
    binding = _get_binding(registry, binding_type)
    if binding is _GenericBinding:
        return binding_type != "durableClient"
    return bool(getattr(binding, "has_implicit_output", lambda: False)())


def _converter_check(name: str, check: Callable[[Any], Any], pytype: Any) -> bool:
    try:
        return bool(check(pytype))
    except TypeError as exc:  # the worker does not catch it: indexing fails with it
        raise IndexingError(f"cannot load the {name} function: TypeError: {exc}") from exc


def _is_out(annotation: Any) -> bool:
    if is_generic_type(annotation):
        origin = _get_origin(annotation)
        if origin is not None:
            return isinstance(origin, type) and origin.__name__ == "Out"
    return isinstance(annotation, type) and annotation.__name__ == "Out"


def _data_type(binding: Mapping[str, Any]) -> int | None:
    """What the worker compares: the SDK binding's data_type (DataType value, None if unset)."""
    raw = binding.get("dataType")
    if raw is None:
        return None
    return int(DataType[str(raw)].value) if isinstance(raw, str) else int(raw)


def check_annotations(
    name: str,
    params: Mapping[str, inspect.Parameter],
    bound: Mapping[str, Mapping[str, Any]],
    annotations: Mapping[str, Any],
) -> None:
    """Registry.validate_function_params' annotation rules for the parameters bound to
    bindings (`params` without the invocation context), raising what the worker raises."""
    registry: Any = get_binding_registry()  # type: ignore[no-untyped-call]
    for param_name in params:
        binding = bound[param_name]
        binding_type = str(binding["type"])
        has_annotation = param_name in annotations
        annotation = annotations.get(param_name)
        is_param_out = has_annotation and _is_out(annotation)
        is_binding_out = str(binding.get("direction", "")).upper() == "OUT"
        pytype = annotation
        if is_param_out:
            # typing_inspect.get_args: the arguments of a typing._GenericAlias, else ().
            args: tuple[Any, ...] = (
                tuple(getattr(annotation, "__args__", ()))
                if isinstance(annotation, _GENERIC_ALIAS)
                else ()
            )
            if len(args) != 1:
                raise IndexingError(
                    f"cannot load the {name} function: binding {param_name} has invalid Out "
                    f"annotation {annotation!r}"
                )
            pytype = args[0]
        if has_annotation and not isinstance(pytype, type) and not is_generic_type(pytype):
            raise IndexingError(
                f"cannot load the {name} function: binding {param_name} has invalid non-type "
                f"annotation {annotation!r}"
            )
        if is_binding_out and has_annotation and not is_param_out:
            raise IndexingError(
                f"cannot load the {name} function: binding {param_name} is declared to have the "
                '"out" direction, but its annotation in Python is not a subclass of '
                "azure.functions.Out"
            )
        if not is_binding_out and is_param_out:
            raise IndexingError(
                f"cannot load the {name} function: binding {param_name} is declared to have the "
                '"in" direction in the function definition (function.json or function '
                "decorators), but its annotation is azure.functions.Out in Python"
            )
        if not has_annotation:
            continue
        if pytype in (str, bytes) and not _has_implicit_output(registry, binding_type):
            bind_type = "generic"
        else:
            bind_type = binding_type
        converter = _get_binding(registry, bind_type)
        check = (
            converter.check_output_type_annotation
            if is_param_out
            else converter.check_input_type_annotation
        )
        if _converter_check(name, check, pytype):
            continue
        type_name = getattr(pytype, "__name__", repr(pytype))
        data_type = _data_type(binding)
        # `binding.data_type is not protos.BindingInfo.undefined`: an unset data type (None)
        # takes this branch too.
        if data_type is None or data_type != 0:
            raise IndexingError(
                f"cannot load the {name} function: {param_name!r} binding type "
                f'"{binding_type}" and dataType "{data_type}" in function definition '
                "(function.json or function decorators) do not match the corresponding "
                f'function parameter\'s Python type annotation "{type_name}"'
            )
        raise IndexingError(
            f"cannot load the {name} function: type of {param_name} binding in function "
            f'definition (function.json or function decorators) "{binding_type}" does not '
            f'match its Python annotation "{type_name}"'
        )


def check_return_annotation(
    name: str, bindings: list[dict[str, Any]], annotations: Mapping[str, Any]
) -> None:
    """Registry.get_function_return_type: only an explicit "$return" binding is checked."""
    explicit = next((b for b in bindings if b.get("name") == "$return"), None)
    if explicit is None or "return" not in annotations:
        return
    binding_type = str(explicit["type"])
    annotation = annotations["return"]
    if is_generic_type(annotation):
        origin = _get_origin(annotation)
        if origin is None:  # `get_origin(...).__name__` on None: the worker fails with it
            raise IndexingError(
                f"cannot load the {name} function: AttributeError: 'NoneType' object has no "
                "attribute '__name__'"
            )
        if getattr(origin, "__name__", None) == "Out":
            raise IndexingError(
                f"cannot load the {name} function: return annotation should not be "
                "azure.functions.Out"
            )
    if not isinstance(annotation, type):
        raise IndexingError(
            f"cannot load the {name} function: has invalid non-type return annotation "
            f"{annotation!r}"
        )
    registry: Any = get_binding_registry()  # type: ignore[no-untyped-call]
    converter = _get_binding(registry, binding_type)
    if not _converter_check(name, converter.check_output_type_annotation, annotation):
        raise IndexingError(
            f'cannot load the {name} function: Python return annotation "{annotation.__name__}" '
            f'does not match binding type "{binding_type}"'
        )


def check_function(
    name: str, func: Callable[..., Any], bindings: list[dict[str, Any]]
) -> tuple[bool, dict[str, Any]]:
    """functions.Registry.add_indexed_function: parameters vs bindings, context, annotations.

    Returns whether the function takes the invocation context, and its bindings by name.
    """
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
    check_annotations(name, params, bound, annotations)
    check_return_annotation(name, bindings, annotations)
    for param_name in params:
        if str(bound[param_name].get("direction", "")).upper() == "OUT":
            raise UnsupportedFeatureError(f"{name}: output binding parameters are not emulated")
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
        requires_context, _ = check_function(name, user_function, bindings)
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

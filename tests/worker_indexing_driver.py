"""Index a Functions app with the real Python worker's code, in a process of its own.

    PYTHONPATH=.venv-worker/site-packages python -P tests/worker_indexing_driver.py APP_DIR OUT
        [--each]

runs what the worker runs when the host asks it for the app's functions, with the worker
library azure-functions-runtime (requirements-worker.txt) and the app's own packages, and writes
one JSON document to OUT. The calls follow the worker (Azure/azure-functions-python-worker):

- `worker_init_request` loads the binding registry (`bindings.meta.load_binding_registry()`:
  the app's azure-functions converters) before indexing
  (azure_functions_runtime/handle_event.py, and the Python 3.11 worker's
  `Dispatcher._handle__worker_init_request`, azure_functions_worker/dispatcher.py @ 7e6acf36);
- `load_function_metadata` joins the app directory and the PYTHON_SCRIPT_FILE_NAME setting
  (default function_app.py, checked by `validate_script_file_name`);
- `index_functions` calls `loader.index_function_app(function_path)` (imports the module, finds
  its one FunctionRegister, `app.get_functions()`), then
  `loader.process_indexed_function(protos, registry, indexed_functions, function_dir)`, which
  runs `functions.Registry.add_indexed_function` on each function (parameters against bindings,
  the annotation checks, `FunctionLoadError`) and builds each function's RpcFunctionMetadata.
  One failing function fails the whole call, so the host gets no function at all.

OUT holds {"ok": true, "functions": [...]} with each function's metadata and what the registry
kept of it, or {"ok": false, "error": {"type", "message"}}. `--each` indexes the module once and
then runs process_indexed_function on one function at a time, reporting every function's
outcome ({"ok": true, "each": {name: {"ok", "error"?}}}): the worker stops at the first refusal,
the tests compare every case.
"""

from __future__ import annotations

import json
import os
import sys
import traceback
from pathlib import Path
from typing import Any, ClassVar


class _Message:
    """A stand-in for one gRPC message class of the worker's `protos` module.

    The worker receives `protos` (classes generated from the host/worker protocol,
    FunctionRpc.proto) from its process; they are not on PyPI. These have the same names,
    fields and enum values as FunctionRpc.proto (azure_functions_worker/protos/_src/src/proto/
    FunctionRpc.proto @ 0f52efcc in Azure/azure-functions-python-worker) and, like protobuf,
    refuse a field the message does not have and an enum value it does not define.
    """

    FIELDS: ClassVar[frozenset[str]] = frozenset()
    ENUM_FIELDS: ClassVar[dict[str, frozenset[int]]] = {}

    def __init__(self, **fields: Any) -> None:
        unknown = set(fields) - self.FIELDS
        if unknown:
            raise ValueError(f"Protocol message {type(self).__name__} has no {sorted(unknown)}")
        for name, allowed in self.ENUM_FIELDS.items():
            value = fields.get(name)
            if value is not None and value not in allowed:
                raise ValueError(f"{type(self).__name__}.{name}: unknown enum value {value!r}")
        self.fields = fields


class BindingInfo(_Message):
    # enum Direction { in = 0; out = 1; inout = 2; } (`in` is reachable by getattr only)
    out = 1
    inout = 2
    # enum DataType { undefined = 0; string = 1; binary = 2; stream = 3; }
    undefined = 0
    string = 1
    binary = 2
    stream = 3
    FIELDS = frozenset({"type", "direction", "data_type", "properties"})
    ENUM_FIELDS: ClassVar[dict[str, frozenset[int]]] = {
        "direction": frozenset({0, 1, 2}),
        "data_type": frozenset({0, 1, 2, 3}),
    }


setattr(BindingInfo, "in", 0)  # `in` is a keyword


class RpcRetryOptions(_Message):
    exponential_backoff = 0
    fixed_delay = 1
    FIELDS = frozenset(
        {
            "max_retry_count",
            "delay_interval",
            "minimum_interval",
            "maximum_interval",
            "retry_strategy",
        }
    )


class RpcFunctionMetadata(_Message):
    FIELDS = frozenset(
        {
            "name",
            "directory",
            "script_file",
            "entry_point",
            "bindings",
            "is_proxy",
            "status",
            "language",
            "raw_bindings",
            "function_id",
            "managed_dependency_enabled",
            "retry_options",
            "properties",
        }
    )


class Protos:
    BindingInfo = BindingInfo
    RpcRetryOptions = RpcRetryOptions
    RpcFunctionMetadata = RpcFunctionMetadata


def _type_name(pytype: Any) -> str | None:
    if pytype is None:
        return None
    if isinstance(pytype, type):
        return f"{pytype.__module__}.{pytype.__qualname__}"
    return repr(pytype)


def _param(info: Any) -> dict[str, Any]:
    """A functions.ParamTypeInfo: the converter the worker will use and the Python type."""
    return {"binding": info.binding_name, "pytype": _type_name(info.pytype)}


def _describe(metadata: RpcFunctionMetadata, info: Any) -> dict[str, Any]:
    fields = dict(metadata.fields)
    bindings = {
        name: {
            "type": binding.fields["type"],
            "direction": binding.fields["direction"],
            "data_type": binding.fields.get("data_type"),
        }
        for name, binding in fields.pop("bindings").items()
    }
    retry = fields.pop("retry_options")
    return {
        **fields,
        "raw_bindings": [json.loads(raw) for raw in fields["raw_bindings"]],
        "bindings": bindings,
        "retry_options": retry.fields if retry is not None else None,
        "registry": {
            "requires_context": info.requires_context,
            "is_async": info.is_async,
            "has_return": info.has_return,
            "is_http_func": info.is_http_func,
            "input_types": {name: _param(t) for name, t in info.input_types.items()},
            "output_types": {name: _param(t) for name, t in info.output_types.items()},
            "return_type": _param(info.return_type) if info.return_type is not None else None,
        },
    }


def _error(exc: BaseException) -> dict[str, Any]:
    return {
        "type": type(exc).__name__,
        "module": type(exc).__module__,
        "message": str(exc),
        "traceback": traceback.format_exception(exc),
    }


def index(app_dir: Path, each: bool) -> dict[str, Any]:
    # The worker library is imported here, after sys.path is set (PYTHONPATH).
    from azure_functions_runtime import functions, loader
    from azure_functions_runtime.bindings import meta
    from azure_functions_runtime.utils.app_setting_manager import get_app_setting
    from azure_functions_runtime.utils.constants import (
        PYTHON_SCRIPT_FILE_NAME,
        PYTHON_SCRIPT_FILE_NAME_DEFAULT,
    )
    from azure_functions_runtime.utils.validators import validate_script_file_name

    protos = Protos()
    meta.load_binding_registry()
    script_file_name = get_app_setting(
        setting=PYTHON_SCRIPT_FILE_NAME, default_value=PYTHON_SCRIPT_FILE_NAME_DEFAULT
    )
    validate_script_file_name(script_file_name)
    function_path = os.path.join(app_dir, script_file_name)
    try:
        indexed_functions = loader.index_function_app(function_path)
    except Exception as exc:
        return {"ok": False, "error": _error(exc)}
    if each:
        outcomes: dict[str, Any] = {}
        for function in indexed_functions:
            try:
                loader.process_indexed_function(
                    protos, functions.Registry(), [function], str(app_dir)
                )
                outcomes[function.get_function_name()] = {"ok": True}
            except Exception as exc:
                outcomes[function.get_function_name()] = {"ok": False, "error": _error(exc)}
        return {"ok": True, "each": outcomes}
    registry = functions.Registry()
    try:
        results, _logs = loader.process_indexed_function(
            protos, registry, indexed_functions, str(app_dir)
        )
    except Exception as exc:
        return {"ok": False, "error": _error(exc)}
    return {
        "ok": True,
        "functions": [
            _describe(metadata, registry.get_function(metadata.fields["function_id"]))
            for metadata in results
        ],
    }


def main(argv: list[str]) -> int:
    app_dir = Path(argv[1]).resolve()
    out = Path(argv[2])
    # The worker imports function_app as a top-level module: the host starts it with the app's
    # root on its path (PYTHONPATH=/home/site/wwwroot:... in Azure; the worker's environment
    # reload appends function_app_directory to sys.path).
    sys.path.insert(0, str(app_dir))
    os.chdir(app_dir)
    result = index(app_dir, each="--each" in argv[3:])
    out.write_text(json.dumps(result, indent=2, sort_keys=True))
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv))

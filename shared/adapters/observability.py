"""Logging that carries the submission's ids, and Application Insights export.

Every log record of the `agent_run_relay` loggers gets the ids bound for the current
invocation (`submissionId`, and `runId`, `agentId` once known) as attributes: the Azure Monitor
OpenTelemetry handler turns them into custom dimensions. The binding lives in a context
variable, so concurrent invocations on the worker's one event loop do not mix them.
"""

from __future__ import annotations

import logging
import os
from collections.abc import Callable, Iterator, Mapping
from contextlib import contextmanager
from contextvars import ContextVar
from types import MappingProxyType
from typing import Any

RELAY_LOGGER = "agent_run_relay"
LOG_FIELDS = ("submissionId", "runId", "agentId", "threadId", "eventId")

# Immutable default: bindings always replace the mapping, never mutate it.
_bound: ContextVar[Mapping[str, str]] = ContextVar("relay_log_fields", default=MappingProxyType({}))


@contextmanager
def log_fields(**fields: Any) -> Iterator[None]:
    """Bind ids to every relay log record made inside the block (None values are skipped)."""
    merged = {**_bound.get(), **{k: str(v) for k, v in fields.items() if v is not None}}
    token = _bound.set(merged)
    try:
        yield
    finally:
        _bound.reset(token)


def bind_log_fields(**fields: Any) -> None:
    """Add ids learnt during an invocation (e.g. the run id once the run exists)."""
    _bound.set({**_bound.get(), **{k: str(v) for k, v in fields.items() if v is not None}})


RecordFactory = Callable[..., logging.LogRecord]


def _with_bound_fields(factory: RecordFactory) -> RecordFactory:
    def make_record(*args: Any, **kwargs: Any) -> logging.LogRecord:
        record = factory(*args, **kwargs)
        if record.name.startswith(RELAY_LOGGER):
            for name, value in _bound.get().items():
                setattr(record, name, value)
        return record

    make_record.relay_fields = True  # type: ignore[attr-defined]
    return make_record


def install_log_fields() -> None:
    """Stamp bound ids on relay records (a record factory: logger filters miss child loggers).

    Fields given with `extra=` override the bound ones (they are set after the factory runs).
    """
    factory = logging.getLogRecordFactory()
    if not getattr(factory, "relay_fields", False):
        logging.setLogRecordFactory(_with_bound_fields(factory))


def _aad_client_id(authentication: str) -> str | None:
    parts = dict(p.split("=", 1) for p in authentication.split(";") if "=" in p)
    if parts.get("Authorization", "").lower() != "aad":
        return None
    return parts.get("ClientId") or ""


def configure_telemetry(env: Mapping[str, str] | None = None) -> bool:
    """Export relay logs to Application Insights when APPLICATIONINSIGHTS_CONNECTION_STRING is set.

    With `APPLICATIONINSIGHTS_AUTHENTICATION_STRING=ClientId=…;Authorization=AAD` (local auth
    off on the resource) the exporter authenticates with that managed identity.
    """
    env = os.environ if env is None else env
    connection_string = env.get("APPLICATIONINSIGHTS_CONNECTION_STRING", "").strip()
    if not connection_string:
        return False
    from azure.monitor.opentelemetry import configure_azure_monitor

    options: dict[str, Any] = {
        "connection_string": connection_string,
        "logger_name": RELAY_LOGGER,
        # Live metrics keeps a connection open per instance; logs, traces and metrics suffice.
        "enable_live_metrics": False,
    }
    client_id = _aad_client_id(env.get("APPLICATIONINSIGHTS_AUTHENTICATION_STRING", ""))
    if client_id is not None:
        from azure.identity import ManagedIdentityCredential

        options["credential"] = ManagedIdentityCredential(client_id=client_id or None)
    configure_azure_monitor(**options)
    # The Functions host also forwards worker logs as plain traces; stop the duplicates so each
    # relay log line reaches Application Insights once, with its custom dimensions.
    logging.getLogger(RELAY_LOGGER).propagate = False
    return True

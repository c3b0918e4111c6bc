"""Emulated Azure Functions host + Durable Functions extension around the real Python SDKs.

See tests/README.md ("Emulated Functions host") for how it works and how to use it.
"""

from __future__ import annotations

from .durable_engine import (
    CRASH_KINDS,
    CUSTOM_STATUS_MAX_KB,
    CUSTOM_STATUS_MAX_UTF16_BYTES,
    DEFAULT_OVERRIDABLE_STATES,
    QUEUE_MESSAGE_MAX_BYTES,
    TABLE_PROPERTY_MAX_BYTES,
    CrashPoint,
    FaultPolicy,
    HostStats,
    InstanceView,
    custom_status_error,
    custom_status_utf16_bytes,
)
from .errors import (
    HostError,
    IndexingError,
    InstanceAlreadyExistsError,
    InstanceGoneError,
    InstanceNotFoundError,
    NonDeterminismError,
    OrchestrationStuckError,
    StepLimitError,
    UnsupportedFeatureError,
    VirtualTimeLimitError,
)
from .host import DEFAULT_KEY, EmulatedHost
from .indexing import IndexedFunction

__all__ = [
    "CRASH_KINDS",
    "CUSTOM_STATUS_MAX_KB",
    "CUSTOM_STATUS_MAX_UTF16_BYTES",
    "DEFAULT_KEY",
    "DEFAULT_OVERRIDABLE_STATES",
    "QUEUE_MESSAGE_MAX_BYTES",
    "TABLE_PROPERTY_MAX_BYTES",
    "CrashPoint",
    "EmulatedHost",
    "FaultPolicy",
    "HostError",
    "HostStats",
    "IndexedFunction",
    "IndexingError",
    "InstanceAlreadyExistsError",
    "InstanceGoneError",
    "InstanceNotFoundError",
    "InstanceView",
    "NonDeterminismError",
    "OrchestrationStuckError",
    "StepLimitError",
    "UnsupportedFeatureError",
    "VirtualTimeLimitError",
    "custom_status_error",
    "custom_status_utf16_bytes",
]

"""Emulated Azure Functions host + Durable Functions extension around the real Python SDKs.

See tests/README.md ("Emulated Functions host") for how it works and how to use it.
"""

from __future__ import annotations

from .durable_engine import CRASH_KINDS, CrashPoint, FaultPolicy, HostStats, InstanceView
from .errors import (
    HostError,
    IndexingError,
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
    "DEFAULT_KEY",
    "CrashPoint",
    "EmulatedHost",
    "FaultPolicy",
    "HostError",
    "HostStats",
    "IndexedFunction",
    "IndexingError",
    "InstanceGoneError",
    "InstanceNotFoundError",
    "InstanceView",
    "NonDeterminismError",
    "OrchestrationStuckError",
    "StepLimitError",
    "UnsupportedFeatureError",
    "VirtualTimeLimitError",
]

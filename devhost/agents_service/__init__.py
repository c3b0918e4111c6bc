"""A loopback service speaking the Azure AI Agents v1 REST protocol, for tests and local dev.

Run progress is computed from a (virtual) clock on every read, faults can be injected per
operation, and every request is recorded::

    clock = VirtualClock()
    with AgentsService(clock) as service, make_sync_client(service) as client:
        service.default_script = RunScript(duration_seconds=30, final_status="failed")
        service.faults.append(FaultRule(operation="runs.get", kind="429_retry_after", count=1))
        ...  # drive the real SDK; clock.advance(...) moves runs along
        service.calls("runs.get"), service.runs, service.fault_counts

Standalone on wall-clock time: ``python -m devhost.agents_service --port 8091``.
"""

from ._client import (
    AllowHttpPolicy,
    AsyncDummyTokenCredential,
    DummyTokenCredential,
    make_async_client,
    make_sync_client,
)
from ._models import FAULT_KINDS, FINAL_STATUSES, Clock, FaultRule, RecordedRequest, RunScript
from ._service import OPERATIONS, PROJECT_PATH, AgentsService
from ._wallclock import WallClock

__all__ = [
    "FAULT_KINDS",
    "FINAL_STATUSES",
    "OPERATIONS",
    "PROJECT_PATH",
    "AgentsService",
    "AllowHttpPolicy",
    "AsyncDummyTokenCredential",
    "Clock",
    "DummyTokenCredential",
    "FaultRule",
    "RecordedRequest",
    "RunScript",
    "WallClock",
    "make_async_client",
    "make_sync_client",
]

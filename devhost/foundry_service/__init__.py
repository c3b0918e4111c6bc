"""A loopback Foundry project service: OpenAI Responses (background, streams, resume, cancel),
Conversations and agent versions, as the current Foundry Agent Service serves them.

Response progress is computed from a (virtual) clock on every read, faults can be injected per
operation, and every request is recorded (never the token)::

    clock = VirtualClock()
    with FoundryService(clock) as service, make_openai_client(service) as client:
        service.create_agent_version("a1")
        service.default_script = ResponseScript(duration_seconds=30, final_status="failed")
        service.faults.append(FaultRule(operation="responses.retrieve", kind="429", count=1))
        ...  # drive the real SDK; clock.advance(...) moves responses along

Standalone on wall-clock time: ``python -m devhost.foundry_service --port 8093`` (``--state-file
PATH`` keeps its state across restarts, as ``devhost/offline.py`` does for ``make start``).
"""

from ._client import (
    FOUNDRY_SCOPE,
    make_async_openai_client,
    make_async_project_client,
    make_openai_client,
    make_project_client,
)
from ._models import (
    FAULT_KINDS,
    TERMINAL_STATUSES,
    Clock,
    FaultRule,
    RecordedRequest,
    ResponseScript,
)
from ._service import DEFAULT_PROJECT, OPERATIONS, FoundryService
from ._store import CONVERSATION_LOCKED

__all__ = [
    "CONVERSATION_LOCKED",
    "DEFAULT_PROJECT",
    "FAULT_KINDS",
    "FOUNDRY_SCOPE",
    "OPERATIONS",
    "TERMINAL_STATUSES",
    "Clock",
    "FaultRule",
    "FoundryService",
    "RecordedRequest",
    "ResponseScript",
    "make_async_openai_client",
    "make_async_project_client",
    "make_openai_client",
    "make_project_client",
]

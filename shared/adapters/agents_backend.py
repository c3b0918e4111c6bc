"""The interfaces the activities use to reach the outside world, and where they come from.

An agents backend starts, polls and cancels runs and hands them tool outputs, each call
returning a contract `Outcome` (never raising for a service failure). Today's backend is the
azure-ai-agents SDK (`azure_agents.py`); another service (e.g. the Foundry Responses API) is
one new module implementing `AgentsBackend`, chosen in `agents_backend()`.
"""

from __future__ import annotations

from typing import Protocol

from ..contract import Outcome, ToolOutput
from ..core.events import RelayEvent
from ..core.submission import Submission


class AgentsBackend(Protocol):
    async def start_run(
        self,
        submission_id: str,
        submission: Submission,
        *,
        find_only: bool = False,
        fast_path_seconds: float = 0.0,
        known_thread_id: str | None = None,
        not_before: float | None = None,
    ) -> Outcome:
        """Start the submission's run, or find the one an earlier attempt started."""
        ...

    async def poll_run(self, submission_id: str, thread_id: str, run_id: str) -> Outcome: ...

    async def cancel_run(self, submission_id: str, thread_id: str, run_id: str) -> Outcome: ...

    async def submit_tool_outputs(
        self, submission_id: str, thread_id: str, run_id: str, tool_outputs: list[ToolOutput]
    ) -> Outcome: ...


class EventPublisher(Protocol):
    async def publish(self, event: RelayEvent) -> Outcome: ...


def agents_backend() -> AgentsBackend:
    from . import azure_agents

    return azure_agents


def event_publisher() -> EventPublisher:
    from . import eventgrid

    return eventgrid

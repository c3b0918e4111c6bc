"""The interfaces the activities use to reach the outside world, and where they come from.

An agents backend starts, polls and cancels runs and hands them tool outputs, each call
returning a contract `Outcome` (never raising for a service failure). Two backends implement
it: classic Agents through the azure-ai-agents SDK (`azure_agents.py`) and the Foundry Agent
Service through the OpenAI Responses API (`foundry_responses.py`); `agents_backend(api)`
picks one by the submission's `api`.
"""

from __future__ import annotations

from typing import Protocol

from ..contract import API_RESPONSES, Api, Outcome, RunRef, ToolOutput
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
        uncertain_since: str | None = None,
    ) -> Outcome:
        """Start the submission's run, or find the one an earlier attempt started."""
        ...

    async def poll_run(self, ref: RunRef) -> Outcome: ...

    async def cancel_run(self, ref: RunRef) -> Outcome: ...

    async def submit_tool_outputs(
        self,
        ref: RunRef,
        tool_outputs: list[ToolOutput],
        *,
        find_only: bool = False,
        uncertain_since: str | None = None,
    ) -> Outcome:
        """Hand the run its tool outputs (idempotent: an earlier attempt's effect is found).

        `find_only` and `uncertain_since` matter where outputs start a new run (Foundry): see
        foundry_responses.submit_tool_outputs."""
        ...


class EventPublisher(Protocol):
    async def publish(self, event: RelayEvent) -> Outcome: ...


def agents_backend(api: Api) -> AgentsBackend:
    if api == API_RESPONSES:
        from . import foundry_responses

        return foundry_responses
    from . import azure_agents

    return azure_agents


def event_publisher() -> EventPublisher:
    from . import eventgrid

    return eventgrid

"""The generation's waits for caller events (cancel, tool outputs), by the runtime's rules."""

from __future__ import annotations

from typing import Any

from ..contract import CANCEL_EVENT, tool_outputs_event_name
from ..core.state import RelayState, awaiting_outputs


class EventWaits:
    """The generation's waits for caller events: each name waited on once, never renewed.

    Rules of azure-functions-durable 1.7 (azure/durable_functions/models) and the extension:
    - a wait is registered only when yielded (DurableOrchestrationContext._add_to_open_tasks);
      an EventRaised that finds no registered wait is kept in `deferred_tasks` for good and
      answers the next AND every later wait of that name in this history
      (TaskOrchestrationExecutor.set_task_value). A wait renewed after such an event would
      resolve at once forever, so a name is waited on once per generation: `cancel` once,
      tool outputs once per round of tool calls (the round is part of the event name);
    - a task already yielded is left out of a later WhenAny action (CompoundTask.__init__),
      and the extension's shim awaits each action in turn (OutOfProcOrchestrationShim.
      ProcessAsyncActionsV2): racing an already-scheduled activity against a new wait would
      leave the shim awaiting that wait alone, so waits are raced only against new timers;
    - DTFx drops the events of a finished generation except those it reads after the
      orchestrator continued as new (TaskOrchestrationContext.HandleEventRaisedEvent): the
      loop continues as new only right after a timer won a race in which every open wait was
      registered (`ready_to_continue`), so an earlier event has been applied to the state.
    """

    def __init__(self, context: Any) -> None:
        self._context = context
        self.cancel = context.wait_for_external_event(CANCEL_EVENT)
        self._rounds: dict[str, Any] = {}
        self._absorbed: set[int] = set()
        self._registered: set[int] = set()
        self.ready_to_continue = False

    def mark_registered(self, waits: list[Any]) -> None:
        self._registered.update(id(w) for w in waits)

    def all_registered(self, state: RelayState) -> bool:
        """Whether every open wait has been yielded, so no event can still be held back."""
        return all(id(w) in self._registered for w in self.open_waits(state))

    def for_round(self, round_key: str) -> Any:
        if round_key not in self._rounds:
            name = tool_outputs_event_name(round_key)
            self._rounds[round_key] = self._context.wait_for_external_event(name)
        return self._rounds[round_key]

    def open_waits(self, state: RelayState) -> list[Any]:
        """The waits to race against a timer: every one that can still receive an event."""
        waits = [self.cancel]
        if awaiting_outputs(state) and state.required_action is not None:
            waits.append(self.for_round(state.required_action["round"]))
        return [w for w in waits if not w.is_completed]

    def take_completed(self) -> list[tuple[str | None, Any]]:
        """Waits that received their event and were not acted on yet: (round or None, task)."""
        found: list[tuple[str | None, Any]] = []
        candidates: list[tuple[str | None, Any]] = [(None, self.cancel)]
        candidates += list(self._rounds.items())
        for round_key, wait in candidates:
            if wait.is_completed and id(wait) not in self._absorbed:
                self._absorbed.add(id(wait))
                found.append((round_key, wait))
        return found

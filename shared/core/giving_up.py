"""Giving up on a Foundry submission whose last response asks for function calls (pure).

Such a response has already ended at the service (`completed`, its output ending in
`function_call` items, which response_snapshot reads `requires_action`): a cancel has nothing
left to stop there and is refused. So giving up at that point (the caller's cancel, the
deadline, the tool-output timeout) ends the submission at once, `cancelled` with that reason,
without calling the service. Unless a response answering the calls may exist: a create of
this round's outputs failed in a way that may have applied it (or was refused by the
conversation's lock, which that response may hold). That response is looked for first (it
shows on the conversation once it has ended; nothing lists running responses) and, once
found, followed like any other, so no response runs on unobserved.
"""

from __future__ import annotations

from datetime import datetime
from typing import Literal

from ..contract import Outcome, ToolOutputsInput
from .decisions import Note, after_tool_outputs, finish, note, tool_outputs_input
from .response_chain import LOST_RESPONSE_SEARCH_SECONDS, is_responses, still_searching
from .run_status import REQUIRES_ACTION
from .state import RelayState
from .timefmt import to_iso

# "service": ask the service to cancel the run; "end": nothing runs, end the submission now;
# "find": first look for the response this round's outputs may have started.
CancelRoute = Literal["service", "end", "find"]


def cancel_route(state: RelayState) -> CancelRoute:
    if not is_responses(state.submission) or state.run_fields.get("status") != REQUIRES_ACTION:
        return "service"
    return "find" if state.tool_outputs is not None and state.uncertain_since else "end"


def cancel_pending(state: RelayState) -> bool:
    """A cancel is asked and not yet sent, or sent before the response ended asking for calls
    (refused, too late): nothing will ever read `cancelled` there, so it is settled here."""
    if state.cancel_reason is None:
        return False
    return not state.cancel_sent or cancel_route(state) != "service"


def end_given_up(state: RelayState, now: datetime, notes: list[Note]) -> None:
    """The submission ends `cancelled` now: the last response asks for calls, none answers."""
    note(notes, "nothing runs at the service: ending cancelled (%s)", state.cancel_reason)
    state.uncertain_since = None
    finish(state, "cancelled", now, None)
    state.completed_at = to_iso(now)


def find_input(state: RelayState) -> ToolOutputsInput:
    """The tool-outputs activity's input that only looks for this round's response."""
    return tool_outputs_input(state, find_only=True)


def after_find(state: RelayState, outcome: Outcome, now: datetime, notes: list[Note]) -> None:
    """Found: the response joins the chain and is followed (cancelled next, if it runs).
    Shown to be absent: end now. Unresolved: look again later, for LOST_RESPONSE_SEARCH_SECONDS.
    """
    if outcome["outcome"] == "ok":
        if outcome.get("run") is None:
            end_given_up(state, now, notes)
        else:
            note(notes, "found the response this round's outputs started")
            after_tool_outputs(state, outcome, now)
        return
    state.retry_after = outcome.get("retryAfter")
    if not still_searching(state.uncertain_since, now):
        message = (
            "a response answering the tool outputs may have been started (its create's "
            f"answer was lost) and did not show within {LOST_RESPONSE_SEARCH_SECONDS} s"
        )
        finish(state, "failed", now, {"code": "response_unresolved", "message": message})

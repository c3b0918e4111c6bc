"""The submission's limits and the time of its next poll (pure): the deadline, the give-up
time of a round of tool calls, the grace a cancel has to be confirmed, and the schedule."""

from __future__ import annotations

from datetime import datetime, timedelta

from .decisions import Note, finish, request_cancel
from .response_chain import confirm_at, pending_confirmation
from .schedule import PollingPolicy, poll_wait_seconds
from .state import RelayState, awaiting_outputs
from .timefmt import from_iso

# How long a cancelled run may stay unconfirmed (still not terminal) before the submission
# ends anyway; only a service that keeps refusing us gets there.
CANCEL_GRACE_SECONDS = 3600
# While the relay waits for tool outputs the outputs event wakes it: polls only watch for the
# run ending on its own (expired, cancelled at the service), so they can be rare.
REQUIRES_ACTION_POLL_SECONDS = 300.0


def limit_due(state: RelayState, now: datetime) -> bool:
    """The deadline or the tool-output give-up time has come, and no cancel is asked yet."""
    if state.cancel_reason is not None:
        return False
    if now >= from_iso(str(state.deadline_at)):
        return True
    action = state.required_action
    return awaiting_outputs(state) and action is not None and now >= from_iso(action["giveUpAt"])


def check_limits(state: RelayState, now: datetime, notes: list[Note]) -> bool:
    """Deadline, tool-output timeout and cancel grace; True if the submission is over."""
    deadline = from_iso(str(state.deadline_at))
    action = state.required_action
    if state.cancel_reason is None and now >= deadline:
        request_cancel(state, "deadline_exceeded", now, notes)
    if awaiting_outputs(state) and action is not None and now >= from_iso(action["giveUpAt"]):
        request_cancel(state, "tool_outputs_timeout", now, notes)
    sent_at = state.cancel_sent_at or state.cancel_requested_at  # (an older state: asked)
    if state.cancel_sent and sent_at:
        unconfirmed = (now - from_iso(sent_at)).total_seconds()
        if unconfirmed >= CANCEL_GRACE_SECONDS:
            message = f"the run did not confirm the cancel within {CANCEL_GRACE_SECONDS} s"
            finish(state, "failed", now, {"code": "cancel_unconfirmed", "message": message})
            return True
    return False


def next_poll_at(state: RelayState, policy: PollingPolicy, now: datetime) -> datetime:
    if pending_confirmation(state.cancel_check) and state.cancel_check is not None:
        # A `cancelled` read after our cancel: read once more a few seconds later.
        return max(confirm_at(state.cancel_check), now)
    if awaiting_outputs(state):
        # The outputs event wakes the wait; polls only watch for the run ending on its own.
        wait = max(REQUIRES_ACTION_POLL_SECONDS, state.retry_after or 0.0)
    else:
        anchor = from_iso(state.schedule_anchor or str(state.submitted_at))
        elapsed = (now - anchor).total_seconds()
        wait = poll_wait_seconds(
            policy, elapsed, state.schedule_step, state.submission_id, state.retry_after
        )
    fire_at = now + timedelta(seconds=wait)
    if state.cancel_reason is None:
        caps = [from_iso(str(state.deadline_at))]
        if awaiting_outputs(state) and state.required_action is not None:
            caps.append(from_iso(state.required_action["giveUpAt"]))
        fire_at = max(min([fire_at, *caps]), now)
    return fire_at

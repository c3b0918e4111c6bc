"""The orchestrator's publishing decisions (pure): build AgentRunCompleted once, then retry
publishing it with backoff until it is accepted or the retry window is over."""

from __future__ import annotations

import logging
from datetime import datetime, timedelta

from ..contract import PHASE_DONE, Outcome
from .decisions import Note, internal_error, note
from .report import completed_event
from .schedule import TRANSIENT_RETRY_POLICY, next_wait_seconds
from .state import RelayState
from .timefmt import from_iso, to_iso


def prepare_publish(state: RelayState, now: datetime) -> None:
    """Build the AgentRunCompleted event once, before the first publish attempt."""
    if state.event is not None:
        return
    try:
        state.event = completed_event(state)
    except Exception as exc:
        # Whatever broke the event, the submission still ends in one (minimal) event.
        state.run, state.output_text = None, None
        state.final_status, state.final_error = "failed", internal_error(exc)
        state.event = completed_event(state)
    state.publish_started_at = to_iso(now)
    state.attempts = 0
    state.retry_after = None


def after_publish(
    state: RelayState, outcome: Outcome, now: datetime, notes: list[Note]
) -> datetime | None:
    """Done, gave up, or the time of the next attempt."""
    assert state.event is not None
    if outcome["outcome"] == "ok":
        state.published_at = to_iso(now)
        state.phase, state.last_error = PHASE_DONE, None
        note(notes, "submission %s: event %s published", state.status, state.event["id"])
        return None
    state.attempts += 1
    state.last_error = outcome.get("error")
    started = from_iso(str(state.publish_started_at))
    if (now - started).total_seconds() >= state.publish_retry_window_seconds:
        state.publish_error = {
            "code": "publish_failed",
            "message": f"gave up publishing after {state.attempts} attempts",
            "lastError": outcome.get("error"),
        }
        state.phase = PHASE_DONE
        note(notes, "gave up publishing %s", state.event["id"], level=logging.ERROR)
        return None
    wait = next_wait_seconds(
        TRANSIENT_RETRY_POLICY, state.attempts - 1, state.submission_id, outcome.get("retryAfter")
    )
    return now + timedelta(seconds=wait)

"""What only a Foundry agent's submission needs of the orchestrator's decisions (pure).

A Foundry submission is a chain of responses (each round of tool outputs starts a new one):
the state records every response id, oldest first. And a cancelled background response has
been reported `cancelled` and later `completed` (Microsoft Q&A 2339607, "Status Changes from
Cancelled to Completed"; reference note foundry-responses-wire.md §5): after the relay asked
for a cancel, a `cancelled` read is confirmed by one more read CANCEL_CONFIRM_SECONDS later,
and the event says what both reads saw.
"""

from __future__ import annotations

from collections.abc import Mapping
from datetime import datetime, timedelta
from typing import Any, Protocol, TypedDict

from ..contract import API_RESPONSES, Outcome, error_code, submission_api
from .timefmt import from_iso, to_iso

CANCEL_CONFIRM_SECONDS = 5.0
# How long a response whose create answer was lost is looked for after the relay gave up on
# the submission (it shows on its conversation only once it has ended; no API lists running
# responses): longer than a background response runs, so none is left unobserved.
LOST_RESPONSE_SEARCH_SECONDS = 6 * 3600
# How many response ids of a chain the status view lists (the newest ones).
STATUS_RESPONSE_IDS = 20


class CancelCheck(TypedDict):
    firstRead: str
    firstReadAt: str
    secondRead: str | None


def is_responses(submission: Mapping[str, Any]) -> bool:
    return submission_api(submission) == API_RESPONSES  # type: ignore[arg-type]


def record_response(chain: list[str], run: Mapping[str, Any] | None) -> bool:
    """Append the run's response id to the chain unless it is already the last one; True if
    it was appended (a new response of the chain)."""
    response_id = (run or {}).get("runId")
    if response_id and (not chain or chain[-1] != response_id):
        chain.append(str(response_id))
        return True
    return False


USAGE_KEYS = ("prompt_tokens", "completion_tokens", "total_tokens")


def add_usage(
    total: Mapping[str, Any] | None, usage: Mapping[str, Any] | None
) -> dict[str, int] | None:
    """Token counts of two parts of a chain added up (None when neither has any)."""
    if not total and not usage:
        return None
    return {k: int((total or {}).get(k) or 0) + int((usage or {}).get(k) or 0) for k in USAGE_KEYS}


def hold_for_confirmation(
    check: CancelCheck | None, cancel_asked: bool, status: str, now: datetime
) -> tuple[CancelCheck | None, bool]:
    """(the new check, whether to keep polling instead of finishing on this terminal read).

    Only a `cancelled` read after the relay asked for a cancel is held; a response that ends
    otherwise (or on its own) is published at its first terminal read.
    """
    if check is None:
        if not cancel_asked or status != "cancelled":
            return None, False
        return {"firstRead": status, "firstReadAt": to_iso(now), "secondRead": None}, True
    if check["secondRead"] is not None:
        return check, False
    if now < confirm_at(check):
        return check, True  # read early (woken by an event): the confirming read is still due
    return {**check, "secondRead": status}, False


def confirm_at(check: CancelCheck) -> datetime:
    return from_iso(check["firstReadAt"]) + timedelta(seconds=CANCEL_CONFIRM_SECONDS)


def pending_confirmation(check: CancelCheck | None) -> bool:
    return check is not None and check["secondRead"] is None


def confirmation_field(check: CancelCheck | None) -> dict[str, str | None] | None:
    """The event's `cancelConfirmation`: what the two reads after the cancel saw."""
    if check is None:
        return None
    return {"firstRead": check["firstRead"], "secondRead": check["secondRead"]}


# Outcomes the orchestrator makes itself for an activity that raised or answered nonsense: it
# may have done anything, a create included.
ACTIVITY_FAILURE_CODES = frozenset({"activity_failed", "bad_activity_result"})


class CreateInDoubt(Protocol):
    """What `uncertain_after` reads of the orchestrator's state."""

    @property
    def submission(self) -> Mapping[str, Any]: ...

    @property
    def uncertain_since(self) -> str | None: ...


def uncertain_after(
    state: CreateInDoubt, outcome: Outcome, now: datetime, creating: bool = True
) -> str | None:
    """When a Foundry create that may have been applied last failed (None: none pending).

    Only an attempt that could create counts: a lookup must not put off the search's end.
    """
    activity_failed = error_code(outcome.get("error")) in ACTIVITY_FAILURE_CODES
    doubt = outcome.get("uncertainCreate") or activity_failed
    if creating and doubt and is_responses(state.submission):
        return to_iso(now)
    return state.uncertain_since


def still_searching(uncertain_since: str | None, now: datetime) -> bool:
    """A create that may have been applied is still looked for (LOST_RESPONSE_SEARCH_SECONDS)."""
    if uncertain_since is None:
        return False
    return (now - from_iso(uncertain_since)).total_seconds() < LOST_RESPONSE_SEARCH_SECONDS


def status_response_ids(chain: list[str]) -> list[str]:
    return chain[-STATUS_RESPONSE_IDS:]

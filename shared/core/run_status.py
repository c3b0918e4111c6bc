"""Status taxonomy: what an Agents run status means for the relay, and what callers see."""

from __future__ import annotations

from enum import StrEnum
from typing import Any

# The service's run statuses, as plain lowercase strings: the SDK's RunStatus enum lacks
# `incomplete`, and `str(RunStatus.X)` is "RunStatus.X", so never compare enum objects.
TERMINAL_RUN_STATUSES = frozenset({"completed", "failed", "cancelled", "expired", "incomplete"})
WAITING_RUN_STATUSES = frozenset({"queued", "in_progress", "cancelling"})
REQUIRES_ACTION = "requires_action"

# What `GET /api/runs/{id}` reports as `status`.
SUBMISSION_STATUSES = (
    "pending",
    "running",
    "requires_action",
    "completed",
    "failed",
    "cancelled",
    "expired",
    "incomplete",
)


class RunPhase(StrEnum):
    TERMINAL = "terminal"
    WAITING = "waiting"
    REQUIRES_ACTION = "requires_action"
    UNKNOWN = "unknown"


def normalize_run_status(status: Any) -> str:
    """The wire value of a status, whether given as the SDK enum or a string."""
    value = getattr(status, "value", status)
    return str(value).strip().lower() if value is not None else ""


def classify_run_status(status: str) -> RunPhase:
    if status in TERMINAL_RUN_STATUSES:
        return RunPhase.TERMINAL
    if status in WAITING_RUN_STATUSES:
        return RunPhase.WAITING
    if status == REQUIRES_ACTION:
        return RunPhase.REQUIRES_ACTION
    return RunPhase.UNKNOWN


def submission_status(run_status: str | None) -> str:
    """Map the agent run's status (None before the run exists) to the submission status."""
    if not run_status:
        return "pending"
    phase = classify_run_status(run_status)
    if phase is RunPhase.TERMINAL:
        return run_status
    if phase is RunPhase.REQUIRES_ACTION:
        return "requires_action"
    return "running"

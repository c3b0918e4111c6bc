"""The pure core: no I/O, no clock, no environment, no Azure SDK (only `shared.contract`)."""

from .custom_status import bounded_custom_status
from .decisions import Note, StartDecision
from .events import RelayEvent, build_completed_event, build_requires_action_event
from .problems import Problem, bad_request
from .publishing import after_publish, prepare_publish
from .report import cancellation_reason, completed_event, custom_status, final_output
from .run_status import RunPhase, classify_run_status, normalize_run_status, submission_status
from .schedule import PollingBounds, PollingPolicy, next_wait_seconds, poll_wait_seconds
from .state import RelayState, RequiredAction, awaiting_outputs
from .status_view import build_status_view, is_relay_instance
from .submission import (
    Submission,
    SubmissionLimits,
    authorize_submission,
    parse_json_body,
    validate_submission,
)
from .timefmt import from_iso, to_iso
from .tool_outputs import tool_call_round, validate_tool_outputs

__all__ = [
    "Note",
    "PollingBounds",
    "PollingPolicy",
    "Problem",
    "RelayEvent",
    "RelayState",
    "RequiredAction",
    "RunPhase",
    "StartDecision",
    "Submission",
    "SubmissionLimits",
    "after_publish",
    "authorize_submission",
    "awaiting_outputs",
    "bad_request",
    "bounded_custom_status",
    "build_completed_event",
    "build_requires_action_event",
    "build_status_view",
    "cancellation_reason",
    "classify_run_status",
    "completed_event",
    "custom_status",
    "final_output",
    "from_iso",
    "is_relay_instance",
    "next_wait_seconds",
    "normalize_run_status",
    "parse_json_body",
    "poll_wait_seconds",
    "prepare_publish",
    "submission_status",
    "to_iso",
    "tool_call_round",
    "validate_submission",
    "validate_tool_outputs",
]

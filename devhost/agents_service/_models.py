"""Value types of the loopback Agents service: run scripts, fault rules, recorded requests."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from datetime import datetime
from typing import Any, Protocol

from devhost.loopback_api import FaultRuleBase, check_seconds

JSON = dict[str, Any]

FINAL_STATUSES = frozenset({"completed", "failed", "cancelled", "expired", "incomplete"})
ACTIVE_STATUSES = frozenset({"queued", "in_progress", "requires_action", "cancelling"})
CANCELLABLE_STATUSES = frozenset({"queued", "in_progress", "requires_action"})

FAULT_KINDS = frozenset(
    {
        "429",
        "429_retry_after",
        "500",
        "503",
        "timeout",
        "malformed_json",
        "404",
        "401",
        "403",
        "500_after_apply",
        # Streaming run creation only: the run is created, then the event stream is cut
        # after its first event, or ends ("done") before any terminal event.
        "stream_drop",
        "stream_end_early",
    }
)


class Clock(Protocol):
    """What the service needs from a clock: VirtualClock in tests, WallClock for local dev."""

    def now(self) -> datetime: ...

    def timestamp(self) -> float: ...


@dataclass(frozen=True)
class RunScript:
    """Decides the life of one run in virtual time.

    queued for `queued_seconds`, then in_progress for `duration_seconds` of in-progress time,
    then `final_status`. With `requires_action` (a list of `{id?, name, arguments}` function calls)
    the run stops after `requires_action_after_seconds` of in-progress time and waits for tool
    outputs until `tool_outputs_expire_seconds` have passed (then `expired`); outputs resume it
    for the remaining duration. A cancel request leads to `cancelled` after `cancel_delay_seconds`.
    """

    queued_seconds: float = 0.5
    duration_seconds: float = 3.0
    final_status: str = "completed"
    last_error: Mapping[str, str] | None = None
    incomplete_details: Mapping[str, str] | None = None
    usage: Mapping[str, int] | None = None
    output_text: str | None = None
    requires_action: Sequence[Mapping[str, Any]] | None = None
    requires_action_after_seconds: float = 1.0
    tool_outputs_expire_seconds: float = 600.0
    cancel_delay_seconds: float = 2.0

    def __post_init__(self) -> None:
        if self.final_status not in FINAL_STATUSES:
            raise ValueError(f"final_status must be one of {sorted(FINAL_STATUSES)}")
        for name in (
            "queued_seconds",
            "duration_seconds",
            "requires_action_after_seconds",
            "tool_outputs_expire_seconds",
            "cancel_delay_seconds",
        ):
            check_seconds(name, getattr(self, name))
        for call in self.requires_action or ():
            if not isinstance(call.get("name"), str):
                raise ValueError("each requires_action tool call needs a string 'name'")


class FaultRule(FaultRuleBase):
    """Make matching requests fail in a given way (`kind`, see FAULT_KINDS).

    `operation` is an operation name such as "runs.get" or "*"; `rate` is the chance per
    matching request (drawn from the service's seeded generator); `count` caps how often the
    rule fires. Apart from "timeout" and "500_after_apply", a faulted request is not applied.
    """

    kinds = FAULT_KINDS


@dataclass
class RecordedRequest:
    """One request as the service saw it. The bearer token itself is never kept."""

    method: str
    path: str  # relative to the endpoint, e.g. "/threads/thread_x/runs/run_y"
    query: dict[str, str]
    operation: str  # e.g. "runs.get"; "unknown" when no route matched
    body: Any  # parsed JSON, or None when absent or not JSON
    time: datetime  # virtual time of arrival
    status: int | None = None  # None while a "timeout" fault still holds the response
    fault: str | None = None
    bearer: bool = False  # whether a non-empty bearer token was presented
    client_request_id: str | None = None
    response: Any = None  # parsed JSON body sent back (None for a malformed_json fault)

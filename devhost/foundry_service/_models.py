"""Value types of the loopback Foundry project service: scripts, fault rules, recorded requests,
and the records of responses and conversations the store keeps."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any

from devhost.agents_service._models import Clock
from devhost.loopback_api import FaultRuleBase, check_seconds

JSON = dict[str, Any]

# The Responses API's six statuses (spec `Response.status`); the last four are terminal.
TERMINAL_STATUSES = frozenset({"completed", "failed", "cancelled", "incomplete"})
ACTIVE_STATUSES = frozenset({"queued", "in_progress"})
INCOMPLETE_REASONS = frozenset({"max_output_tokens", "content_filter"})

FAULT_KINDS = frozenset(
    {
        "429",  # no retry header
        "429_retry_after",  # Retry-After: <seconds> (FaultRule.retry_after, default 1)
        "429_retry_after_ms",  # retry-after-ms: <milliseconds> (from FaultRule.retry_after)
        "500",
        "503",
        "timeout",  # the answer is held for delay_seconds (the request is applied after)
        "malformed_json",  # a 200 whose JSON is cut short (writes are not applied)
        "401",
        "403",
        "404",
        "500_after_apply",  # applied, then a 500 (a retried create makes a second response)
    }
)


@dataclass(frozen=True)
class ResponseScript:
    """Decides the life of one response in virtual time.

    `queued` for `queued_seconds`, `in_progress` for `duration_seconds`, then `final_status`:
    - `completed`: a message with `output_text` (default: an echo of the last input text), or,
      with `function_calls` (a list of `{name, arguments?, call_id?}`), only `function_call`
      output items and no answer (the caller answers with a new response whose input holds
      `function_call_output` items and `previous_response_id` or the same `conversation`);
      with `answer_function_outputs`, a response whose new input holds `function_call_output`
      items answers instead of asking again (default text: an echo of the last output), so
      one script plays a whole tool turn (ask, then answer);
    - `failed` with `error` (`{code, message}`, default `server_error`);
    - `incomplete` with `incomplete_reason` (and the text so far);
    - `cancelled` (as if cancelled on the service side).
    `usage` (`input_tokens`, `output_tokens`) goes on the terminal response.
    A cancel request turns a queued or in-progress background response `cancelled` after
    `cancel_delay_seconds`; with `completed_after_cancel_seconds` it later reads `completed`
    (reported for Azure OpenAI background responses). A stream of the response is cut
    (connection closed) right after the event numbered `stream_drop_after`, on the first
    stream only; resume with `GET /responses/{id}?stream=true&starting_after=N`.
    """

    queued_seconds: float = 0.5
    duration_seconds: float = 3.0
    final_status: str = "completed"
    error: Mapping[str, str] | None = None
    incomplete_reason: str = "max_output_tokens"
    function_calls: Sequence[Mapping[str, Any]] | None = None
    answer_function_outputs: bool = False
    output_text: str | None = None
    usage: Mapping[str, int] | None = None
    stream_drop_after: int | None = None
    cancel_delay_seconds: float = 0.0
    completed_after_cancel_seconds: float | None = None

    def __post_init__(self) -> None:
        if self.final_status not in TERMINAL_STATUSES:
            raise ValueError(f"final_status must be one of {sorted(TERMINAL_STATUSES)}")
        if self.incomplete_reason not in INCOMPLETE_REASONS:
            raise ValueError(f"incomplete_reason must be one of {sorted(INCOMPLETE_REASONS)}")
        for name in ("queued_seconds", "duration_seconds", "cancel_delay_seconds"):
            check_seconds(name, getattr(self, name))
        if self.completed_after_cancel_seconds is not None:
            check_seconds("completed_after_cancel_seconds", self.completed_after_cancel_seconds)
        for call in self.function_calls or ():
            if not isinstance(call.get("name"), str):
                raise ValueError("each function call needs a string 'name'")
        if self.error is not None and not {"code", "message"} <= set(self.error):
            raise ValueError("error needs 'code' and 'message'")


@dataclass
class ResponseRecord:
    id: str
    created: datetime
    script: ResponseScript
    background: bool
    stream: bool
    store: bool
    model: str
    metadata: dict[str, str]
    input_items: list[JSON]  # the new input, as items (conversation items are not repeated)
    previous_response_id: str | None
    conversation_id: str | None
    agent_reference: JSON | None
    output: list[JSON]  # the final output (computed at creation)
    cancel_requested: datetime | None = None
    events: list[JSON] = field(default_factory=list)  # stream events produced so far
    stream_dropped: bool = False
    appended_to_conversation: bool = False


@dataclass
class ConversationRecord:
    id: str
    created: datetime
    metadata: dict[str, str]
    items: list[JSON] = field(default_factory=list)


class FaultRule(FaultRuleBase):
    """Make matching requests fail in a given way (`kind`, see FAULT_KINDS).

    `operation` is an operation name such as "responses.retrieve" or "*"; `rate` is the chance
    per matching request (seeded); `count` caps how often the rule fires. Apart from "timeout"
    and "500_after_apply", a faulted request is not applied.
    """

    kinds = FAULT_KINDS


@dataclass
class RecordedRequest:
    """One request as the service saw it. The bearer token itself is never kept."""

    method: str
    path: str  # relative to the project endpoint, e.g. "/openai/v1/responses/resp_x"
    query: dict[str, str]
    operation: str  # e.g. "responses.create"; "unknown" when no route matched
    body: Any  # parsed JSON, or None when absent or not JSON
    time: datetime  # virtual time of arrival
    status: int | None = None  # None while a "timeout" fault still holds the response
    fault: str | None = None
    bearer: bool = False  # whether a non-empty bearer token was presented
    user_agent: str | None = None
    retry_count: str | None = None  # the openai SDK's x-stainless-retry-count
    response: Any = None  # parsed JSON body sent back (None for streams and malformed bodies)
    events: list[JSON] = field(default_factory=list)  # SSE events sent, for streams


__all__ = [
    "ACTIVE_STATUSES",
    "FAULT_KINDS",
    "JSON",
    "TERMINAL_STATUSES",
    "Clock",
    "ConversationRecord",
    "FaultRule",
    "RecordedRequest",
    "ResponseRecord",
    "ResponseScript",
]

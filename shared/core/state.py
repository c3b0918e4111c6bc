"""The orchestration's state: everything it needs, carried whole through continue-as-new."""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import asdict, dataclass, field, fields
from typing import Any, TypedDict

from ..contract import (
    PHASE_POLL,
    PHASE_PUBLISH,
    PHASE_START,
    AgentRunView,
    ErrorInfo,
    EventPayload,
    RunSnapshot,
    SubmissionPayload,
    ToolCall,
    ToolOutput,
)
from .response_chain import CancelCheck, is_responses, status_response_ids
from .run_status import submission_status
from .tool_outputs import tool_call_round


class RequiredAction(TypedDict):
    """A round of function calls the run waits for, as the orchestration carries it."""

    round: str  # the key of the set of call ids; names the round's tool-outputs event
    ids: list[str]
    toolCalls: list[ToolCall]  # as shown in the custom status (arguments as in the event)
    expiresAt: str | None  # the service's own expiry of the request
    giveUpAt: str  # when the relay cancels the run if no outputs came
    event: EventPayload  # AgentRunRequiresAction
    shown: bool  # the status showing the calls was committed
    published: bool  # the event was published


@dataclass
class RelayState:
    submission_id: str
    submission: SubmissionPayload
    polls_per_generation: int
    publish_retry_window_seconds: int
    tool_outputs_timeout_seconds: int = 900
    fast_path_seconds: float = 0.0
    # sha256 of the request body when it came with an Idempotency-Key.
    request_fingerprint: str | None = None
    phase: str = PHASE_START
    generation: int = 0
    submitted_at: str | None = None
    deadline_at: str | None = None
    # Latest snapshot of the agent run (see run_snapshot.py); None until the run exists.
    run: RunSnapshot | None = None
    polls: int = 0
    schedule_step: int = 0
    # When the current polling schedule started (the run's start, or a cancel or tool outputs
    # that restart the run's work): waits grow with the time elapsed since then.
    schedule_anchor: str | None = None
    next_poll_at: str | None = None
    # The generation ended on a completed wait: the next generation polls first.
    poll_due: bool = False
    retry_after: float | None = None
    attempts: int = 0
    not_found_streak: int = 0
    cancel_reason: str | None = None
    cancel_sent: bool = False
    cancel_requested_at: str | None = None
    # When the cancel reached the service (the grace to confirm it counts from there: a
    # response whose create answer was lost may be found long after the cancel was asked).
    cancel_sent_at: str | None = None
    # A thread a failed start attempt reported creating: the retry looks there first.
    created_thread_id: str | None = None
    final_status: str | None = None
    final_error: ErrorInfo | None = None
    completed_at: str | None = None
    output_text: str | None = None
    publish_started_at: str | None = None
    event: EventPayload | None = None
    published_at: str | None = None
    publish_error: dict[str, Any] | None = None
    last_error: ErrorInfo | None = field(default=None)
    # The run's pending function calls while it is `requires_action`: their round key and
    # ids, the calls as shown, when we give up, the AgentRunRequiresAction event, and whether
    # the status showing them was committed (`shown`) and the event published.
    required_action: RequiredAction | None = None
    tool_outputs: list[ToolOutput] | None = None
    ignored_events: int = 0
    # Foundry agents (Responses API): every response of the submission, oldest first; the
    # last stream sequence number the fast path saw; when a create (start or tool outputs)
    # last failed in a way that may have made a response whose answer was lost (None once a
    # response is known again); the reads confirming a cancel (core.response_chain).
    response_chain: list[str] = field(default_factory=list)
    stream_sequence: int | None = None
    uncertain_since: str | None = None
    cancel_check: CancelCheck | None = None
    # The token usage of the chain's earlier responses (each round of tool outputs starts a
    # new response): the event reports the whole submission's.
    earlier_usage: dict[str, int] | None = None

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> RelayState:
        known = {f.name for f in fields(cls)}
        state = cls(**{k: v for k, v in data.items() if k in known})
        action = state.required_action
        if action is not None and "round" not in action:
            # Carried from a version without rounds (an instance in flight across a deploy).
            action["round"] = tool_call_round(action.get("ids") or [])
            action.setdefault("shown", True)
        return state

    @classmethod
    def unreadable(cls, instance_id: str, error: ErrorInfo) -> RelayState:
        """A state for an input that could not be read: it can only report its own failure."""
        state = cls(
            submission_id=instance_id,
            submission={"agentId": "unknown", "metadata": {}},
            polls_per_generation=50,
            publish_retry_window_seconds=24 * 3600,
        )
        state.phase, state.final_status, state.final_error = PHASE_PUBLISH, "failed", error
        return state

    @property
    def status(self) -> str:
        if self.final_status:
            return self.final_status
        status = submission_status(self.run["status"] if self.run else None)
        if status == "requires_action" and self.tool_outputs is not None:
            return "running"  # answered: the relay is handing the outputs to the run
        return status

    @property
    def run_fields(self) -> Mapping[str, Any]:
        """The run's snapshot, or nothing before the run is known."""
        return self.run or {}

    def agent_run_view(self) -> AgentRunView:
        run = self.run_fields
        if is_responses(self.submission):
            # Classic fields stay, null: one shape for both backends.
            return {
                "runId": None,
                "threadId": None,
                "agentId": None,
                "status": run.get("status"),
                "api": "responses",
                "agentName": self.submission["agentId"],
                "agentVersion": run.get("agentVersion") or self.submission.get("agentVersion"),
                "conversationId": run.get("threadId") or self.submission.get("conversationId"),
                "responseIds": status_response_ids(self.response_chain),
            }
        return {
            "runId": run.get("runId"),
            "threadId": run.get("threadId") or self.submission.get("threadId"),
            "agentId": self.submission["agentId"],
            "status": run.get("status"),
        }


def awaiting_outputs(state: RelayState) -> bool:
    """The run waits for tool outputs that the relay has not received, and is not cancelled."""
    return (
        state.required_action is not None
        and state.tool_outputs is None
        and state.cancel_reason is None
        and state.phase == PHASE_POLL
    )

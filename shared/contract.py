"""The contract between the HTTP layer, the orchestrator and the activities (pure; no I/O).

These three meet only here: the names the Durable runtime dispatches on, the orchestration's
phases, the custom status it writes (and the HTTP routes read), its output, the payloads it
hands to activities and the one `Outcome` type every activity returns. Everything crossing
the durable boundary is JSON; the TypedDicts below name its keys, which stay exactly as they
are on the wire (replays and instances in flight read them back).
"""

from __future__ import annotations

from typing import Any, Literal, NotRequired, TypedDict, cast

# The functions the Durable runtime dispatches to (function_app.py registers them by name).
ORCHESTRATOR_NAME = "agent_run_orchestrator"
START_ACTIVITY = "start_agent_run"
POLL_ACTIVITY = "poll_agent_run"
CANCEL_ACTIVITY = "cancel_agent_run"
SUBMIT_TOOL_OUTPUTS_ACTIVITY = "submit_tool_outputs"
PUBLISH_ACTIVITY = "publish_run_event"

# External events the HTTP routes raise on a submission's orchestration.
CANCEL_EVENT = "cancel"
TOOL_OUTPUTS_EVENT_PREFIX = "tool_outputs_"


def tool_outputs_event_name(round_key: str) -> str:
    """The external event that carries the outputs of one round of tool calls.

    One name per round, never reused: the Durable Python SDK (1.7) keeps an event that
    arrives while nothing waits for its name (`deferred_tasks`) and hands it to every later
    wait of that name, so a name waited on twice in one history could be answered by a
    stale event (TaskOrchestrationExecutor.set_task_value, _add_to_open_tasks).
    """
    return f"{TOOL_OUTPUTS_EVENT_PREFIX}{round_key}"


# The orchestration's phases, in order; the HTTP routes treat the last two as finished.
Phase = Literal["start", "poll", "publish", "done"]
PHASE_START: Phase = "start"
PHASE_POLL: Phase = "poll"
PHASE_PUBLISH: Phase = "publish"
PHASE_DONE: Phase = "done"
FINISHED_PHASES: frozenset[str] = frozenset({PHASE_PUBLISH, PHASE_DONE})

# `kind` of the orchestration's output, so the status route recognises a relay's result.
OUTPUT_KIND = "agent-run-relay/v1"

# The two agent services a submission can name: classic Agents (threads and runs, `agentId`)
# and the current Foundry Agent Service (Responses API, `agent: {name, version}`).
Api = Literal["agents", "responses"]
API_AGENTS: Api = "agents"
API_RESPONSES: Api = "responses"


def submission_api(payload: SubmissionPayload | RunRef) -> Api:
    """Which service a submission (or a run reference) talks to; classic when unsaid."""
    return API_RESPONSES if payload.get("api") == API_RESPONSES else API_AGENTS


class ErrorInfo(TypedDict):
    code: str
    message: str


def error_code(error: ErrorInfo | None) -> str | None:
    return error.get("code") if error else None


def error_message(error: ErrorInfo | None) -> str:
    return error.get("message", "") if error else ""


class ToolCall(TypedDict):
    id: str
    name: str
    arguments: str


class ToolOutput(TypedDict):
    toolCallId: str
    output: str


class RunSnapshot(TypedDict):
    """What the relay keeps of an agent run (built by the agents adapter).

    For a Foundry agent (Responses API) the "run" is the latest response of the submission's
    chain: `runId` is the response id, `threadId` the conversation id, `agentId` the agent's
    name, and a response that ended asking for function calls reads `requires_action`.
    """

    runId: str | None
    threadId: str | None
    agentId: str | None
    status: str
    lastError: ErrorInfo | None
    incompleteDetails: dict[str, Any] | None
    usage: dict[str, Any] | None
    terminalAt: str | None
    toolCalls: list[ToolCall] | None
    expiresAt: str | None
    # Foundry agents: the agent version the service ran (from the response's agent_reference).
    agentVersion: NotRequired[str | None]


class SubmissionPayload(TypedDict):
    """A validated submission as the orchestration carries it (core.submission.Submission).

    Only `agentId` is always there: an input that could not be read carries a stand-in with
    `agentId` and `metadata` alone, so that it can still report its own failure. For a Foundry
    agent (`api` "responses") `agentId` holds the agent's name, `agentVersion` its version
    (None: latest) and `conversationId` the conversation to continue (None: a new one).
    """

    agentId: str
    api: NotRequired[Api]
    agentVersion: NotRequired[str | None]
    conversationId: NotRequired[str | None]
    # Whether a conversation the relay did not create may be continued (ALLOW_CALLER_THREADS).
    allowCallerConversations: NotRequired[bool]
    messages: NotRequired[list[dict[str, str]]]
    threadId: NotRequired[str | None]
    instructions: NotRequired[str | None]
    metadata: NotRequired[dict[str, str]]
    deadlineSeconds: NotRequired[int]
    polling: NotRequired[dict[str, float] | None]
    # Who submitted it: the HTTP routes answer only that caller.
    caller: NotRequired[str | None]


class AgentRunView(TypedDict):
    runId: str | None
    threadId: str | None
    agentId: str | None
    status: str | None
    # Foundry agents (api "responses"): the agent, the conversation and the chain of responses
    # (oldest first; the last one is current).
    api: NotRequired[Api]
    agentName: NotRequired[str | None]
    agentVersion: NotRequired[str | None]
    conversationId: NotRequired[str | None]
    responseIds: NotRequired[list[str]]


# --- activity inputs ---------------------------------------------------------------------


class StartInput(TypedDict):
    submissionId: str
    # Submission.to_dict(): the validated request, as the HTTP starter stored it.
    submission: SubmissionPayload
    # Cancelled before the run exists: only look for a run an earlier attempt created.
    findOnly: bool
    fastPathSeconds: float
    knownThreadId: str | None
    submittedAt: str | None
    # When an earlier attempt last failed in a way that may have created a response (Responses
    # API; its answer lost): a find-only start keeps looking for it instead of reporting none.
    uncertainSince: NotRequired[str | None]


class RunRef(TypedDict):
    """Which run a poll, cancel or tool-outputs activity acts on."""

    submissionId: str
    agentId: str
    threadId: str | None
    runId: str | None
    api: NotRequired[Api]
    agentVersion: NotRequired[str | None]


class ToolOutputsInput(RunRef):
    toolOutputs: list[ToolOutput]
    # Given up while this round's create may have been applied (Responses API): only look.
    findOnly: NotRequired[bool]
    uncertainSince: NotRequired[str | None]


class EventPayload(TypedDict):
    """An event to publish (the fields of core.events.RelayEvent)."""

    id: str
    event_type: str
    subject: str
    event_time: str
    data_version: str
    data: dict[str, Any]


# --- activity outcomes -------------------------------------------------------------------

OutcomeKind = Literal["ok", "transient", "permanent", "not_found"]


class Outcome(TypedDict):
    """What every activity returns: `outcome` says what happened, the rest what was learnt.

    - ok: the call succeeded (`run` the run's snapshot where there is one; start: `reused`,
      `outputText`, `followedSeconds`; poll: `outputText`; publish: `eventId`);
    - transient: waiting and trying again may help (`retryAfter` from the service, if any);
    - permanent: it will not (`httpStatus` tells 401/403 apart);
    - not_found: the service does not know the run (or agent).
    `error` says what went wrong for the last three; a failed start may name the thread it
    created (`threadId`) so the retry looks there first.
    """

    outcome: OutcomeKind
    run: NotRequired[RunSnapshot | None]
    error: NotRequired[ErrorInfo | None]
    retryAfter: NotRequired[float | None]
    httpStatus: NotRequired[int]
    reused: NotRequired[bool]
    outputText: NotRequired[str | None]
    followedSeconds: NotRequired[float]
    threadId: NotRequired[str]
    eventId: NotRequired[str]
    # Responses API: the last stream sequence number seen (fast path), and whether a create
    # request may have been applied although its answer was lost (see StartInput).
    streamSequence: NotRequired[int | None]
    uncertainCreate: NotRequired[bool]
    # A start that only prepared the run (created the conversation named by `threadId`): the
    # orchestrator records it and starts again at once.
    prepared: NotRequired[bool]


def transient(code: str, message: str) -> Outcome:
    return {"outcome": "transient", "error": {"code": code, "message": message}, "retryAfter": None}


# --- caller events -----------------------------------------------------------------------


class CancelEventData(TypedDict):
    reason: str


class ToolOutputsEventData(TypedDict):
    toolOutputs: list[ToolOutput]


# --- custom status and output (written by the orchestrator, read by the HTTP routes) ------


class StatusRequiredAction(TypedDict, total=False):
    type: str
    toolCalls: list[ToolCall]
    toolCallCount: int
    truncated: bool
    expiresAt: str | None
    giveUpAt: str
    # Read back by the tool-outputs route to name the round's event (not shown to callers).
    round: str


class CustomStatus(TypedDict, total=False):
    status: str
    phase: Phase
    agentRun: AgentRunView
    polls: int
    nextPollAt: str | None
    submittedAt: str | None
    deadlineAt: str | None
    cancellationReason: str | None
    requiredAction: StatusRequiredAction | None
    # Who submitted it: the HTTP routes answer only that caller (not shown to callers).
    caller: str | None
    lastError: ErrorInfo
    event: dict[str, Any]
    # Set when even a minimal status had to be cut to fit the extension's limit.
    truncated: bool


def read_custom_status(value: Any) -> CustomStatus:
    """The custom status as the Durable client reports it (anything else reads as empty)."""
    return cast(CustomStatus, value) if isinstance(value, dict) else {}


class RelayOutput(TypedDict):
    kind: str
    status: str
    agentRun: AgentRunView
    polls: int
    submittedAt: str | None
    completedAt: str | None
    cancellationReason: str | None
    result: dict[str, Any] | None
    event: dict[str, Any] | None
    publishError: dict[str, Any] | None


__all__ = [
    "API_AGENTS",
    "API_RESPONSES",
    "CANCEL_ACTIVITY",
    "CANCEL_EVENT",
    "FINISHED_PHASES",
    "ORCHESTRATOR_NAME",
    "OUTPUT_KIND",
    "PHASE_DONE",
    "PHASE_POLL",
    "PHASE_PUBLISH",
    "PHASE_START",
    "POLL_ACTIVITY",
    "PUBLISH_ACTIVITY",
    "START_ACTIVITY",
    "SUBMIT_TOOL_OUTPUTS_ACTIVITY",
    "TOOL_OUTPUTS_EVENT_PREFIX",
    "AgentRunView",
    "Api",
    "CancelEventData",
    "CustomStatus",
    "ErrorInfo",
    "EventPayload",
    "Outcome",
    "OutcomeKind",
    "Phase",
    "RelayOutput",
    "RunRef",
    "RunSnapshot",
    "StartInput",
    "StatusRequiredAction",
    "SubmissionPayload",
    "ToolCall",
    "ToolOutput",
    "ToolOutputsEventData",
    "ToolOutputsInput",
    "error_code",
    "error_message",
    "read_custom_status",
    "submission_api",
    "tool_outputs_event_name",
    "transient",
]

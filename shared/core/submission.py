"""Validation of `POST /api/runs` bodies into a Submission (pure; no I/O)."""

from __future__ import annotations

import json
import math
import re
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

from ..contract import API_AGENTS, API_RESPONSES, Api, SubmissionPayload
from .problems import Problem, bad_request
from .schedule import PollingBounds, PollingPolicy

MAX_BODY_BYTES = 256 * 1024
MAX_MESSAGES = 32
MAX_CONTENT_CHARS = 32 * 1024
MAX_INSTRUCTIONS_CHARS = 32 * 1024
# Agents' metadata limits. One key is reserved for the submission id that makes the start
# activity idempotent, so callers get 15 of the 16.
RESERVED_METADATA_KEY = "relay_submission_id"
MAX_METADATA_KEYS = 15
MAX_METADATA_KEY_CHARS = 64
MAX_METADATA_VALUE_CHARS = 512
ID_PATTERN = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_.\-]{0,127}$")
# A Foundry agent's name and version: URL-safe tokens (names are at most 63 characters).
AGENT_NAME_PATTERN = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_.\-]{0,62}$")
AGENT_VERSION_PATTERN = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_.\-]{0,63}$")
MESSAGE_ROLES = ("user", "assistant")
# What a Foundry agent's definition owns: sending them with `agent_reference` is refused by
# the service ("Not allowed when agent is specified", microsoft/agent-framework PR #5493), so
# the relay refuses them first, naming the field.
AGENT_OWNED_FIELDS = frozenset(
    {
        "instructions",
        "model",
        "tools",
        "toolChoice",
        "tool_choice",
        "text",
        "responseFormat",
        "response_format",
        "temperature",
        "topP",
        "top_p",
        "reasoning",
        "maxOutputTokens",
        "max_output_tokens",
    }
)
AGENT_FIELDS = frozenset({"name", "version"})
KNOWN_FIELDS = frozenset(
    {
        "agentId",
        "agent",
        "conversationId",
        "input",
        "messages",
        "threadId",
        "instructions",
        "metadata",
        "deadlineSeconds",
        "polling",
    }
)
POLLING_FIELDS = frozenset({"initialSeconds", "maxSeconds", "multiplier"})


@dataclass(frozen=True)
class SubmissionLimits:
    """What validating and authorizing a submission depends on (the app's settings give it)."""

    polling: PollingPolicy
    polling_bounds: PollingBounds = field(default_factory=PollingBounds)
    default_deadline_seconds: int = 6 * 3600
    max_deadline_seconds: int = 7 * 24 * 3600
    # Agents a submission may name (ids or names); None: every agent.
    allowed_agents: frozenset[str] | None = None
    # Whether a submission may name an existing thread (`threadId`).
    allow_caller_threads: bool = False


@dataclass(frozen=True)
class Submission:
    # Classic: the agent's id (or name). Foundry (`api` "responses"): the agent's name.
    agent_id: str
    messages: list[dict[str, str]]
    api: Api = API_AGENTS
    # Foundry: the agent version (None: latest) and the conversation to continue (None: new).
    agent_version: str | None = None
    conversation_id: str | None = None
    # Foundry: whether a conversation the relay did not create may be continued.
    allow_caller_conversations: bool = False
    thread_id: str | None = None
    instructions: str | None = None
    metadata: dict[str, str] = field(default_factory=dict)
    deadline_seconds: int = 0
    polling: PollingPolicy | None = None
    # Who submitted it, opaque ("key:<hash>" or "principal:<id>", shared/http_api.py): the
    # start activity tags the threads it creates with it and refuses another caller's thread.
    caller: str | None = None

    def to_dict(self) -> SubmissionPayload:
        payload: SubmissionPayload = {
            "agentId": self.agent_id,
            "messages": self.messages,
            "threadId": self.thread_id,
            "instructions": self.instructions,
            "metadata": self.metadata,
            "deadlineSeconds": self.deadline_seconds,
            "polling": self.polling.to_dict() if self.polling else None,
            "caller": self.caller,
        }
        if self.api == API_RESPONSES:
            # Only for Foundry agents: a classic submission's payload stays as it always was.
            payload["api"] = API_RESPONSES
            payload["agentVersion"] = self.agent_version
            payload["conversationId"] = self.conversation_id
            payload["allowCallerConversations"] = self.allow_caller_conversations
        return payload

    @classmethod
    def from_dict(cls, data: Mapping[str, Any]) -> Submission:
        polling = data.get("polling")
        return cls(
            agent_id=data["agentId"],
            messages=list(data["messages"]),
            api=API_RESPONSES if data.get("api") == API_RESPONSES else API_AGENTS,
            agent_version=data.get("agentVersion"),
            conversation_id=data.get("conversationId"),
            allow_caller_conversations=bool(data.get("allowCallerConversations")),
            thread_id=data.get("threadId"),
            instructions=data.get("instructions"),
            metadata=dict(data.get("metadata") or {}),
            deadline_seconds=int(data["deadlineSeconds"]),
            polling=PollingPolicy.from_dict(polling) if polling else None,
            caller=data.get("caller"),
        )


def parse_json_body(body: bytes, content_type: str | None) -> Any:
    """Decode a request body as JSON; 413/415/400 problems for what a client got wrong."""
    if len(body) > MAX_BODY_BYTES:
        raise Problem(413, f"request body is larger than {MAX_BODY_BYTES} bytes", code="too-large")
    media_type = (content_type or "").split(";")[0].strip().lower()
    if media_type != "application/json" and not media_type.endswith("+json"):
        raise Problem(
            415,
            "request body must be JSON (Content-Type: application/json)",
            field="Content-Type",
            code="unsupported-media-type",
        )
    try:
        text = body.decode("utf-8")
    except UnicodeDecodeError:
        raise bad_request("body", "request body is not valid UTF-8") from None
    try:
        return json.loads(text, parse_constant=_reject_constant)
    except (ValueError, RecursionError):
        raise bad_request("body", "request body is not valid JSON") from None


def _reject_constant(name: str) -> Any:
    raise ValueError(f"{name} is not JSON")


def _string(
    value: Any, name: str, max_chars: int, *, pattern: re.Pattern[str] | None = None
) -> str:
    if not isinstance(value, str):
        raise bad_request(name, f"{name} must be a string")
    if not value.strip():
        raise bad_request(name, f"{name} must not be empty")
    if len(value) > max_chars:
        raise bad_request(name, f"{name} must be at most {max_chars} characters")
    if pattern is not None and not pattern.fullmatch(value):
        raise bad_request(name, f"{name} has an invalid format")
    _require_unicode(value, name)
    return value


def _require_unicode(value: str, name: str) -> None:
    """Refuse lone surrogates (JSON allows \\ud800 escapes; UTF-8 and the services do not)."""
    try:
        value.encode("utf-8")
    except UnicodeEncodeError:
        raise bad_request(name, f"{name} is not valid Unicode text") from None


def _number(value: Any, name: str, low: float, high: float) -> float:
    if isinstance(value, bool) or not isinstance(value, int | float) or not math.isfinite(value):
        raise bad_request(name, f"{name} must be a number")
    if not low <= value <= high:
        raise bad_request(name, f"{name} must be between {low:g} and {high:g}")
    return float(value)


def _messages(body: dict[str, Any]) -> list[dict[str, str]]:
    has_input, has_messages = "input" in body, "messages" in body
    if has_input == has_messages:
        raise bad_request("input", "give exactly one of input or messages")
    if has_input:
        return [{"role": "user", "content": _string(body["input"], "input", MAX_CONTENT_CHARS)}]
    raw = body["messages"]
    if not isinstance(raw, list) or not raw:
        raise bad_request("messages", "messages must be a non-empty array")
    if len(raw) > MAX_MESSAGES:
        raise bad_request("messages", f"messages may hold at most {MAX_MESSAGES} items")
    messages = []
    for index, item in enumerate(raw):
        where = f"messages[{index}]"
        if not isinstance(item, dict):
            raise bad_request(where, f"{where} must be an object")
        extra = set(item) - {"role", "content"}
        if extra:
            raise bad_request(f"{where}.{sorted(extra)[0]}", f"{where} has an unknown field")
        role = item.get("role", "user")
        if role not in MESSAGE_ROLES:
            raise bad_request(f"{where}.role", f"{where}.role must be user or assistant")
        content = _string(item.get("content"), f"{where}.content", MAX_CONTENT_CHARS)
        messages.append({"role": role, "content": content})
    if messages[-1]["role"] != "user":
        raise bad_request("messages", "the last message must come from the user")
    return messages


def _metadata(raw: Any) -> dict[str, str]:
    if raw is None:
        return {}
    if not isinstance(raw, dict):
        raise bad_request("metadata", "metadata must be an object of strings")
    if len(raw) > MAX_METADATA_KEYS:
        raise bad_request("metadata", f"metadata may hold at most {MAX_METADATA_KEYS} keys")
    for key, value in raw.items():
        if not key or len(key) > MAX_METADATA_KEY_CHARS:
            raise bad_request(
                "metadata", f"metadata keys must be 1 to {MAX_METADATA_KEY_CHARS} characters"
            )
        _require_unicode(key, "metadata")
        if key.startswith("relay_"):
            raise bad_request(f"metadata.{key}", "metadata keys starting with relay_ are reserved")
        if not isinstance(value, str):
            raise bad_request(f"metadata.{key}", "metadata values must be strings")
        _require_unicode(value, f"metadata.{key}")
        if len(value) > MAX_METADATA_VALUE_CHARS:
            raise bad_request(
                f"metadata.{key}",
                f"metadata values must be at most {MAX_METADATA_VALUE_CHARS} characters",
            )
    return dict(raw)


def _polling(raw: Any, limits: SubmissionLimits) -> PollingPolicy | None:
    if raw is None:
        return None
    if not isinstance(raw, dict):
        raise bad_request("polling", "polling must be an object")
    extra = set(raw) - POLLING_FIELDS
    if extra:
        raise bad_request(f"polling.{sorted(extra)[0]}", "unknown polling field")
    bounds, default = limits.polling_bounds, limits.polling
    initial = default.initial_seconds
    if "initialSeconds" in raw:
        initial = _number(
            raw["initialSeconds"],
            "polling.initialSeconds",
            bounds.min_initial_seconds,
            bounds.max_initial_seconds,
        )
    maximum = max(default.max_seconds, initial)
    if "maxSeconds" in raw:
        maximum = _number(raw["maxSeconds"], "polling.maxSeconds", initial, bounds.max_max_seconds)
    multiplier = default.multiplier
    if "multiplier" in raw:
        multiplier = _number(
            raw["multiplier"], "polling.multiplier", bounds.min_multiplier, bounds.max_multiplier
        )
    return PollingPolicy(initial, maximum, multiplier, default.jitter)


def validate_submission(body: Any, limits: SubmissionLimits) -> Submission:
    """Turn a decoded JSON body into a Submission, or raise a 400 Problem naming the field."""
    if not isinstance(body, dict):
        raise bad_request("body", "request body must be a JSON object")
    if "agent" in body:
        return _foundry_submission(body, limits)
    unknown = sorted(set(body) - KNOWN_FIELDS)
    if unknown:
        raise bad_request(unknown[0], f"unknown field {unknown[0]!r}")
    if "conversationId" in body:
        raise bad_request(
            "conversationId", "conversationId goes with agent (a Foundry agent); use threadId"
        )
    if "agentId" not in body:
        raise bad_request("agentId", "give agentId (a classic agent) or agent (a Foundry agent)")
    agent_id = _string(body.get("agentId"), "agentId", 128, pattern=ID_PATTERN)
    messages = _messages(body)
    thread_id = None
    if body.get("threadId") is not None:
        thread_id = _string(body["threadId"], "threadId", 128, pattern=ID_PATTERN)
    instructions = None
    if body.get("instructions") is not None:
        instructions = _string(body["instructions"], "instructions", MAX_INSTRUCTIONS_CHARS)
    deadline = _deadline(body, limits)
    return Submission(
        agent_id=agent_id,
        messages=messages,
        thread_id=thread_id,
        instructions=instructions,
        metadata=_metadata(body.get("metadata")),
        deadline_seconds=deadline,
        polling=_polling(body.get("polling"), limits) or limits.polling,
    )


def _foundry_agent(raw: Any) -> tuple[str, str | None]:
    if not isinstance(raw, dict):
        raise bad_request("agent", "agent must be an object with name and, optionally, version")
    extra = sorted(set(raw) - AGENT_FIELDS)
    if extra:
        raise bad_request(f"agent.{extra[0]}", f"unknown field agent.{extra[0]}")
    name = _string(raw.get("name"), "agent.name", 63, pattern=AGENT_NAME_PATTERN)
    version = None
    if raw.get("version") is not None:
        version = _string(raw["version"], "agent.version", 64, pattern=AGENT_VERSION_PATTERN)
    return name, version


def _foundry_submission(body: dict[str, Any], limits: SubmissionLimits) -> Submission:
    """A submission for a Foundry agent (`agent`): the Responses API backend."""
    if "agentId" in body:
        raise bad_request("agentId", "give either agentId (classic) or agent (Foundry), not both")
    for name in sorted(body):
        if name in AGENT_OWNED_FIELDS:
            raise bad_request(name, f"{name} is set by the Foundry agent's definition")
    if "threadId" in body:
        raise bad_request("threadId", "a Foundry agent continues a conversationId, not a threadId")
    unknown = sorted(set(body) - KNOWN_FIELDS)
    if unknown:
        raise bad_request(unknown[0], f"unknown field {unknown[0]!r}")
    name, version = _foundry_agent(body["agent"])
    messages = _messages(body)
    conversation_id = None
    if body.get("conversationId") is not None:
        conversation_id = _string(body["conversationId"], "conversationId", 128, pattern=ID_PATTERN)
    return Submission(
        agent_id=name,
        messages=messages,
        api=API_RESPONSES,
        agent_version=version,
        conversation_id=conversation_id,
        allow_caller_conversations=limits.allow_caller_threads,
        metadata=_metadata(body.get("metadata")),
        deadline_seconds=_deadline(body, limits),
        polling=_polling(body.get("polling"), limits) or limits.polling,
    )


def _deadline(body: dict[str, Any], limits: SubmissionLimits) -> int:
    if body.get("deadlineSeconds") is None:
        return limits.default_deadline_seconds
    value = _number(body["deadlineSeconds"], "deadlineSeconds", 1, limits.max_deadline_seconds)
    if value != int(value):
        raise bad_request("deadlineSeconds", "deadlineSeconds must be a whole number")
    return int(value)


def authorize_submission(submission: Submission, limits: SubmissionLimits) -> None:
    """403 problems for a well-formed submission this relay does not allow (ALLOWED_AGENTS,
    ALLOW_CALLER_THREADS); checked after every 400 so a malformed request learns that first."""
    if limits.allowed_agents is not None and submission.agent_id not in limits.allowed_agents:
        raise Problem(
            403,
            "this relay does not run this agent (it is not in ALLOWED_AGENTS)",
            field="agent.name" if submission.api == API_RESPONSES else "agentId",
            code="agent-not-allowed",
        )
    if submission.thread_id is not None and not limits.allow_caller_threads:
        raise Problem(
            403,
            "this relay does not accept a threadId (ALLOW_CALLER_THREADS is off); "
            "leave it out and a new thread is created",
            field="threadId",
            code="thread-not-allowed",
        )

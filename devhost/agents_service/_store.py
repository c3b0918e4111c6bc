"""State and operations of the loopback Agents service, free of HTTP.

Runs have no background tasks: before every operation the store replays, for each run, the
transitions its RunScript schedules up to the current (virtual) time, stamping each transition
with the time it was due rather than the time it was noticed.
"""

from __future__ import annotations

import json
import random
import string
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from typing import Any

from devhost.loopback_api import Call

from ._models import (
    ACTIVE_STATUSES,
    CANCELLABLE_STATUSES,
    JSON,
    RunScript,
)

ScriptChooser = Callable[[JSON, str], RunScript]

_ID_ALPHABET = string.ascii_letters + string.digits
_MAX_METADATA_KEYS = 16
_MAX_METADATA_KEY = 64
_MAX_METADATA_VALUE = 512
_DEFAULT_LAST_ERROR = {"code": "server_error", "message": "Sorry, something went wrong."}
_DEFAULT_INCOMPLETE = {"reason": "max_completion_tokens"}


class ApiError(Exception):
    """An error the service answers with `{"error": {...}}` and an HTTP status."""

    def __init__(self, status: int, code: str, message: str, param: str | None = None) -> None:
        super().__init__(message)
        self.status = status
        self.code = code
        self.message = message
        self.param = param

    def body(self) -> JSON:
        kind = "invalid_request_error" if self.status < 500 else "server_error"
        return {
            "error": {"code": self.code, "message": self.message, "type": kind, "param": self.param}
        }


def bad_request(message: str, param: str | None = None) -> ApiError:
    return ApiError(400, "invalid_request_error", message, param)


def not_found(kind: str, ident: str) -> ApiError:
    return ApiError(404, "not_found", f"No {kind} found with id '{ident}'.")


def ts(moment: datetime | None) -> int | None:
    """Unix integer seconds, as the service (and the SDK's deserializer) expect."""
    return None if moment is None else int(moment.timestamp())


def _seconds(delta: timedelta) -> float:
    return delta.total_seconds()


def _after(moment: datetime, seconds: float) -> datetime:
    return moment + timedelta(seconds=seconds)


def _or(value: Any, default: Any) -> Any:
    """The client's value, or the service default when it is absent or null."""
    return default if value is None else value


# ---------------------------------------------------------------------------- request parsing


def as_object(body: Any, *, required: bool = True) -> JSON:
    if body is None and not required:
        return {}
    if not isinstance(body, dict):
        raise bad_request("The request body must be a JSON object.")
    return body


def _opt_str(body: JSON, key: str) -> str | None:
    value = body.get(key)
    if value is not None and not isinstance(value, str):
        raise bad_request(f"Invalid type for '{key}': expected a string.", key)
    return value


def _metadata(body: JSON, param: str = "metadata") -> dict[str, str]:
    """Agents enforces at most 16 pairs, keys up to 64 and values up to 512 characters."""
    value = body.get("metadata")
    if value is None:
        return {}
    if not isinstance(value, dict):
        raise bad_request(f"Invalid type for '{param}': expected an object.", param)
    if len(value) > _MAX_METADATA_KEYS:
        raise bad_request(
            f"Invalid '{param}': too many properties. Expected an object with at most "
            f"{_MAX_METADATA_KEYS} properties, but got an object with {len(value)} properties.",
            param,
        )
    for key, item in value.items():
        if len(key) > _MAX_METADATA_KEY:
            raise bad_request(
                f"Invalid '{param}': key '{key[:20]}...' is longer than {_MAX_METADATA_KEY}"
                " characters.",
                param,
            )
        if not isinstance(item, str):
            raise bad_request(f"Invalid '{param}.{key}': expected a string.", param)
        if len(item) > _MAX_METADATA_VALUE:
            raise bad_request(
                f"Invalid '{param}.{key}': string too long. Expected a string with maximum length"
                f" {_MAX_METADATA_VALUE}, but got a string with length {len(item)}.",
                param,
            )
    return dict(value)


@dataclass(frozen=True)
class _MessageInput:
    role: str
    content: list[JSON]
    attachments: list[Any]
    metadata: dict[str, str]


def _text_content(text: str) -> JSON:
    return {"type": "text", "text": {"value": text, "annotations": []}}


def _parse_message(raw: Any, param: str) -> _MessageInput:
    """Validate a ThreadMessageOptions body without touching state."""
    body = as_object(raw)
    role = body.get("role")
    if role not in ("user", "assistant"):
        raise bad_request(f"Invalid '{param}.role': expected 'user' or 'assistant'.", param)
    content = body.get("content")
    blocks: list[JSON] = []
    if isinstance(content, str):
        blocks.append(_text_content(content))
    elif isinstance(content, list) and content:
        for block in content:
            if not isinstance(block, dict):
                raise bad_request(f"Invalid '{param}.content': blocks must be objects.", param)
            kind = block.get("type")
            if kind == "text" and isinstance(block.get("text"), str):
                blocks.append(_text_content(block["text"]))
            elif kind == "image_file" and isinstance(block.get("image_file"), dict):
                blocks.append({"type": "image_file", "image_file": dict(block["image_file"])})
            elif kind == "image_url" and isinstance(block.get("image_url"), dict):
                blocks.append({"type": "image_url", "image_url": dict(block["image_url"])})
            else:
                raise bad_request(f"Invalid '{param}.content': unsupported block {kind!r}.", param)
    else:
        raise bad_request(f"Invalid '{param}.content': expected a string or content blocks.", param)
    attachments = body.get("attachments") or []
    if not isinstance(attachments, list):
        raise bad_request(f"Invalid '{param}.attachments': expected an array.", param)
    return _MessageInput(role, blocks, list(attachments), _metadata(body, f"{param}.metadata"))


def _message_text(message: JSON) -> str:
    return "".join(
        part["text"]["value"] for part in message["content"] if part.get("type") == "text"
    )


def _page_params(query: Mapping[str, str]) -> tuple[int, str, str | None, str | None]:
    raw_limit = query.get("limit", "20")
    try:
        limit = int(raw_limit)
    except ValueError:
        raise bad_request("Invalid 'limit': expected an integer.", "limit") from None
    if not 1 <= limit <= 100:
        raise bad_request("Invalid 'limit': expected a value between 1 and 100.", "limit")
    order = query.get("order", "desc")
    if order not in ("asc", "desc"):
        raise bad_request("Invalid 'order': expected 'asc' or 'desc'.", "order")
    return limit, order, query.get("after"), query.get("before")


def paginate(items: Iterable[JSON], query: Mapping[str, str]) -> JSON:
    """A list page. `last_id` is null on the last page: the SDK pager ignores `has_more`."""
    limit, order, after, before = _page_params(query)
    ordered = list(items)
    if order == "desc":
        ordered.reverse()
    ids = [item["id"] for item in ordered]
    window = ordered
    if after is not None:
        # An unknown cursor yields an empty page so that a pager always terminates.
        window = ordered[ids.index(after) + 1 :] if after in ids else []
    if before is not None:
        window_ids = [item["id"] for item in window]
        window = window[: window_ids.index(before)] if before in window_ids else []
    # With only `before`, the page is made of the items nearest the cursor.
    page = window[-limit:] if before is not None and after is None else window[:limit]
    has_more = len(window) > len(page)
    return {
        "object": "list",
        "data": page,
        "first_id": page[0]["id"] if page else None,
        "last_id": page[-1]["id"] if page and has_more else None,
        "has_more": has_more,
    }


# ---------------------------------------------------------------------------- records


@dataclass
class _Thread:
    id: str
    created_at: datetime
    metadata: dict[str, str]
    tool_resources: Any
    messages: list[JSON] = field(default_factory=list)
    run_ids: list[str] = field(default_factory=list)

    def render(self) -> JSON:
        return {
            "id": self.id,
            "object": "thread",
            "created_at": ts(self.created_at),
            "tool_resources": self.tool_resources,
            "metadata": dict(self.metadata),
        }


@dataclass
class _Step:
    id: str
    type: str  # "tool_calls" | "message_creation"
    created_at: datetime
    status: str
    details: JSON
    completed_at: datetime | None = None
    cancelled_at: datetime | None = None
    expired_at: datetime | None = None
    usage: JSON | None = None


@dataclass
class _Run:
    id: str
    thread_id: str
    assistant_id: str
    created_at: datetime
    config: JSON  # the run's settings (model, instructions, tools, ...), fixed at creation
    metadata: dict[str, str]
    script: RunScript
    prompt_text: str  # the last user message when the run was created (for the echo reply)
    status: str
    status_since: datetime  # when the current status was entered
    work_done: float = 0.0  # seconds spent in_progress so far
    started_at: datetime | None = None
    completed_at: datetime | None = None
    failed_at: datetime | None = None
    cancelled_at: datetime | None = None
    expires_at: datetime | None = None
    last_error: JSON | None = None
    incomplete_details: JSON | None = None
    usage: JSON | None = None
    tool_calls: list[JSON] | None = None  # pending calls while requires_action
    tool_round_done: bool = False
    steps: list[_Step] = field(default_factory=list)


# ---------------------------------------------------------------------------- the store


class Store:
    """All resources of one service instance. Not thread-safe: the service holds its lock."""

    def __init__(self, id_rng: random.Random, choose_script: ScriptChooser) -> None:
        self._id_rng = id_rng
        self._choose_script = choose_script
        self.enforce_single_active_run = True
        self.agents: dict[str, JSON] = {}
        self.threads: dict[str, _Thread] = {}
        self.runs: dict[str, _Run] = {}

    def new_id(self, prefix: str) -> str:
        return f"{prefix}_{''.join(self._id_rng.choices(_ID_ALPHABET, k=24))}"

    # ------------------------------------------------------------------ lookups

    def _thread(self, thread_id: str) -> _Thread:
        thread = self.threads.get(thread_id)
        if thread is None:
            raise not_found("thread", thread_id)
        return thread

    def _run(self, thread_id: str, run_id: str) -> _Run:
        self._thread(thread_id)
        run = self.runs.get(run_id)
        if run is None or run.thread_id != thread_id:
            raise not_found("run", run_id)
        return run

    def _active_run(self, thread: _Thread) -> _Run | None:
        for run_id in thread.run_ids:
            run = self.runs[run_id]
            if run.status in ACTIVE_STATUSES:
                return run
        return None

    # ------------------------------------------------------------------ virtual time

    def advance_all(self, now: datetime) -> None:
        """Apply every transition that is due by `now`, in run-creation order."""
        for run in self.runs.values():
            self._advance(run, now)

    def _advance(self, run: _Run, now: datetime) -> None:
        while True:
            due = self._next_transition(run)
            if due is None or due[0] > now:
                return
            self._apply(run, due[0], due[1])

    @staticmethod
    def _next_transition(run: _Run) -> tuple[datetime, str] | None:
        script = run.script
        if run.status == "queued":
            return _after(run.status_since, script.queued_seconds), "start"
        if run.status == "in_progress":
            if script.requires_action and not run.tool_round_done:
                pause_at = min(script.requires_action_after_seconds, script.duration_seconds)
                return _after(run.status_since, max(0.0, pause_at - run.work_done)), "pause"
            remaining = max(0.0, script.duration_seconds - run.work_done)
            return _after(run.status_since, remaining), "finish"
        if run.status == "requires_action":
            assert run.expires_at is not None
            return run.expires_at, "expire"
        if run.status == "cancelling":
            return _after(run.status_since, script.cancel_delay_seconds), "cancelled"
        return None

    def _enter(self, run: _Run, status: str, at: datetime) -> None:
        if run.status == "in_progress":
            run.work_done += _seconds(at - run.status_since)
        run.status = status
        run.status_since = at

    def _apply(self, run: _Run, at: datetime, transition: str) -> None:
        if transition == "start":
            self._enter(run, "in_progress", at)
            run.started_at = at
        elif transition == "pause":
            self._enter(run, "requires_action", at)
            run.expires_at = _after(at, run.script.tool_outputs_expire_seconds)
            run.tool_calls = [self._tool_call(call) for call in run.script.requires_action or ()]
            calls = [
                {
                    "id": call["id"],
                    "type": "function",
                    "function": {**call["function"], "output": None},
                }
                for call in run.tool_calls
            ]
            self._add_step(run, "tool_calls", at, "in_progress", calls)
        elif transition == "expire":
            self._enter(run, "expired", at)
            run.tool_calls = None
            self._close_open_steps(run, "expired", at)
            run.usage = self._usage(run, completed=False)
        elif transition == "cancelled":
            self._enter(run, "cancelled", at)
            run.cancelled_at = at
            self._close_open_steps(run, "cancelled", at)
            run.usage = self._usage(run, completed=False)
        elif transition == "finish":
            self._finish(run, at)

    def _finish(self, run: _Run, at: datetime) -> None:
        script = run.script
        final = script.final_status
        self._enter(run, final, at)
        run.usage = self._usage(run, completed=final in ("completed", "incomplete"))
        if final == "completed":
            run.completed_at = at
            self._add_output_message(run, at)
        elif final == "failed":
            run.failed_at = at
            run.last_error = dict(script.last_error or _DEFAULT_LAST_ERROR)
        elif final == "cancelled":
            run.cancelled_at = at
        elif final == "expired":
            run.expires_at = at
        elif final == "incomplete":
            run.incomplete_details = dict(script.incomplete_details or _DEFAULT_INCOMPLETE)
        self._close_open_steps(run, final if final != "incomplete" else "failed", at)

    def _add_output_message(self, run: _Run, at: datetime) -> None:
        thread = self.threads.get(run.thread_id)
        if thread is None:  # deleted meanwhile: nothing to write to
            return
        message = self._message(
            thread.id,
            _MessageInput("assistant", [_text_content(self._output_text(run))], [], {}),
            at,
            assistant_id=run.assistant_id,
            run_id=run.id,
        )
        message["completed_at"] = ts(at)
        thread.messages.append(message)
        step = self._add_step(
            run, "message_creation", at, "completed", {"message_id": message["id"]}
        )
        step.completed_at, step.usage = at, run.usage

    def _add_step(self, run: _Run, kind: str, at: datetime, status: str, detail: Any) -> _Step:
        """A run step of `kind`, its details under the key of the same name (as on the wire)."""
        step = _Step(
            id=self.new_id("step"),
            type=kind,
            created_at=at,
            status=status,
            details={"type": kind, kind: detail},
        )
        run.steps.append(step)
        return step

    @staticmethod
    def _close_open_steps(run: _Run, status: str, at: datetime) -> None:
        for step in run.steps:
            if step.status != "in_progress":
                continue
            step.status = status
            if status == "cancelled":
                step.cancelled_at = at
            elif status == "expired":
                step.expired_at = at
            else:
                step.completed_at = at

    @staticmethod
    def _output_text(run: _Run) -> str:
        if run.script.output_text is not None:
            return run.script.output_text
        return f"echo: {run.prompt_text}"

    def _usage(self, run: _Run, *, completed: bool) -> JSON:
        if run.script.usage is not None:
            return dict(run.script.usage)
        prompt = 50 + len(run.prompt_text) // 4
        completion = len(self._output_text(run)) // 4 + 1 if completed else 0
        return {
            "prompt_tokens": prompt,
            "completion_tokens": completion,
            "total_tokens": prompt + completion,
        }

    def _tool_call(self, spec: Mapping[str, Any]) -> JSON:
        arguments = spec.get("arguments", "{}")
        if not isinstance(arguments, str):
            arguments = json.dumps(arguments)
        return {
            "id": spec.get("id") or self.new_id("call"),
            "type": "function",
            "function": {"name": spec["name"], "arguments": arguments},
        }

    def set_script(self, run_id: str, script: RunScript) -> None:
        """Replace a run's future; transitions already due were applied by the caller."""
        run = self.runs.get(run_id)
        if run is None:
            raise KeyError(run_id)
        run.script = script

    # ------------------------------------------------------------------ rendering

    def render_run(self, run: _Run) -> JSON:
        config = run.config
        required_action = None
        if run.status == "requires_action" and run.tool_calls is not None:
            required_action = {
                "type": "submit_tool_outputs",
                "submit_tool_outputs": {"tool_calls": [dict(c) for c in run.tool_calls]},
            }
        return {
            "id": run.id,
            "object": "thread.run",
            "thread_id": run.thread_id,
            "assistant_id": run.assistant_id,
            "status": run.status,
            "required_action": required_action,
            "last_error": run.last_error,
            "model": config["model"],
            "instructions": config["instructions"],
            "tools": config["tools"],
            "created_at": ts(run.created_at),
            "expires_at": ts(run.expires_at),
            "started_at": ts(run.started_at),
            "completed_at": ts(run.completed_at),
            "cancelled_at": ts(run.cancelled_at),
            "failed_at": ts(run.failed_at),
            "incomplete_details": run.incomplete_details,
            "usage": run.usage,
            "temperature": config["temperature"],
            "top_p": config["top_p"],
            "max_prompt_tokens": config["max_prompt_tokens"],
            "max_completion_tokens": config["max_completion_tokens"],
            "truncation_strategy": config["truncation_strategy"],
            "tool_choice": config["tool_choice"],
            "response_format": config["response_format"],
            "metadata": dict(run.metadata),
            "tool_resources": config["tool_resources"],
            "parallel_tool_calls": config["parallel_tool_calls"],
        }

    @staticmethod
    def render_step(run: _Run, step: _Step) -> JSON:
        return {
            "id": step.id,
            "object": "thread.run.step",
            "type": step.type,
            "assistant_id": run.assistant_id,
            "thread_id": run.thread_id,
            "run_id": run.id,
            "status": step.status,
            "step_details": json.loads(json.dumps(step.details)),
            "last_error": None,
            "created_at": ts(step.created_at),
            "expired_at": ts(step.expired_at),
            "completed_at": ts(step.completed_at),
            "cancelled_at": ts(step.cancelled_at),
            "failed_at": None,
            "usage": step.usage,
            "metadata": {},
        }

    def _message(
        self,
        thread_id: str,
        parsed: _MessageInput,
        now: datetime,
        *,
        assistant_id: str | None = None,
        run_id: str | None = None,
    ) -> JSON:
        return {
            "id": self.new_id("msg"),
            "object": "thread.message",
            "created_at": ts(now),
            "thread_id": thread_id,
            "status": "completed",
            "incomplete_details": None,
            "completed_at": None,
            "incomplete_at": None,
            "role": parsed.role,
            "content": parsed.content,
            "assistant_id": assistant_id,
            "run_id": run_id,
            "attachments": parsed.attachments,
            "metadata": parsed.metadata,
        }

    # ------------------------------------------------------------------ operations
    # Each takes the routed call and returns the JSON to answer with, or raises ApiError.

    def assistants_create(self, c: Call) -> JSON:
        data = as_object(c.body)
        model = data.get("model")
        if not isinstance(model, str) or not model:
            raise bad_request("Missing required parameter: 'model'.", "model")
        metadata = _metadata(data)
        tools = data.get("tools") or []
        if not isinstance(tools, list):
            raise bad_request("Invalid type for 'tools': expected an array.", "tools")
        agent: JSON = {
            "id": self.new_id("asst"),
            "object": "assistant",
            "created_at": ts(c.now),
            "name": _opt_str(data, "name"),
            "description": _opt_str(data, "description"),
            "model": model,
            "instructions": _opt_str(data, "instructions"),
            "tools": tools,
            "tool_resources": data.get("tool_resources") or {},
            "temperature": _or(data.get("temperature"), 1.0),
            "top_p": _or(data.get("top_p"), 1.0),
            "response_format": _or(data.get("response_format"), "auto"),
            "metadata": metadata,
        }
        self.agents[agent["id"]] = agent
        return agent

    def assistants_list(self, c: Call) -> JSON:
        return paginate(self.agents.values(), c.query)

    def assistants_get(self, c: Call) -> JSON:
        agent = self.agents.get(c.params["assistant_id"])
        if agent is None:
            raise not_found("assistant", c.params["assistant_id"])
        return agent

    def assistants_delete(self, c: Call) -> JSON:
        if self.agents.pop(c.params["assistant_id"], None) is None:
            raise not_found("assistant", c.params["assistant_id"])
        return {"id": c.params["assistant_id"], "object": "assistant.deleted", "deleted": True}

    def _parse_thread_options(self, raw: Any, param: str) -> tuple[list[_MessageInput], JSON]:
        data = as_object(raw, required=False)
        messages = data.get("messages") or []
        if not isinstance(messages, list):
            raise bad_request(f"Invalid type for '{param}messages': expected an array.")
        parsed = [_parse_message(m, f"{param}messages[{i}]") for i, m in enumerate(messages)]
        _metadata(data, f"{param}metadata")
        return parsed, data

    def _create_thread(self, parsed: list[_MessageInput], data: JSON, now: datetime) -> _Thread:
        thread = _Thread(
            id=self.new_id("thread"),
            created_at=now,
            metadata=_metadata(data),
            tool_resources=data.get("tool_resources") or {},
        )
        self.threads[thread.id] = thread
        for message in parsed:
            thread.messages.append(self._message(thread.id, message, now))
        return thread

    def threads_create(self, c: Call) -> JSON:
        parsed, data = self._parse_thread_options(c.body, "")
        return self._create_thread(parsed, data, c.now).render()

    def threads_list(self, c: Call) -> JSON:
        return paginate((t.render() for t in self.threads.values()), c.query)

    def threads_get(self, c: Call) -> JSON:
        return self._thread(c.params["thread_id"]).render()

    def threads_delete(self, c: Call) -> JSON:
        self._thread(c.params["thread_id"])
        del self.threads[c.params["thread_id"]]
        return {"id": c.params["thread_id"], "object": "thread.deleted", "deleted": True}

    def messages_create(self, c: Call) -> JSON:
        thread = self._thread(c.params["thread_id"])
        parsed = _parse_message(c.body, "message")
        active = self._active_run(thread) if self.enforce_single_active_run else None
        if active is not None:
            raise bad_request(
                f"Can't add messages to {thread.id} while a run {active.id} is active."
            )
        message = self._message(thread.id, parsed, c.now)
        thread.messages.append(message)
        return message

    def messages_list(self, c: Call) -> JSON:
        thread = self._thread(c.params["thread_id"])
        run_id = c.query.get("run_id")
        messages = [m for m in thread.messages if run_id is None or m["run_id"] == run_id]
        return paginate(messages, c.query)

    def messages_get(self, c: Call) -> JSON:
        thread = self._thread(c.params["thread_id"])
        for message in thread.messages:
            if message["id"] == c.params["message_id"]:
                return message
        raise not_found("message", c.params["message_id"])

    def _new_run(
        self, thread: _Thread | None, data: JSON, now: datetime, pending_thread: Any = None
    ) -> _Run:
        """Validate a run request fully before changing anything, then create the run.

        `thread` is None for create_thread_and_run, whose `thread` options are in `data`.
        """
        agent_id = data.get("assistant_id")
        if not isinstance(agent_id, str) or not agent_id:
            raise bad_request("Missing required parameter: 'assistant_id'.", "assistant_id")
        agent = self.agents.get(agent_id)
        if agent is None:
            raise not_found("assistant", agent_id)
        metadata = _metadata(data)
        extra = data.get("additional_messages") or []
        if not isinstance(extra, list):
            raise bad_request("Invalid type for 'additional_messages'.", "additional_messages")
        extra_parsed = [_parse_message(m, f"additional_messages[{i}]") for i, m in enumerate(extra)]
        for key in ("max_prompt_tokens", "max_completion_tokens"):
            limit = data.get(key)
            if limit is not None and (not isinstance(limit, int) or limit < 256):
                raise bad_request(f"Invalid '{key}': expected an integer >= 256.", key)
        thread_parsed: list[_MessageInput] = []
        thread_data: JSON = {}
        if thread is None:
            thread_parsed, thread_data = self._parse_thread_options(pending_thread, "thread.")
        else:
            active = self._active_run(thread) if self.enforce_single_active_run else None
            if active is not None:
                raise bad_request(f"Thread {thread.id} already has an active run {active.id}.")

        # Everything is valid: apply.
        if thread is None:
            thread = self._create_thread(thread_parsed, thread_data, now)
        for message in extra_parsed:
            thread.messages.append(self._message(thread.id, message, now))
        instructions = data.get("instructions")
        if instructions is None:
            instructions = agent["instructions"] or ""
        if data.get("additional_instructions"):
            instructions = f"{instructions}\n{data['additional_instructions']}".lstrip("\n")

        def pick(key: str, default: Any) -> Any:
            return _or(data.get(key), default)

        config: JSON = {
            "model": pick("model", agent["model"]),
            "instructions": instructions,
            "tools": pick("tools", agent["tools"]),
            "temperature": pick("temperature", agent["temperature"]),
            "top_p": pick("top_p", agent["top_p"]),
            "max_prompt_tokens": data.get("max_prompt_tokens"),
            "max_completion_tokens": data.get("max_completion_tokens"),
            "truncation_strategy": pick(
                "truncation_strategy", {"type": "auto", "last_messages": None}
            ),
            "tool_choice": pick("tool_choice", "auto"),
            "response_format": pick("response_format", agent["response_format"]),
            "tool_resources": pick("tool_resources", {}),
            "parallel_tool_calls": pick("parallel_tool_calls", True),
        }
        user_texts = [_message_text(m) for m in thread.messages if m["role"] == "user"]
        run = _Run(
            id=self.new_id("run"),
            thread_id=thread.id,
            assistant_id=agent_id,
            created_at=now,
            config=config,
            metadata=metadata,
            script=self._choose_script(json.loads(json.dumps(data)), thread.id),
            prompt_text=user_texts[-1] if user_texts else "",
            status="queued",
            status_since=now,
        )
        self.runs[run.id] = run
        thread.run_ids.append(run.id)
        # A zero-length queue or duration takes effect within this same request.
        self._advance(run, now)
        return run

    def runs_create(self, c: Call) -> JSON:
        thread = self._thread(c.params["thread_id"])
        return self.render_run(self._new_run(thread, as_object(c.body), c.now))

    def threads_create_and_run(self, c: Call) -> JSON:
        data = as_object(c.body)
        return self.render_run(self._new_run(None, data, c.now, pending_thread=data.get("thread")))

    def runs_list(self, c: Call) -> JSON:
        thread = self._thread(c.params["thread_id"])
        return paginate((self.render_run(self.runs[r]) for r in thread.run_ids), c.query)

    def runs_get(self, c: Call) -> JSON:
        return self.render_run(self._run(c.params["thread_id"], c.params["run_id"]))

    def runs_cancel(self, c: Call) -> JSON:
        run = self._run(c.params["thread_id"], c.params["run_id"])
        if run.status not in CANCELLABLE_STATUSES:
            raise bad_request(f"Cannot cancel run with status '{run.status}'.")
        self._enter(run, "cancelling", c.now)
        run.tool_calls = None
        run.expires_at = None
        self._advance(run, c.now)  # a zero cancel delay completes right away
        return self.render_run(run)

    def runs_submit_tool_outputs(self, c: Call) -> JSON:
        run = self._run(c.params["thread_id"], c.params["run_id"])
        data = as_object(c.body)
        if data.get("stream"):
            raise bad_request("streaming not supported by the loopback service yet", "stream")
        if run.status != "requires_action" or run.tool_calls is None:
            raise bad_request(
                f'Runs in status "{run.status}" do not accept tool outputs.', "tool_outputs"
            )
        outputs = data.get("tool_outputs")
        if not isinstance(outputs, list) or not all(isinstance(o, dict) for o in outputs):
            raise bad_request(
                "Invalid 'tool_outputs': expected an array of objects.", "tool_outputs"
            )
        submitted = [o.get("tool_call_id") for o in outputs]
        expected = [c["id"] for c in run.tool_calls]
        if len(set(submitted)) != len(submitted) or set(submitted) != set(expected):
            raise bad_request(
                f"Expected tool outputs for call_ids {sorted(expected)}, got {submitted}.",
                "tool_outputs",
            )
        by_id = {o["tool_call_id"]: o.get("output") for o in outputs}
        for step in run.steps:
            if step.type == "tool_calls" and step.status == "in_progress":
                for call in step.details["tool_calls"]:
                    call["function"]["output"] = by_id.get(call["id"])
                step.status = "completed"
                step.completed_at = c.now
        run.tool_calls = None
        run.tool_round_done = True
        run.expires_at = None
        self._enter(run, "in_progress", c.now)
        self._advance(run, c.now)
        return self.render_run(run)

    def run_steps_list(self, c: Call) -> JSON:
        run = self._run(c.params["thread_id"], c.params["run_id"])
        return paginate((self.render_step(run, s) for s in run.steps), c.query)

    def run_steps_get(self, c: Call) -> JSON:
        run = self._run(c.params["thread_id"], c.params["run_id"])
        for step in run.steps:
            if step.id == c.params["step_id"]:
                return self.render_step(run, step)
        raise not_found("run step", c.params["step_id"])

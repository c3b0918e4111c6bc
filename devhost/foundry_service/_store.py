"""State of the loopback Foundry project service: responses, conversations, agent versions.

Progress is computed from the clock on every read (`advance_all`), as in the classic service.
Rules that the spec or the reference SDK/server sources state are cited next to the code.
"""

from __future__ import annotations

import copy
import json
import random
from collections.abc import Callable
from datetime import datetime
from typing import Any

from devhost.loopback_api import Call

from . import _timeline as timeline
from ._models import (
    ACTIVE_STATUSES,
    JSON,
    TERMINAL_STATUSES,
    ConversationRecord,
    ResponseRecord,
    ResponseScript,
)

DEFAULT_MODEL = "gpt-4o-mini"
METADATA_MAX_KEYS, METADATA_KEY_MAX, METADATA_VALUE_MAX = 16, 64, 512
CONVERSATION_ITEMS_MAX = 20  # spec CreateConversationBody / ConversationItemsCreate
# What api.openai.com answers to a `POST /responses` naming a conversation another response is
# still working on (400 invalid_request_error, param "conversation", code "conversation_locked"),
# quoted in github.com/paulgmiller/careme/issues/379. Whether the Foundry service refuses the same
# way, with the same text, is UNCONFIRMED.
CONVERSATION_LOCKED = (
    "Another process is currently operating on this conversation. Please retry in a few seconds."
)


class ApiError(Exception):
    """An error answered as the OpenAI error body `{"error": {message, type, param, code}}`."""

    def __init__(
        self,
        status: int,
        code: str | None,
        message: str,
        param: str | None = None,
        error_type: str = "invalid_request_error",
    ) -> None:
        super().__init__(message)
        self.status, self.code, self.message, self.param = status, code, message, param
        self.error_type = error_type

    def body(self) -> JSON:
        return {
            "error": {
                "message": self.message,
                "type": self.error_type,
                "param": self.param,
                "code": self.code,
            }
        }


def bad_request(message: str, param: str | None = None, code: str = "invalid_request") -> ApiError:
    return ApiError(400, code, message, param)


def not_found(message: str, param: str | None = None) -> ApiError:
    return ApiError(404, "not_found", message, param)


def check_metadata(value: Any) -> dict[str, str]:
    """Spec `Metadata`: up to 16 pairs, keys up to 64 characters, string values up to 512."""
    if value is None:
        return {}
    if not isinstance(value, dict):
        raise bad_request("'metadata' must be an object.", "metadata")
    if len(value) > METADATA_MAX_KEYS:
        raise bad_request(
            f"Invalid 'metadata': too many properties. Expected an object with at most "
            f"{METADATA_MAX_KEYS} properties, but got {len(value)} instead.",
            "metadata",
        )
    for key, item in value.items():
        if len(key) > METADATA_KEY_MAX:
            raise bad_request(
                f"Invalid 'metadata': key '{key[:20]}...' is longer than {METADATA_KEY_MAX}.",
                "metadata",
            )
        if not isinstance(item, str):
            raise bad_request(f"Invalid 'metadata.{key}': expected a string.", "metadata")
        if len(item) > METADATA_VALUE_MAX:
            raise bad_request(
                f"Invalid 'metadata.{key}': string too long. Expected a string with maximum "
                f"length {METADATA_VALUE_MAX}, but got a string with length {len(item)}.",
                "metadata",
            )
    return dict(value)


def _text_of(content: Any) -> str:
    if isinstance(content, str):
        return content
    if isinstance(content, list):
        return " ".join(str(p.get("text", "")) for p in content if isinstance(p, dict))
    return ""


class Store:
    def __init__(self, rng: random.Random, choose_script: Callable[[JSON], ResponseScript]) -> None:
        self._rng = rng
        self._choose_script = choose_script
        self.responses: dict[str, ResponseRecord] = {}
        self.conversations: dict[str, ConversationRecord] = {}
        self.agents: dict[str, list[JSON]] = {}  # name -> versions, oldest first

    # ------------------------------------------------------------------ ids

    def new_id(self, prefix: str) -> str:
        return f"{prefix}_{self._rng.getrandbits(128):032x}"

    # ------------------------------------------------------------------ agents

    def agents_create_version(self, call: Call) -> JSON:
        name = call.params["agent_name"]
        body = call.body if isinstance(call.body, dict) else {}
        definition = body.get("definition")
        if not isinstance(definition, dict) or not isinstance(definition.get("kind"), str):
            raise bad_request("'definition' with a 'kind' is required.", "definition")
        if definition["kind"] == "prompt" and not isinstance(definition.get("model"), str):
            raise bad_request("A prompt agent definition needs a 'model'.", "definition.model")
        versions = self.agents.setdefault(name, [])
        version = {
            "object": "agent.version",
            "id": f"{name}:{len(versions) + 1}",
            "name": name,
            "version": str(len(versions) + 1),
            "description": body.get("description"),
            "created_at": int(call.now.timestamp()),
            "metadata": check_metadata(body.get("metadata")),
            "definition": copy.deepcopy(definition),
        }
        versions.append(version)
        return version

    def _agent_versions(self, name: str) -> list[JSON]:
        versions = self.agents.get(name)
        if not versions:
            raise not_found(f"Agent '{name}' not found.", "agent_name")
        return versions

    def agents_get(self, call: Call) -> JSON:
        name = call.params["agent_name"]
        versions = self._agent_versions(name)
        return {"object": "agent", "id": name, "name": name, "versions": {"latest": versions[-1]}}

    def agents_get_version(self, call: Call) -> JSON:
        name, wanted = call.params["agent_name"], call.params["version"]
        for version in self._agent_versions(name):
            if version["version"] == wanted:
                return version
        raise not_found(f"Version '{wanted}' of agent '{name}' not found.", "agent_version")

    def agents_list_versions(self, call: Call) -> JSON:
        versions = self._agent_versions(call.params["agent_name"])
        return {
            "object": "list",
            "data": list(versions),
            "first_id": versions[0]["id"],
            "last_id": versions[-1]["id"],
            "has_more": False,
        }

    def resolve_agent(self, reference: Any) -> JSON:
        """The agent version an `agent_reference` names (latest when no version is given)."""
        if not isinstance(reference, dict) or not isinstance(reference.get("name"), str):
            raise bad_request("'agent_reference.name' is required.", "agent_reference")
        if reference.get("type", "agent_reference") != "agent_reference":
            raise bad_request(
                "'agent_reference.type' must be 'agent_reference'.", "agent_reference"
            )
        versions = self.agents.get(reference["name"])
        if not versions:
            raise not_found(f"Agent '{reference['name']}' not found.", "agent_reference")
        wanted = reference.get("version")
        if wanted is None:
            return versions[-1]
        for version in versions:
            if version["version"] == str(wanted):
                return version
        raise not_found(
            f"Version '{wanted}' of agent '{reference['name']}' not found.", "agent_reference"
        )

    # ------------------------------------------------------------------ input

    def _input_items(self, value: Any) -> list[JSON]:
        if isinstance(value, str):
            value = [{"type": "message", "role": "user", "content": value}]
        if not isinstance(value, list):
            raise bad_request("'input' must be a string or an array of items.", "input")
        items: list[JSON] = []
        for index, raw in enumerate(value):
            if not isinstance(raw, dict):
                raise bad_request(f"Invalid 'input[{index}]': expected an object.", "input")
            kind = raw.get("type", "message")
            if kind == "message":
                role = raw.get("role")
                if role not in ("user", "assistant", "system", "developer"):
                    raise bad_request(f"Invalid 'input[{index}].role'.", f"input[{index}].role")
                content = raw.get("content")
                if isinstance(content, str):
                    content = [{"type": "input_text", "text": content}]
                if not isinstance(content, list):
                    raise bad_request(f"Invalid 'input[{index}].content'.", f"input[{index}]")
                items.append(
                    {
                        "type": "message",
                        "id": raw.get("id") or self.new_id("msg"),
                        "status": "completed",
                        "role": role,
                        "content": copy.deepcopy(content),
                    }
                )
            elif kind == "function_call_output":
                call_id = raw.get("call_id")
                if not isinstance(call_id, str) or not 1 <= len(call_id) <= 64:
                    raise bad_request(
                        f"Invalid 'input[{index}].call_id'.", f"input[{index}].call_id"
                    )
                if not isinstance(raw.get("output"), str | list):
                    raise bad_request(f"Invalid 'input[{index}].output'.", f"input[{index}].output")
                items.append(
                    {
                        "type": "function_call_output",
                        "id": raw.get("id") or self.new_id("fco"),
                        "call_id": call_id,
                        "output": copy.deepcopy(raw["output"]),
                        "status": "completed",
                    }
                )
            elif kind == "function_call":
                # As items are returned (spec FunctionToolCallResource: id and status required).
                call = {"status": "completed", **copy.deepcopy(raw)}
                items.append({**call, "id": raw.get("id") or self.new_id("fc")})
            else:
                raise bad_request(
                    f"Invalid 'input[{index}].type': {kind!r} is not supported here.",
                    f"input[{index}].type",
                )
        return items

    def _check_function_outputs(self, items: list[JSON], history: list[JSON]) -> None:
        """Each function_call_output must answer a function_call in the chain (OpenAI: 400)."""
        asked = {i.get("call_id") for i in history if i.get("type") == "function_call"}
        for item in items:
            if item["type"] == "function_call_output" and item["call_id"] not in asked:
                raise bad_request(
                    f"No tool call found for function call output with call_id {item['call_id']}.",
                    "input",
                )

    def _chain(self, response_id: str) -> list[JSON]:
        """Input and output items of a response and of those it chains on, oldest first."""
        items: list[JSON] = []
        seen: set[str] = set()
        current: str | None = response_id
        while current is not None and current not in seen:
            seen.add(current)
            record = self.responses.get(current)
            if record is None:
                break
            items[:0] = record.input_items + timeline.output_at(record, None)
            current = record.previous_response_id
        return items

    # ------------------------------------------------------------------ responses

    def responses_create(self, call: Call) -> ResponseRecord:
        body = call.body
        if not isinstance(body, dict):
            raise bad_request("The request body must be a JSON object.")
        if "agent" in body:
            # Foundry refuses the older betas' key (reference note §3, S7).
            raise bad_request(
                "The 'agent' property is deprecated. Use 'agent_reference' instead.",
                "agent",
                "invalid_payload",
            )
        agent: JSON | None = None
        if body.get("agent_reference") is not None:
            agent = self.resolve_agent(body["agent_reference"])
            if "text" in body:  # reference note §3 (S8)
                raise bad_request("Not allowed when agent is specified.", "text", "invalid_payload")
        elif not isinstance(body.get("model"), str):
            raise bad_request("Either 'model' or 'agent_reference' is required.", "model")
        background = body.get("background", False)
        stream = body.get("stream", False)
        store = body.get("store", True)
        for name, value in (("background", background), ("stream", stream), ("store", store)):
            if not isinstance(value, bool):
                raise bad_request(f"'{name}' must be a boolean.", name)
        if background and not store:  # S4 _validation.py
            raise bad_request(
                "background=true requires store=true", "background", "unsupported_parameter"
            )
        if "stream_options" in body and not stream:
            raise bad_request(
                "'stream_options' is only allowed with stream=true.", "stream_options"
            )
        metadata = check_metadata(body.get("metadata"))
        previous = body.get("previous_response_id")
        conversation = body.get("conversation")
        if previous is not None and conversation is not None:  # spec ConversationParam
            raise bad_request(
                "'previous_response_id' cannot be used together with 'conversation'.",
                "conversation",
            )
        history: list[JSON] = []
        if previous is not None:
            known = isinstance(previous, str) and previous in self.responses
            if not known or not self.responses[previous].store:
                raise not_found(
                    f"Previous response with id '{previous}' not found.", "previous_response_id"
                )
            history = self._chain(previous)
        conversation_id: str | None = None
        if conversation is not None:
            conversation_id = (
                conversation.get("id") if isinstance(conversation, dict) else conversation
            )
            if not isinstance(conversation_id, str) or conversation_id not in self.conversations:
                raise not_found(
                    f"Conversation with id '{conversation_id}' not found.", "conversation"
                )
            history = list(self.conversations[conversation_id].items)
        if "input" not in body and conversation_id is None and previous is None:
            raise bad_request("'input' is required.", "input")
        items = self._input_items(body.get("input", []))
        self._check_function_outputs(items, history)
        if conversation_id is not None:
            self._check_conversation_free(conversation_id, call.now)
        script = self._choose_script(body)
        model = str(agent["definition"].get("model")) if agent is not None else str(body["model"])
        reference = None
        if agent is not None:
            reference = {
                "type": "agent_reference",
                "name": agent["name"],
                "version": agent["version"],
            }
        record = ResponseRecord(
            id=self.new_id("resp"),
            created=call.now,
            script=script,
            background=background,
            stream=stream,
            store=store,
            model=model,
            metadata=metadata,
            input_items=items,
            previous_response_id=previous,
            conversation_id=conversation_id,
            agent_reference=reference,
            output=[],
        )
        record.output = self._final_output(record, history + items)
        self.responses[record.id] = record
        return record

    def _check_conversation_free(self, conversation_id: str, now: datetime) -> None:
        """The conversation lock (see CONVERSATION_LOCKED): a create naming a conversation is
        refused while any response on it is queued or in progress at `now`. The public report
        shows concurrent requests refused; that a queued or running background response holds
        the lock until it ends is an assumption (UNCONFIRMED for OpenAI and for Foundry)."""
        for other in self.responses.values():
            if (
                other.conversation_id == conversation_id
                and self.status_at(other, now) in ACTIVE_STATUSES
            ):
                raise bad_request(CONVERSATION_LOCKED, "conversation", "conversation_locked")

    def _final_output(self, record: ResponseRecord, context: list[JSON]) -> list[JSON]:
        script = record.script
        answering = script.answer_function_outputs and any(
            item["type"] == "function_call_output" for item in record.input_items
        )
        if script.function_calls and script.final_status == "completed" and not answering:
            return [
                {
                    "type": "function_call",
                    "id": self.new_id("fc"),
                    "call_id": str(call.get("call_id") or self.new_id("call")),
                    "name": str(call["name"]),
                    "arguments": call["arguments"]
                    if isinstance(call.get("arguments"), str)
                    else json.dumps(call.get("arguments", {})),
                    "status": "completed",
                }
                for call in script.function_calls
            ]
        if script.final_status in ("failed", "cancelled"):
            return []
        text = script.output_text
        if text is None:
            last = ""
            for item in context:
                if item.get("type") == "message" and item.get("role") == "user":
                    last = _text_of(item.get("content"))
                elif item.get("type") == "function_call_output":
                    last = _text_of(item.get("output"))
            text = f"Echo: {last}"
        if script.final_status == "incomplete":
            text = text[: max(1, len(text) // 2)]
        return [
            {
                "type": "message",
                "id": self.new_id("msg"),
                "role": "assistant",
                "status": "completed" if script.final_status == "completed" else "incomplete",
                "content": [
                    {"type": "output_text", "text": text, "annotations": [], "logprobs": []}
                ],
            }
        ]

    # state at a moment (devhost/foundry_service/_timeline.py) --------------

    status_at = staticmethod(timeline.status_at)
    render = staticmethod(timeline.render)
    events_until = staticmethod(timeline.events_until)

    # operations ----------------------------------------------------------

    def response(self, response_id: str) -> ResponseRecord:
        record = self.responses.get(response_id)
        if record is None or not record.store:
            raise not_found(f"Response with id '{response_id}' not found.", "response_id")
        return record

    def responses_retrieve(self, call: Call) -> JSON:
        return self.render(self.response(call.params["response_id"]), call.now)

    def check_resumable(self, record: ResponseRecord, query: dict[str, str]) -> int:
        """The `starting_after` of a stream resume (S4 rules; Foundry texts UNCONFIRMED)."""
        raw = query.get("starting_after")
        after = -1
        if raw is not None:
            try:
                after = int(raw)
            except ValueError:
                raise bad_request(
                    "'starting_after' must be an integer.", "starting_after"
                ) from None
        if not record.background:
            raise bad_request(
                "This response cannot be streamed because it was not created with background=true.",
                "stream",
            )
        if not record.stream:
            raise bad_request(
                "This response cannot be streamed because it was not created with stream=true.",
                "stream",
            )
        return after

    def responses_cancel(self, call: Call) -> JSON:
        record = self.response(call.params["response_id"])
        status = self.status_at(record, call.now)
        # S4 _endpoint_handler.py (only public implementation; Foundry's texts UNCONFIRMED).
        if not record.background:
            raise bad_request("Cannot cancel a synchronous response.", "response_id")
        if status == "cancelled":
            return self.render(record, call.now)
        if status == "completed":
            raise bad_request("Cannot cancel a completed response.", "response_id")
        if status == "failed":
            raise bad_request("Cannot cancel a failed response.", "response_id")
        if status == "incomplete":
            raise bad_request("Cannot cancel a response in terminal state.", "response_id")
        record.cancel_requested = call.now
        return self.render(record, call.now)

    def responses_delete(self, call: Call) -> JSON:
        record = self.response(call.params["response_id"])
        del self.responses[record.id]
        return {"id": record.id, "object": "response.deleted", "deleted": True}

    def advance_all(self, now: datetime) -> bool:
        """Append finished responses' items to their conversations (spec ConversationParam).

        Each appended item (input and output alike, with the ids it got at creation: `msg_…`,
        `fco_…`, `fc_…`) carries `response_id`, the response that added it. That is a Foundry
        extension: azure-ai-projects 2.10 describes an item's read-only `response_id` as "The id
        of the response that produced this item, when applicable" (models/_models.py, the
        `RealtimeConversationItem*` models), and Microsoft's hosted-agent server puts
        `response_id` on output items (reference note §4, S4). That Foundry's Conversations API
        returns it on every item a response appended, inputs included, is UNCONFIRMED. Items
        added at creation or through `POST /conversations/{id}/items` carry none.
        Returns whether any conversation changed.
        """
        changed = False
        for record in self.responses.values():
            if record.conversation_id is None or record.appended_to_conversation:
                continue
            status = self.status_at(record, now)
            if status in TERMINAL_STATUSES:
                record.appended_to_conversation = changed = True
                conversation = self.conversations.get(record.conversation_id)
                if conversation is not None:
                    added = copy.deepcopy(record.input_items) + timeline.output_at(record, status)
                    conversation.items.extend({**item, "response_id": record.id} for item in added)
        return changed

    # ------------------------------------------------------------------ conversations

    def _render_conversation(self, conversation: ConversationRecord) -> JSON:
        return {
            "id": conversation.id,
            "object": "conversation",
            "created_at": int(conversation.created.timestamp()),
            "metadata": dict(conversation.metadata),
        }

    def _conversation(self, conversation_id: str) -> ConversationRecord:
        conversation = self.conversations.get(conversation_id)
        if conversation is None:
            raise not_found(
                f"Conversation with id '{conversation_id}' not found.", "conversation_id"
            )
        return conversation

    def _conversation_items(self, body: Any, required: bool) -> list[JSON]:
        raw = body.get("items") if isinstance(body, dict) else None
        if raw is None and not required:
            return []
        if not isinstance(raw, list) or (required and not raw):
            raise bad_request("'items' must be a non-empty array.", "items")
        if len(raw) > CONVERSATION_ITEMS_MAX:
            raise bad_request(
                f"Invalid 'items': at most {CONVERSATION_ITEMS_MAX} items at a time.", "items"
            )
        return self._input_items(raw)

    def conversations_create(self, call: Call) -> JSON:
        body = call.body if call.body is not None else {}
        if not isinstance(body, dict):
            raise bad_request("The request body must be a JSON object.")
        items = self._conversation_items(body, required=False)
        conversation = ConversationRecord(
            self.new_id("conv"), call.now, check_metadata(body.get("metadata")), items
        )
        self.conversations[conversation.id] = conversation
        return self._render_conversation(conversation)

    def conversations_retrieve(self, call: Call) -> JSON:
        return self._render_conversation(self._conversation(call.params["conversation_id"]))

    def conversations_delete(self, call: Call) -> JSON:
        conversation = self._conversation(call.params["conversation_id"])
        del self.conversations[conversation.id]
        return {"id": conversation.id, "object": "conversation.deleted", "deleted": True}

    @staticmethod
    def _item_list(items: list[JSON], has_more: bool) -> JSON:
        return {
            "object": "list",
            "data": copy.deepcopy(items),
            "first_id": items[0]["id"] if items else None,
            "last_id": items[-1]["id"] if items else None,
            "has_more": has_more,
        }

    def conversations_items_create(self, call: Call) -> JSON:
        conversation = self._conversation(call.params["conversation_id"])
        items = self._conversation_items(call.body, required=True)
        conversation.items.extend(items)
        return self._item_list(items, False)

    def conversations_items_list(self, call: Call) -> JSON:
        conversation = self._conversation(call.params["conversation_id"])
        query = call.query
        try:
            limit = int(query.get("limit", "20"))
        except ValueError:
            raise bad_request("'limit' must be an integer.", "limit") from None
        if not 1 <= limit <= 100:
            raise bad_request("'limit' must be between 1 and 100.", "limit")
        order = query.get("order", "desc")
        if order not in ("asc", "desc"):
            raise bad_request("'order' must be 'asc' or 'desc'.", "order")
        items = list(conversation.items)
        if order == "desc":
            items.reverse()
        after = query.get("after")
        if after is not None:
            ids = [i["id"] for i in items]
            if after not in ids:
                raise not_found(f"Item with id '{after}' not found.", "after")
            items = items[ids.index(after) + 1 :]
        return self._item_list(items[:limit], len(items) > limit)

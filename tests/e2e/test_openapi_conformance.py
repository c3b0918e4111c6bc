"""docs/openapi.yaml against the app: a valid OpenAPI 3.1 document, the same routes as the app's
HTTP functions, and every response of real scenarios on the test bed conforming to it.

Each response is checked for: a status code documented for its route and method, its media
type, its body (JSON Schema 2020-12 with format checks, `$ref`s resolved across files), the
documented headers (required ones present, values valid) and no undocumented ones. Patterns are
applied with ECMA-262 semantics (`$` is the end of the string), as OpenAPI means them.

The module's helpers (`check_response`, `request_body_errors`, ...) are reused by
tests/e2e/test_http_fuzz.py.
"""

from __future__ import annotations

import importlib
import json
import re
from collections.abc import Iterator, Mapping
from dataclasses import dataclass
from datetime import timedelta
from functools import cache
from pathlib import Path
from typing import Any
from urllib.parse import quote, unquote, urlsplit

import azure.durable_functions as df
import pytest
from jsonschema import Draft202012Validator, FormatChecker, ValidationError, validators
from openapi_spec_validator import OpenAPIV31SpecValidator
from referencing import Registry, Resource
from referencing.jsonschema import DRAFT202012

from devhost.agents_service import RunScript
from devhost.foundry_service import ResponseScript
from shared.core.submission import AGENT_OWNED_FIELDS, MAX_BODY_BYTES
from tests.app_settings import changed_settings
from tests.relay_bed import FOUNDRY_TERMINAL_SCRIPTS, TERMINAL_SCRIPTS, RelayBed, relay_bed

ROOT = Path(__file__).resolve().parents[2]
DOCS = ROOT / "docs"
SPEC_PATH = DOCS / "openapi.yaml"
SPEC_URI = SPEC_PATH.as_uri()
# PyYAML ships no type stubs; imported this way it is simply `Any` to mypy.
yaml: Any = importlib.import_module("yaml")
SPEC: dict[str, Any] = yaml.safe_load(SPEC_PATH.read_text(encoding="utf-8"))
HOST_JSON: dict[str, Any] = json.loads((ROOT / "host.json").read_text(encoding="utf-8"))
ROUTE_PREFIX = "/" + str(HOST_JSON["extensions"]["http"]["routePrefix"]).strip("/")
HTTP_METHODS = ("get", "put", "post", "delete", "options", "head", "patch", "trace")

# --- the document as JSON Schema resources ---------------------------------------------------


def _retrieve(uri: str) -> Resource[Any]:
    """Files beside openapi.yaml that the document references (e.g. the event data schema)."""
    parts = urlsplit(uri)
    path = Path(unquote(parts.path)).resolve()
    if parts.scheme != "file" or path.parent != DOCS or not path.is_file():
        raise LookupError(f"the document may only reference files in docs/: {uri}")
    text = path.read_text(encoding="utf-8")
    contents = yaml.safe_load(text) if path.suffix in (".yaml", ".yml") else json.loads(text)
    return Resource.from_contents(contents, default_specification=DRAFT202012)


REGISTRY: Registry[Any] = Registry(retrieve=_retrieve).with_resource(  # type: ignore[call-arg]
    SPEC_URI, DRAFT202012.create_resource(SPEC)
)


def ecma_pattern(pattern: str) -> str:
    """A Python regex with ECMA-262 `$`: the end of the string, not also before a final \\n."""
    if pattern.endswith("$") and not pattern.endswith("\\$"):
        return pattern[:-1] + r"\Z"
    return pattern


def _pattern(
    validator: Any, pattern: str, instance: Any, schema: Mapping[str, Any]
) -> Iterator[ValidationError]:
    if validator.is_type(instance, "string") and not re.search(ecma_pattern(pattern), instance):
        yield ValidationError(f"{instance!r} does not match {pattern!r}")


# RFC 3986 characters; jsonschema checks `uri` only with optional packages, so check it here.
_URI_CHARS = re.compile(r"^(?:[A-Za-z0-9\-._~:/?#\[\]@!$&'()*+,;=]|%[0-9A-Fa-f]{2})*\Z")
_SCHEME = re.compile(r"^[A-Za-z][A-Za-z0-9+.\-]*\Z")


def _is_uri_reference(value: object) -> bool:
    return not isinstance(value, str) or bool(_URI_CHARS.match(value))


def _is_uri(value: object) -> bool:
    if not isinstance(value, str):
        return True
    scheme = value.split(":", 1)[0] if ":" in value else ""
    return _is_uri_reference(value) and bool(_SCHEME.match(scheme))


FORMAT_CHECKER = FormatChecker()
FORMAT_CHECKER.checks("uri")(_is_uri)
FORMAT_CHECKER.checks("uri-reference")(_is_uri_reference)
SchemaValidator: Any = validators.extend(Draft202012Validator, {"pattern": _pattern})


def escape_pointer(token: str) -> str:
    return token.replace("~", "~0").replace("/", "~1")


def at_pointer(pointer: str) -> Any:
    node: Any = SPEC
    for token in pointer.lstrip("/").split("/") if pointer else []:
        token = token.replace("~1", "/").replace("~0", "~")
        node = node[int(token)] if isinstance(node, list) else node[token]
    return node


def resolve(node: Any, pointer: str) -> tuple[Any, str]:
    """Follow local `$ref`s of OpenAPI objects (responses, headers, parameters)."""
    while isinstance(node, dict) and isinstance(node.get("$ref"), str):
        ref = node["$ref"]
        assert ref.startswith("#/"), f"only local references outside schemas: {ref}"
        pointer = ref[1:]
        node = at_pointer(pointer)
    return node, pointer


@cache
def validator_at(pointer: str) -> Any:
    """A validator for the schema at `pointer` in the document, with its `$ref`s resolvable."""
    return SchemaValidator(
        {"$ref": f"{SPEC_URI}#{pointer}"}, registry=REGISTRY, format_checker=FORMAT_CHECKER
    )


def schema_errors(pointer: str, instance: Any) -> list[str]:
    return [
        f"{'/'.join(map(str, e.absolute_path)) or '(root)'}: {e.message}"
        for e in validator_at(pointer).iter_errors(instance)
    ]


# --- matching requests to operations ---------------------------------------------------------


def documented_operations() -> dict[tuple[str, str], dict[str, Any]]:
    return {
        (template, method): operation
        for template, item in SPEC["paths"].items()
        for method, operation in item.items()
        if method in HTTP_METHODS
    }


def find_operation(method: str, path: str) -> tuple[str, str] | None:
    """(path template, pointer to the operation) for a request path such as `/api/runs/x`."""
    # Like the host: segments are matched decoded, literals case-insensitively.
    segments = urlsplit(path).path.strip("/").split("/")
    prefix = ROUTE_PREFIX.strip("/").split("/")
    if [unquote(s).lower() for s in segments[: len(prefix)]] != [p.lower() for p in prefix]:
        return None
    segments = segments[len(prefix) :]
    for template, item in SPEC["paths"].items():
        if method.lower() not in item:
            continue
        parts = template.strip("/").split("/")
        if len(parts) != len(segments):
            continue
        if all(
            (p.startswith("{") and bool(unquote(s)))
            or (not p.startswith("{") and unquote(s).lower() == p.lower())
            for p, s in zip(parts, segments, strict=True)
        ):
            return template, f"/paths/{escape_pointer(template)}/{method.lower()}"
    return None


def _headers(response: Any) -> dict[str, str]:
    return {str(k).lower(): str(v) for k, v in response.headers.items()}


def _field_value_problem(name: str, value: str) -> str | None:
    # RFC 9110 field values: visible characters, spaces and tabs; never CR, LF or NUL.
    if any((ord(c) < 0x20 and c != "\t") or ord(c) == 0x7F for c in value):
        return f"header {name} has a control character: {value!r}"
    return None


def check_response(method: str, path: str, response: Any) -> list[str]:
    """Everything in `response` the document does not allow (empty when it conforms)."""
    found = find_operation(method, path)
    if found is None:
        return [f"{method} {path} matches no documented operation"]
    template, op_pointer = found
    where = f"{method.upper()} {template} -> {response.status_code}"
    responses = at_pointer(op_pointer)["responses"]
    status = str(response.status_code)
    if status not in responses:
        return [f"{where}: status not documented ({sorted(responses)})"]
    documented, pointer = resolve(responses[status], f"{op_pointer}/responses/{status}")
    problems: list[str] = []
    headers = _headers(response)
    body: bytes = response.get_body() or b""
    content = documented.get("content") or {}
    content_type = headers.get("content-type")
    if not content:
        if body:
            problems.append(f"{where}: a body where none is documented: {body[:200]!r}")
    elif content_type is None:
        problems.append(f"{where}: no Content-Type")
    else:
        media = content_type.split(";")[0].strip().lower()
        if media not in content:
            problems.append(f"{where}: Content-Type {content_type!r} not in {sorted(content)}")
        else:
            try:
                instance = json.loads(body.decode("utf-8"))
            except ValueError as exc:
                problems.append(f"{where}: body is not UTF-8 JSON ({exc}): {body[:200]!r}")
            else:
                schema_pointer = f"{pointer}/content/{escape_pointer(media)}/schema"
                problems += [f"{where}: body {e}" for e in schema_errors(schema_pointer, instance)]
    allowed = {"content-type"} if content else set()
    for name, header in (documented.get("headers") or {}).items():
        header, header_pointer = resolve(header, f"{pointer}/headers/{escape_pointer(name)}")
        allowed.add(name.lower())
        value = headers.get(name.lower())
        if value is None:
            if header.get("required"):
                problems.append(f"{where}: required header {name} is missing")
            continue
        schema = header["schema"]
        typed: Any = value
        if schema.get("type") == "integer":
            typed = int(value) if re.fullmatch(r"[0-9]+", value) else value
        problems += [
            f"{where}: header {name} {e}" for e in schema_errors(f"{header_pointer}/schema", typed)
        ]
    for name, value in headers.items():
        if name not in allowed:
            problems.append(f"{where}: undocumented header {name}: {value!r}")
        problem = _field_value_problem(name, value)
        if problem:
            problems.append(f"{where}: {problem}")
    return problems


def request_body_errors(method: str, path: str, body: Any) -> list[str]:
    """Schema errors of a decoded JSON request body against the operation's requestBody."""
    found = find_operation(method, path)
    assert found is not None
    operation = at_pointer(found[1])
    assert "requestBody" in operation, f"{method} {found[0]} documents no body"
    return schema_errors(f"{found[1]}/requestBody/content/application~1json/schema", body)


# --- recording real exchanges ----------------------------------------------------------------


@dataclass(frozen=True)
class Exchange:
    method: str
    path: str
    request_headers: dict[str, str]
    request_body: bytes
    response: Any
    note: str

    @property
    def status(self) -> int:
        return int(self.response.status_code)

    def json(self) -> Any:
        return json.loads(self.response.get_body())


class Recorder:
    """Sends requests through the emulated host and keeps every exchange."""

    def __init__(self) -> None:
        self.exchanges: list[Exchange] = []

    def http(
        self,
        bed: RelayBed,
        method: str,
        path: str,
        body: Any = None,
        headers: Mapping[str, str] | None = None,
        note: str = "",
        **kwargs: Any,
    ) -> Exchange:
        if body is None or isinstance(body, bytes | str):
            raw = body.encode("utf-8") if isinstance(body, str) else (body or b"")
        else:
            raw = json.dumps(body).encode("utf-8")
        sent = dict(headers or {})
        if raw and not any(k.lower() == "content-type" for k in sent):
            sent["Content-Type"] = "application/json"
        response = bed.host.http(method, path, body=raw, headers=sent, **kwargs)
        exchange = Exchange(method, path, sent, raw, response, note)
        self.exchanges.append(exchange)
        return exchange


COMPLETED = TERMINAL_SCRIPTS["completed"]
FINAL_SCRIPTS = TERMINAL_SCRIPTS
LONG_RUN = RunScript(duration_seconds=3600, final_status="completed")
TOOL_CALLS = [
    {"id": "call_weather", "name": "get_weather", "arguments": json.dumps({"city": "Oslo"})},
    {"id": "call_time", "name": "get_time", "arguments": "x" * 3000},
]


def tool_run(expire_seconds: float = 600) -> RunScript:
    return RunScript(
        duration_seconds=60,
        final_status="completed",
        output_text="done",
        requires_action=TOOL_CALLS,
        requires_action_after_seconds=10,
        tool_outputs_expire_seconds=expire_seconds,
    )


def runs(submission_id: str, action: str = "") -> str:
    return f"/api/runs/{submission_id}" + (f"/{action}" if action else "")


def answer(ids: list[str]) -> dict[str, Any]:
    return {"toolOutputs": [{"toolCallId": i, "output": f"output of {i}"} for i in ids]}


def wait_for_requires_action(bed: RelayBed, submission_id: str) -> dict[str, Any]:
    bed.host.run_until_idle()
    for _ in range(2000):  # other instances' timers may come first
        view = bed.status(submission_id)
        if view["status"] == "requires_action":
            return view
        bed.host.advance_to_next_timer()
    raise AssertionError("the run never asked for tool outputs")


def submit(rec: Recorder, bed: RelayBed, note: str, **fields: Any) -> str:
    body = {"agentId": bed.agent_id, "input": "hello", **fields}
    exchange = rec.http(bed, "POST", "/api/runs", body, note=note)
    assert exchange.status == 202, exchange.response.get_body()
    return str(exchange.json()["id"])


def submit_foundry(rec: Recorder, bed: RelayBed, note: str, **fields: Any) -> str:
    body = {"agent": {"name": bed.foundry_agent}, "input": "hello", **fields}
    exchange = rec.http(bed, "POST", "/api/runs", body, note=note)
    assert exchange.status == 202, exchange.response.get_body()
    return str(exchange.json()["id"])


def follow(rec: Recorder, bed: RelayBed, submission_id: str, note: str) -> Exchange:
    """GET before the orchestration ran, while it runs, and once it is over (and the 409s)."""
    rec.http(bed, "GET", runs(submission_id), note=f"{note}: pending")
    bed.host.run_until_idle()
    rec.http(bed, "GET", runs(submission_id), note=f"{note}: started")
    bed.host.advance_to_next_timer()
    rec.http(bed, "GET", runs(submission_id), note=f"{note}: polling")
    bed.host.run_until_complete(submission_id)
    final = rec.http(bed, "GET", runs(submission_id), note=f"{note}: final")
    rec.http(bed, "POST", runs(submission_id, "cancel"), note=f"{note}: cancel when over")
    rec.http(
        bed,
        "POST",
        runs(submission_id, "tool-outputs"),
        answer(["call_x"]),
        note=f"{note}: tool outputs when over",
    )
    return final


def lifecycle_scenarios(rec: Recorder, bed: RelayBed) -> None:
    for status, script in FINAL_SCRIPTS.items():
        bed.agents.default_script = script
        submission_id = submit(rec, bed, status, metadata={"ticket": "INC-1"})
        final = follow(rec, bed, submission_id, status)
        assert final.json()["status"] == status
        assert final.json()["result"]["status"] == status

    bed.agents.default_script = COMPLETED
    # A conversation on the thread a first submission created, with every optional field.
    first = bed.status(submit(rec, bed, "thread source"))
    bed.complete(first["id"])
    thread_id = bed.status(first["id"])["agentRun"]["threadId"]
    full = {
        "agentId": bed.agent_id,
        "threadId": thread_id,
        "instructions": "Answer in French.",
        "messages": [
            {"role": "user", "content": "What is the capital of Norway?"},
            {"role": "assistant", "content": "Oslo."},
            {"content": "And its population?"},
        ],
        "metadata": {"ticket": "INC-2", "team": "ops"},
        "deadlineSeconds": 7200,
        "polling": {"initialSeconds": 1, "maxSeconds": 10, "multiplier": 2},
    }
    created = rec.http(bed, "POST", "/api/runs", full, note="every field")
    assert created.status == 202
    follow(rec, bed, created.json()["id"], "every field")

    # The run cannot start: unknown agent (runId stays null).
    unknown = submit(rec, bed, "unknown agent", agentId="asst_does_not_exist")
    assert follow(rec, bed, unknown, "unknown agent").json()["result"]["runId"] is None

    # The deadline passes: cancelled, deadline_exceeded.
    bed.agents.default_script = LONG_RUN
    late = submit(rec, bed, "deadline", deadlineSeconds=60)
    assert follow(rec, bed, late, "deadline").json()["cancellationReason"] == "deadline_exceeded"

    # Cancel at once, before the orchestration ran, and again while the first is pending.
    cancelled = submit(rec, bed, "cancel before start")
    assert rec.http(bed, "POST", runs(cancelled, "cancel"), note="cancel").status == 202
    assert rec.http(bed, "POST", runs(cancelled, "cancel"), note="cancel again").status == 202
    bed.host.run_until_complete(cancelled)
    rec.http(bed, "GET", runs(cancelled), note="cancelled before start")

    # Cancel a running submission: cancellationReason requested.
    running = submit(rec, bed, "cancel while running")
    bed.host.run_until_idle()
    for _ in range(4):
        bed.host.advance_to_next_timer()
    rec.http(bed, "GET", runs(running), note="running")
    assert rec.http(bed, "POST", runs(running, "cancel"), note="cancel").status == 202
    assert follow(rec, bed, running, "cancelled").json()["cancellationReason"] == "requested"


def tool_output_scenarios(rec: Recorder, bed: RelayBed) -> None:
    bed.agents.default_script = tool_run()
    waiting = submit(rec, bed, "requires_action")
    view = wait_for_requires_action(bed, waiting)
    rec.http(bed, "GET", runs(waiting), note="requires_action")
    ids = [call["id"] for call in view["requiredAction"]["toolCalls"]]
    assert sorted(ids) == sorted(call["id"] for call in TOOL_CALLS)
    path = runs(waiting, "tool-outputs")
    cases: list[tuple[str, Any, dict[str, str] | None, int]] = [
        ("text/plain", json.dumps(answer(ids)), {"Content-Type": "text/plain"}, 415),
        ("no content type", json.dumps(answer(ids)), {"Content-Type": ""}, 415),
        ("too large", json.dumps(answer(ids)) + " " * MAX_BODY_BYTES, None, 413),
        ("not JSON", "{", None, 400),
        ("not UTF-8", b'{"toolOutputs": "\xff"}', None, 400),
        ("one call missing", answer(ids[:1]), None, 400),
        ("an unknown call", answer([*ids, "call_other"]), None, 400),
        ("a call twice", answer([*ids, ids[0]]), None, 400),
        ("empty", {"toolOutputs": []}, None, 400),
        ("an array", [answer(ids)], None, 400),
        ("unknown field", {**answer(ids), "extra": 1}, None, 400),
        (
            "output not a string",
            {"toolOutputs": [{"toolCallId": i, "output": 1} for i in ids]},
            None,
            400,
        ),
        (
            "output too long",
            {
                "toolOutputs": [
                    {"toolCallId": ids[0], "output": "x" * (128 * 1024 + 1)},
                    {"toolCallId": ids[1], "output": "x"},
                ]
            },
            None,
            400,
        ),
    ]
    for note, body, headers, status in cases:
        assert rec.http(bed, "POST", path, body, headers, note=note).status == status, note
    assert rec.http(bed, "POST", path, answer(list(reversed(ids))), note="answer").status == 202
    bed.host.run_until_idle()
    rec.http(bed, "GET", runs(waiting), note="answered")
    follow(rec, bed, waiting, "answered")

    # Nobody answers: the relay gives up before the service expires the run.
    bed.agents.default_script = tool_run(expire_seconds=7200)
    ignored = submit(rec, bed, "tool outputs timeout")
    wait_for_requires_action(bed, ignored)
    final = follow(rec, bed, ignored, "tool outputs timeout")
    assert final.json()["cancellationReason"] == "tool_outputs_timeout"

    # A cancel while it waits.
    bed.agents.default_script = tool_run()
    dropped = submit(rec, bed, "cancel while waiting")
    wait_for_requires_action(bed, dropped)
    assert rec.http(bed, "POST", runs(dropped, "cancel"), note="cancel waiting").status == 202
    assert follow(rec, bed, dropped, "cancel while waiting").json()["status"] == "cancelled"

    # Tool outputs for a run that does not wait for any.
    bed.agents.default_script = LONG_RUN
    busy = submit(rec, bed, "not waiting")
    bed.host.run_until_idle()
    exchange = rec.http(bed, "POST", runs(busy, "tool-outputs"), answer(["call_x"]), note="busy")
    assert exchange.status == 409


def one_round_of_calls(body: dict[str, Any]) -> ResponseScript:
    """A Foundry response asks for two calls; the one bringing their outputs answers."""
    if any(i.get("type") == "function_call_output" for i in body.get("input") or []):
        return ResponseScript(duration_seconds=10, output_text="12 °C in Oslo")
    calls = [{"name": call["name"], "arguments": call["arguments"]} for call in TOOL_CALLS]
    return ResponseScript(duration_seconds=20, function_calls=calls)


def foundry_scenarios(rec: Recorder, bed: RelayBed) -> None:
    """Foundry agents (`agent`): every ending, a version and a conversation with every optional
    field, a round of tool calls, a confirmed cancel, an agent the deployment does not run."""
    for status, script in FOUNDRY_TERMINAL_SCRIPTS.items():
        bed.foundry.default_script = script
        note = f"foundry {status}"
        submission_id = submit_foundry(rec, bed, note, metadata={"ticket": "INC-3"})
        final = follow(rec, bed, submission_id, note).json()
        assert final["status"] == final["result"]["status"] == status
        assert final["agentRun"]["api"] == final["result"]["api"] == "responses"

    bed.foundry.default_script = FOUNDRY_TERMINAL_SCRIPTS["completed"]
    agent = {"name": bed.foundry_agent, "version": "1"}
    first = submit_foundry(rec, bed, "foundry conversation source", agent=agent)
    conversation = bed.complete(first)["agentRun"]["conversationId"]
    full = {
        "agent": agent,
        "conversationId": conversation,
        "messages": [
            {"role": "user", "content": "What is the capital of Norway?"},
            {"role": "assistant", "content": "Oslo."},
            {"content": "And its population?"},
        ],
        "metadata": {"ticket": "INC-4", "team": "ops"},
        "deadlineSeconds": 7200,
        "polling": {"initialSeconds": 1, "maxSeconds": 10, "multiplier": 2},
    }
    created = rec.http(bed, "POST", "/api/runs", full, note="foundry: every field")
    assert created.status == 202
    final = follow(rec, bed, created.json()["id"], "foundry: every field").json()
    assert final["result"]["conversationId"] == conversation
    assert final["result"]["agentVersion"] == "1"

    bed.foundry.script_for = one_round_of_calls
    waiting = submit_foundry(rec, bed, "foundry requires_action")
    view = wait_for_requires_action(bed, waiting)
    rec.http(bed, "GET", runs(waiting), note="foundry requires_action")
    ids = [call["id"] for call in view["requiredAction"]["toolCalls"]]
    path = runs(waiting, "tool-outputs")
    assert (
        rec.http(bed, "POST", path, answer(ids[:1]), note="foundry: a call missing").status == 400
    )
    assert rec.http(bed, "POST", path, answer(ids), note="foundry: answer").status == 202
    final = follow(rec, bed, waiting, "foundry answered").json()
    bed.foundry.script_for = None
    assert final["status"] == "completed"
    assert len(final["agentRun"]["responseIds"]) == 2

    bed.foundry.default_script = ResponseScript(duration_seconds=3600)
    running = submit_foundry(rec, bed, "foundry cancel while running")
    bed.host.run_until_idle()
    bed.host.advance_to_next_timer()
    rec.http(bed, "GET", runs(running), note="foundry running")
    assert rec.http(bed, "POST", runs(running, "cancel"), note="foundry cancel").status == 202
    final = follow(rec, bed, running, "foundry cancelled").json()
    assert final["result"]["cancellationReason"] == "requested"
    assert final["result"]["cancelConfirmation"] == {
        "firstRead": "cancelled",
        "secondRead": "cancelled",
    }

    body = {"agent": {"name": "someone-else"}, "input": "x"}
    with changed_settings(bed, ALLOWED_AGENTS=bed.foundry_agent):
        other = rec.http(bed, "POST", "/api/runs", body, note="foundry agent not allowed")
        assert (other.status, other.json()["field"]) == (403, "agent.name")


def idempotency_scenarios(rec: Recorder, bed: RelayBed) -> None:
    bed.agents.default_script = COMPLETED
    body = {"agentId": bed.agent_id, "input": "once"}
    key = {"Idempotency-Key": "order-42"}
    first = rec.http(bed, "POST", "/api/runs", body, key, note="first")
    replay = rec.http(bed, "POST", "/api/runs", body, key, note="replay")
    assert first.status == replay.status == 202
    assert first.json() == replay.json()
    bed.host.run_until_complete(first.json()["id"])
    after = rec.http(bed, "POST", "/api/runs", body, key, note="replay when over")
    assert after.json() == first.json()
    other = rec.http(bed, "POST", "/api/runs", {**body, "input": "twice"}, key, note="conflict")
    assert other.status == 409
    longest = {"Idempotency-Key": "k" * 199 + "~"}
    assert rec.http(bed, "POST", "/api/runs", body, longest, note="200 chars").status == 202
    for bad in ["", " ", " padded", "padded ", "k" * 201, "é", "tab\tinside", "\x7f"]:
        exchange = rec.http(bed, "POST", "/api/runs", body, {"Idempotency-Key": bad}, note=bad)
        assert exchange.status == 400, bad
        assert exchange.json()["field"] == "Idempotency-Key"


def error_scenarios(rec: Recorder, bed: RelayBed) -> None:
    valid = json.dumps({"agentId": bed.agent_id, "input": "x"})
    for note, body, headers, status in [
        ("no content type", valid, {"Content-Type": ""}, 415),
        ("form", "agentId=a&input=x", {"Content-Type": "application/x-www-form-urlencoded"}, 415),
        ("text", valid, {"Content-Type": "text/plain"}, 415),
        ("vendor json", valid, {"Content-Type": "application/vnd.relay+json"}, 202),
        ("charset", valid, {"Content-Type": "application/json; charset=utf-8"}, 202),
        ("too large", valid + " " * MAX_BODY_BYTES, None, 413),
        ("empty", b"", {"Content-Type": "application/json"}, 400),
        ("not JSON", "{", None, 400),
        ("NaN", '{"agentId": "a", "input": "x", "deadlineSeconds": NaN}', None, 400),
        ("not UTF-8", b'{"agentId": "\xff"}', None, 400),
        ("UTF-16", valid.encode("utf-16"), None, 400),
        ("nested too deep", "[" * 100_000 + "]" * 100_000, None, 400),
        ("not an object", "[]", None, 400),
    ]:
        assert rec.http(bed, "POST", "/api/runs", body, headers, note=note).status == status, note
    unknown = "f" * 32
    for path in [runs(unknown), runs("not-an-id"), runs("F" * 32), runs("%20" + "a" * 32)]:
        assert rec.http(bed, "GET", path, note="unknown").status == 404
    for action in ("cancel", "tool-outputs"):
        exchange = rec.http(bed, "POST", runs(unknown, action), answer(["x"]), note="unknown")
        assert exchange.status == 404
        assert rec.http(bed, "POST", runs("x", action), note="not an id").status == 404
    # The Functions host's 401s (no key, a wrong key); the key as `code` works too.
    for method, path in [
        ("POST", "/api/runs"),
        ("GET", runs(unknown)),
        ("POST", runs(unknown, "cancel")),
        ("POST", runs(unknown, "tool-outputs")),
    ]:
        assert rec.http(bed, method, path, "{}", note="no key", key=None).status == 401
        assert rec.http(bed, method, path, "{}", note="bad key", key="nope").status == 401
        by_query = rec.http(
            bed,
            method,
            path,
            "{}",
            note="code",
            key=None,
            query={"code": bed.host.keys.function_key},
        )
        assert by_query.status in (400, 404)


def forbidden_scenarios(rec: Recorder, bed: RelayBed) -> None:
    """Submissions the deployment does not allow: another agent, a thread, no principal."""
    body = {"agentId": bed.agent_id, "input": "x"}
    with changed_settings(bed, ALLOWED_AGENTS=bed.agent_id, ALLOW_CALLER_THREADS=None):
        other = rec.http(bed, "POST", "/api/runs", {**body, "agentId": "asst_other"}, note="agent")
        assert (other.status, other.json()["field"]) == (403, "agentId")
        thread = rec.http(bed, "POST", "/api/runs", {**body, "threadId": "thread_1"}, note="thread")
        assert (thread.status, thread.json()["field"]) == (403, "threadId")
    with changed_settings(bed, AUTH_MODE="app-service", WEBSITE_AUTH_ENABLED="true"):
        anonymous = rec.http(bed, "POST", "/api/runs", body, note="no principal")
        assert (anonymous.status, anonymous.json()["field"]) == (403, "Authorization")
        principal = {"x-ms-client-principal-id": "00000000-0000-0000-0000-00000000000a"}
        assert rec.http(bed, "POST", "/api/runs", body, principal, note="principal").status == 202


def unavailable_scenarios(rec: Recorder, bed: RelayBed) -> None:
    """The Durable backend fails (the SDK client raises): every route answers 503."""
    submission_id = bed.submit()

    async def backend_down(*args: Any, **kwargs: Any) -> Any:
        raise ConnectionError("task hub storage is unreachable")

    with pytest.MonkeyPatch.context() as patch:
        for name in ("get_status", "start_new", "raise_event"):
            patch.setattr(df.DurableOrchestrationClient, name, backend_down)
        body = {"agentId": bed.agent_id, "input": "x"}
        for method, path, sent in [
            ("POST", "/api/runs", body),
            ("GET", runs(submission_id), None),
            ("POST", runs(submission_id, "cancel"), None),
            ("POST", runs(submission_id, "tool-outputs"), answer(["x"])),
        ]:
            assert rec.http(bed, method, path, sent, note="backend down").status == 503


def abnormal_end_scenarios(rec: Recorder, bed: RelayBed) -> None:
    bed.agents.default_script = LONG_RUN
    terminated = submit(rec, bed, "terminated")
    bed.host.run_until_idle()
    bed.host.terminate(terminated, "operator")
    bed.host.run_until_idle()
    assert rec.http(bed, "GET", runs(terminated), note="terminated").json()["status"] == "failed"
    assert rec.http(bed, "POST", runs(terminated, "cancel"), note="terminated").status == 409
    unreadable = "b" * 32
    bed.host.start_orchestration("agent_run_orchestrator", {"unexpected": True}, unreadable)
    rec.http(bed, "GET", runs(unreadable), note="unreadable input: pending")
    bed.host.run_until_complete(unreadable)
    assert rec.http(bed, "GET", runs(unreadable), note="unreadable").json()["status"] == "failed"


def publishing_scenarios(rec: Recorder, bed: RelayBed) -> None:
    """The publish window (600 s in this bed) runs out: `publishError` and a null `event`."""
    bed.agents.default_script = COMPLETED
    bed.topic.refuse_until(bed.clock.now() + timedelta(hours=2))
    unpublished = submit(rec, bed, "publish gives up")
    final = follow(rec, bed, unpublished, "publish gives up").json()
    assert final["event"] is None
    assert final["publishError"]["code"] == "publish_failed"
    assert final["result"]["status"] == "completed"


@pytest.fixture(scope="module")
def bed() -> Iterator[RelayBed]:
    # One host per process: every test here shares this bed (publishing gives up after 600 s;
    # callers may name threads, so that every field of a submission is exercised).
    settings = {"PUBLISH_RETRY_WINDOW_SECONDS": "600", "ALLOW_CALLER_THREADS": "true"}
    with relay_bed(settings=settings) as started:
        yield started


@pytest.fixture(scope="module")
def exchanges(bed: RelayBed) -> list[Exchange]:
    rec = Recorder()
    lifecycle_scenarios(rec, bed)
    tool_output_scenarios(rec, bed)
    foundry_scenarios(rec, bed)
    idempotency_scenarios(rec, bed)
    error_scenarios(rec, bed)
    forbidden_scenarios(rec, bed)
    abnormal_end_scenarios(rec, bed)
    unavailable_scenarios(rec, bed)
    publishing_scenarios(rec, bed)
    return rec.exchanges


# --- the document itself ---------------------------------------------------------------------


def test_the_document_is_a_valid_openapi_3_1_document() -> None:
    assert str(SPEC["openapi"]).startswith("3.1.")
    errors = [e.message for e in OpenAPIV31SpecValidator(SPEC, base_uri=SPEC_URI).iter_errors()]
    assert errors == []


def _references(node: Any, pointer: str = "") -> Iterator[tuple[str, str]]:
    if isinstance(node, dict):
        for key, value in node.items():
            if key == "$ref" and isinstance(value, str):
                yield pointer, value
            else:
                yield from _references(value, f"{pointer}/{escape_pointer(str(key))}")
    elif isinstance(node, list):
        for index, value in enumerate(node):
            yield from _references(value, f"{pointer}/{index}")


def test_every_reference_in_the_document_resolves() -> None:
    # (openapi-spec-validator does not report a dangling reference outside schemas.)
    resolver = REGISTRY.resolver(base_uri=SPEC_URI)
    references = list(_references(SPEC))
    assert len(references) > 40
    for pointer, ref in references:
        resolved = resolver.lookup(ref).contents
        assert isinstance(resolved, dict), (pointer, ref)
    event_schema = resolver.lookup("#/components/schemas/AgentRunCompletedData").contents
    assert event_schema["title"].startswith("AgentRunCompleted")


def test_the_document_is_complete_on_its_own() -> None:
    """As shipped: valid without a base URI, every `$ref` inside the document."""
    from openapi_spec_validator import validate

    validate(SPEC)  # no base_uri: a reference to another file would be unresolvable
    assert [e.message for e in OpenAPIV31SpecValidator(SPEC).iter_errors()] == []
    outside = [(pointer, ref) for pointer, ref in _references(SPEC) if not ref.startswith("#/")]
    assert outside == []


def test_the_inlined_event_schema_is_the_json_schema_file() -> None:
    inlined = SPEC["components"]["schemas"]["AgentRunCompletedData"]
    on_disk = json.loads((DOCS / "agent-run-completed.schema.json").read_text(encoding="utf-8"))
    assert inlined == on_disk
    result = SPEC["components"]["schemas"]["SubmissionView"]["properties"]["result"]
    assert result["$ref"] == "#/components/schemas/AgentRunCompletedData"


def test_the_default_server_has_the_flex_consumption_host_name_format() -> None:
    """Apps created since June 2024 (Flex Consumption among them) get a unique default host
    name `<app>-<hash>.<region>.azurewebsites.net`, e.g. `myapp-ds27dh7271aah175.westus-01.
    azurewebsites.net` (App Service, "unique default hostname")."""
    server = SPEC["servers"][0]
    url = server["url"]
    for name, variable in server["variables"].items():
        url = url.replace("{" + name + "}", variable["default"])
    assert "{" not in url
    host = urlsplit(url).hostname or ""
    assert re.fullmatch(
        r"func-api-[a-z0-9]{13}-[a-z0-9]{16}\.[a-z0-9]+-\d{2}\.azurewebsites\.net", host
    )
    assert "func-api-${resourceToken}" in (ROOT / "infra" / "main.bicep").read_text()


def test_idempotency_is_byte_identical_in_the_readme_and_the_document() -> None:
    """The app compares the SHA-256 of the raw body bytes, so both say "byte-identical"."""
    readme = (ROOT / "README.md").read_text(encoding="utf-8")
    (paragraph,) = [p for p in readme.split("\n\n") if p.startswith("- `Idempotency-Key` header")]
    parameter = SPEC["components"]["parameters"]["IdempotencyKey"]["description"]
    operation = SPEC["paths"]["/runs"]["post"]["description"]
    for text in (paragraph, parameter, operation):
        flat = " ".join(text.split())
        assert "byte-identical body" in flat, text
        assert "same body" not in flat, text


def test_every_schema_in_the_document_is_a_valid_2020_12_schema() -> None:
    for name, schema in SPEC["components"]["schemas"].items():
        Draft202012Validator.check_schema(schema)
        assert validator_at(f"/components/schemas/{escape_pointer(name)}") is not None


def test_formats_and_patterns_are_really_checked() -> None:
    def invalid(name: str, instance: Any) -> bool:
        return bool(schema_errors(f"/components/schemas/{name}", instance))

    assert invalid("NullableDateTime", "yesterday")
    assert not invalid("NullableDateTime", "2026-01-01T00:00:00.000Z")
    assert invalid("PublishedEvent", {"id": "not-a-uuid", "publishedAt": "2026-01-01T00:00:00Z"})
    assert invalid("SubmitAccepted", {"id": "a" * 32, "status": "accepted", "statusUrl": "/x"})
    good_url = "https://x.example/api/runs/" + "a" * 32
    assert not invalid(
        "SubmitAccepted", {"id": "a" * 32, "status": "accepted", "statusUrl": good_url}
    )
    assert invalid(
        "SubmitAccepted", {"id": "a" * 32, "status": "accepted", "statusUrl": good_url + "\n"}
    )
    assert invalid("SubmissionId", "a" * 32 + "\n")  # ECMA-262 `$`
    assert invalid("Problem", {"type": "x", "title": "t", "status": 400, "detail": "d"})
    problem = {"type": "https://agent-run-relay/problems/x", "title": "t", "status": 400}
    assert not invalid("Problem", {**problem, "detail": "d", "instance": "/api/runs/%C3%A9"})
    assert invalid("Problem", {**problem, "detail": "d", "instance": "/api/runs/é"})
    # The view's `result` is the event data schema (a copy of agent-run-completed.schema.json).
    pointer = "/components/schemas/SubmissionView/properties/result"
    assert schema_errors(pointer, {"submissionId": "a" * 32}) != []


def test_routes_in_the_document_are_the_apps_http_functions(bed: RelayBed) -> None:
    declared: dict[tuple[str, str], str] = {}
    for function in bed.host.functions.values():
        if function.route is None:
            continue
        assert function.auth_level == "function", function.name
        for method in function.methods or ():
            declared[("/" + function.route.strip("/"), method.lower())] = function.name
    documented = {
        key: operation.get("x-azure-function") for key, operation in documented_operations().items()
    }
    assert documented == declared
    for server in SPEC["servers"]:
        assert urlsplit(server["url"]).path.rstrip("/") == ROUTE_PREFIX
    schemes = SPEC["components"]["securitySchemes"]
    assert {(s["in"], s["name"]) for s in schemes.values()} == {
        ("header", "x-functions-key"),
        ("query", "code"),
    }
    for operation in documented_operations().values():
        assert "401" in operation["responses"]
        assert operation.get("security", SPEC["security"]) == SPEC["security"]


# --- real responses against the document -----------------------------------------------------


def test_every_response_conforms_to_the_document(exchanges: list[Exchange]) -> None:
    assert len(exchanges) > 150
    problems = [
        f"[{e.note}] {problem}"
        for e in exchanges
        for problem in check_response(e.method, e.path, e.response)
    ]
    assert problems == []


def test_every_documented_response_was_exercised(exchanges: list[Exchange]) -> None:
    documented = {
        (template, method, status)
        for (template, method), operation in documented_operations().items()
        for status in operation["responses"]
    }
    seen = set()
    for e in exchanges:
        found = find_operation(e.method, e.path)
        assert found is not None
        seen.add((found[0], e.method.lower(), str(e.status)))
    assert documented - seen == set()
    assert seen - documented == set()


def test_every_view_status_and_cancellation_reason_was_seen(exchanges: list[Exchange]) -> None:
    views = [e.json() for e in exchanges if e.method == "GET" and e.status == 200]
    view_schema = SPEC["components"]["schemas"]["SubmissionView"]["properties"]
    assert {v["status"] for v in views} == set(view_schema["status"]["enum"])
    reasons = set(view_schema["cancellationReason"]["enum"])
    assert {v["cancellationReason"] for v in views} == reasons
    optional = set(view_schema) - set(SPEC["components"]["schemas"]["SubmissionView"]["required"])
    assert {key for v in views for key in v} >= optional


def test_successful_requests_match_the_documented_request_schemas(
    exchanges: list[Exchange],
) -> None:
    checked = 0
    for e in exchanges:
        if e.status >= 300 or not e.request_body:
            continue
        found = find_operation(e.method, e.path)
        assert found is not None
        if "requestBody" not in at_pointer(found[1]):
            continue
        checked += 1
        body = json.loads(e.request_body)
        assert request_body_errors(e.method, e.path, body) == [], e.note
        key = e.request_headers.get("Idempotency-Key")
        if key is not None:
            assert schema_errors("/components/parameters/IdempotencyKey/schema", key) == []
    assert checked > 20


def test_locations_lead_to_the_submission(bed: RelayBed, exchanges: list[Exchange]) -> None:
    locations = [e for e in exchanges if e.status == 202]
    assert locations
    for e in locations:
        location = e.response.headers["Location"]
        assert location == e.json()["statusUrl"]
        assert "code=" not in location
        status = bed.host.http("GET", urlsplit(location).path).status_code
        # The default caller (the function key) reads its own submissions; one accepted for an
        # App Service principal is another caller's: 404, as for an unknown id.
        by_principal = any(k.lower() == "x-ms-client-principal-id" for k in e.request_headers)
        assert status == (404 if by_principal else 200)


def test_problems_name_the_request_path_as_instance(exchanges: list[Exchange]) -> None:
    problems = [e for e in exchanges if e.status >= 400 and e.response.get_body()]
    assert len(problems) > 40
    for e in problems:
        assert e.json()["instance"] == urlsplit(e.path).path
    statuses_with_retry_after = {e.status for e in problems if "Retry-After" in e.response.headers}
    assert statuses_with_retry_after == {503}


# --- request bodies: the documented schema agrees with the app -------------------------------

AGENT = "asst_abc123"
BASE = {"agentId": AGENT, "input": "x"}
FOUNDRY = {"agent": {"name": "summarizer"}, "input": "x"}
# (body, the app's verdict: None = accepted, else the `field` of the 400 problem).
SUBMISSIONS: list[tuple[Any, str | None]] = [
    (BASE, None),
    ({**BASE, "input": "x" * 32768}, None),
    ({**BASE, "input": "x" * 32769}, "input"),
    ({**BASE, "input": " \t\n"}, "input"),
    ({**BASE, "input": ""}, "input"),
    ({**BASE, "input": None}, "input"),
    ({"agentId": AGENT}, "input"),
    ({**BASE, "messages": [{"content": "x"}]}, "input"),
    ({"agentId": AGENT, "messages": [{"content": "x"}]}, None),
    ({"agentId": AGENT, "messages": []}, "messages"),
    ({"agentId": AGENT, "messages": [{"content": "x"}] * 32}, None),
    ({"agentId": AGENT, "messages": [{"content": "x"}] * 33}, "messages"),
    ({"agentId": AGENT, "messages": [{"role": "system", "content": "x"}]}, "messages[0].role"),
    ({"agentId": AGENT, "messages": [{"role": None, "content": "x"}]}, "messages[0].role"),
    ({"agentId": AGENT, "messages": [{"content": "x", "name": "n"}]}, "messages[0].name"),
    ({"agentId": AGENT, "messages": ["x"]}, "messages[0]"),
    ({"agentId": AGENT, "messages": [{"content": 5}]}, "messages[0].content"),
    ({"agentId": None, "input": "x"}, "agentId"),
    ({"input": "x"}, "agentId"),
    ({**BASE, "agentId": "a" * 128}, None),
    ({**BASE, "agentId": "a" * 129}, "agentId"),
    ({**BASE, "agentId": "_asst"}, "agentId"),
    ({**BASE, "agentId": "asst 1"}, "agentId"),
    ({**BASE, "threadId": None}, None),
    ({**BASE, "threadId": "thread_1.a-b"}, None),
    ({**BASE, "threadId": "thread/1"}, "threadId"),
    ({**BASE, "threadId": 1}, "threadId"),
    ({**BASE, "instructions": None}, None),
    ({**BASE, "instructions": "i" * 32768}, None),
    ({**BASE, "instructions": "i" * 32769}, "instructions"),
    ({**BASE, "instructions": "  "}, "instructions"),
    ({**BASE, "metadata": None}, None),
    ({**BASE, "metadata": {}}, None),
    ({**BASE, "metadata": {f"k{i}": "v" for i in range(15)}}, None),
    ({**BASE, "metadata": {f"k{i}": "v" for i in range(16)}}, "metadata"),
    ({**BASE, "metadata": {"k" * 64: "v" * 512}}, None),
    ({**BASE, "metadata": {"k" * 65: "v"}}, "metadata"),
    ({**BASE, "metadata": {"": "v"}}, "metadata"),
    ({**BASE, "metadata": {"k": "v" * 513}}, "metadata.k"),
    ({**BASE, "metadata": {"k": 1}}, "metadata.k"),
    ({**BASE, "metadata": {"relay_x": "v"}}, "metadata.relay_x"),
    ({**BASE, "metadata": {"Relay_x": "v"}}, None),
    ({**BASE, "metadata": ["k"]}, "metadata"),
    ({**BASE, "deadlineSeconds": None}, None),
    ({**BASE, "deadlineSeconds": 1}, None),
    ({**BASE, "deadlineSeconds": 60.0}, None),
    ({**BASE, "deadlineSeconds": 604800}, None),
    ({**BASE, "deadlineSeconds": 604801}, "deadlineSeconds"),
    ({**BASE, "deadlineSeconds": 0}, "deadlineSeconds"),
    ({**BASE, "deadlineSeconds": 1.5}, "deadlineSeconds"),
    ({**BASE, "deadlineSeconds": "60"}, "deadlineSeconds"),
    ({**BASE, "deadlineSeconds": True}, "deadlineSeconds"),
    ({**BASE, "deadlineSeconds": 1e308}, "deadlineSeconds"),
    ({**BASE, "polling": None}, None),
    ({**BASE, "polling": {}}, None),
    ({**BASE, "polling": {"initialSeconds": 1, "maxSeconds": 3600, "multiplier": 4}}, None),
    ({**BASE, "polling": {"initialSeconds": 300, "multiplier": 1}}, None),
    ({**BASE, "polling": {"initialSeconds": 0.5}}, "polling.initialSeconds"),
    ({**BASE, "polling": {"initialSeconds": 301}}, "polling.initialSeconds"),
    ({**BASE, "polling": {"maxSeconds": 3601}}, "polling.maxSeconds"),
    ({**BASE, "polling": {"multiplier": 0.5}}, "polling.multiplier"),
    ({**BASE, "polling": {"multiplier": 4.5}}, "polling.multiplier"),
    ({**BASE, "polling": {"multiplier": "2"}}, "polling.multiplier"),
    ({**BASE, "polling": {"jitter": 0.1}}, "polling.jitter"),
    ({**BASE, "polling": 5}, "polling"),
    ({**BASE, "agentID": AGENT}, "agentID"),
    ({**BASE, "conversationId": "conv_1"}, "conversationId"),
    ({**BASE, "conversationId": None}, "conversationId"),
    ({**BASE, "agent": {"name": "a"}}, "agentId"),
    # Foundry agents (`agent`).
    (FOUNDRY, None),
    ({"agent": {"name": "a"}, "messages": [{"content": "x"}]}, None),
    ({"agent": {"name": "a"}}, "input"),
    ({**FOUNDRY, "agent": {"name": "summarizer", "version": "3"}}, None),
    ({**FOUNDRY, "agent": {"name": "summarizer", "version": None}}, None),
    ({**FOUNDRY, "agent": {"name": "a" * 63}}, None),
    ({**FOUNDRY, "agent": {"name": "a" * 64}}, "agent.name"),
    ({**FOUNDRY, "agent": {"name": "_a"}}, "agent.name"),
    ({**FOUNDRY, "agent": {"name": "a/b"}}, "agent.name"),
    ({**FOUNDRY, "agent": {"name": ""}}, "agent.name"),
    ({**FOUNDRY, "agent": {"name": None}}, "agent.name"),
    ({**FOUNDRY, "agent": {}}, "agent.name"),
    ({**FOUNDRY, "agent": {"name": "a", "version": "1" * 64}}, None),
    ({**FOUNDRY, "agent": {"name": "a", "version": "1" * 65}}, "agent.version"),
    ({**FOUNDRY, "agent": {"name": "a", "version": "v 1"}}, "agent.version"),
    ({**FOUNDRY, "agent": {"name": "a", "version": 3}}, "agent.version"),
    ({**FOUNDRY, "agent": {"name": "a", "kind": "prompt"}}, "agent.kind"),
    ({**FOUNDRY, "agent": "summarizer"}, "agent"),
    ({**FOUNDRY, "agent": None}, "agent"),
    ({**FOUNDRY, "agentId": AGENT}, "agentId"),
    ({**FOUNDRY, "agentId": None}, "agentId"),
    ({**FOUNDRY, "threadId": "thread_1"}, "threadId"),
    ({**FOUNDRY, "threadId": None}, "threadId"),
    ({**FOUNDRY, "instructions": None}, "instructions"),
    *[({**FOUNDRY, name: "x"}, name) for name in sorted(AGENT_OWNED_FIELDS)],
    ({**FOUNDRY, "conversationId": "conv_1.a-b"}, None),
    ({**FOUNDRY, "conversationId": None}, None),
    ({**FOUNDRY, "conversationId": "conv/1"}, "conversationId"),
    ({**FOUNDRY, "conversationId": 1}, "conversationId"),
    ({**FOUNDRY, "metadata": {f"k{i}": "v" for i in range(15)}}, None),
    ({**FOUNDRY, "metadata": {f"k{i}": "v" for i in range(16)}}, "metadata"),
    ({**FOUNDRY, "metadata": {"relay_x": "v"}}, "metadata.relay_x"),
    ({**FOUNDRY, "deadlineSeconds": 60, "polling": {"initialSeconds": 2}}, None),
    ({**FOUNDRY, "agentID": AGENT}, "agentID"),
    ([BASE], "body"),
    ("x", "body"),
    (None, "body"),
]
# Rules JSON Schema cannot state (the document says them in prose).
PROSE_RULES: list[tuple[Any, str]] = [
    (
        {"agentId": AGENT, "messages": [{"content": "q"}, {"role": "assistant", "content": "a"}]},
        "messages",
    ),
    ({**BASE, "polling": {"initialSeconds": 20, "maxSeconds": 10}}, "polling.maxSeconds"),
    ({**BASE, "polling": {"maxSeconds": 1.5}}, "polling.maxSeconds"),  # below the default initial
]


@pytest.mark.parametrize(("body", "field"), SUBMISSIONS)
def test_the_submission_schema_agrees_with_the_app(
    bed: RelayBed, body: Any, field: str | None
) -> None:
    response = bed.host.http(
        "POST", "/api/runs", body=json.dumps(body), headers={"Content-Type": "application/json"}
    )
    assert check_response("POST", "/api/runs", response) == []
    assert response.status_code == (202 if field is None else 400), response.get_body()
    if field is not None:
        assert json.loads(response.get_body())["field"] == field
    errors = request_body_errors("POST", "/api/runs", body)
    assert (errors == []) == (field is None), errors


@pytest.mark.parametrize(("body", "field"), PROSE_RULES)
def test_rules_only_the_prose_states_are_enforced(bed: RelayBed, body: Any, field: str) -> None:
    response = bed.host.http(
        "POST", "/api/runs", body=json.dumps(body), headers={"Content-Type": "application/json"}
    )
    assert check_response("POST", "/api/runs", response) == []
    assert response.status_code == 400
    assert json.loads(response.get_body())["field"] == field
    assert request_body_errors("POST", "/api/runs", body) == []


W, T = (call["id"] for call in TOOL_CALLS)


def outputs(*pairs: tuple[Any, Any]) -> dict[str, Any]:
    return {"toolOutputs": [{"toolCallId": call, "output": out} for call, out in pairs]}


# (body, the app's verdict: None = accepted, else the `field` of the 400 problem).
TOOL_OUTPUT_BODIES: list[tuple[Any, str | None]] = [
    (outputs((W, ""), (T, "x" * 131072)), None),
    (outputs((T, "b"), (W, "a")), None),
    (outputs((W, ""), (T, "x" * 131073)), "toolOutputs[1].output"),
    (outputs((W, "a"), (T, None)), "toolOutputs[1].output"),
    (outputs((W, "a"), (T, 1)), "toolOutputs[1].output"),
    (outputs(("", "a"), (T, "b")), "toolOutputs[0].toolCallId"),
    (outputs((None, "a"), (T, "b")), "toolOutputs[0].toolCallId"),
    (
        {"toolOutputs": [{"toolCallId": W}, {"toolCallId": T, "output": "b"}]},
        "toolOutputs[0].output",
    ),
    (
        {"toolOutputs": [{"toolCallId": W, "output": "a", "more": 1}, {"toolCallId": T}]},
        "toolOutputs[0].more",
    ),
    ({"toolOutputs": ["a"]}, "toolOutputs[0]"),
    ({"toolOutputs": []}, "toolOutputs"),
    ({"toolOutputs": None}, "toolOutputs"),
    ({"toolOutputs": {W: "a"}}, "toolOutputs"),
    ({}, "toolOutputs"),
    ({**outputs((W, "a"), (T, "b")), "more": 1}, "more"),
    ([], "body"),
    ("a", "body"),
]
# Only the prose says: exactly the pending calls, each once.
TOOL_OUTPUT_PROSE_RULES: list[Any] = [
    outputs((W, "a")),
    outputs((W, "a"), (T, "b"), ("call_other", "c")),
    outputs((W, "a"), (T, "b"), (W, "c")),
]


@pytest.fixture(scope="module")
def waiting(bed: RelayBed) -> str:
    """A submission waiting for tool outputs; nothing drives the host after this, so it stays."""
    bed.agents.default_script = tool_run()
    submission_id = bed.submit()
    wait_for_requires_action(bed, submission_id)
    return submission_id


def post_outputs(bed: RelayBed, submission_id: str, body: Any) -> Any:
    path = runs(submission_id, "tool-outputs")
    response = bed.host.http(
        "POST", path, body=json.dumps(body), headers={"Content-Type": "application/json"}
    )
    assert check_response("POST", path, response) == []
    return response


@pytest.mark.parametrize(("body", "field"), TOOL_OUTPUT_BODIES)
def test_the_tool_outputs_schema_agrees_with_the_app(
    bed: RelayBed, waiting: str, body: Any, field: str | None
) -> None:
    response = post_outputs(bed, waiting, body)
    assert response.status_code == (202 if field is None else 400), response.get_body()
    if field is not None:
        assert json.loads(response.get_body())["field"] == field
    errors = request_body_errors("POST", runs(waiting, "tool-outputs"), body)
    assert (errors == []) == (field is None), errors


@pytest.mark.parametrize("body", TOOL_OUTPUT_PROSE_RULES)
def test_tool_output_rules_only_the_prose_states_are_enforced(
    bed: RelayBed, waiting: str, body: Any
) -> None:
    response = post_outputs(bed, waiting, body)
    assert response.status_code == 400
    assert json.loads(response.get_body())["field"] == "toolOutputs"
    assert request_body_errors("POST", runs(waiting, "tool-outputs"), body) == []


# --- regressions: bugs the fuzzing and conformance work found (fixed) -----------------------


def _submission(bed: RelayBed) -> str:
    bed.agents.default_script = LONG_RUN
    return bed.submit()


@pytest.mark.parametrize(
    ("method", "action"), [("GET", ""), ("POST", "cancel"), ("POST", "tool-outputs")]
)
def test_an_id_with_a_trailing_newline_is_not_found(
    bed: RelayBed, method: str, action: str
) -> None:
    path = runs(_submission(bed) + quote("\n"), action)
    response = bed.host.http(
        method, path, body=json.dumps(answer(["x"])), headers={"Content-Type": "application/json"}
    )
    assert response.status_code == 404
    assert check_response(method, path, response) == []


@pytest.mark.parametrize(
    ("body", "headers", "field"),
    [
        ({**BASE}, {"Idempotency-Key": "order-42\n"}, "Idempotency-Key"),
        ({**BASE, "agentId": "asst_1\n"}, {}, "agentId"),
        ({**BASE, "threadId": "thread_1\n"}, {}, "threadId"),
    ],
)
def test_values_with_a_trailing_newline_are_refused(
    bed: RelayBed, body: dict[str, Any], headers: dict[str, str], field: str
) -> None:
    response = bed.post_run(body, headers=headers)
    assert response.status_code == 400
    assert json.loads(response.get_body())["field"] == field


@pytest.mark.parametrize("path", ["/api/Runs", "/API/RUNS", "/api/%72uns"])
def test_location_is_right_for_any_spelling_of_the_route(bed: RelayBed, path: str) -> None:
    response = bed.host.http(
        "POST", path, body=json.dumps(BASE), headers={"Content-Type": "application/json"}
    )
    assert response.status_code == 202
    location = urlsplit(response.headers["Location"]).path
    assert bed.host.http("GET", location).status_code == 200


@pytest.mark.parametrize(
    ("raw", "field"),
    [
        ('"input": "\\ud800"', "input"),
        ('"input": "x", "instructions": "a\\udfffb"', "instructions"),
        ('"input": "x", "metadata": {"k": "\\ud83d"}', "metadata.k"),
        ('"input": "x", "metadata": {"k\\udc00": "v"}', "metadata"),
        ('"messages": [{"content": "\\udc00"}]', "messages[0].content"),
    ],
)
def test_text_that_is_not_unicode_scalar_values_is_refused(
    bed: RelayBed, raw: str, field: str
) -> None:
    response = bed.post_run(f'{{"agentId": "{AGENT}", {raw}}}')
    assert response.status_code == 400
    assert json.loads(response.get_body())["field"].startswith(field)

"""HTTP functions' logic: submit a run, read a submission, cancel it, hand it tool outputs."""

from __future__ import annotations

import hashlib
import json
import logging
import re
import uuid
from collections.abc import Awaitable, Callable
from dataclasses import replace
from typing import Any
from urllib.parse import quote, unquote, urlsplit, urlunsplit

import azure.functions as func

from ..adapters.observability import log_fields
from ..adapters.settings import Settings, get_settings
from ..contract import (
    CANCEL_EVENT,
    FINISHED_PHASES,
    ORCHESTRATOR_NAME,
    CancelEventData,
    ToolOutputsEventData,
    read_custom_status,
    tool_outputs_event_name,
)
from ..core.problems import PROBLEM_CONTENT_TYPE, Problem, bad_request
from ..core.run_status import REQUIRES_ACTION
from ..core.state import RelayState
from ..core.status_view import build_status_view, is_relay_instance
from ..core.submission import authorize_submission, parse_json_body, validate_submission
from ..core.tool_outputs import validate_tool_outputs

logger = logging.getLogger("agent_run_relay.http")

SUBMISSION_ID_PATTERN = re.compile(r"^[0-9a-f]{32}$")
# Printable ASCII without spaces at the ends; long enough for a UUID or a composite key.
IDEMPOTENCY_KEY_PATTERN = re.compile(r"^[\x21-\x7e](?:[\x20-\x7e]{0,198}[\x21-\x7e])?$")
FINISHED_RUNTIME_STATUSES = frozenset({"Completed", "Failed", "Terminated", "Canceled"})
NOT_FOUND = Problem(404, "no submission with this id", field="id", code="not-found")
# Where the Functions host takes the key from (the header first, else the query parameter;
# azure-functions-host AuthenticationLevelHandler). The worker receives both as sent.
FUNCTION_KEY_HEADER = "x-functions-key"
FUNCTION_KEY_QUERY = "code"
# Injected by App Service authentication, which strips a client's own x-ms-client-principal*
# headers (learn.microsoft.com/azure/app-service/configure-authentication-user-identities).
PRINCIPAL_ID_HEADER = "x-ms-client-principal-id"
PRINCIPAL_ID_PATTERN = re.compile(r"^[\x21-\x7e]{1,200}$")
# host[:port] as X-Forwarded-Host may carry it: a DNS name, an IPv4 address or [IPv6].
_LABEL = r"[A-Za-z0-9](?:[A-Za-z0-9\-]{0,61}[A-Za-z0-9])?"
FORWARDED_HOST_PATTERN = re.compile(
    rf"^(?:{_LABEL}(?:\.{_LABEL})*\.?|\[[0-9A-Fa-f:.]{{2,45}}\])(?::(?P<port>[0-9]{{1,5}}))?$"
)

Handler = Callable[[func.HttpRequest, Any], Awaitable[func.HttpResponse]]


def json_response(
    status: int, body: dict[str, Any], headers: dict[str, str] | None = None
) -> func.HttpResponse:
    return func.HttpResponse(
        json.dumps(body), status_code=status, mimetype="application/json", headers=headers or {}
    )


def problem_response(problem: Problem, req: func.HttpRequest) -> func.HttpResponse:
    headers = {"Content-Type": PROBLEM_CONTENT_TYPE}
    if problem.status == 503:
        headers["Retry-After"] = "5"
    return func.HttpResponse(
        problem.to_json(instance=urlsplit(str(req.url)).path),
        status_code=problem.status,
        headers=headers,
    )


def guarded(handler: Handler) -> Handler:
    """Problems become problem+json; a failing Durable backend becomes 503, never a bare 500."""

    async def run(req: func.HttpRequest, client: Any) -> func.HttpResponse:
        try:
            return await handler(req, client)
        except Problem as problem:
            return problem_response(problem, req)
        except Exception:
            logger.exception("the orchestration backend failed")
            unavailable = Problem(503, "the orchestration backend is unavailable; try again")
            return problem_response(unavailable, req)

    return run


def status_url(req: func.HttpRequest, submission_id: str) -> str:
    """`…/runs/{id}` at PUBLIC_BASE_URL, else on the route prefix and host the request came in on
    (X-Forwarded-Host/-Proto only with TRUST_FORWARDED_HEADERS: anyone can send them)."""
    settings = get_settings()
    if settings.public_base_url:
        return f"{settings.public_base_url}/runs/{submission_id}"
    parts = urlsplit(str(req.url))
    # Routes match case-insensitively and percent-decoded: find "/runs" the same way.
    path = unquote(parts.path)
    prefix = quote(path[: path.lower().rfind("/runs")])
    scheme, netloc = parts.scheme, parts.netloc
    if settings.trust_forwarded_headers:
        scheme, netloc = _forwarded_origin(req, scheme, netloc)
    return urlunsplit((scheme, netloc, f"{prefix}/runs/{submission_id}", "", ""))


def _first_value(value: str | None) -> str:
    # The first proxy's value: the one the client addressed (later proxies append theirs).
    return (value or "").split(",")[0].strip()


def _forwarded_origin(req: func.HttpRequest, scheme: str, netloc: str) -> tuple[str, str]:
    """The origin the trusted proxy says the client used; an unusable value is ignored."""
    host = _first_value(req.headers.get("x-forwarded-host"))
    match = FORWARDED_HOST_PATTERN.fullmatch(host)
    if match and (match["port"] is None or 0 < int(match["port"]) <= 65535):
        netloc = host.lower()
    proto = _first_value(req.headers.get("x-forwarded-proto")).lower()
    if proto in ("http", "https"):
        scheme = proto
    return scheme, netloc


def _accepted(req: func.HttpRequest, submission_id: str, retry_after: int) -> func.HttpResponse:
    url = status_url(req, submission_id)
    return json_response(
        202,
        {"id": submission_id, "status": "accepted", "statusUrl": url},
        {"Location": url, "Retry-After": str(retry_after)},
    )


def caller_identity(req: func.HttpRequest, settings: Settings) -> str:
    """Who sends this request, as an opaque string that never holds a secret.

    AUTH_MODE=app-service: "principal:<id>" from the header App Service authentication injects
    (settings refuse that mode unless the platform says the feature is on). Otherwise the
    function key the host authorised, hashed: "key:<32 hex digits>". The worker never learns
    the key's name (the host passes its claims in RpcHttp.identities, which the Python worker
    drops), so the value is all there is; it is never logged or stored.
    """
    if settings.auth_mode == "app-service":
        principal = (req.headers.get(PRINCIPAL_ID_HEADER) or "").strip()
        if not PRINCIPAL_ID_PATTERN.fullmatch(principal):
            raise Problem(
                403,
                "this relay identifies callers by App Service authentication and the request "
                "was not authenticated: send a token the app's identity provider issued",
                field="Authorization",
                code="caller-unidentified",
            )
        return f"principal:{principal}"
    header = req.headers.get(FUNCTION_KEY_HEADER)
    # The host reads the header's first value; the worker gets all of them joined by commas.
    key = header.split(",")[0] if header is not None else req.params.get(FUNCTION_KEY_QUERY)
    key = (key or "").strip()
    if not key:
        raise Problem(
            403,
            "this relay identifies callers by their function key and the request carries none",
            field=FUNCTION_KEY_HEADER,
            code="caller-unidentified",
        )
    return key_caller(key)


def key_caller(key: str) -> str:
    """The caller a function key identifies: "key:" + 32 hex digits of a SHA-256 of the key."""
    material = f"agent-run-relay/caller\x1f{key}".encode("utf-8", "surrogatepass")
    return "key:" + hashlib.sha256(material).hexdigest()[:32]


def idempotent_submission_id(caller: str, key: str) -> str:
    """The submission id of a caller's Idempotency-Key (two callers' keys never meet)."""
    scoped = f"idempotency-key\x1f{caller}\x1f{key}"
    return hashlib.sha256(scoped.encode("utf-8", "surrogatepass")).hexdigest()[:32]


def _idempotency(req: func.HttpRequest, body: bytes, caller: str) -> tuple[str, str] | None:
    """(submission id, body fingerprint) for a request with an Idempotency-Key header.

    The id is derived from the caller and the key, so two callers' keys never meet."""
    key = req.headers.get("idempotency-key")
    if key is None:
        return None
    if not IDEMPOTENCY_KEY_PATTERN.fullmatch(key):
        raise bad_request("Idempotency-Key", "Idempotency-Key must be 1 to 200 printable ASCII")
    return idempotent_submission_id(caller, key), hashlib.sha256(body).hexdigest()


def _decoded_input(value: Any) -> dict[str, Any]:
    # The extension keeps the input as the client sent it: JSON text inside a JSON string.
    while isinstance(value, str):
        try:
            value = json.loads(value)
        except ValueError:
            return {}
    return value if isinstance(value, dict) else {}


def _replay(
    req: func.HttpRequest, existing: Any, submission_id: str, fingerprint: str, retry_after: int
) -> func.HttpResponse:
    """The answer to a key used before: the same 202, or 409 for a different body."""
    previous = _decoded_input(existing.input_)
    if previous.get("request_fingerprint") != fingerprint:
        raise Problem(
            409,
            "this Idempotency-Key was used with a different request body",
            field="Idempotency-Key",
            code="idempotency-key-reused",
        )
    return _accepted(req, submission_id, retry_after)


@guarded
async def submit_run(req: func.HttpRequest, client: Any) -> func.HttpResponse:
    settings = get_settings()
    caller = caller_identity(req, settings)
    raw = req.get_body() or b""
    body = parse_json_body(raw, req.headers.get("content-type"))
    submission = replace(validate_submission(body, settings.submission_limits), caller=caller)
    idempotency = _idempotency(req, raw, caller)
    authorize_submission(submission, settings.submission_limits)
    policy = submission.polling or settings.polling
    retry_after = max(1, round(policy.initial_seconds))
    fingerprint = None
    if idempotency is None:
        submission_id = uuid.uuid4().hex
    else:
        submission_id, fingerprint = idempotency
        existing = await client.get_status(submission_id, show_input=True)
        if existing:
            return _replay(req, existing, submission_id, fingerprint, retry_after)
    state = RelayState(
        submission_id=submission_id,
        submission=submission.to_dict(),
        polls_per_generation=settings.polls_per_generation,
        publish_retry_window_seconds=settings.publish_retry_window_seconds,
        tool_outputs_timeout_seconds=settings.tool_outputs_timeout_seconds,
        fast_path_seconds=settings.fast_path_seconds,
        request_fingerprint=fingerprint,
    )
    try:
        await client.start_new(ORCHESTRATOR_NAME, submission_id, state.to_dict())
    except Exception:
        if fingerprint is None:
            raise
        # A concurrent request with the same key started it between our read and our start:
        # the extension refuses to replace a pending or running instance (its default
        # overridableExistingInstanceStates, NonRunningStates) and the SDK raises. Answer as
        # that request's replay; if there is still no instance, the backend really failed.
        existing = await client.get_status(submission_id, show_input=True)
        if not existing:
            raise
        with log_fields(submissionId=submission_id, agentId=submission.agent_id):
            logger.info("concurrent submission with the same Idempotency-Key joined the first")
        return _replay(req, existing, submission_id, fingerprint, retry_after)
    with log_fields(submissionId=submission_id, agentId=submission.agent_id):
        logger.info("submission accepted")
    return _accepted(req, submission_id, retry_after)


async def _relay_status(req: func.HttpRequest, client: Any) -> tuple[str, Any]:
    submission_id = req.route_params.get("id", "")
    if not SUBMISSION_ID_PATTERN.fullmatch(submission_id):
        raise NOT_FOUND
    status = await client.get_status(submission_id)
    if not status or not is_relay_instance(status.name, ORCHESTRATOR_NAME):
        raise NOT_FOUND
    owner = await _owner(client, submission_id, status)
    if owner is not None and owner != caller_identity(req, get_settings()):
        # Callers are kept apart: another caller's submission does not exist for them.
        raise NOT_FOUND
    return submission_id, status


async def _owner(client: Any, submission_id: str, status: Any) -> str | None:
    """The caller that submitted it: from the custom status, or (before the orchestration
    first wrote one) from its input. None for submissions from before callers were known."""
    progress = read_custom_status(status.custom_status)
    if "caller" in progress:
        return progress["caller"] if isinstance(progress["caller"], str) else None
    with_input = await client.get_status(submission_id, show_input=True)
    submission = _decoded_input(getattr(with_input, "input_", None)).get("submission")
    caller = submission.get("caller") if isinstance(submission, dict) else None
    return caller if isinstance(caller, str) else None


def _runtime(status: Any) -> str:
    return str(getattr(status.runtime_status, "value", status.runtime_status))


def _view(submission_id: str, status: Any) -> dict[str, Any]:
    return build_status_view(
        submission_id,
        _runtime(status),
        status.custom_status,
        status.output,
        status.created_time,
        status.last_updated_time,
    )


@guarded
async def get_run(req: func.HttpRequest, client: Any) -> func.HttpResponse:
    submission_id, status = await _relay_status(req, client)
    return json_response(200, _view(submission_id, status))


def _run_log_fields(status: Any) -> dict[str, Any]:
    run = read_custom_status(status.custom_status).get("agentRun")
    if not run:
        return {"agentId": None, "runId": None}
    return {"agentId": run.get("agentId"), "runId": run.get("runId")}


def _finished(status: Any) -> bool:
    progress = read_custom_status(status.custom_status)
    return _runtime(status) in FINISHED_RUNTIME_STATUSES or progress.get("phase") in FINISHED_PHASES


async def _raise(
    client: Any, submission_id: str, name: str, data: CancelEventData | ToolOutputsEventData
) -> bool:
    """Raise an event; False when the instance finished meanwhile (the extension says 410)."""
    try:
        await client.raise_event(submission_id, name, data)
    except Exception as exc:
        if "is gone" in str(exc) or "not found" in str(exc).lower():
            return False
        raise
    return True


@guarded
async def cancel_run(req: func.HttpRequest, client: Any) -> func.HttpResponse:
    submission_id, status = await _relay_status(req, client)
    already_over = Problem(
        409, "the submission has already finished", field="id", code="already-finished"
    )
    if _finished(status) or not await _raise(
        client, submission_id, CANCEL_EVENT, CancelEventData(reason="requested")
    ):
        raise already_over
    with log_fields(submissionId=submission_id, **_run_log_fields(status)):
        logger.info("cancel requested")
    url = status_url(req, submission_id)
    return json_response(
        202, {"id": submission_id, "status": "cancelling", "statusUrl": url}, {"Location": url}
    )


@guarded
async def submit_tool_outputs(req: func.HttpRequest, client: Any) -> func.HttpResponse:
    submission_id, status = await _relay_status(req, client)
    body = parse_json_body(req.get_body() or b"", req.headers.get("content-type"))
    progress = read_custom_status(status.custom_status)
    action = progress.get("requiredAction")
    if _finished(status) or progress.get("status") != REQUIRES_ACTION or not action:
        raise Problem(
            409, "the run is not waiting for tool outputs", field="id", code="not-waiting"
        )
    round_key = str(action.get("round") or "")
    outputs = validate_tool_outputs(
        body,
        [call["id"] for call in action["toolCalls"]],
        round_key,
        all_listed=not action.get("truncated"),
    )
    # One event name per round of tool calls (see shared/contract.py).
    event_name = tool_outputs_event_name(round_key)
    if not await _raise(
        client, submission_id, event_name, ToolOutputsEventData(toolOutputs=outputs)
    ):
        raise Problem(409, "the submission has already finished", field="id", code="not-waiting")
    with log_fields(submissionId=submission_id, **_run_log_fields(status)):
        logger.info("tool outputs accepted")
    url = status_url(req, submission_id)
    return json_response(
        202, {"id": submission_id, "status": "accepted", "statusUrl": url}, {"Location": url}
    )

"""HTTP functions' logic: submit a run, read a submission, cancel it, hand it tool outputs."""

from __future__ import annotations

import hashlib
import json
import logging
import re
import uuid
from collections.abc import Awaitable, Callable
from typing import Any
from urllib.parse import quote, unquote, urlsplit, urlunsplit

import azure.functions as func

from .observability import log_fields
from .orchestration import CANCEL_EVENT, ORCHESTRATOR_NAME, TOOL_OUTPUTS_EVENT
from .problems import PROBLEM_CONTENT_TYPE, Problem, bad_request
from .relay_state import RelayState
from .settings import get_settings
from .status_view import build_status_view, is_relay_instance
from .submission import parse_json_body, validate_submission
from .tool_outputs import validate_tool_outputs

logger = logging.getLogger("agent_run_relay.http")

SUBMISSION_ID_PATTERN = re.compile(r"^[0-9a-f]{32}$")
# Printable ASCII without spaces at the ends; long enough for a UUID or a composite key.
IDEMPOTENCY_KEY_PATTERN = re.compile(r"^[\x21-\x7e](?:[\x20-\x7e]{0,198}[\x21-\x7e])?$")
FINISHED_RUNTIME_STATUSES = frozenset({"Completed", "Failed", "Terminated", "Canceled"})
NOT_FOUND = Problem(404, "no submission with this id", field="id", code="not-found")

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
    """`…/runs/{id}` on the host and route prefix the request came in on."""
    parts = urlsplit(str(req.url))
    # Routes match case-insensitively and percent-decoded: find "/runs" the same way.
    path = unquote(parts.path)
    prefix = quote(path[: path.lower().rfind("/runs")])
    return urlunsplit((parts.scheme, parts.netloc, f"{prefix}/runs/{submission_id}", "", ""))


def _accepted(req: func.HttpRequest, submission_id: str, retry_after: int) -> func.HttpResponse:
    url = status_url(req, submission_id)
    return json_response(
        202,
        {"id": submission_id, "status": "accepted", "statusUrl": url},
        {"Location": url, "Retry-After": str(retry_after)},
    )


def _idempotency(req: func.HttpRequest, body: bytes) -> tuple[str, str] | None:
    """(submission id, body fingerprint) for a request with an Idempotency-Key header."""
    key = req.headers.get("idempotency-key")
    if key is None:
        return None
    if not IDEMPOTENCY_KEY_PATTERN.fullmatch(key):
        raise bad_request("Idempotency-Key", "Idempotency-Key must be 1 to 200 printable ASCII")
    submission_id = hashlib.sha256(f"idempotency-key\x1f{key}".encode()).hexdigest()[:32]
    return submission_id, hashlib.sha256(body).hexdigest()


def _decoded_input(value: Any) -> dict[str, Any]:
    # The extension keeps the input as the client sent it: JSON text inside a JSON string.
    while isinstance(value, str):
        try:
            value = json.loads(value)
        except ValueError:
            return {}
    return value if isinstance(value, dict) else {}


@guarded
async def submit_run(req: func.HttpRequest, client: Any) -> func.HttpResponse:
    settings = get_settings()
    raw = req.get_body() or b""
    body = parse_json_body(raw, req.headers.get("content-type"))
    submission = validate_submission(body, settings)
    policy = submission.polling or settings.polling
    retry_after = max(1, round(policy.initial_seconds))
    idempotency = _idempotency(req, raw)
    fingerprint = None
    if idempotency is None:
        submission_id = uuid.uuid4().hex
    else:
        submission_id, fingerprint = idempotency
        existing = await client.get_status(submission_id, show_input=True)
        if existing:
            previous = _decoded_input(existing.input_)
            if previous.get("request_fingerprint") != fingerprint:
                raise Problem(
                    409,
                    "this Idempotency-Key was used with a different request body",
                    field="Idempotency-Key",
                    code="idempotency-key-reused",
                )
            return _accepted(req, submission_id, retry_after)
    state = RelayState(
        submission_id=submission_id,
        submission=submission.to_dict(),
        polls_per_generation=settings.polls_per_generation,
        publish_retry_window_seconds=settings.publish_retry_window_seconds,
        tool_outputs_timeout_seconds=settings.tool_outputs_timeout_seconds,
        fast_path_seconds=settings.fast_path_seconds,
        request_fingerprint=fingerprint,
    )
    await client.start_new(ORCHESTRATOR_NAME, submission_id, state.to_dict())
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
    return submission_id, status


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
    progress = status.custom_status if isinstance(status.custom_status, dict) else {}
    run = progress.get("agentRun") or {}
    return {"agentId": run.get("agentId"), "runId": run.get("runId")}


def _finished(status: Any) -> bool:
    progress = status.custom_status if isinstance(status.custom_status, dict) else {}
    return _runtime(status) in FINISHED_RUNTIME_STATUSES or progress.get("phase") in (
        "publish",
        "done",
    )


async def _raise(client: Any, submission_id: str, name: str, data: dict[str, Any]) -> bool:
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
        client, submission_id, CANCEL_EVENT, {"reason": "requested"}
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
    progress = status.custom_status if isinstance(status.custom_status, dict) else {}
    action = progress.get("requiredAction")
    if _finished(status) or progress.get("status") != "requires_action" or not action:
        raise Problem(
            409, "the run is not waiting for tool outputs", field="id", code="not-waiting"
        )
    outputs = validate_tool_outputs(body, [call["id"] for call in action["toolCalls"]])
    if not await _raise(client, submission_id, TOOL_OUTPUTS_EVENT, {"toolOutputs": outputs}):
        raise Problem(409, "the submission has already finished", field="id", code="not-waiting")
    with log_fields(submissionId=submission_id, **_run_log_fields(status)):
        logger.info("tool outputs accepted")
    url = status_url(req, submission_id)
    return json_response(
        202, {"id": submission_id, "status": "accepted", "statusUrl": url}, {"Location": url}
    )

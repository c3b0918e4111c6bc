"""HTTP functions' logic: submit a run, read a submission's state."""

from __future__ import annotations

import json
import logging
import re
import uuid
from typing import Any
from urllib.parse import urlsplit, urlunsplit

import azure.functions as func

from .orchestration import ORCHESTRATOR_NAME
from .problems import PROBLEM_CONTENT_TYPE, Problem
from .relay_state import RelayState
from .settings import get_settings
from .status_view import build_status_view, is_relay_instance
from .submission import parse_json_body, validate_submission

logger = logging.getLogger("agent_run_relay.http")

SUBMISSION_ID_PATTERN = re.compile(r"^[0-9a-f]{32}$")


def json_response(
    status: int, body: dict[str, Any], headers: dict[str, str] | None = None
) -> func.HttpResponse:
    return func.HttpResponse(
        json.dumps(body), status_code=status, mimetype="application/json", headers=headers or {}
    )


def problem_response(problem: Problem, req: func.HttpRequest) -> func.HttpResponse:
    return func.HttpResponse(
        problem.to_json(instance=urlsplit(req.url).path),
        status_code=problem.status,
        headers={"Content-Type": PROBLEM_CONTENT_TYPE},
    )


def status_url(req: func.HttpRequest, submission_id: str) -> str:
    parts = urlsplit(str(req.url))
    path = parts.path.rstrip("/")
    return urlunsplit((parts.scheme, parts.netloc, f"{path}/{submission_id}", "", ""))


async def submit_run(req: func.HttpRequest, client: Any) -> func.HttpResponse:
    settings = get_settings()
    try:
        body = parse_json_body(req.get_body(), req.headers.get("content-type"))
        submission = validate_submission(body, settings)
    except Problem as problem:
        return problem_response(problem, req)
    submission_id = uuid.uuid4().hex
    state = RelayState(
        submission_id=submission_id,
        submission=submission.to_dict(),
        polls_per_generation=settings.polls_per_generation,
        publish_retry_window_seconds=settings.publish_retry_window_seconds,
    )
    await client.start_new(ORCHESTRATOR_NAME, submission_id, state.to_dict())
    logger.info(
        "submission accepted", extra={"submissionId": submission_id, "agentId": submission.agent_id}
    )
    url = status_url(req, submission_id)
    retry_after = max(1, round(submission.polling.initial_seconds if submission.polling else 2))
    return json_response(
        202,
        {"id": submission_id, "status": "accepted", "statusUrl": url},
        {"Location": url, "Retry-After": str(retry_after)},
    )


async def get_run(req: func.HttpRequest, client: Any) -> func.HttpResponse:
    submission_id = req.route_params.get("id", "")
    not_found = Problem(404, "no submission with this id", field="id", code="not-found")
    if not SUBMISSION_ID_PATTERN.match(submission_id):
        return problem_response(not_found, req)
    status = await client.get_status(submission_id)
    if not status or not is_relay_instance(status.name, ORCHESTRATOR_NAME):
        return problem_response(not_found, req)
    runtime = getattr(status.runtime_status, "value", status.runtime_status)
    view = build_status_view(
        submission_id,
        str(runtime),
        status.custom_status,
        status.output,
        status.created_time,
        status.last_updated_time,
    )
    return json_response(200, view)

"""Classifying what went wrong in a service call, so the orchestrator can decide what to do.

Activities never let an SDK exception escape as a bare failure: they return an outcome that
says whether waiting (a durable timer, not a sleep) and trying again can help.
"""

from __future__ import annotations

import asyncio
import json
import sys
from collections.abc import Mapping
from datetime import UTC, datetime
from email.utils import parsedate_to_datetime

import aiohttp
from azure.core.exceptions import (
    AzureError,
    DecodeError,
    HttpResponseError,
    IncompleteReadError,
    ResourceNotFoundError,
    ServiceRequestError,
    ServiceResponseError,
)

from ..contract import ErrorInfo, Outcome

TRANSIENT_STATUS_CODES = frozenset({408, 425, 429, 500, 502, 503, 504})
# The OpenAI SDK retries 409 too ("lock timeouts", openai/_base_client.py `_should_retry`), and
# every 5xx. Every relay call is idempotent (found again by its metadata), so retrying is safe.
OPENAI_TRANSIENT_STATUS_CODES = TRANSIENT_STATUS_CODES | {409}
# A create naming a conversation another response is still working on (400, api.openai.com;
# the devhost Foundry stand-in answers the same): it clears when that response ends.
CONVERSATION_LOCKED = "conversation_locked"
MAX_RETRY_AFTER_SECONDS = 3600.0


def parse_retry_after(
    headers: Mapping[str, str] | None, now: datetime | None = None
) -> float | None:
    """Seconds to wait from Retry-After / retry-after-ms headers (None when absent or bad)."""
    if not headers:
        return None
    lowered = {k.lower(): v for k, v in headers.items()}
    for name in ("retry-after-ms", "x-ms-retry-after-ms"):
        if name in lowered:
            try:
                return min(max(float(lowered[name]) / 1000.0, 0.0), MAX_RETRY_AFTER_SECONDS)
            except ValueError:
                pass
    raw = lowered.get("retry-after")
    if raw is None:
        return None
    try:
        return min(max(float(raw), 0.0), MAX_RETRY_AFTER_SECONDS)
    except ValueError:
        pass
    try:
        when = parsedate_to_datetime(raw)
    except (TypeError, ValueError):
        return None
    reference = now or datetime.now(UTC)
    return min(max((when - reference).total_seconds(), 0.0), MAX_RETRY_AFTER_SECONDS)


def _error_code(exc: HttpResponseError) -> str:
    error = getattr(exc, "error", None)
    code = getattr(error, "code", None)
    return str(code) if code else f"http_{exc.status_code}"


def _short(text: str, limit: int = 500) -> str:
    return text if len(text) <= limit else text[: limit - 1] + "…"


def _transient(code: str, message: str) -> Outcome:
    return {"outcome": "transient", "error": {"code": code, "message": message}, "retryAfter": None}


def _openai_failure(exc: BaseException) -> Outcome | None:
    """The outcome for an exception of the openai SDK (None: it is not one)."""
    if "openai" not in sys.modules:
        return None  # no openai exception exists before the SDK is imported (it is slow to)
    import openai

    if isinstance(exc, openai.APIStatusError):
        status = int(exc.status_code)
        body = exc.body if isinstance(exc.body, dict) else {}
        text = body.get("message") if isinstance(body.get("message"), str) else None
        error: ErrorInfo = {
            "code": str(exc.code or f"http_{status}"),
            "message": _short(text or exc.message or str(exc)),
        }
        if status == 404:
            return {"outcome": "not_found", "error": error, "httpStatus": 404}
        should_retry = exc.response.headers.get("x-should-retry")  # case-insensitive
        if error["code"] == CONVERSATION_LOCKED:
            retry = True
            error["message"] = _short(
                f"another response is running on the conversation: {error['message']}"
            )
        elif should_retry in ("true", "false"):
            retry = should_retry == "true"  # the server's word wins, as for the SDK's retries
        else:
            retry = status in OPENAI_TRANSIENT_STATUS_CODES or status >= 500
        if not retry:
            return {"outcome": "permanent", "error": error, "httpStatus": status}
        return {
            "outcome": "transient",
            "error": error,
            "httpStatus": status,
            "retryAfter": parse_retry_after(dict(exc.response.headers.items())),
        }
    if isinstance(exc, openai.APIConnectionError):  # APITimeoutError included
        return _transient("transport_error", _short(f"{type(exc).__name__}: {exc}"))
    if isinstance(exc, openai.APIResponseValidationError):
        return _transient("malformed_response", _short(str(exc)))
    if isinstance(exc, openai.APIError):
        # An `error` event on a stream (the service reported the failure mid-stream).
        return _transient(str(exc.code or "stream_error"), _short(exc.message or str(exc)))
    return None


def describe_failure(exc: BaseException) -> Outcome:
    """An outcome for a failed call: `transient` (wait and retry), `not_found`, or `permanent`."""
    if isinstance(exc, ResourceNotFoundError):
        return {
            "outcome": "not_found",
            "error": {"code": _error_code(exc), "message": _short(exc.message or str(exc))},
            "httpStatus": 404,
        }
    if isinstance(exc, DecodeError):
        # A 200 whose body did not parse (DecodeError subclasses HttpResponseError): transient.
        return {
            "outcome": "transient",
            "error": {"code": "malformed_response", "message": _short(str(exc))},
            "retryAfter": None,
        }
    if isinstance(exc, HttpResponseError) and exc.status_code is not None:
        status = int(exc.status_code)
        headers = dict(getattr(exc.response, "headers", None) or {})
        error: ErrorInfo = {"code": _error_code(exc), "message": _short(exc.message or str(exc))}
        if status in TRANSIENT_STATUS_CODES:
            return {
                "outcome": "transient",
                "error": error,
                "httpStatus": status,
                "retryAfter": parse_retry_after(headers),
            }
        return {"outcome": "permanent", "error": error, "httpStatus": status}
    described = _openai_failure(exc)
    if described is not None:
        return described
    if isinstance(exc, json.JSONDecodeError):
        # openai 3.60 lets the JSONDecodeError of a cut-short 200 body through as it is.
        return _transient("malformed_response", _short(f"{type(exc).__name__}: {exc}"))
    transient_types: tuple[type[BaseException], ...] = (
        ServiceRequestError,
        ServiceResponseError,
        IncompleteReadError,
        DecodeError,
        json.JSONDecodeError,
        aiohttp.ClientError,
        asyncio.TimeoutError,
        TimeoutError,
        ConnectionError,
        AzureError,
    )
    code = "transport_error" if isinstance(exc, transient_types) else "unexpected_error"
    # Unknown exceptions are treated as transient too: retrying later is safe (every activity
    # is idempotent) and giving up on a run that may still be running would orphan it.
    return {
        "outcome": "transient",
        "error": {"code": code, "message": _short(f"{type(exc).__name__}: {exc}")},
        "retryAfter": None,
    }

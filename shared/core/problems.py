"""RFC 9457 problem details for every error the HTTP API returns."""

from __future__ import annotations

import json
from dataclasses import dataclass
from http import HTTPStatus
from typing import Any

PROBLEM_CONTENT_TYPE = "application/problem+json"


@dataclass(frozen=True)
class Problem(Exception):
    status: int
    detail: str
    field: str | None = None
    code: str | None = None

    def to_dict(self, instance: str | None = None) -> dict[str, Any]:
        body: dict[str, Any] = {
            "type": f"https://agent-run-relay/problems/{self.code or self.status}",
            "title": HTTPStatus(self.status).phrase,
            "status": self.status,
            "detail": self.detail,
        }
        if self.field is not None:
            body["field"] = self.field
        if instance is not None:
            body["instance"] = instance
        return body

    def to_json(self, instance: str | None = None) -> str:
        return json.dumps(self.to_dict(instance))


def bad_request(field: str, detail: str) -> Problem:
    return Problem(400, detail, field=field, code="invalid-field")

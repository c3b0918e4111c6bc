"""The body of `GET /api/runs/{id}`, built from what the Durable client reports (pure)."""

from __future__ import annotations

from datetime import datetime
from typing import Any

from ..contract import OUTPUT_KIND
from .timefmt import to_iso


def is_relay_instance(name: str | None, orchestrator_name: str) -> bool:
    return name == orchestrator_name


def build_status_view(
    submission_id: str,
    runtime_status: str,
    custom_status: Any,
    output: Any,
    created_time: datetime | None,
    last_updated_time: datetime | None,
) -> dict[str, Any]:
    progress = custom_status if isinstance(custom_status, dict) else {}
    view: dict[str, Any] = {
        "id": submission_id,
        "status": progress.get("status", "pending"),
        "agentRun": progress.get("agentRun"),
        "polls": progress.get("polls", 0),
        "nextPollAt": progress.get("nextPollAt"),
        "createdAt": progress.get("submittedAt")
        or (to_iso(created_time) if created_time else None),
        "lastUpdatedAt": to_iso(last_updated_time) if last_updated_time else None,
        "deadlineAt": progress.get("deadlineAt"),
        "cancellationReason": progress.get("cancellationReason"),
    }
    if progress.get("lastError"):
        view["lastError"] = progress["lastError"]
    if progress.get("requiredAction"):
        # The round key names the tool-outputs event internally; callers don't need it.
        action = dict(progress["requiredAction"])
        action.pop("round", None)
        view["requiredAction"] = action
    if (
        runtime_status == "Completed"
        and isinstance(output, dict)
        and output.get("kind") == OUTPUT_KIND
    ):
        view.pop("requiredAction", None)
        view.update(
            status=output["status"],
            agentRun=output["agentRun"],
            polls=output["polls"],
            nextPollAt=None,
            cancellationReason=output.get("cancellationReason"),
            result=output["result"],
            event=output["event"],
        )
        if output.get("publishError"):
            view["publishError"] = output["publishError"]
    elif runtime_status in ("Failed", "Terminated", "Canceled"):
        # The orchestration itself ended abnormally (not the agent run): say so plainly.
        view.update(
            status="failed",
            nextPollAt=None,
            lastError={
                "code": "internal_error" if runtime_status == "Failed" else "terminated",
                "message": f"the orchestration ended with runtime status {runtime_status}",
            },
        )
    return view

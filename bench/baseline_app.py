"""A tiny Functions app that runs a baseline's poll schedule as a Durable orchestrator.

Used by `bench.baseline_runs` on the emulated host to count the Durable history events each
schedule produces (the usual samples never continue as new). The poll activity is the
relay's own `poll_run` against the same loopback Agents service.

Orchestration input: {"submissionId", "threadId", "runId", "firstUs", "waitsUs" (list or
null), "intervalUs", "maxPolls" (or null)}: a check at `firstUs` after the start, then after
each wait in `waitsUs` (or every `intervalUs`), until the run ends or `maxPolls` checks.
"""

from collections.abc import Generator
from datetime import timedelta
from typing import Any

import azure.durable_functions as df
import azure.functions as func

from shared.adapters import azure_agents
from shared.core.run_status import RunPhase, classify_run_status

ORCHESTRATOR = "baseline_monitor"
ACTIVITY = "baseline_poll"

app = df.DFApp(http_auth_level=func.AuthLevel.FUNCTION)


def baseline_monitor(
    context: df.DurableOrchestrationContext,
) -> Generator[Any, Any, dict[str, Any]]:
    spec: dict[str, Any] = context.get_input()
    start = context.current_utc_datetime
    ids = {key: spec[key] for key in ("submissionId", "threadId", "runId")}
    waits: list[int] | None = spec.get("waitsUs")
    max_polls: int | None = spec.get("maxPolls")
    offset = int(spec["firstUs"])
    polls = 0
    while True:
        due = start + timedelta(microseconds=offset)
        if due > context.current_utc_datetime:
            yield context.create_timer(due)
        outcome = yield context.call_activity(ACTIVITY, ids)
        polls += 1
        run = outcome.get("run") if isinstance(outcome, dict) else None
        status = str((run or {}).get("status"))
        if classify_run_status(status) is RunPhase.TERMINAL:
            seen = (context.current_utc_datetime - start) // timedelta(microseconds=1)
            return {"polls": polls, "detectedUs": seen, "gaveUp": False}
        if (max_polls is not None and polls >= max_polls) or (
            waits is not None and polls > len(waits)
        ):
            return {"polls": polls, "detectedUs": None, "gaveUp": True}
        offset += int(waits[polls - 1]) if waits is not None else int(spec["intervalUs"])


async def baseline_poll(payload: dict) -> dict[str, Any]:  # type: ignore[type-arg]
    outcome = await azure_agents.poll_run(
        {
            "submissionId": payload["submissionId"],
            "agentId": "baseline",
            "threadId": payload["threadId"],
            "runId": payload["runId"],
        }
    )
    return dict(outcome)


# Registered by calls rather than decorator syntax: the SDK's decorators are untyped.
app.orchestration_trigger(context_name="context")(baseline_monitor)
app.activity_trigger(input_name="payload")(baseline_poll)

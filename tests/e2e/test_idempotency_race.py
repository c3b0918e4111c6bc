"""Two POSTs with one Idempotency-Key racing to start the submission: both 202, one id, one run.

Both read "not found" before either starts (forced by holding the first two status reads until
both have happened). With the Durable extension's default overridableExistingInstanceStates,
NonRunningStates, the second start fails (the extension answers 500 and the SDK raises) and the
relay answers it as a replay; with AnyState the second start silently replaces the pending
instance, still with one id and one run. Each case runs on its own bed with that host.json.
"""

from __future__ import annotations

import asyncio
import json
from collections.abc import Iterator, Mapping
from concurrent.futures import ThreadPoolExecutor
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import azure.durable_functions as df
import azure.functions as func
import pytest

from tests.e2e.test_caller_isolation import post, problem
from tests.relay_bed import ROOT, TERMINAL_SCRIPTS, RelayBed, relay_bed


@contextmanager
def bed_with_host_json(
    tmp_path: Path, durable: Mapping[str, Any], settings: Mapping[str, str] | None = None
) -> Iterator[RelayBed]:
    """relay_bed() with extra durableTask options in host.json."""
    host_json = json.loads((ROOT / "host.json").read_text())
    host_json["extensions"]["durableTask"].update(durable)
    path = tmp_path / "host.json"
    path.write_text(json.dumps(host_json))
    with relay_bed(settings=settings, host_json=path) as bed:
        yield bed


@contextmanager
def both_read_not_found() -> Iterator[None]:
    """The first two submissions' status reads both find nothing before either starts."""
    original = df.DurableOrchestrationClient.get_status
    arrived: list[str] = []
    both = asyncio.Event()

    async def racing(self: Any, instance_id: str, *args: Any, **kwargs: Any) -> Any:
        status = await original(self, instance_id, *args, **kwargs)
        if kwargs.get("show_input") and not status and not both.is_set():
            arrived.append(instance_id)
            if len(arrived) == 2:
                both.set()
            await asyncio.wait_for(both.wait(), timeout=30)
        return status

    with pytest.MonkeyPatch.context() as patch:
        patch.setattr(df.DurableOrchestrationClient, "get_status", racing)
        yield
    assert len(arrived) == 2
    assert arrived[0] == arrived[1]


def race(bed: RelayBed, bodies: list[dict[str, Any]], key: str) -> list[func.HttpResponse]:
    with both_read_not_found(), ThreadPoolExecutor(max_workers=len(bodies)) as pool:
        futures = [pool.submit(post, bed, b, {"Idempotency-Key": key}) for b in bodies]
        return [f.result(timeout=60) for f in futures]


@pytest.mark.parametrize("overridable", ["NonRunningStates", "AnyState"])
def test_two_posts_racing_to_start_get_one_submission(tmp_path: Path, overridable: str) -> None:
    durable = {"overridableExistingInstanceStates": overridable}
    with bed_with_host_json(tmp_path, durable) as racing_bed:
        racing_bed.agents.default_script = TERMINAL_SCRIPTS["completed"]
        body = {"agentId": racing_bed.agent_id, "input": "once"}
        responses = race(racing_bed, [body, body], "raced")
        assert [r.status_code for r in responses] == [202, 202], [r.get_body() for r in responses]
        first, second = (json.loads(r.get_body()) for r in responses)
        assert first == second
        assert racing_bed.host.http_errors == []
        assert racing_bed.complete(first["id"])["status"] == "completed"
        assert len(racing_bed.agents.calls("runs.create")) == 1
        assert len(racing_bed.events_for(first["id"])) == 1


def test_a_race_with_another_body_is_a_409_for_one_of_them(tmp_path: Path) -> None:
    durable = {"overridableExistingInstanceStates": "NonRunningStates"}
    with bed_with_host_json(tmp_path, durable) as racing_bed:
        body = {"agentId": racing_bed.agent_id, "input": "once"}
        responses = race(racing_bed, [body, {**body, "input": "other"}], "raced-other")
        assert sorted(r.status_code for r in responses) == [202, 409]
        conflict = next(r for r in responses if r.status_code == 409)
        problem(conflict, 409, "Idempotency-Key")

"""Offline mode: ids never repeat across restarts of the local services.

Azurite keeps the task hub while the offline services restart with nothing, so an
orchestration from before a restart must never find its agent, thread or run id handed to
something new. Each start draws a fresh id seed; a given seed still gives the same ids (the
tests of the Agents service rely on that).
"""

from __future__ import annotations

from devhost.agents_service import make_sync_client
from devhost.offline import OfflinePlan, OfflineServices


def _plan() -> OfflinePlan:
    return OfflinePlan(
        agents_port=0,
        eventgrid_port=0,
        eventgrid_key="a2V5",
        event_schema="eventgrid",
        deliver_to="http://127.0.0.1:9/runtime/webhooks/EventGrid?functionName=x",
    )


def _ids_of_one_start(seed: int | None = None) -> list[str]:
    """Start the services, use them as the relay would, and return every id they handed out."""
    services = OfflineServices(_plan(), seed=seed).start()
    try:
        ids = list(services.agent_ids.values())
        with make_sync_client(services.agents) as client:
            for _ in range(3):
                thread = client.threads.create()
                client.messages.create(thread.id, role="user", content="hello")
                run = client.runs.create(thread.id, agent_id=services.agent_ids["echo"])
                ids += [thread.id, run.id]
            run = client.create_thread_and_run(agent_id=services.agent_ids["instant-echo"])
            ids += [run.thread_id, run.id]
        return ids
    finally:
        services.stop()


def test_restarted_services_never_hand_out_an_id_again() -> None:
    starts = [_ids_of_one_start() for _ in range(3)]
    every_id = [i for ids in starts for i in ids]
    assert len(every_id) == 3 * (3 + 3 * 2 + 2)
    assert len(set(every_id)) == len(every_id)
    assert {i.split("_", 1)[0] for i in every_id} == {"asst", "thread", "run"}


def test_a_given_seed_still_gives_the_same_ids() -> None:
    assert _ids_of_one_start(seed=7) == _ids_of_one_start(seed=7)
    assert set(_ids_of_one_start(seed=7)).isdisjoint(_ids_of_one_start(seed=8))

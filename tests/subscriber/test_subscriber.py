"""The sample subscriber, fed by the local Event Grid topic through the emulated host's Event
Grid webhook, de-duplicating in Azurite's Table service."""

from __future__ import annotations

import logging
from collections.abc import Iterator
from typing import Any, Literal
from urllib.parse import parse_qsl, urlsplit

import pytest
from azure.core.credentials import AzureKeyCredential
from azure.core.exceptions import ResourceNotFoundError
from azure.data.tables import TableClient
from azure.eventgrid import EventGridEvent, EventGridPublisherClient

from devhost.agents_service import RunScript
from devhost.azurite import AzuriteTables
from shared.subscriber.dedup import TABLE_NAME
from tests.relay_bed import TOPIC_KEY, RelayBed, relay_bed

SUBSCRIBER = "on_agent_run_completed"


@pytest.fixture(scope="module")
def azurite() -> Iterator[AzuriteTables]:
    with AzuriteTables() as started:
        yield started


def subscribe(bed: RelayBed) -> None:
    """Subscribe the sample function at the host's Event Grid webhook (what Azure calls)."""
    url = urlsplit(bed.host.eventgrid_webhook_url(SUBSCRIBER))
    query = dict(parse_qsl(url.query))

    def deliver(
        method: str, headers: dict[str, str], body: bytes
    ) -> tuple[int, dict[str, str], bytes]:
        response = bed.host.http(
            method, url.path, body=body, headers=headers, query=query, key=None
        )
        return response.status_code, dict(response.headers), response.get_body()

    bed.topic.add_subscription("sample-subscriber", deliver)


def summaries(caplog: pytest.LogCaptureFixture) -> list[logging.LogRecord]:
    return [
        r
        for r in caplog.records
        if r.name == "agent_run_relay.subscriber"
        and r.getMessage().startswith("AgentRunCompleted ")
    ]


def stored_ids(azurite: AzuriteTables) -> list[str]:
    table = TableClient.from_connection_string(azurite.connection_string, table_name=TABLE_NAME)
    try:
        return [str(e["RowKey"]) for e in table.list_entities()]
    except ResourceNotFoundError:
        return []  # no delivery created the table yet


@pytest.mark.parametrize("schema", ["eventgrid", "cloudevents"])
def test_each_event_is_summarised_once_however_often_it_arrives(
    azurite: AzuriteTables,
    caplog: pytest.LogCaptureFixture,
    schema: Literal["eventgrid", "cloudevents"],
) -> None:
    caplog.set_level(logging.INFO)
    before = set(stored_ids(azurite))
    with relay_bed(
        event_schema=schema, settings={"AzureWebJobsStorage": azurite.connection_string}
    ) as bed:
        subscribe(bed)
        bed.agents.default_script = RunScript(duration_seconds=20, final_status="completed")
        bed.host.duplicate_activities = lambda name, _input: name == "publish_run_event"
        submission_id = bed.submit()
        bed.complete(submission_id)
        attempts = bed.topic.deliver_due()
        assert len(attempts) == 2
        assert all(200 <= a.status < 300 for a in attempts if a.status is not None)
        lines = summaries(caplog)
        assert len(lines) == 1
        assert submission_id in lines[0].getMessage()
        assert "status completed" in lines[0].getMessage()
        (event,) = {e["id"] for e in bed.events_for(submission_id)}
        assert set(stored_ids(azurite)) - before == {event}


def test_an_invalid_event_is_logged_and_not_recorded(
    azurite: AzuriteTables, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.INFO)
    with relay_bed(settings={"AzureWebJobsStorage": azurite.connection_string}) as bed:
        subscribe(bed)
        before = set(stored_ids(azurite))
        bogus: dict[str, Any] = {"submissionId": "not-a-submission", "status": "done"}
        with EventGridPublisherClient(bed.topic.endpoint, AzureKeyCredential(TOPIC_KEY)) as client:
            client.send(
                EventGridEvent(
                    subject="agents/x/runs/y",
                    event_type="AgentRunCompleted",
                    data=bogus,
                    data_version="1.0",
                )
            )
        bed.topic.deliver_due()
        errors = [
            r
            for r in caplog.records
            if r.levelno == logging.ERROR and r.name == "agent_run_relay.subscriber"
        ]
        assert len(errors) == 1
        assert errors[0].getMessage().startswith("invalid AgentRunCompleted")
        assert set(stored_ids(azurite)) == before
        assert summaries(caplog) == []

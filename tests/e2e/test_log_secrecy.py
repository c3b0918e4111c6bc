"""No credential ever reaches a log record, at DEBUG, from any logger.

Complete submissions run on the test bed while the root logger captures everything at DEBUG
(azure-core's HTTP logging policy, aiohttp, the Durable SDK, the test bed, the app's
`agent_run_relay.*` loggers), once with an Event Grid topic key (AzureKeyCredential) and once
with a bearer token (the loopback token credential), each with azure-core's single- and
multi-record HTTP logging. An Event Grid SAS token is exercised by publishing once with the SDK
to the same topic. Then the key, the SAS token (and its signature), the bearer token and a wrong
key must not appear in any record: message, arguments, formatted text (with the exception and
stack) and every other attribute (`extra=` fields included).

So that this is not vacuous, the test also requires that azure-core's HTTP logging policy did
log the requests, with `aeg-sas-key`, `aeg-sas-token` and `Authorization` shown as REDACTED,
and that the app's own loggers logged with their structured fields.
"""

from __future__ import annotations

import base64
import json
import logging
from datetime import UTC, datetime, timedelta
from typing import Any

import pytest
from azure.core.credentials import AzureSasCredential
from azure.eventgrid import EventGridEvent, EventGridPublisherClient, generate_sas

from devhost.agents_service import FaultRule, RunScript
from tests.relay_bed import TOPIC_KEY, RelayBed, relay_bed

BEARER = "loopback-dev-token"  # what shared/loopback.py's LoopbackCredential hands out
WRONG_KEY = base64.b64encode(b"not-the-topic-key-0123456789abcd").decode()
HTTP_LOGGER = "azure.core.pipeline.policies.http_logging_policy"
STANDARD_ATTRIBUTES = set(vars(logging.makeLogRecord({}))) | {"message", "asctime"}
FORMATTER = logging.Formatter(
    "%(asctime)s %(levelname)s %(name)s %(threadName)s %(pathname)s:%(lineno)d %(message)s"
)
TOOL_RUN = RunScript(
    duration_seconds=60,
    final_status="completed",
    output_text="done",
    requires_action=[{"id": "call_1", "name": "lookup", "arguments": '{"q": "x"}'}],
    requires_action_after_seconds=5,
)


def record_texts(record: logging.LogRecord) -> list[str]:
    """Everything a handler or exporter could write out of this record."""
    texts = [str(record.msg), repr(record.msg), repr(record.args), FORMATTER.format(record)]
    try:
        texts.append(record.getMessage())
    except Exception as exc:  # a record whose arguments do not format: still look at them
        texts.append(repr(exc))
    for name, value in vars(record).items():
        texts += [name, str(value), repr(value)]
    return texts


def leaked(records: list[logging.LogRecord], secrets: dict[str, str]) -> list[str]:
    found = []
    for record in records:
        for text in record_texts(record):
            for label, secret in secrets.items():
                if secret in text:
                    found.append(f"{label} in {record.name} {record.levelname}: {text[:300]!r}")
    return found


def post(bed: RelayBed, path: str, body: Any) -> Any:
    return bed.host.http(
        "POST", path, body=json.dumps(body), headers={"Content-Type": "application/json"}
    )


def run_submissions(bed: RelayBed) -> None:
    """A few complete submissions through every path that logs: success, tool calls, cancel,
    start failure, service faults and publish retries."""
    bed.agents.default_script = RunScript(
        duration_seconds=20, final_status="completed", output_text="the answer"
    )
    bed.agents.faults.append(FaultRule(operation="runs.get", kind="429_retry_after", count=1))
    bed.agents.faults.append(FaultRule(operation="runs.get", kind="500", count=1))
    bed.topic.fail_next(1)
    completed = bed.submit(metadata={"ticket": "INC-1"})
    assert bed.complete(completed)["status"] == "completed"

    unknown = bed.submit(agentId="asst_unknown")
    assert bed.complete(unknown)["status"] == "failed"

    bed.agents.default_script = TOOL_RUN
    answered = bed.submit()
    bed.host.run_until_idle()
    for _ in range(30):
        if bed.status(answered)["status"] == "requires_action":
            break
        bed.host.advance_to_next_timer()
    body = {"toolOutputs": [{"toolCallId": "call_1", "output": "found"}]}
    assert post(bed, f"/api/runs/{answered}/tool-outputs", body).status_code == 202
    assert bed.complete(answered)["status"] == "completed"

    bed.agents.default_script = RunScript(duration_seconds=3600, final_status="completed")
    cancelled = bed.submit()
    bed.host.run_until_idle()
    bed.host.advance_to_next_timer()
    assert post(bed, f"/api/runs/{cancelled}/cancel", None).status_code == 202
    assert bed.complete(cancelled)["status"] == "cancelled"


def publish_with_sas(bed: RelayBed) -> str:
    """Publish once with the SDK and a SAS token to the bed's topic; returns the token."""
    token = generate_sas(bed.topic.endpoint, TOPIC_KEY, datetime.now(UTC) + timedelta(hours=1))
    client = EventGridPublisherClient(bed.topic.endpoint, AzureSasCredential(token))
    try:
        client.send(EventGridEvent(subject="s", event_type="Test", data={}, data_version="1.0"))
    finally:
        client.close()
    assert bed.topic.events[-1].auth == "sas"
    return token


def http_log_texts(records: list[logging.LogRecord]) -> str:
    return "\n".join(r.getMessage() for r in records if r.name == HTTP_LOGGER)


@pytest.fixture(params=[False, True], ids=["single-record", "multi-record"])
def multi_record(request: pytest.FixtureRequest, monkeypatch: pytest.MonkeyPatch) -> bool:
    if request.param:
        monkeypatch.setenv("AZURE_SDK_LOGGING_MULTIRECORD", "1")
    else:
        monkeypatch.delenv("AZURE_SDK_LOGGING_MULTIRECORD", raising=False)
    return bool(request.param)


def test_the_topic_key_and_a_sas_token_never_reach_the_logs(
    caplog: pytest.LogCaptureFixture, multi_record: bool
) -> None:
    caplog.set_level(logging.DEBUG)
    with relay_bed() as bed:
        run_submissions(bed)
        sas = publish_with_sas(bed)
        keyed = [r for r in bed.topic.publish_requests if r.auth == "key" and r.status == 200]
        assert len(keyed) >= 5  # the app published with the key
    records = caplog.records
    secrets = {
        "topic key": TOPIC_KEY,
        "SAS token": sas,
        "SAS signature": sas.rpartition("&s=")[2],
        "bearer token": BEARER,
    }
    assert leaked(records, secrets) == []
    http_logs = http_log_texts(records)
    assert "'aeg-sas-key': 'REDACTED'" in http_logs
    assert "'aeg-sas-token': 'REDACTED'" in http_logs
    assert "'Authorization': 'REDACTED'" in http_logs  # the Agents calls
    assert_not_vacuous(records)


def test_the_bearer_token_never_reaches_the_logs(
    caplog: pytest.LogCaptureFixture, multi_record: bool
) -> None:
    caplog.set_level(logging.DEBUG)
    with relay_bed(settings={"EVENTGRID_TOPIC_KEY": ""}) as bed:
        run_submissions(bed)
        bearer = [r for r in bed.topic.publish_requests if r.auth == "bearer" and r.status == 200]
        assert len(bearer) >= 5  # the app published with the token
        assert not [r for r in bed.topic.publish_requests if r.auth == "key"]
    records = caplog.records
    assert leaked(records, {"bearer token": BEARER, "topic key": TOPIC_KEY}) == []
    http_logs = http_log_texts(records)
    assert "'Authorization': 'REDACTED'" in http_logs
    assert "aeg-sas-key" not in http_logs
    topic_requests = [
        r.getMessage() for r in records if r.name == HTTP_LOGGER and "/api/events" in r.getMessage()
    ]
    assert topic_requests  # publishing was logged (single-record) or its URL was (multi)
    assert_not_vacuous(records)


def test_a_wrong_topic_key_never_reaches_the_logs(caplog: pytest.LogCaptureFixture) -> None:
    """The topic refuses the key (401): the failure is logged, the key is not."""
    caplog.set_level(logging.DEBUG)
    settings = {"EVENTGRID_TOPIC_KEY": WRONG_KEY, "PUBLISH_RETRY_WINDOW_SECONDS": "60"}
    with relay_bed(settings=settings) as bed:
        bed.agents.default_script = RunScript(duration_seconds=5, final_status="completed")
        submission_id = bed.submit()
        view = bed.complete(submission_id)
        assert view["publishError"]["code"] == "publish_failed"
        assert {r.status for r in bed.topic.publish_requests} == {401}
    records = caplog.records
    assert leaked(records, {"wrong key": WRONG_KEY, "topic key": TOPIC_KEY}) == []
    failures = [r for r in records if r.name == "agent_run_relay.publish"]
    assert any(r.levelno == logging.WARNING for r in failures)
    assert "'aeg-sas-key': 'REDACTED'" in http_log_texts(records)


def assert_not_vacuous(records: list[logging.LogRecord]) -> None:
    names = {r.name for r in records}
    assert HTTP_LOGGER in names
    http_logs = http_log_texts(records)
    assert "Request URL:" in http_logs
    assert "Response status:" in http_logs
    relay = [r for r in records if r.name.startswith("agent_run_relay")]
    assert {r.name for r in relay} >= {
        "agent_run_relay.http",
        "agent_run_relay.agents",
        "agent_run_relay.publish",
    }
    assert any(r.levelno == logging.WARNING for r in relay)  # the faults were logged
    extras = {name for r in relay for name in vars(r)} - STANDARD_ATTRIBUTES
    assert "submissionId" in extras
    assert min(r.levelno for r in records) == logging.DEBUG  # DEBUG was really captured

"""Validation of POST /api/runs bodies (the pure part; HTTP behaviour is tested end to end)."""

import json
from typing import Any

import pytest

from shared.adapters.settings import load_settings
from shared.core.problems import Problem
from shared.core.submission import (
    MAX_BODY_BYTES,
    Submission,
    authorize_submission,
    parse_json_body,
    validate_submission,
)

SETTINGS = load_settings(
    {
        "AZURE_AI_PROJECT_ENDPOINT": "https://x.services.ai.azure.com/api/projects/p",
        "EVENTGRID_TOPIC_ENDPOINT": "https://t.westus-1.eventgrid.azure.net/api/events",
    }
).submission_limits


def problem_for(body: Any) -> Problem:
    with pytest.raises(Problem) as caught:
        validate_submission(body, SETTINGS)
    return caught.value


def test_minimal_input_becomes_one_user_message_with_defaults() -> None:
    submission = validate_submission({"agentId": "asst_1", "input": "hi"}, SETTINGS)
    assert submission.messages == [{"role": "user", "content": "hi"}]
    assert submission.deadline_seconds == SETTINGS.default_deadline_seconds
    assert submission.polling == SETTINGS.polling


@pytest.mark.parametrize(
    ("body", "field"),
    [
        ({"input": "x"}, "agentId"),
        ({"agentId": "a b", "input": "x"}, "agentId"),
        ({"agentId": "asst_1"}, "input"),
        ({"agentId": "asst_1", "input": "x", "messages": []}, "input"),
        ({"agentId": "asst_1", "messages": []}, "messages"),
        (
            {"agentId": "asst_1", "messages": [{"role": "system", "content": "x"}]},
            "messages[0].role",
        ),
        (
            {"agentId": "asst_1", "messages": [{"role": "user", "content": ""}]},
            "messages[0].content",
        ),
        ({"agentId": "asst_1", "input": "x", "metadata": {"k": 1}}, "metadata.k"),
        (
            {"agentId": "asst_1", "input": "x", "metadata": {f"k{i}": "v" for i in range(16)}},
            "metadata",
        ),
        ({"agentId": "asst_1", "input": "x", "metadata": {"relay_x": "v"}}, "metadata.relay_x"),
        ({"agentId": "asst_1", "input": "x", "metadata": {"k": "v" * 513}}, "metadata.k"),
        ({"agentId": "asst_1", "input": "x", "deadlineSeconds": 0}, "deadlineSeconds"),
        ({"agentId": "asst_1", "input": "x", "deadlineSeconds": 1.5}, "deadlineSeconds"),
        ({"agentId": "asst_1", "input": "x", "deadlineSeconds": True}, "deadlineSeconds"),
        (
            {"agentId": "asst_1", "input": "x", "polling": {"initialSeconds": 0.1}},
            "polling.initialSeconds",
        ),
        ({"agentId": "asst_1", "input": "x", "polling": {"multiplier": 9}}, "polling.multiplier"),
        ({"agentId": "asst_1", "input": "x", "polling": {"every": 1}}, "polling.every"),
        ({"agentId": "asst_1", "input": "x", "colour": "red"}, "colour"),
        ([1, 2], "body"),
    ],
)
def test_invalid_bodies_name_the_field(body: Any, field: str) -> None:
    problem = problem_for(body)
    assert problem.status == 400
    assert problem.field == field


def test_polling_overrides_stay_within_bounds() -> None:
    submission = validate_submission(
        {"agentId": "asst_1", "input": "x", "polling": {"initialSeconds": 5, "maxSeconds": 120}},
        SETTINGS,
    )
    assert submission.polling is not None
    assert (submission.polling.initial_seconds, submission.polling.max_seconds) == (5, 120)


def test_body_decoding_errors_have_their_own_statuses() -> None:
    with pytest.raises(Problem) as too_big:
        parse_json_body(b" " * (MAX_BODY_BYTES + 1), "application/json")
    assert too_big.value.status == 413
    with pytest.raises(Problem) as not_json:
        parse_json_body(b"agentId=1", "application/x-www-form-urlencoded")
    assert not_json.value.status == 415
    with pytest.raises(Problem) as broken:
        parse_json_body(b"{", "application/json")
    assert broken.value.status == 400
    with pytest.raises(Problem) as nan:
        parse_json_body(b'{"deadlineSeconds": NaN}', "application/json")
    assert nan.value.status == 400
    assert parse_json_body(json.dumps({"a": 1}).encode(), "application/json; charset=utf-8") == {
        "a": 1
    }


def test_the_caller_travels_with_the_submission_and_may_be_absent() -> None:
    submission = validate_submission({"agentId": "asst_1", "input": "hi"}, SETTINGS)
    assert submission.caller is None
    tagged = Submission.from_dict({**submission.to_dict(), "caller": "key:" + "0" * 32})
    assert tagged.caller == "key:" + "0" * 32
    assert Submission.from_dict(tagged.to_dict()) == tagged
    older = submission.to_dict()
    del older["caller"]  # an orchestration input written before the field existed
    assert Submission.from_dict(older) == submission


def settings_with(**values: str) -> Any:
    return load_settings(
        {
            "AZURE_AI_PROJECT_ENDPOINT": "https://x.services.ai.azure.com/api/projects/p",
            "EVENTGRID_TOPIC_ENDPOINT": "https://t.westus-1.eventgrid.azure.net/api/events",
            **values,
        }
    ).submission_limits


@pytest.mark.parametrize(
    ("values", "body", "field"),
    [
        ({}, {"agentId": "asst_any", "input": "x"}, None),
        ({}, {"agentId": "asst_any", "input": "x", "threadId": "thread_1"}, "threadId"),
        ({"ALLOW_CALLER_THREADS": "true"}, {"agentId": "a", "input": "x", "threadId": "t"}, None),
        ({"ALLOWED_AGENTS": "asst_1,bot"}, {"agentId": "bot", "input": "x"}, None),
        ({"ALLOWED_AGENTS": "asst_1,bot"}, {"agentId": "asst_2", "input": "x"}, "agentId"),
        ({"ALLOWED_AGENTS": "asst_1"}, {"agentId": "ASST_1", "input": "x"}, "agentId"),
        (
            {"ALLOWED_AGENTS": "asst_1"},
            {"agentId": "asst_2", "input": "x", "threadId": "t"},
            "agentId",
        ),
    ],
)
def test_submissions_this_relay_does_not_allow_are_403(
    values: dict[str, str], body: dict[str, Any], field: str | None
) -> None:
    settings = settings_with(**values)
    submission = validate_submission(body, settings)
    if field is None:
        authorize_submission(submission, settings)
        return
    with pytest.raises(Problem) as refused:
        authorize_submission(submission, settings)
    assert (refused.value.status, refused.value.field) == (403, field)

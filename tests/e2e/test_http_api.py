"""The HTTP surface: auth, problem+json errors, 202 + Location, 404s. Through the emulated host."""

from __future__ import annotations

import json
from collections.abc import Iterator

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from shared.core.submission import MAX_BODY_BYTES
from tests.app_settings import changed_settings
from tests.relay_bed import RelayBed, relay_bed


@pytest.fixture(scope="module")
def bed() -> Iterator[RelayBed]:
    with relay_bed() as started:
        yield started


def assert_problem(response: object, status: int, field: str | None = None) -> dict[str, object]:
    assert response.status_code == status, response.get_body()  # type: ignore[attr-defined]
    assert response.headers["Content-Type"] == "application/problem+json"  # type: ignore[attr-defined]
    body: dict[str, object] = json.loads(response.get_body())  # type: ignore[attr-defined]
    assert body["status"] == status
    assert body["title"]
    assert body["detail"]
    if field is not None:
        assert body["field"] == field
    return body


def test_accepted_submissions_point_at_their_status(bed: RelayBed) -> None:
    response = bed.post_run({"agentId": bed.agent_id, "input": "hi"})
    assert response.status_code == 202
    body = json.loads(response.get_body())
    assert body["status"] == "accepted"
    assert response.headers["Location"] == body["statusUrl"]
    assert body["statusUrl"].endswith(f"/api/runs/{body['id']}")
    assert int(response.headers["Retry-After"]) >= 1
    assert "code=" not in response.get_body().decode()
    assert "terminatePostUri" not in body
    assert bed.status(body["id"])["status"] in ("pending", "running")


FORWARDED = {"X-Forwarded-Host": "relay.example.com", "X-Forwarded-Proto": "https"}


def urls_for(bed: RelayBed, headers: dict[str, str]) -> list[str]:
    """The status URLs of a submission and of its cancel: body and Location agree."""
    submitted = bed.post_run({"agentId": bed.agent_id, "input": "hi"}, headers)
    body = json.loads(submitted.get_body())
    cancel = bed.host.http("POST", f"/api/runs/{body['id']}/cancel", headers=headers)
    urls = []
    for response in (submitted, cancel):
        assert response.status_code == 202, response.get_body()
        url = json.loads(response.get_body())["statusUrl"]
        assert response.headers["Location"] == url
        assert url.endswith(f"/runs/{body['id']}")
        urls.append(url.removesuffix(f"/runs/{body['id']}"))
    return urls


def test_forwarded_headers_are_ignored_by_default(bed: RelayBed) -> None:
    # Anyone can send them: honouring them would let a client put its own host in the links.
    assert urls_for(bed, FORWARDED) == ["http://localhost:7071/api"] * 2


def test_forwarded_headers_set_the_origin_when_trusted(bed: RelayBed) -> None:
    with changed_settings(bed, TRUST_FORWARDED_HEADERS="true"):
        assert urls_for(bed, FORWARDED) == ["https://relay.example.com/api"] * 2
        # The first value is the host the client addressed; later proxies append theirs.
        chain = {"X-Forwarded-Host": "Relay.Example.com:8443, internal:80"}
        assert urls_for(bed, chain) == ["http://relay.example.com:8443/api"] * 2
        for unusable in ("evil.example/path", "a b", "x:99999", "", "@evil", "ex ample.com"):
            headers = {"X-Forwarded-Host": unusable, "X-Forwarded-Proto": "gopher"}
            assert urls_for(bed, headers) == ["http://localhost:7071/api"] * 2, unusable


def test_public_base_url_wins_over_everything(bed: RelayBed) -> None:
    with changed_settings(
        bed, PUBLIC_BASE_URL="https://gw.example.com/relay/", TRUST_FORWARDED_HEADERS="true"
    ):
        assert urls_for(bed, FORWARDED) == ["https://gw.example.com/relay"] * 2
        assert urls_for(bed, {}) == ["https://gw.example.com/relay"] * 2


def test_routes_need_the_function_key(bed: RelayBed) -> None:
    unauthenticated = bed.host.http("POST", "/api/runs", body="{}", key=None)
    assert unauthenticated.status_code == 401
    wrong = bed.host.http("GET", "/api/runs/" + "0" * 32, key="not-the-key")
    assert wrong.status_code == 401


@pytest.mark.parametrize(
    ("body", "content_type", "status", "field"),
    [
        ("{", "application/json", 400, "body"),
        ('{"agentId": "asst_1"}', "application/json", 400, "input"),
        (
            '{"agentId": "asst_1", "input": "x", "deadlineSeconds": -5}',
            "application/json",
            400,
            "deadlineSeconds",
        ),
        ("agentId=asst_1", "application/x-www-form-urlencoded", 415, "Content-Type"),
        ('{"agentId": "asst_1", "input": "x"}', "text/plain", 415, "Content-Type"),
        (b'{"agentId": "\xff"}', "application/json", 400, "body"),
    ],
)
def test_bad_submissions_get_problem_details(
    bed: RelayBed, body: str | bytes, content_type: str, status: int, field: str
) -> None:
    response = bed.host.http("POST", "/api/runs", body=body, headers={"Content-Type": content_type})
    assert_problem(response, status, field)


def test_an_oversized_body_is_413(bed: RelayBed) -> None:
    body = json.dumps({"agentId": "asst_1", "input": "x" * MAX_BODY_BYTES})
    assert_problem(bed.post_run(body), 413)


@pytest.mark.parametrize("submission_id", ["0" * 32, "not-an-id", "ABC", "a" * 200])
def test_unknown_submissions_are_404(bed: RelayBed, submission_id: str) -> None:
    assert_problem(bed.host.http("GET", f"/api/runs/{submission_id}"), 404, "id")


@settings(
    max_examples=150, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture]
)
@given(
    st.one_of(
        st.binary(max_size=300),
        st.text(max_size=300).map(str.encode),
        st.recursive(
            st.none()
            | st.booleans()
            | st.integers()
            | st.floats(allow_nan=False)
            | st.text(max_size=20),
            lambda inner: (
                st.lists(inner, max_size=4)
                | st.dictionaries(st.text(max_size=12), inner, max_size=5)
            ),
            max_leaves=12,
        ).map(lambda v: json.dumps(v).encode()),
    )
)
def test_no_body_produces_a_server_error(bed: RelayBed, body: bytes) -> None:
    response = bed.host.http(
        "POST", "/api/runs", body=body, headers={"Content-Type": "application/json"}
    )
    assert response.status_code in (202, 400, 403, 413)
    if response.status_code != 202:
        assert_problem(response, response.status_code)

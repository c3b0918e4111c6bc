"""Property-based fuzzing of every HTTP route through the emulated host.

Each route gets 1000 derandomized cases: bodies (random bytes, random text, random JSON, valid
requests mutated into near-valid ones: wrong types, nulls, huge strings, unicode, surrogates,
extra fields, deep nesting, big numbers, duplicate keys), encodings (UTF-8 with or without
BOM, UTF-16/32, Latin-1, CP1252, invalid bytes), sizes around the 256 KiB limit, Content-Type
variants, Idempotency-Key values, ids in paths (known, mutated, random unicode, percent-encoded
bytes, long) and keys (header, `code` query, none, wrong).

Every response must be 2xx or 4xx, every 4xx but the host's 401 a problem+json whose `status`
is the response's, with a title and a detail, and every response must conform to
docs/openapi.yaml. Where the outcome is decided by the request alone (the key, the size, the
media type, an unknown id, a pristine valid body) the exact status is asserted too. The app
runs with `ALLOWED_AGENTS` set to the bed's two agents (a classic one and a Foundry one: valid
bodies are drawn for both, with `agent`, `version` and `conversationId` for the latter) and
caller threads off (the default), so valid bodies naming another agent or a thread are 403s.

One bed for the module; no orchestration is driven once the fuzzing starts, so accepted
submissions stay pending and the waiting one keeps waiting.
"""

from __future__ import annotations

import json
import string
import time
from collections import Counter
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from typing import Any
from urllib.parse import quote, quote_from_bytes, unquote

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from devhost.functions_host import DEFAULT_KEY
from shared.core.submission import (
    AGENT_FIELDS,
    AGENT_OWNED_FIELDS,
    KNOWN_FIELDS,
    MAX_BODY_BYTES,
)
from tests.app_settings import changed_settings
from tests.e2e.test_openapi_conformance import (
    COMPLETED,
    TOOL_CALLS,
    check_response,
    schema_errors,
    tool_run,
    wait_for_requires_action,
)
from tests.relay_bed import RelayBed, relay_bed

EXAMPLES = 1000
FUZZ = settings(
    max_examples=EXAMPLES,
    deadline=None,
    derandomize=True,
    # The bed is module-scoped (not function-scoped), so that health check does not apply.
    suppress_health_check=[
        HealthCheck.too_slow,
        HealthCheck.data_too_large,
        HealthCheck.large_base_example,
        HealthCheck.filter_too_much,
    ],
)
ALNUM = string.ascii_letters + string.digits
ID_CHARS = ALNUM + "_.-"
PRINTABLE = "".join(map(chr, range(0x20, 0x7F)))
PROBLEM = "application/problem+json"
IDEMPOTENCY_KEY_SCHEMA = "/components/parameters/IdempotencyKey/schema"
CALL_IDS = [str(call["id"]) for call in TOOL_CALLS]
# Every route's statuses the fuzzing must reach (so the cases are not all alike).
EXPECTED_STATUSES = {
    "POST /runs": {202, 400, 401, 403, 409, 413, 415},
    "GET /runs/{id}": {200, 401, 404},
    "POST /runs/{id}/cancel": {202, 401, 404, 409},
    "POST /runs/{id}/tool-outputs": {202, 400, 401, 404, 409, 413, 415},
}


# --- the bed ---------------------------------------------------------------------------------


@dataclass
class Fuzzed:
    bed: RelayBed
    pending: str
    waiting: str
    done: str
    accepted: set[str] = field(default_factory=set)
    tallies: dict[str, Counter[str]] = field(default_factory=dict)

    def known(self) -> set[str]:
        return {self.pending, self.waiting, self.done} | self.accepted


@pytest.fixture(scope="module")
def fuzzed() -> Iterator[Fuzzed]:
    with relay_bed() as bed:
        bed.agents.default_script = COMPLETED
        done = bed.submit()
        bed.complete(done)
        bed.agents.default_script = tool_run()
        waiting = bed.submit()
        wait_for_requires_action(bed, waiting)
        pending = bed.submit()  # never driven: stays pending
        # The keys the fuzzing reuses most are taken: a valid body sent with one is a 409.
        for key in ("order-1", "order-2"):
            taken = {"agentId": bed.agent_id, "input": f"the fixture's {key}"}
            assert bed.post_run(taken, {"Idempotency-Key": key}).status_code == 202
        state = Fuzzed(bed, pending=pending, waiting=waiting, done=done)
        allowed = f"{bed.agent_id},{bed.foundry_agent}"
        with changed_settings(bed, ALLOWED_AGENTS=allowed):
            yield state


# --- strategies ------------------------------------------------------------------------------

json_scalars = (
    st.none()
    | st.booleans()
    | st.integers()
    | st.integers(min_value=-(2**70), max_value=2**70)
    | st.floats(allow_nan=False, allow_infinity=False)
    | st.text(max_size=30)
)
json_values = st.recursive(
    json_scalars,
    lambda inner: (
        st.lists(inner, max_size=4) | st.dictionaries(st.text(max_size=12), inner, max_size=4)
    ),
    max_leaves=12,
)
non_blank = st.text(max_size=40).filter(lambda s: bool(s.strip()))
agents_ids = st.builds(
    lambda first, rest: first + rest, st.sampled_from(ALNUM), st.text(ID_CHARS, max_size=24)
)
metadata = st.dictionaries(
    st.text(min_size=1, max_size=64).filter(lambda k: not k.startswith("relay_")),
    st.text(max_size=60),
    max_size=15,
)


@st.composite
def pollings(draw: st.DrawFn) -> dict[str, Any]:
    polling: dict[str, Any] = {}
    initial = draw(st.floats(1, 300) | st.integers(1, 300))
    if draw(st.booleans()):
        polling["initialSeconds"] = initial
    if draw(st.booleans()):
        low = initial if "initialSeconds" in polling else 2  # the default initial wait
        polling["maxSeconds"] = draw(st.floats(max(low, 2), 3600))
    if draw(st.booleans()):
        polling["multiplier"] = draw(st.floats(1, 4))
    return polling


@st.composite
def submissions(draw: st.DrawFn, agent_id: str, foundry_agent: str) -> dict[str, Any]:
    """A body the documentation says is valid: for a classic agent or a Foundry agent."""
    # Mostly the allowed agents (ALLOWED_AGENTS), so that most valid bodies get past the 403.
    foundry = draw(st.booleans())
    body: dict[str, Any]
    if foundry:
        agent: dict[str, Any] = {"name": draw(st.sampled_from([foundry_agent] * 3) | agents_ids)}
        if draw(st.booleans()):
            agent["version"] = draw(st.none() | agents_ids)
        body = {"agent": agent}
    else:
        body = {"agentId": draw(st.sampled_from([agent_id] * 3) | agents_ids)}
    if draw(st.booleans()):
        body["input"] = draw(non_blank)
    else:
        messages: list[dict[str, Any]] = []
        for _ in range(draw(st.integers(0, 3))):
            role = draw(st.sampled_from(["user", "assistant", None]))
            messages.append({"content": draw(non_blank)} | ({"role": role} if role else {}))
        last_role = draw(st.sampled_from(["user", None]))
        messages.append({"content": draw(non_blank)} | ({"role": last_role} if last_role else {}))
        body["messages"] = messages
    optional: dict[str, st.SearchStrategy[Any]] = {
        "metadata": st.none() | metadata,
        "deadlineSeconds": st.none() | st.integers(1, 604800),
        "polling": st.none() | pollings(),
    }
    if foundry:
        optional["conversationId"] = st.none() | agents_ids
    else:
        optional["threadId"] = st.none() | agents_ids
        optional["instructions"] = st.none() | non_blank
    for name, strategy in optional.items():
        if draw(st.booleans()):
            body[name] = draw(strategy)
    return body


# Mutations name the known fields, the `agent` object's, and those a Foundry agent owns.
SUBMISSION_FIELDS = sorted(KNOWN_FIELDS | AGENT_FIELDS | AGENT_OWNED_FIELDS)
DEEP = "\x00deep\x00"
ODD_NUMBERS = ["1e400", "-1e400", "1e-400", "-0", "0.0", "1E5", "604800.0000001", "NaN"]
ODD_NUMBERS += ["Infinity", "-Infinity", "01", ".5", "+1", "0x10", "1_000"]
RAW = "\x00raw\x00"


@st.composite
def huge_strings(draw: st.DrawFn) -> str:
    size = draw(
        st.sampled_from([32767, 32768, 32769, 64, 65, 128, 129, 512, 513, 131072, 131073])
        | st.integers(MAX_BODY_BYTES - 200, MAX_BODY_BYTES + 10)
    )
    return draw(st.sampled_from(["x", "é", "😀", " ", "\\"])) * size


@st.composite
def mutate(draw: st.DrawFn, body: Any, fields: list[str]) -> str:
    """A JSON text near `body`: one thing in it made wrong (or odd but perhaps still valid)."""
    body = json.loads(json.dumps(body))
    target: Any = body
    if isinstance(body, dict) and draw(st.booleans()):
        # Sometimes go one level down (a message, the polling object, a tool output).
        nested = [v for v in body.values() if isinstance(v, dict | list) and v]
        if nested:
            target = draw(st.sampled_from(nested))
            if isinstance(target, list):
                target = draw(st.sampled_from(target)) if draw(st.booleans()) else target
    name = draw(st.sampled_from(fields) | st.text(max_size=10))
    kind = draw(
        st.sampled_from(
            [
                "value",
                "null",
                "delete",
                "extra",
                "huge",
                "unicode",
                "surrogate",
                "deep",
                "number",
                "duplicate",
                "list",
            ]
        )
    )
    raw: str | None = None
    if isinstance(target, list):
        if kind == "delete" and target:
            target.pop()
        elif kind == "list":
            target.extend(draw(st.lists(json_values, max_size=40)))
        else:
            target.append(draw(json_values))
    elif isinstance(target, dict):
        if kind == "value":
            target[name] = draw(json_values)
        elif kind == "null":
            target[name] = None
        elif kind == "delete":
            target.pop(name, None)
        elif kind == "extra":
            target[draw(st.text(max_size=20))] = draw(json_values)
        elif kind == "huge":
            target[name] = draw(huge_strings())
        elif kind == "unicode":
            target[name] = draw(st.text(st.characters(codec="utf-8"), min_size=1, max_size=50))
        elif kind == "surrogate":
            target[name] = draw(st.text(st.characters(categories=["Cs"]), min_size=1, max_size=3))
        elif kind == "deep":
            target[name] = DEEP
        elif kind == "number":
            target[name] = RAW
            raw = draw(st.sampled_from([*ODD_NUMBERS, "9" * 5000, "1" + "0" * 30]))
        elif kind == "duplicate":
            target[name] = RAW
            raw = f'{json.dumps(draw(json_values))}, "{name}": {json.dumps(draw(json_values))}'
        else:
            target[name] = draw(st.lists(json_values, max_size=5))
    text = json.dumps(body, ensure_ascii=draw(st.booleans()))
    if raw is not None:
        text = text.replace(json.dumps(RAW), raw, 1)
    # (Not near the interpreter's recursion limit, where the worker thread may differ.)
    depth = draw(st.sampled_from([2, 50, 200, 100_000]))
    return text.replace(json.dumps(DEEP), "[" * depth + "]" * depth, 1)


ENCODINGS = [
    *["utf-8"] * 12,
    "utf-8-sig",
    "utf-16",
    "utf-16-be",
    "utf-32",
    "latin-1",
    "cp1252",
    "surrogatepass",
    "invalid byte",
    "truncated",
]


@st.composite
def encode(draw: st.DrawFn, text: str) -> tuple[bytes, bool]:
    """(bytes, whether they are the UTF-8 of `text`)."""
    encoding = draw(st.sampled_from(ENCODINGS))
    if encoding == "utf-8":
        return text.encode("utf-8", "surrogatepass"), True
    if encoding == "surrogatepass":
        return text.encode("utf-8", "surrogatepass"), False
    if encoding == "invalid byte":
        data = text.encode("utf-8", "surrogatepass")
        at = draw(st.integers(0, len(data)))
        bad = draw(
            st.sampled_from([b"\xff", b"\xc3", b"\xed\xa0\x80", b"\x80", b"\xf8\x88\x80\x80"])
        )
        return data[:at] + bad + data[at:], False
    if encoding == "truncated":
        data = text.encode("utf-8", "surrogatepass")
        return data[: draw(st.integers(0, max(0, len(data) - 1)))], False
    return text.encode(encoding, "replace"), False


@st.composite
def pad(draw: st.DrawFn, data: bytes) -> bytes:
    """Sometimes grow the body with JSON whitespace to just under, at or over the limit."""
    if draw(st.integers(0, 9)) > 1:
        return data
    target = draw(
        st.sampled_from(
            [MAX_BODY_BYTES - 1, MAX_BODY_BYTES, MAX_BODY_BYTES + 1, 2 * MAX_BODY_BYTES]
        )
        | st.integers(MAX_BODY_BYTES - 8, MAX_BODY_BYTES + 8)
    )
    return data + b" " * max(0, target - len(data))


@dataclass(frozen=True)
class Body:
    data: bytes
    note: str
    json_ok: bool = False  # the bytes are UTF-8 of a JSON text (as the app decodes it)
    pristine: bool = False  # a body the documentation says is valid, sent as UTF-8 in size


def is_json(data: bytes) -> bool:
    try:
        json.loads(data.decode("utf-8"), parse_constant=_no_constants)
    except (ValueError, RecursionError):
        return False
    return True


@st.composite
def bodies(draw: st.DrawFn, valid: st.SearchStrategy[Any], fields: list[str]) -> Body:
    kind = draw(st.sampled_from(["bytes", "text", "json"] + ["near-valid"] * 4 + ["valid"] * 3))
    text: str
    if kind == "bytes":
        data = draw(pad(draw(st.binary(max_size=300))))
        return Body(data, kind, is_json(data))
    if kind == "text":
        text = draw(st.text(max_size=300))
    elif kind == "json":
        text = json.dumps(draw(json_values), ensure_ascii=draw(st.booleans()))
    elif kind == "near-valid":
        text = draw(mutate(draw(valid), fields))
    else:
        text = json.dumps(draw(valid), ensure_ascii=draw(st.booleans()))
    data, as_utf8 = draw(encode(text))
    data = draw(pad(data))
    pristine = kind == "valid" and as_utf8 and len(data) <= MAX_BODY_BYTES
    return Body(data, kind, is_json(data), pristine)


def _no_constants(name: str) -> Any:
    raise ValueError(name)


CONTENT_TYPES = [
    "application/json",
    "application/json",
    "application/json",
    "application/json; charset=utf-8",
    "application/json;charset=UTF-16",
    "application/json; charset=latin-1",
    "application/json; charset",
    "APPLICATION/JSON",
    " application/json ",
    "application/json;",
    "application/merge-patch+json",
    "application/problem+json",
    "application/vnd.relay.v1+json; q=1",
    "text/json",
    "text/plain",
    "text/plain; charset=utf-8",
    "application/x-www-form-urlencoded",
    "multipart/form-data; boundary=x",
    "application/jsonx",
    "json",
    "*/*",
    "",
    ";",
]


@dataclass(frozen=True)
class Auth:
    kind: str  # header, query, none, wrong

    def kwargs(self, bed: RelayBed) -> dict[str, Any]:
        if self.kind == "header":
            return {"key": DEFAULT_KEY}
        if self.kind == "query":
            return {"key": None, "query": {"code": bed.host.keys.function_key}}
        if self.kind == "wrong":
            return {"key": "not-the-function-key"}
        return {"key": None}

    @property
    def refused(self) -> bool:
        return self.kind in ("none", "wrong")


auths = st.sampled_from(["header"] * 12 + ["query", "none", "wrong"]).map(Auth)


@dataclass(frozen=True)
class Headers:
    values: dict[str, str]
    content_type: str | None

    @property
    def json_media(self) -> bool:
        media = (self.content_type or "").split(";")[0].strip().lower()
        return media == "application/json" or media.endswith("+json")


@st.composite
def headers(draw: st.DrawFn, idempotency: bool = False) -> Headers:
    values: dict[str, str] = {}
    choice = draw(st.integers(0, 9))  # mostly JSON, so most bodies reach the validation
    content_type: str | None
    if choice < 6:
        content_type = draw(st.sampled_from(CONTENT_TYPES[:7]))
    elif choice == 6:
        content_type = None
    elif choice < 9:
        content_type = draw(st.sampled_from(CONTENT_TYPES))
    else:
        content_type = draw(st.text(max_size=40))
    if content_type is not None:
        values[draw(st.sampled_from(["Content-Type", "content-type", "CONTENT-TYPE"]))] = (
            content_type
        )
    if idempotency and draw(st.booleans()):
        values["Idempotency-Key"] = draw(idempotency_keys)
    if draw(st.integers(0, 9)) == 0:
        values[draw(st.sampled_from(["X-Odd", "Accept", "Accept-Charset"]))] = draw(
            st.text(max_size=30)
        )
    return Headers(values, content_type)


idempotency_keys = (
    st.sampled_from(["order-1", "order-2"])  # reused often enough to reach the 409
    | st.sampled_from(["order-1", "order-2", "order-1 ", "", " ", "\t", "é", "a\r\nb", "\x00"])
    | st.text(max_size=60)
    | st.text(PRINTABLE, min_size=1, max_size=210)
    | st.integers(150, 5000).map(lambda n: "k" * n)
    | st.text(st.characters(codec="utf-8"), max_size=20)
)


def literal(text: str) -> st.SearchStrategy[str]:
    """A literal path segment as a client may spell it (the host matches case-insensitively
    and decodes percent-encoded characters)."""
    encoded = f"%{ord(text[0]):02X}{text[1:]}"
    return st.sampled_from([text] * 8 + [text.upper(), text.capitalize(), encoded])


@dataclass(frozen=True)
class PathId:
    decoded: str
    segment: str


@st.composite
def path_ids(draw: st.DrawFn, known: list[str], known_share: int = 4) -> PathId:
    others = ["mutated", "hex", "text", "bytes", "long", "ascii"]
    kind = draw(st.sampled_from(["known"] * known_share + others))
    if kind == "bytes":
        segment = quote_from_bytes(draw(st.binary(min_size=1, max_size=40)), safe="")
        return PathId(unquote(segment), segment)
    if kind == "known":
        raw = draw(st.sampled_from(known))
    elif kind == "mutated":
        base = draw(st.sampled_from(known))
        raw = draw(
            st.sampled_from(
                [
                    base.upper(),
                    base[:-1],
                    base + "0",
                    base + "\n",
                    "\n" + base,
                    base + " ",
                    " " + base,
                    base + "\x00",
                    base + "/",
                    base.replace("a", "\u0430"),
                ]
            )
            | st.builds(lambda c: base + c, st.characters())
        )
    elif kind == "hex":
        raw = draw(st.text("0123456789abcdef", min_size=1, max_size=40))
    elif kind == "long":
        raw = draw(st.sampled_from(["a", "0", "é", "%"])) * draw(st.integers(33, 5000))
    elif kind == "ascii":
        raw = draw(st.text(PRINTABLE, min_size=1, max_size=40))
    else:
        raw = draw(st.text(min_size=1, max_size=40))
    safe = draw(st.sampled_from(["", "-._~", "-._~!$&'()*+,;=:@"]))
    return PathId(raw, quote(raw, safe=safe))


# --- the properties --------------------------------------------------------------------------


@dataclass
class Outcome:
    route: str
    status: int
    response: Any
    path: str
    method: str


def assert_sane(outcome: Outcome) -> None:
    """Only 2xx/4xx; problems are problem+json; everything conforms to docs/openapi.yaml."""
    status, response = outcome.status, outcome.response
    body: bytes = response.get_body() or b""
    assert 200 <= status < 300 or 400 <= status < 500, (status, body[:300])
    if status == 401:
        assert body == b""
    elif status >= 400:
        assert response.headers.get("Content-Type") == PROBLEM, response.headers
        problem = json.loads(body)
        assert problem["status"] == status
        assert isinstance(problem["title"], str)
        assert problem["title"]
        assert isinstance(problem["detail"], str)
        assert problem["detail"]
    assert check_response(outcome.method, outcome.path, response) == []


def send(
    state: Fuzzed,
    route: str,
    method: str,
    path: str,
    auth: Auth,
    body: bytes = b"",
    sent_headers: dict[str, str] | None = None,
    query: dict[str, str] | None = None,
) -> Outcome:
    kwargs = auth.kwargs(state.bed)
    if query:
        kwargs["query"] = {**query, **kwargs.get("query", {})}
    response = state.bed.host.http(method, path, body=body, headers=sent_headers or {}, **kwargs)
    return Outcome(route, int(response.status_code), response, path, method)


def tally(state: Fuzzed, outcome: Outcome, note: str = "") -> None:
    counter = state.tallies.setdefault(outcome.route, Counter())
    counter[str(outcome.status) + (f" ({note})" if note else "")] += 1


def verdict(state: Fuzzed, outcome: Outcome, oracle: Callable[[], None]) -> None:
    """Hold the outcome to every property, then count it."""
    assert_sane(outcome)
    oracle()
    tally(state, outcome)


def finish(state: Fuzzed, route: str, started: float) -> None:
    counter = state.tallies.get(route, Counter())
    cases = sum(counter.values())
    statuses = {int(k.split()[0]) for k in counter}
    print(f"\n{route}: {cases} cases in {time.perf_counter() - started:.1f}s {dict(counter)}")
    assert cases >= EXAMPLES
    assert statuses >= EXPECTED_STATUSES[route], statuses


queries = st.none() | st.dictionaries(
    st.text(string.ascii_lowercase, min_size=1, max_size=8).filter(lambda k: k != "code"),
    st.text(max_size=20),
    max_size=2,
)


def run(
    state: Fuzzed, route: str, strategy: st.SearchStrategy[Any], case: Callable[[Any], None]
) -> None:
    started = time.perf_counter()

    @FUZZ
    @given(strategy)
    def fuzz(drawn: Any) -> None:
        case(drawn)

    fuzz()
    finish(state, route, started)


def test_fuzz_submit(fuzzed: Fuzzed) -> None:
    route = "POST /runs"
    valid = submissions(fuzzed.bed.agent_id, fuzzed.bed.foundry_agent)
    strategy = st.tuples(
        bodies(valid, SUBMISSION_FIELDS),
        headers(idempotency=True),
        auths,
        literal("api"),
        literal("runs"),
        queries,
    )

    def refused_field(data: bytes) -> str | None:
        """The field a pristine body is refused for (403), if it is."""
        decoded = json.loads(data)
        if "agent" in decoded:
            # A conversation is checked when the run starts (it needs the service).
            return None if decoded["agent"]["name"] == fuzzed.bed.foundry_agent else "agent.name"
        if decoded["agentId"] != fuzzed.bed.agent_id:
            return "agentId"
        return "threadId" if decoded.get("threadId") is not None else None

    def case(drawn: tuple[Body, Headers, Auth, str, str, dict[str, str] | None]) -> None:
        body, sent, auth, api, runs, query = drawn
        path = f"/{api}/{runs}"
        outcome = send(fuzzed, route, "POST", path, auth, body.data, sent.values, query)
        key = next((v for k, v in sent.values.items() if k == "Idempotency-Key"), None)

        def oracle() -> None:
            status = outcome.status
            if auth.refused:
                assert status == 401
            elif len(body.data) > MAX_BODY_BYTES:
                assert status == 413
            elif not sent.json_media:
                assert status == 415
            elif body.pristine:
                key_errors = None if key is None else schema_errors(IDEMPOTENCY_KEY_SCHEMA, key)
                refused = refused_field(body.data)
                if key_errors:
                    assert status == 400
                    assert json.loads(outcome.response.get_body())["field"] == "Idempotency-Key"
                elif refused is not None:
                    assert status == 403
                    assert json.loads(outcome.response.get_body())["field"] == refused
                else:
                    assert status in ((202, 409) if key is not None else (202,))
            elif not body.json_ok:
                assert status == 400  # not UTF-8 JSON

        verdict(fuzzed, outcome, oracle)
        if outcome.status == 202:
            fuzzed.accepted.add(json.loads(outcome.response.get_body())["id"])

    run(fuzzed, route, strategy, case)


def test_fuzz_get(fuzzed: Fuzzed) -> None:
    route = "GET /runs/{id}"
    known = sorted(fuzzed.known())
    strategy = st.tuples(path_ids(known), auths, literal("runs"), headers(), queries)

    def case(drawn: tuple[PathId, Auth, str, Headers, dict[str, str] | None]) -> None:
        pid, auth, runs, sent, query = drawn
        outcome = send(
            fuzzed, route, "GET", f"/api/{runs}/{pid.segment}", auth, b"", sent.values, query
        )

        def oracle() -> None:
            if auth.refused:
                assert outcome.status == 401
            elif pid.decoded in fuzzed.known():
                assert outcome.status == 200
                assert json.loads(outcome.response.get_body())["id"] == pid.decoded
            else:
                assert outcome.status == 404

        verdict(fuzzed, outcome, oracle)

    run(fuzzed, route, strategy, case)


def test_fuzz_cancel(fuzzed: Fuzzed) -> None:
    route = "POST /runs/{id}/cancel"
    known = [fuzzed.pending, fuzzed.waiting, fuzzed.done]
    anything = bodies(st.just({}), ["reason"])
    strategy = st.tuples(
        path_ids(known), auths, literal("runs"), literal("cancel"), anything, headers()
    )

    def case(drawn: tuple[PathId, Auth, str, str, Body, Headers]) -> None:
        pid, auth, runs, cancel, body, sent = drawn
        path = f"/api/{runs}/{pid.segment}/{cancel}"
        outcome = send(fuzzed, route, "POST", path, auth, body.data, sent.values)

        def oracle() -> None:
            if auth.refused:
                assert outcome.status == 401
            elif pid.decoded == fuzzed.done:
                assert outcome.status == 409
            elif pid.decoded in (fuzzed.pending, fuzzed.waiting):
                assert outcome.status == 202  # nothing drives them: still cancellable
            else:
                assert outcome.status == 404

        verdict(fuzzed, outcome, oracle)

    run(fuzzed, route, strategy, case)


@st.composite
def answers(draw: st.DrawFn) -> dict[str, Any]:
    """Outputs for exactly the pending calls, in any order."""
    ids = draw(st.permutations(CALL_IDS))
    return {"toolOutputs": [{"toolCallId": i, "output": draw(st.text(max_size=40))} for i in ids]}


def test_fuzz_tool_outputs(fuzzed: Fuzzed) -> None:
    route = "POST /runs/{id}/tool-outputs"
    known = [fuzzed.waiting] * 4 + [fuzzed.pending, fuzzed.done]
    fields = ["toolOutputs", "toolCallId", "output"]
    strategy = st.tuples(
        path_ids(known, known_share=12),
        auths,
        literal("runs"),
        literal("tool-outputs"),
        bodies(answers(), fields),
        headers(),
    )

    def case(drawn: tuple[PathId, Auth, str, str, Body, Headers]) -> None:
        pid, auth, runs, action, body, sent = drawn
        path = f"/api/{runs}/{pid.segment}/{action}"
        outcome = send(fuzzed, route, "POST", path, auth, body.data, sent.values)

        def oracle() -> None:
            status = outcome.status
            if auth.refused:
                assert status == 401
            elif pid.decoded not in (fuzzed.pending, fuzzed.waiting, fuzzed.done):
                assert status == 404
            elif len(body.data) > MAX_BODY_BYTES:
                assert status == 413
            elif not sent.json_media:
                assert status == 415
            elif not body.json_ok:
                assert status == 400
            elif pid.decoded != fuzzed.waiting:
                assert status == 409
            elif body.pristine:
                assert status == 202

        verdict(fuzzed, outcome, oracle)

    run(fuzzed, route, strategy, case)

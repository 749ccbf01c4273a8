"""Garbage bodies through the real server: always a 4xx in Stripe's envelope, never a 5xx.

Raw ``httpx`` (the SDK would not send any of this): generated bracket forms, mutated valid
params, arbitrary bytes and JSON the way ``json.dumps`` never writes it, to the v1 form
endpoints, the v2 JSON endpoints and the meter event stream. Every answer is either the success
the request happened to earn, or a 4xx whose body is Stripe's error envelope (v1:
``{"error": {"type", "message", ...}}``, v2: ``{"error": {"type", "code", "message"}}``); one
shared keep-alive connection carries them all, so a dropped connection fails the test too.

The in-process fuzzing of the same decoders is ``tests/unit/test_decoding_fuzz.py``; the bugs it
found are kept here end to end as regression tests (``test_bug_*``).
"""

from __future__ import annotations

import collections
import threading
from collections.abc import Iterator
from typing import Any
from urllib.parse import quote

import httpx
import msgspec
import pytest
from hypothesis import HealthCheck, event, given, settings
from hypothesis import strategies as st

from meterd.api.adjustments import AdjustmentV1Params, AdjustmentV2Params
from meterd.api.meter_event_stream import StreamParams
from meterd.api.meter_events import CreateEventV1Params, CreateEventV2Params
from meterd.api.meters_v1 import CreateMeterParams
from meterd.api.plans import CreatePlanParams
from meterd.api.products import CreateProductParams
from meterd.config import DEFAULT_MAX_BODY_BYTES
from tests.conftest import RunningServer, new_account_key
from tests.spec import assert_matches
from tests.unit.test_decoding_fuzz import (
    NUMBERS,
    VALID_FORM,
    VALID_JSON,
    form_bodies,
    form_trees,
    json_texts,
    json_trees,
    mutated,
)

V2 = "v2-billing-meters.json"
FORM = {"Content-Type": "application/x-www-form-urlencoded"}
JSON = {"Content-Type": "application/json"}
STREAM = "/v2/billing/meter_event_stream"

FORM_ENDPOINTS = {
    "/v1/billing/meters": CreateMeterParams,
    "/v1/billing/meter_events": CreateEventV1Params,
    "/v1/billing/meter_event_adjustments": AdjustmentV1Params,
    "/v1/plans": CreatePlanParams,
    "/v1/products": CreateProductParams,
}
JSON_ENDPOINTS = {
    "/v2/billing/meter_events": CreateEventV2Params,
    "/v2/billing/meter_event_adjustments": AdjustmentV2Params,
    STREAM: StreamParams,
}
SUCCESS_SCHEMAS = {
    "/v1/billing/meters": ("billing.meter", "v1-billing-meters.json"),
    "/v1/billing/meter_events": ("billing.meter_event", "v1-billing-meters.json"),
}


# --- fixtures and checks ----------------------------------------------------------------------


_server_logs: dict[int, collections.deque[str]] = {}


def server_log(server: RunningServer) -> collections.deque[str]:
    """The server's last lines of output, read all along.

    ``start_server`` stops reading stdout once the server listens; every unhandled error then
    writes a traceback (about 8 KB) into a pipe nobody empties, and after 64 KB the server
    blocks on the write and stops answering everyone. The known bugs below are 500s, so drain.
    """
    process = server.process
    if process.pid not in _server_logs:
        tail: collections.deque[str] = collections.deque(maxlen=60)
        _server_logs[process.pid] = tail
        if process.stdout is not None:
            threading.Thread(target=tail.extend, args=(process.stdout,), daemon=True).start()
    return _server_logs[process.pid]


class Wire:
    """One account's keep-alive connection, and a meter event session token for the stream."""

    def __init__(self, server: RunningServer, backend: str) -> None:
        self.backend = backend
        self.log = server_log(server)
        self.key = new_account_key(server, "test")
        self.http = httpx.Client(
            base_url=server.base_url, headers={"Authorization": f"Bearer {self.key}"}, timeout=30
        )
        session = self.http.post("/v2/billing/meter_event_session", json={})
        assert session.status_code == 200, session.text
        self.token = session.json()["authentication_token"]

    def post(self, path: str, body: bytes | str, headers: dict[str, str]) -> httpx.Response:
        auth = {"Authorization": f"Bearer {self.token}"} if path == STREAM else {}
        return self.http.post(path, content=body, headers={**headers, **auth})

    def alone(
        self, method: str, path: str, body: bytes = b"", headers: dict[str, str] = FORM
    ) -> httpx.Response:
        """On a connection of its own: after a 500, uvicorn closes the connection, and the
        next request on it could fail for that alone."""
        key = self.token if path == STREAM else self.key
        with httpx.Client(base_url=self.http.base_url, timeout=30) as own:
            return own.request(
                method, path, content=body, headers={**headers, "Authorization": f"Bearer {key}"}
            )


@pytest.fixture(scope="module")
def wire(server: RunningServer, backend: str) -> Iterator[Wire]:
    made = Wire(server, backend)
    yield made
    made.http.close()


PARAM_MAX_LENGTH = 5_000
"""Stripe's schema bounds ``error.param`` (and ``message`` at 40,000): see
test_bug_a_long_param_name_breaks_the_error_schema."""


def v1_error_of(response: httpx.Response, *, clip_long_names: bool = False) -> dict[str, Any]:
    body = response.json()
    error = body["error"]
    if clip_long_names and len(error.get("param", "")) > PARAM_MAX_LENGTH:
        error = {**error, "param": error["param"][:PARAM_MAX_LENGTH], "message": "clipped"}
    assert_matches({"error": error}, "error")
    assert isinstance(error["type"], str) and isinstance(error["message"], str), error
    return error  # type: ignore[no-any-return]


def v2_error_of(response: httpx.Response) -> dict[str, Any]:
    body = response.json()
    assert_matches(body, "v2.error", V2)
    error = body["error"]
    for field in ("type", "code", "message"):
        assert isinstance(error.get(field), str), error
    return error  # type: ignore[no-any-return]


def assert_answered_cleanly(wire: Wire, response: httpx.Response, path: str) -> None:
    """A success in its own shape, or a 4xx in the envelope of the path's API version."""
    if response.status_code >= 500:
        pytest.fail(
            f"{path} answered {response.status_code}: {response.text[:300]}\n"
            + "\n".join(list(wire.log)[-25:])
        )
    assert response.headers["content-type"] == "application/json", response.headers
    event(f"{path} {response.status_code}")  # --hypothesis-show-statistics shows the spread
    if response.status_code == 200:
        if path in SUCCESS_SCHEMAS:
            assert_matches(response.json(), *SUCCESS_SCHEMAS[path])
        elif path == STREAM:
            assert response.json() == {}
        return
    assert 400 <= response.status_code < 500
    if path.startswith("/v1/"):
        v1_error_of(response, clip_long_names=True)  # a known bug; pinned below
    else:
        v2_error_of(response)


def encode_form(tree: Any) -> str:
    """A params tree in Stripe's bracket form (``a[b][0]=x``), names and values escaped."""
    if not isinstance(tree, dict):
        return quote(str(tree), safe="")
    pairs: list[tuple[str, str]] = []

    def walk(value: Any, name: str) -> None:
        if isinstance(value, dict):
            for key, item in value.items():
                walk(item, f"{name}[{quote(str(key), safe='')}]")
        elif isinstance(value, list):
            for index, item in enumerate(value):
                walk(item, f"{name}[{index}]")
        else:
            pairs.append((name, quote(str(value), safe="")))

    for key, value in tree.items():
        walk(value, quote(str(key), safe=""))
    return "&".join(f"{name}={value}" for name, value in pairs)


def has_nul(value: Any) -> bool:
    if isinstance(value, str):
        return "\x00" in value
    if isinstance(value, dict):
        return any(has_nul(k) or has_nul(v) for k, v in value.items())
    if isinstance(value, list):
        return any(has_nul(item) for item in value)
    return False


# --- fuzzing through the server ---------------------------------------------------------------


@st.composite
def form_requests(draw: st.DrawFn) -> tuple[str, bytes]:
    path = draw(st.sampled_from(sorted(FORM_ENDPOINTS)))
    body = draw(
        form_bodies().map(str.encode)
        | mutated(VALID_FORM[FORM_ENDPOINTS[path]], form_trees).map(
            lambda tree: encode_form(tree).encode()
        )
        | st.binary(max_size=200)
    )
    return path, body


@st.composite
def json_requests(draw: st.DrawFn) -> tuple[str, bytes]:
    path = draw(st.sampled_from(sorted(JSON_ENDPOINTS)))
    body = draw(
        json_texts()
        | mutated(VALID_JSON[JSON_ENDPOINTS[path]], json_trees).map(msgspec.json.encode)
        | st.binary(max_size=200)
    )
    return path, body


E2E_FUZZ = settings(
    max_examples=200,
    deadline=None,
    suppress_health_check=[HealthCheck.too_slow, HealthCheck.filter_too_much],
)


@E2E_FUZZ
@given(form_requests())
def test_fuzzed_form_bodies_get_a_v1_answer(wire: Wire, case: tuple[str, bytes]) -> None:
    path, body = case
    assert_answered_cleanly(wire, wire.post(path, body, FORM), path)


@E2E_FUZZ
@given(json_requests())
def test_fuzzed_json_bodies_get_a_v2_answer(wire: Wire, case: tuple[str, bytes]) -> None:
    path, body = case
    assert_answered_cleanly(wire, wire.post(path, body, JSON), path)


# --- chosen bodies ----------------------------------------------------------------------------

FORM_BODIES = {
    "nul": b"event_name=a%00&payload[value]=1",
    "raw-nul": b"event_name=a\x00b",
    "invalid-utf8": b"event_name=%ff%fe&payload[k]=%C3",
    "raw-invalid-utf8": b"event_name=\xff",
    "encoded-surrogate": b"display_name=%ED%A0%80",
    "huge-numbers": "&".join(f"timestamp={quote(n)}&limit={quote(n)}" for n in NUMBERS).encode(),
    "too-many-params": "&".join(f"p{i}=1" for i in range(1_001)).encode(),
    "too-deep": b"a" + b"[b]" * 8 + b"=1",
    "far-too-deep": b"a" + b"[b]" * 10_000 + b"=1",
    "append-then-index": b"payload[]=1&payload[0]=2",
    "value-then-hash": b"payload=1&payload[k]=2",
    "unbalanced": b"payload[k=1&payload]k[=2",
    "empty-name": b"=1&&=",
    "repeated": b"event_name=a&event_name=b&event_name[]=c",
    "json": b'{"event_name": "e"}',
    "huge-index": b"expand[" + b"9" * 5_000 + b"]=x",
}
JSON_BODIES = {
    "huge-integer": b'{"event_name":"e","payload":{},"timestamp":1' + b"0" * 5_000 + b"}",
    "huge-negative": b'{"events":[{"event_name":"e","payload":{"v":-1' + b"0" * 5_000 + b"}}]}",
    "huge-float": b'{"event_name":"e","payload":{"v":1e999}}',
    "repeated-keys": b'{"event_name":"a","event_name":1,"payload":{},"payload":[]}',
    "raw-nul": b'{"event_name":"a\x00"}',
    "lone-surrogate": b'{"event_name":"\\ud800","payload":{}}',
    "bom": b'\xef\xbb\xbf{"event_name":"e"}',
    "utf16": '{"event_name":"e"}'.encode("utf-16"),
    "top-level-array": b"[]",
    "top-level-null": b"null",
    "truncated": b'{"event_name":"e","payload":{',
    "two-objects": b"{}{}",
    "nested-200": b'{"payload":' + b"[" * 200 + b"]" * 200 + b"}",
    "form": b"event_name=e&payload[v]=1",
}


@pytest.mark.parametrize("body", list(FORM_BODIES.values()), ids=list(FORM_BODIES))
@pytest.mark.parametrize("path", sorted(FORM_ENDPOINTS))
def test_chosen_form_bodies(wire: Wire, path: str, body: bytes) -> None:
    response = wire.post(path, body, FORM)
    assert 400 <= response.status_code < 500, response.text[:300]
    v1_error_of(response)


@pytest.mark.parametrize("body", list(JSON_BODIES.values()), ids=list(JSON_BODIES))
@pytest.mark.parametrize("path", sorted(JSON_ENDPOINTS))
def test_chosen_json_bodies(wire: Wire, path: str, body: bytes) -> None:
    response = wire.post(path, body, JSON)
    assert 400 <= response.status_code < 500, response.text[:300]
    v2_error_of(response)


def chunks(size: int) -> Iterator[bytes]:
    """A body of ``size`` bytes sent chunked, so no Content-Length announces it."""
    sent = 0
    while sent < size:
        piece = min(64 * 1024, size - sent)
        yield b"a" * piece
        sent += piece


@pytest.mark.parametrize("declared", [True, False], ids=["content-length", "chunked"])
@pytest.mark.parametrize(
    "path", ["/v1/billing/meters", "/v1/billing/meter_events", "/v2/billing/meter_events", STREAM]
)
def test_a_body_over_the_limit_is_413_in_the_envelope(
    server: RunningServer, wire: Wire, path: str, declared: bool
) -> None:
    size = DEFAULT_MAX_BODY_BYTES + 1
    auth = wire.token if path == STREAM else wire.key
    headers = {"Authorization": f"Bearer {auth}", **(FORM if path.startswith("/v1/") else JSON)}
    with httpx.Client(base_url=server.base_url, timeout=30) as own:
        body: Any = b"a" * size if declared else chunks(size)
        response = own.post(path, content=body, headers=headers)
    assert response.status_code == 413, response.text[:300]
    error = v1_error_of(response) if path.startswith("/v1/") else v2_error_of(response)
    assert "too large" in error["message"]
    assert error["type"] == "invalid_request_error"


def test_a_body_at_the_limit_is_read(wire: Wire) -> None:
    body = b"event_name=e&payload[v]=" + b"x" * (DEFAULT_MAX_BODY_BYTES - 24)
    assert len(body) == DEFAULT_MAX_BODY_BYTES
    response = wire.post("/v1/billing/meter_events", body, FORM)
    assert response.status_code == 400  # read whole, then refused for the payload's length
    assert v1_error_of(response)["param"] == "payload[v]"


# --- known bugs -------------------------------------------------------------------------------

DEEP = 10_000


@pytest.mark.parametrize(
    "body",
    [b"[" * DEEP + b"]" * DEEP, b'{"events":' + b"[" * DEEP + b"]" * DEEP + b"}"],
    ids=["arrays", "in-an-object"],
)
@pytest.mark.parametrize("path", [*sorted(JSON_ENDPOINTS), "/v2/billing/meter_event_session"])
def test_bug_deeply_nested_json_is_a_500(wire: Wire, path: str, body: bytes) -> None:
    response = wire.alone("POST", path, body, JSON)
    assert response.status_code == 400, response.text[:300]
    v2_error_of(response)


@pytest.mark.parametrize("path", [*sorted(JSON_ENDPOINTS), "/v2/billing/meter_event_session"])
def test_bug_invalid_utf8_inside_a_json_string_is_a_500(wire: Wire, path: str) -> None:
    response = wire.alone("POST", path, b'{"events":[{"event_name":"\xff"}]}', JSON)
    assert response.status_code == 400, response.text[:300]
    v2_error_of(response)


NUL_REASON = (
    "BUG (PostgreSQL only): a JSON string with \\u0000 reaches the database, and PostgreSQL "
    "text cannot hold NUL: psycopg.DataError, a 500 api_error (expected: 400 like v1's "
    "'parameters may not contain NUL bytes'; SQLite answers as for any other name). On the "
    "stream the whole group commit fails, so other requests batched with it fail too"
)


@pytest.mark.parametrize(
    ("path", "params", "status"),
    [
        ("/v2/billing/meter_events", {"event_name": "e\x00", "payload": {"value": "1"}}, 400),
        (
            "/v2/billing/meter_event_adjustments",
            {"event_name": "e", "type": "cancel", "cancel": {"identifier": "i\x00"}},
            400,
        ),
        (STREAM, {"events": [{"event_name": "e\x00", "payload": {"value": "1"}}]}, 400),
        (
            STREAM,
            {"events": [{"event_name": "e", "payload": {}, "identifier": "\x00"}]},
            400,
        ),
    ],
    ids=["v2-event-name", "v2-cancel-identifier", "stream-event-name", "stream-identifier"],
)
def test_bug_nul_in_json_strings(
    request: pytest.FixtureRequest, wire: Wire, path: str, params: Any, status: int
) -> None:
    response = wire.alone("POST", path, msgspec.json.encode(params), JSON)
    assert response.status_code == status, response.text[:300]
    if status == 400:
        v2_error_of(response)


@pytest.mark.parametrize(
    ("method", "path"),
    [
        ("GET", "/v1/billing/meters/mtr_%00"),
        ("POST", "/v1/billing/meters/mtr_%00"),
        ("POST", "/v1/billing/meters/mtr_%00/deactivate"),
        ("GET", "/v1/billing/meters/mtr_%00/event_summaries?customer=c&start_time=0&end_time=60"),
        ("GET", "/v1/products/prod_%00"),
        ("DELETE", "/v1/products/prod_%00"),
        ("GET", "/v1/plans/plan_%00"),
        ("DELETE", "/v1/plans/plan_%00"),
        ("GET", "/v2/core/events/evt_%00"),
    ],
)
def test_bug_nul_in_an_object_id_on_postgresql(
    request: pytest.FixtureRequest, wire: Wire, method: str, path: str
) -> None:
    response = wire.alone(method, path)
    assert response.status_code == 404, response.text[:300]
    error = v1_error_of(response) if path.startswith("/v1/") else v2_error_of(response)
    assert error["code"] == "resource_missing"


@pytest.mark.parametrize(
    "query",
    [
        "created=99999999999999999999",
        "created[gte]=99999999999999999999",
        "created[gt]=9223372036854775807",
        "created[lt]=-9223372036854775808",
    ],
)
@pytest.mark.parametrize("path", ["/v1/plans", "/v1/products"])
def test_bug_created_filter_past_64_bits_on_sqlite(
    request: pytest.FixtureRequest, wire: Wire, path: str, query: str
) -> None:
    response = wire.alone("GET", f"{path}?{query}")
    assert response.status_code in (200, 400), response.text[:300]
    if response.status_code == 200:
        assert response.json()["data"] == []
    else:
        assert v1_error_of(response)["param"].startswith("created")


@pytest.mark.parametrize(
    ("path", "body", "headers"),
    [
        ("/v1/billing/meters", b"x+-+at+%60%24.y=1", FORM),
        ("/v1/billing/meter_events", b"x+-+at+%60%24.y=1", FORM),
        ("/v2/billing/meter_events", b'{"x - at `$.y":1}', JSON),
    ],
    ids=["v1-meters", "v1-events", "v2-events"],
)
def test_bug_unknown_param_named_like_a_msgspec_path(
    wire: Wire, path: str, body: bytes, headers: dict[str, str]
) -> None:
    response = wire.alone("POST", path, body, headers)
    assert response.status_code == 400, response.text[:300]
    error = v1_error_of(response) if path.startswith("/v1/") else v2_error_of(response)
    assert error["code"] == "parameter_unknown"


@pytest.mark.parametrize("length", [PARAM_MAX_LENGTH + 1, 40_001], ids=["param", "message"])
@pytest.mark.parametrize("path", ["/v1/billing/meters", "/v1/billing/meter_events"])
def test_bug_a_long_param_name_breaks_the_error_schema(wire: Wire, path: str, length: int) -> None:
    response = wire.post(path, b"x" * length + b"=1", FORM)
    assert response.status_code == 400
    assert v1_error_of(response)["code"] == "parameter_unknown"

"""Meter event sessions and the high-throughput meter event stream, through the ``stripe`` SDK.

A session (``POST /v2/billing/meter_event_session``, authenticated with a secret key) hands out
a token that lives 15 minutes; the stream (``POST /v2/billing/meter_event_stream``,
authenticated with that token) takes up to 100 events per request, checks only their shape
synchronously, and answers ``{}``. Semantic problems become error reports, as for v1, and a
repeated identifier is dropped silently (API-NOTES Part A).
"""

from __future__ import annotations

import concurrent.futures
import json
import time
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta, timezone
from decimal import Decimal
from pathlib import Path
from typing import Any

import httpx
import pytest
import stripe

from tests.conftest import (
    RunningServer,
    database_rows,
    fresh_database,
    new_account_key,
    process_alive,
    sdk_client,
    start_server,
    stop_server,
)
from tests.e2e.support import new_meter, raw, rfc3339, total, unique
from tests.spec import assert_matches, assert_matches_response

V2 = "v2-billing-meters.json"
DAY = 86400
STREAM = "/v2/billing/meter_event_stream"
TRIGGERED = "v1.billing.meter.error_report_triggered"
NO_METER = "v1.billing.meter.no_meter_found"


# --- helpers ----------------------------------------------------------------------------------


def stream_client(base_url: str, token: str) -> stripe.StripeClient:
    """A client that authenticates with a session token, as the stream requires."""
    return stripe.StripeClient(
        token,
        base_addresses={"api": base_url, "meter_events": base_url},
        max_network_retries=0,
    )


def send(stream: stripe.StripeClient, events: list[dict[str, Any]]) -> Any:
    return stream.v2.billing.meter_event_stream.create(params={"events": events})  # type: ignore[typeddict-item]


def event(
    event_name: str,
    value: str | None = "1",
    customer: str | None = "c",
    **extra: Any,
) -> dict[str, Any]:
    payload = {}
    if customer is not None:
        payload["stripe_customer_id"] = customer
    if value is not None:
        payload["value"] = value
    return {"event_name": event_name, "payload": payload, **extra}


def iso(moment: datetime) -> str:
    return moment.isoformat()


def post_raw(base_url: str, body: bytes | str, token: str | None, **headers: str) -> httpx.Response:
    sent = {"Content-Type": "application/json", **headers}
    if token is not None:
        sent["Authorization"] = f"Bearer {token}"
    return httpx.post(base_url + STREAM, content=body, headers=sent)


def v2_error_of(exc: pytest.ExceptionInfo[stripe.StripeError], status: int) -> Any:
    assert exc.value.http_status == status
    body = exc.value.json_body
    assert body is not None
    assert_matches(body, "v2.error", V2)
    return body["error"]


def reports(client: stripe.StripeClient, **params: Any) -> list[Any]:
    return list(client.v2.core.events.list(params).auto_paging_iter())  # type: ignore[arg-type]


# --- fixtures ---------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def session(shared: stripe.StripeClient) -> Any:
    return shared.v2.billing.meter_event_session.create()


@pytest.fixture(scope="module")
def stream(server: RunningServer, session: Any) -> stripe.StripeClient:
    return stream_client(server.base_url, session.authentication_token)


# --- sessions ---------------------------------------------------------------------------------


def test_session_has_stripes_shape_and_lives_15_minutes(shared: stripe.StripeClient) -> None:
    before = datetime.now(UTC).replace(microsecond=0)
    session = shared.v2.billing.meter_event_session.create()
    after = datetime.now(UTC)
    body = raw(session)
    assert_matches(body, "v2.billing.meter_event_session", V2)
    assert isinstance(session, stripe.v2.billing.MeterEventSession)
    assert set(body) == {
        "id",
        "object",
        "authentication_token",
        "created",
        "expires_at",
        "livemode",
    }
    assert body["object"] == "v2.billing.meter_event_session"
    assert body["id"].startswith("mes_test_")
    assert body["livemode"] is False
    assert isinstance(body["authentication_token"], str) and len(body["authentication_token"]) > 20
    created = rfc3339(body["created"])
    assert before <= created <= after
    assert rfc3339(body["expires_at"]) - created == timedelta(minutes=15)


def test_every_session_has_its_own_id_and_token_and_each_works(
    server: RunningServer, shared: stripe.StripeClient
) -> None:
    sessions = [shared.v2.billing.meter_event_session.create() for _ in range(3)]
    assert len({s.id for s in sessions}) == 3
    assert len({s.authentication_token for s in sessions}) == 3
    meter = new_meter(shared)
    for number, s in enumerate(sessions, start=1):
        assert s.authentication_token != s.id
        send(stream_client(server.base_url, s.authentication_token), [event(meter.event_name)])
        assert total(shared, meter.id) == number


def test_a_session_made_with_a_live_key_is_live(server: RunningServer) -> None:
    live = server.client(new_account_key(server, "live"))
    session = live.v2.billing.meter_event_session.create()
    body = raw(session)
    assert_matches(body, "v2.billing.meter_event_session", V2)
    assert body["livemode"] is True
    assert body["id"].startswith("mes_") and not body["id"].startswith("mes_test_")
    meter = new_meter(live)
    send(stream_client(server.base_url, session.authentication_token), [event(meter.event_name)])
    assert total(live, meter.id) == 1


def test_session_takes_no_params(shared: stripe.StripeClient) -> None:
    with pytest.raises(stripe.InvalidRequestError) as exc:
        shared.v2.billing.meter_event_session.create({"colour": "red"})  # type: ignore[arg-type]
    error = v2_error_of(exc, 400)
    assert error["code"] == "parameter_unknown"
    assert "colour" in error["message"]


def test_session_needs_a_secret_key_not_a_session_token(
    server: RunningServer, session: Any
) -> None:
    with pytest.raises(stripe.AuthenticationError) as exc:
        stream_client(
            server.base_url, session.authentication_token
        ).v2.billing.meter_event_session.create()
    v2_error_of(exc, 401)
    # Nor does a session token open any other endpoint.
    with pytest.raises(stripe.AuthenticationError):
        stream_client(server.base_url, session.authentication_token).v1.billing.meters.list()


# --- the stream: counting ---------------------------------------------------------------------


def test_stream_answers_an_empty_object(
    server: RunningServer, shared: stripe.StripeClient, session: Any
) -> None:
    meter = new_meter(shared)
    response = post_raw(
        server.base_url,
        json.dumps({"events": [event(meter.event_name)]}),
        session.authentication_token,
        **{"Stripe-Version": "2026-06-24.dahlia"},
    )
    assert response.status_code == 200, response.text
    assert response.json() == {}
    assert_matches_response(response.json(), STREAM, "post", V2)
    assert response.headers["content-type"].startswith("application/json")
    assert response.headers["request-id"].startswith("req_")
    assert response.headers["stripe-version"] == "2026-06-24.dahlia"
    assert total(shared, meter.id) == 1


def test_stream_counts_sums_with_exact_decimals(
    shared: stripe.StripeClient, stream: stripe.StripeClient
) -> None:
    meter = new_meter(shared)
    values = ["0.000000000001", "2.5", "12345678.000000000001", "0.1", "0.2", "7"]
    assert send(stream, [event(meter.event_name, v) for v in values]) in (None, {})
    assert total(shared, meter.id) == sum(map(Decimal, values)) == Decimal("12345687.800000000002")
    assert total(shared, meter.id, "someone_else") == 0


def test_stream_counts_by_customer(
    shared: stripe.StripeClient, stream: stripe.StripeClient
) -> None:
    meter = new_meter(shared)
    send(
        stream,
        [
            event(meter.event_name, "1", "cus_a"),
            event(meter.event_name, "2", "cus_b"),
            event(meter.event_name, "4", "cus_a"),
        ],
    )
    assert total(shared, meter.id, "cus_a") == 5
    assert total(shared, meter.id, "cus_b") == 2


def test_stream_feeds_count_meters(
    shared: stripe.StripeClient, stream: stripe.StripeClient
) -> None:
    meter = new_meter(shared, "count")
    send(
        stream,
        [
            event(meter.event_name, None),
            event(meter.event_name, "9"),
            event(meter.event_name, "not a number"),  # ignored by a count meter
        ],
    )
    send(stream, [event(meter.event_name, None)])
    assert total(shared, meter.id) == 4


def test_stream_feeds_last_meters_latest_timestamp_ties_to_the_later_event(
    shared: stripe.StripeClient, stream: stripe.StripeClient
) -> None:
    meter = new_meter(shared, "last")
    base = datetime.now(UTC).replace(microsecond=0) - timedelta(hours=3)
    at = [base + timedelta(seconds=s) for s in (10, 50, 20, 50, 30)]
    values = ["1", "7.25", "3", "8.5", "100"]
    send(
        stream,
        [event(meter.event_name, v, timestamp=iso(t)) for v, t in zip(values, at, strict=True)],
    )
    assert total(shared, meter.id) == Decimal("8.5")


def test_stream_honours_the_timestamp_and_its_offset(
    shared: stripe.StripeClient, stream: stripe.StripeClient
) -> None:
    meter = new_meter(shared)
    minute = (int(time.time()) - 3 * 3600) // 60 * 60
    when = datetime.fromtimestamp(minute + 30, UTC)
    kolkata = when.astimezone(timezone(timedelta(hours=5, minutes=30)))
    send(
        stream,
        [
            event(meter.event_name, "3", timestamp=kolkata.isoformat()),
            event(meter.event_name, "4", timestamp=when.isoformat().replace("+00:00", "Z")),
        ],
    )
    assert total(shared, meter.id, start=minute, end=minute + 60) == 7
    assert total(shared, meter.id, start=minute + 60, end=minute + 3600) == 0
    # No timestamp means now.
    send(stream, [event(meter.event_name, "5")])
    now = int(time.time())
    assert total(shared, meter.id, start=now // 60 * 60 - 60, end=now // 60 * 60 + 120) == 5


def test_stream_takes_100_events(shared: stripe.StripeClient, stream: stripe.StripeClient) -> None:
    meter = new_meter(shared)
    events = [event(meter.event_name, f"{i}.5", identifier=unique(f"e{i}")) for i in range(100)]
    send(stream, events)
    assert total(shared, meter.id) == sum(Decimal(f"{i}.5") for i in range(100))


# --- the stream: malformed requests -----------------------------------------------------------

OK = {"payload": {"stripe_customer_id": "c", "value": "1"}}


@pytest.mark.parametrize(
    ("events", "code", "mentions"),
    [
        (lambda n: [event(n)] * 101, None, "100"),
        (lambda n: [], None, "events"),
        (lambda n: None, "parameter_missing", "events"),
        (lambda n: "not a list", None, "array"),
        (
            lambda n: [event(n), {**event(n), "colour": "red"}],
            "parameter_unknown",
            "events[1][colour]",
        ),
        (
            lambda n: [event(n), {"payload": OK["payload"]}],
            "parameter_missing",
            "events[1][event_name]",
        ),
        (lambda n: [event(n), {"event_name": n}], "parameter_missing", "events[1][payload]"),
        (lambda n: [event(n), event("")], "parameter_invalid_empty", "events[1][event_name]"),
        (lambda n: [event(n), event("e" * 101)], None, "100 characters"),
        (lambda n: [event(n), event(n, identifier="i" * 101)], None, "100 characters"),
        (
            lambda n: [event(n), event(n, identifier="")],
            "parameter_invalid_empty",
            "events[1][identifier]",
        ),
        (lambda n: [event(n), event(n, "1" * 101)], None, "100 characters"),
        (
            lambda n: [
                event(n),
                {"event_name": n, "payload": {"stripe_customer_id": "c", "value": 1}},
            ],
            None,
            None,
        ),
        (lambda n: [event(n), {"event_name": n, "payload": "cus_1"}], None, None),
        (
            lambda n: [event(n), event(n, timestamp="2026-01-01T00:00:00")],
            None,
            "events[1][timestamp]",
        ),
        (lambda n: [event(n), event(n, timestamp="yesterday")], None, "timestamp"),
        (lambda n: [event(n), event(n, timestamp=1767225600)], None, None),
    ],
    ids=[
        "101-events",
        "no-events",
        "events-missing",
        "events-not-a-list",
        "unknown-field-in-event",
        "no-event_name",
        "no-payload",
        "empty-event_name",
        "long-event_name",
        "long-identifier",
        "empty-identifier",
        "long-value",
        "value-not-a-string",
        "payload-not-an-object",
        "timestamp-without-time-zone",
        "timestamp-not-a-time",
        "timestamp-as-unix-seconds",
    ],
)
def test_malformed_requests_are_400_and_store_nothing(
    shared: stripe.StripeClient,
    stream: stripe.StripeClient,
    events: Any,
    code: str | None,
    mentions: str | None,
) -> None:
    meter = new_meter(shared)
    sent = events(meter.event_name)
    params = {} if sent is None else {"events": sent}
    with pytest.raises(stripe.InvalidRequestError) as exc:
        stream.v2.billing.meter_event_stream.create(params=params)  # type: ignore[arg-type]
    error = v2_error_of(exc, 400)
    assert error["type"] == "invalid_request_error"
    assert error["message"]
    if code is not None:
        assert error["code"] == code
    if mentions is not None:
        assert mentions in error["message"]
    assert total(shared, meter.id) == 0, "a rejected request stores none of its events"


def test_unknown_top_level_field_is_400(
    shared: stripe.StripeClient, stream: stripe.StripeClient
) -> None:
    meter = new_meter(shared)
    with pytest.raises(stripe.InvalidRequestError) as exc:
        stream.v2.billing.meter_event_stream.create(
            params={"events": [event(meter.event_name)], "colour": "red"}  # type: ignore[typeddict-unknown-key]
        )
    error = v2_error_of(exc, 400)
    assert error["code"] == "parameter_unknown"
    assert "colour" in error["message"]
    assert total(shared, meter.id) == 0


@pytest.mark.parametrize(
    "body",
    [b"{not json", b'{"events": [', b"", b"   ", b"[1, 2]", b'"events"', b"null", b"\xff\xfe"],
    ids=["garbage", "truncated", "empty", "blank", "array", "string", "null", "not-utf8"],
)
def test_malformed_json_is_400_in_the_v2_envelope(
    server: RunningServer, session: Any, body: bytes
) -> None:
    response = post_raw(server.base_url, body, session.authentication_token)
    assert response.status_code == 400, response.text
    payload = response.json()
    assert_matches(payload, "v2.error", V2)
    assert payload["error"]["type"] == "invalid_request_error"
    assert payload["error"]["message"]
    assert response.headers["request-id"].startswith("req_")


# --- the stream: authentication ---------------------------------------------------------------


def test_unknown_token_is_401(server: RunningServer, shared: stripe.StripeClient) -> None:
    meter = new_meter(shared)
    bogus = stream_client(server.base_url, "mets_" + "x" * 48)
    with pytest.raises(stripe.AuthenticationError) as exc:
        send(bogus, [event(meter.event_name)])
    error = v2_error_of(exc, 401)
    assert error["type"] == "invalid_request_error"
    assert total(shared, meter.id) == 0


def test_a_secret_key_is_not_a_session_token(
    server: RunningServer, shared_key: str, shared: stripe.StripeClient
) -> None:
    meter = new_meter(shared)
    with pytest.raises(stripe.AuthenticationError) as exc:
        send(stream_client(server.base_url, shared_key), [event(meter.event_name)])
    error = v2_error_of(exc, 401)
    assert shared_key not in error["message"], "a secret is never echoed"
    assert total(shared, meter.id) == 0


@pytest.mark.parametrize("header", [None, "", "Bearer", "Token abc", "Basic Zm9vOg=="])
def test_missing_or_malformed_authorization_is_401(
    server: RunningServer, shared: stripe.StripeClient, header: str | None
) -> None:
    meter = new_meter(shared)
    headers = {} if header is None else {"Authorization": header}
    response = httpx.post(
        server.base_url + STREAM, json={"events": [event(meter.event_name)]}, headers=headers
    )
    assert response.status_code == 401, response.text
    body = response.json()
    assert_matches(body, "v2.error", V2)
    assert body["error"]["message"]
    assert response.headers["request-id"].startswith("req_")
    assert total(shared, meter.id) == 0


def test_authentication_comes_before_parsing(server: RunningServer) -> None:
    """An unauthenticated caller learns nothing about the body: 401, not 400."""
    response = post_raw(server.base_url, b"{not json", "mets_unknown")
    assert response.status_code == 401


@pytest.fixture(scope="module")
def short_server(backend: str, tmp_path_factory: pytest.TempPathFactory) -> Iterator[RunningServer]:
    """A server of its own whose sessions live two seconds."""
    with fresh_database(backend, tmp_path_factory.mktemp("meterd-short")) as url:
        running = start_server(url, "--session-lifetime", "2")
        assert running.secret_key
        yield running
        stop_server(running)


def test_an_expired_token_is_temporary_session_expired(short_server: RunningServer) -> None:
    client = short_server.client()
    meter = new_meter(client)
    used = client.v2.billing.meter_event_session.create()
    unused = client.v2.billing.meter_event_session.create()
    body = raw(used)
    assert_matches(body, "v2.billing.meter_event_session", V2)
    expires = rfc3339(body["expires_at"])
    assert expires - rfc3339(body["created"]) == timedelta(seconds=2)
    send(stream_client(short_server.base_url, used.authentication_token), [event(meter.event_name)])

    time.sleep(max(0.0, expires.timestamp() - time.time()) + 0.3)
    for session in (used, unused):  # one the server has seen (and may cache), one it has not
        with pytest.raises(stripe.TemporarySessionExpiredError) as exc:
            send(
                stream_client(short_server.base_url, session.authentication_token),
                [event(meter.event_name, "100")],
            )
        assert exc.value.http_status == 401
        error_body = exc.value.json_body
        assert error_body is not None
        assert_matches(error_body, "v2.error", V2)
        assert_matches(error_body, "v2.error.billing_meter_event_session_expired", V2)
        assert error_body["error"]["type"] == "temporary_session_expired"
        assert error_body["error"]["code"] == "billing_meter_event_session_expired"
        assert exc.value.code == "billing_meter_event_session_expired"
    assert total(client, meter.id) == 1, "nothing sent with an expired token counts"

    # The remedy the error names: a new session.
    fresh = client.v2.billing.meter_event_session.create()
    send(
        stream_client(short_server.base_url, fresh.authentication_token), [event(meter.event_name)]
    )
    assert total(client, meter.id) == 2


def test_an_expired_token_is_still_expired_after_a_restart(
    backend: str, tmp_path_factory: pytest.TempPathFactory
) -> None:
    """Expiry does not depend on when the server last pruned: a client told "invalid token"
    instead of "expired" would not know that a new session is the remedy."""
    with fresh_database(backend, tmp_path_factory.mktemp("meterd-restart")) as url:
        expired_after_restart(url)


def expired_after_restart(url: str) -> None:
    first = start_server(url, "--session-lifetime", "1")
    try:
        client = first.client()
        new_meter(client)
        session = client.v2.billing.meter_event_session.create()
        expires = rfc3339(session.expires_at)
        time.sleep(max(0.0, expires.timestamp() - time.time()) + 0.2)
    finally:
        stop_server(first)
    again = start_server(url, "--session-lifetime", "1")
    try:
        stream = stream_client(again.base_url, session.authentication_token)
        with pytest.raises(stripe.TemporarySessionExpiredError) as exc:
            send(stream, [event(unique("ev"))])
        assert exc.value.http_status == 401
        assert exc.value.code == "billing_meter_event_session_expired"
    finally:
        stop_server(again)


# --- isolation --------------------------------------------------------------------------------


def test_a_session_streams_into_its_own_account_only(server: RunningServer) -> None:
    mine = server.client(new_account_key(server, "test"))
    theirs = server.client(new_account_key(server, "test"))
    name = unique("ev")
    for client in (mine, theirs):
        client.v1.billing.meters.create(
            {
                "display_name": "Same event name",
                "event_name": name,
                "default_aggregation": {"formula": "sum"},
            }
        )
    [my_meter] = mine.v1.billing.meters.list().data
    [their_meter] = theirs.v1.billing.meters.list().data
    session = mine.v2.billing.meter_event_session.create()
    send(stream_client(server.base_url, session.authentication_token), [event(name, "5")])
    assert total(mine, my_meter.id) == 5
    assert total(theirs, their_meter.id) == 0
    assert reports(theirs) == []

    # And the other way round, with the same identifier: identifiers are per account.
    their_session = theirs.v2.billing.meter_event_session.create()
    send(
        stream_client(server.base_url, their_session.authentication_token),
        [event(name, "2", identifier="same"), event(name, "2")],
    )
    send(
        stream_client(server.base_url, session.authentication_token),
        [event(name, "1", identifier="same")],
    )
    assert total(mine, my_meter.id) == 6
    assert total(theirs, their_meter.id) == 4


def test_a_session_streams_into_its_own_mode_only(server: RunningServer) -> None:
    # The first account's test key, and a live key of the same account.
    test_client = server.client(server.secret_key)
    live_client = server.client(
        server.meterd("keys", "create", "--mode", "live").stdout.split()[-1]
    )
    live_meter = new_meter(live_client)
    test_meter = new_meter(test_client)
    test_session = test_client.v2.billing.meter_event_session.create()
    live_session = live_client.v2.billing.meter_event_session.create()
    assert test_session.livemode is False and live_session.livemode is True
    to_test = stream_client(server.base_url, test_session.authentication_token)
    to_live = stream_client(server.base_url, live_session.authentication_token)

    send(to_test, [event(live_meter.event_name, "5")])
    send(to_live, [event(test_meter.event_name, "7")])
    assert total(live_client, live_meter.id) == 0
    assert total(test_client, test_meter.id) == 0
    # Each side reports an event name it has no meter for.
    for client, name in (
        (test_client, live_meter.event_name),
        (live_client, test_meter.event_name),
    ):
        found = [r for r in reports(client) if name in r.data.developer_message_summary]
        assert [r.type for r in found] == [NO_METER]
        assert found[0].livemode is (client is live_client)

    send(to_live, [event(live_meter.event_name, "3")])
    send(to_test, [event(test_meter.event_name, "4")])
    assert total(live_client, live_meter.id) == 3
    assert total(test_client, test_meter.id) == 4


# --- semantic problems become error reports ---------------------------------------------------


def test_semantic_problems_are_accepted_and_reported(
    server: RunningServer, client: stripe.StripeClient
) -> None:
    meter = new_meter(client)
    archived = new_meter(client)
    client.v1.billing.meters.deactivate(archived.id)
    missing = unique("nomtr")
    now = datetime.now(UTC)
    name = meter.event_name
    cases = {
        "no_meter": event(missing),
        "archived_meter": event(archived.event_name),
        "meter_event_no_customer_defined": event(name, customer=None),
        "meter_event_invalid_value-negative": event(name, "-3"),
        "meter_event_invalid_value-not-a-number": event(name, "ten"),
        "meter_event_invalid_value-missing": event(name, None),
        "meter_event_value_too_many_digits": event(name, "1.0000000000001"),
        "timestamp_too_far_in_past": event(name, timestamp=iso(now - timedelta(days=36))),
        "timestamp_in_future": event(name, timestamp=iso(now + timedelta(minutes=10))),
        "good": event(name, "4"),
    }
    for case, sent in cases.items():
        sent["identifier"] = unique(case.split("-")[0])
    session = client.v2.billing.meter_event_session.create()
    stream = stream_client(server.base_url, session.authentication_token)
    assert send(stream, list(cases.values())) in (None, {})  # the request itself succeeds
    assert total(client, meter.id) == 4

    listed = reports(client)
    by_type: dict[str, list[Any]] = {}
    for report in listed:
        by_type.setdefault(report.type, []).append(report)
    assert sorted(by_type) == [TRIGGERED, NO_METER]

    [no_meter] = by_type[NO_METER]
    assert type(no_meter).__name__ == "V1BillingMeterNoMeterFoundEvent"
    assert missing in no_meter.data.developer_message_summary
    [kind] = no_meter.data.reason.error_types
    assert kind.code == "no_meter"
    assert [s.request.identifier for s in kind.sample_errors] == [cases["no_meter"]["identifier"]]

    triggered = {r.related_object.id: r for r in by_type[TRIGGERED]}
    assert set(triggered) == {meter.id, archived.id}
    [archived_kind] = triggered[archived.id].data.reason.error_types
    assert archived_kind.code == "archived_meter"
    reason = triggered[meter.id].data.reason
    expected: dict[str, set[str]] = {}
    for case, sent in cases.items():
        if case not in ("good", "no_meter", "archived_meter"):
            expected.setdefault(case.split("-")[0], set()).add(sent["identifier"])
    assert reason.error_count == sum(map(len, expected.values())) == 7
    got = {t.code: {s.request.identifier for s in t.sample_errors} for t in reason.error_types}
    assert got == expected
    assert {t.code: t.error_count for t in reason.error_types} == {
        code: len(idents) for code, idents in expected.items()
    }
    all_samples = {s for idents in got.values() for s in idents}
    assert cases["good"]["identifier"] not in all_samples


def test_valid_streams_make_no_report(server: RunningServer, client: stripe.StripeClient) -> None:
    meter = new_meter(client)
    session = client.v2.billing.meter_event_session.create()
    send(
        stream_client(server.base_url, session.authentication_token),
        [event(meter.event_name, "2"), event(meter.event_name, "3")],
    )
    assert total(client, meter.id) == 5
    assert reports(client) == []


# --- duplicates -------------------------------------------------------------------------------


def test_a_repeated_identifier_counts_once_and_fails_nothing(
    server: RunningServer, client: stripe.StripeClient
) -> None:
    meter = new_meter(client)
    session = client.v2.billing.meter_event_session.create()
    stream = stream_client(server.base_url, session.authentication_token)
    a, b, c = unique("a"), unique("b"), unique("c")
    send(
        stream,
        [
            event(meter.event_name, "1", identifier=a),
            event(meter.event_name, "100", identifier=a),  # same request: dropped
            event(meter.event_name, "2", identifier=b),
        ],
    )
    assert total(client, meter.id) == 3
    send(
        stream,
        [
            event(meter.event_name, "1000", identifier=a),  # a later request: dropped
            event(meter.event_name, "1000", identifier=b),
            event(meter.event_name, "4", identifier=c),
        ],
    )
    assert total(client, meter.id) == 7
    send(stream, [event(meter.event_name, "1000", identifier=c)] * 3)  # only repeats
    assert total(client, meter.id) == 7
    assert reports(client) == [], "a dropped repeat is not an error"


def test_identifiers_are_shared_with_v1_and_v2(
    shared: stripe.StripeClient, stream: stripe.StripeClient
) -> None:
    client = shared
    meter = new_meter(client)
    from_v1, from_v2, from_stream = unique("v1"), unique("v2"), unique("stream")
    client.v1.billing.meter_events.create(
        {
            "event_name": meter.event_name,
            "payload": {"stripe_customer_id": "c", "value": "1"},
            "identifier": from_v1,
        }
    )
    client.v2.billing.meter_events.create(
        {
            "event_name": meter.event_name,
            "payload": {"stripe_customer_id": "c", "value": "2"},
            "identifier": from_v2,
        }
    )
    send(
        stream,
        [
            event(meter.event_name, "100", identifier=from_v1),
            event(meter.event_name, "100", identifier=from_v2),
            event(meter.event_name, "4", identifier=from_stream),
        ],
    )
    assert total(client, meter.id) == 7
    with pytest.raises(stripe.InvalidRequestError) as exc:
        client.v1.billing.meter_events.create(
            {
                "event_name": meter.event_name,
                "payload": {"stripe_customer_id": "c", "value": "100"},
                "identifier": from_stream,
            }
        )
    assert exc.value.http_status == 400
    assert total(client, meter.id) == 7


# --- concurrency ------------------------------------------------------------------------------

THREADS, REQUESTS, PER_REQUEST, V1_THREADS, V1_CALLS = 8, 20, 50, 2, 25


def test_concurrent_streams_and_v1_calls_count_exactly(
    server: RunningServer, shared_key: str, shared: stripe.StripeClient
) -> None:
    meter = new_meter(shared)
    prefix = unique("conc")
    session = shared.v2.billing.meter_event_session.create()

    def value(thread: int, request: int, index: int) -> str:
        n = thread * 10_000 + request * 100 + index
        return f"{n % 97}.{n % 1000:03d}"

    def streamer(thread: int) -> Decimal:
        stream = stream_client(server.base_url, session.authentication_token)
        first: list[dict[str, Any]] = []
        sent = Decimal(0)
        for request in range(REQUESTS):
            events = [
                event(
                    meter.event_name,
                    value(thread, request, i),
                    f"c{i % 2}",
                    identifier=f"{prefix}-{thread}-{request}-{i}",
                )
                for i in range(PER_REQUEST)
            ]
            send(stream, events)
            first = first or events
            sent += sum(Decimal(e["payload"]["value"]) for e in events)
        send(stream, first)  # a retry of the first request: every event is a repeat
        return sent

    def v1_sender(thread: int) -> Decimal:
        client = sdk_client(server.base_url, shared_key)
        sent = Decimal(0)
        for call in range(V1_CALLS):
            amount = f"{call}.25"
            client.v1.billing.meter_events.create(
                {
                    "event_name": meter.event_name,
                    "payload": {"stripe_customer_id": f"c{call % 2}", "value": amount},
                    "identifier": f"{prefix}-v1-{thread}-{call}",
                }
            )
            sent += Decimal(amount)
        return sent

    with concurrent.futures.ThreadPoolExecutor(THREADS + V1_THREADS) as pool:
        streams = [pool.submit(streamer, t) for t in range(THREADS)]
        v1s = [pool.submit(v1_sender, t) for t in range(V1_THREADS)]
        expected = sum((f.result(timeout=60) for f in [*streams, *v1s]), Decimal(0))

    both = total(shared, meter.id, "c0") + total(shared, meter.id, "c1")
    assert both == expected
    expected_c0 = (
        sum(
            (
                Decimal(value(t, r, i))
                for t in range(THREADS)
                for r in range(REQUESTS)
                for i in range(0, PER_REQUEST, 2)
            ),
            Decimal(0),
        )
        + sum((Decimal(f"{call}.25") for call in range(0, V1_CALLS, 2)), Decimal(0)) * V1_THREADS
    )
    assert total(shared, meter.id, "c0") == expected_c0


def test_a_session_token_is_never_stored_even_under_an_idempotency_key(
    server: RunningServer, shared: stripe.StripeClient
) -> None:
    """The SDK sends an Idempotency-Key with every POST; storing the answer under it would
    keep the token in clear text for 24 hours. Only the token's hash may be stored."""

    key = unique("session-key")
    created = shared.v2.billing.meter_event_session.create(options={"idempotency_key": key})
    token = created.authentication_token
    rows = database_rows(server.database_url, "SELECT body FROM idempotency_keys")
    sessions = database_rows(server.database_url, "SELECT token_hash FROM meter_event_sessions")
    assert not any(token.encode() in bytes(row[0] or b"") for row in rows)
    assert all(token not in row[0] for row in sessions)
    again = shared.v2.billing.meter_event_session.create(options={"idempotency_key": key})
    assert again.authentication_token != token  # not a replay: a new session


def test_identifiers_survive_a_restart(
    backend: str, tmp_path_factory: pytest.TempPathFactory
) -> None:
    """SQLite's dedup index lives in memory and is rebuilt from the database at start-up (and
    PostgreSQL's lives in the database): after a restart a repeated identifier is still a
    duplicate (counted and uncounted alike), and a counted event can still be cancelled."""
    with fresh_database(backend, tmp_path_factory.mktemp("meterd-ids")) as url:
        identifiers_after_restart(url)


def identifiers_after_restart(url: str) -> None:
    first = start_server(url)
    counted, uncounted, cancelled = unique("kept"), unique("noname"), unique("gone")
    try:
        client = first.client()
        meter = new_meter(client)
        stream = stream_client(
            first.base_url, client.v2.billing.meter_event_session.create().authentication_token
        )
        send(
            stream,
            [
                event(meter.event_name, value="5", identifier=counted),
                event(meter.event_name, value="7", identifier=cancelled),
                event(unique("no-such-meter"), identifier=uncounted),
            ],
        )
    finally:
        stop_server(first)
    again = start_server(url)
    try:
        client = again.client(first.secret_key)
        stream = stream_client(
            again.base_url, client.v2.billing.meter_event_session.create().authentication_token
        )
        send(stream, [event(meter.event_name, value="100", identifier=counted)])
        with pytest.raises(stripe.InvalidRequestError):
            client.v1.billing.meter_events.create(
                {
                    "event_name": meter.event_name,
                    "identifier": counted,
                    "payload": {"stripe_customer_id": "c", "value": "1"},
                }
            )
        with pytest.raises(stripe.InvalidRequestError):
            client.v1.billing.meter_events.create(
                {
                    "event_name": meter.event_name,
                    "identifier": uncounted,
                    "payload": {"stripe_customer_id": "c", "value": "1"},
                }
            )
        client.v1.billing.meter_event_adjustments.create(
            {"event_name": meter.event_name, "type": "cancel", "cancel": {"identifier": cancelled}}
        )
        assert total(client, meter.id) == 5
    finally:
        stop_server(again)


def test_a_malformed_event_is_named_in_the_message(server: RunningServer, session: Any) -> None:
    """v2 errors carry no ``param``, and a request holds up to 100 events: the message says
    which event and field is wrong."""
    body = {
        "events": [
            {"event_name": "a", "payload": {"stripe_customer_id": "c", "value": "1"}},
            {"event_name": "a", "payload": {"stripe_customer_id": "c", "value": 1}},
        ]
    }
    answer = post_raw(server.base_url, json.dumps(body), session.authentication_token)
    assert answer.status_code == 400
    assert "events[1][payload][value]" in answer.json()["error"]["message"]


# --- the stream served ahead of the router ----------------------------------------------------


def test_the_stream_keeps_what_every_endpoint_does(
    server: RunningServer, shared: stripe.StripeClient, session: Any
) -> None:
    """POST /v2/billing/meter_event_stream is served on plain ASGI ahead of Starlette
    (``StreamFastPath``); the headers, metrics and method rules of every other endpoint hold."""
    from tests.e2e.test_operations import metric

    meter = new_meter(shared)
    token = session.authentication_token
    before = httpx.get(f"{server.base_url}/metrics", timeout=10).text
    body = json.dumps({"events": [event(meter.event_name, identifier=unique("fast"))]})
    answer = post_raw(server.base_url, body, token, **{"Stripe-Version": "2025-09-30.preview"})
    assert answer.status_code == 200 and answer.content == b"{}"
    assert answer.headers["content-type"] == "application/json"
    assert answer.headers["request-id"].startswith("req_")
    assert answer.headers["stripe-version"] == "2025-09-30.preview"
    bad = post_raw(server.base_url, b'{"events": [', token)
    assert bad.status_code == 400 and bad.headers["request-id"].startswith("req_")
    assert bad.json()["error"]["type"] == "invalid_request_error"
    after = httpx.get(f"{server.base_url}/metrics", timeout=10).text
    for status in ("200", "400"):
        labels = {"route": STREAM, "method": "POST", "status": status}
        grew = metric(after, "meterd_http_requests_total", **labels) - metric(
            before, "meterd_http_requests_total", **labels
        )
        assert grew >= 1, status
    for method in ("GET", "PUT", "DELETE"):
        refused = httpx.request(
            method, server.base_url + STREAM, headers={"Authorization": f"Bearer {token}"}
        )
        assert refused.status_code == 405, method
        assert refused.headers["allow"] == "POST"
        assert refused.json()["error"]["type"] == "invalid_request_error"
    assert total(shared, meter.id) == 1


def test_a_stream_body_sent_in_pieces_is_read_whole(
    server: RunningServer, shared: stripe.StripeClient, session: Any
) -> None:
    meter = new_meter(shared)
    body = json.dumps(
        {"events": [event(meter.event_name, identifier=unique(f"piece{n}")) for n in range(40)]}
    ).encode()

    def pieces() -> Iterator[bytes]:
        for start in range(0, len(body), 97):
            yield body[start : start + 97]

    answer = httpx.post(
        server.base_url + STREAM,
        content=pieces(),
        headers={
            "Authorization": f"Bearer {session.authentication_token}",
            "Content-Type": "application/json",
        },
    )
    assert answer.status_code == 200, answer.text
    assert total(shared, meter.id) == 40


def test_a_client_gone_mid_body_stores_nothing_and_the_server_goes_on(
    server: RunningServer, shared: stripe.StripeClient, stream: stripe.StripeClient, session: Any
) -> None:
    import socket

    meter = new_meter(shared)
    body = json.dumps({"events": [event(meter.event_name, identifier=unique("gone"))]}).encode()
    host, port = server.base_url.removeprefix("http://").split(":")
    with socket.create_connection((host, int(port)), timeout=10) as raw_socket:
        raw_socket.sendall(
            f"POST {STREAM} HTTP/1.1\r\nHost: {host}\r\n"
            f"Authorization: Bearer {session.authentication_token}\r\n"
            f"Content-Type: application/json\r\nContent-Length: {len(body)}\r\n\r\n".encode()
            + body[: len(body) // 2]
        )
        time.sleep(0.2)
    time.sleep(0.3)
    send(stream, [event(meter.event_name, identifier=unique("after"))])
    assert total(shared, meter.id) == 1


@pytest.mark.parametrize("writer", ["thread", "process"])
def test_either_event_writer_stores_deduplicates_and_cancels(
    writer: str, tmp_path_factory: pytest.TempPathFactory
) -> None:
    """``--event-writer``: the session-wide SQLite server runs the default (a child process);
    this runs the stream, v1 events and a cancellation on each writer, and checks that the
    process writer's child is gone once the server stopped."""
    with fresh_database("sqlite", tmp_path_factory.mktemp(f"meterd-{writer}")) as url:
        running = start_server(url, "--event-writer", writer)
        try:
            client = running.client()
            meter = new_meter(client)
            prefix = unique(writer)
            token = client.v2.billing.meter_event_session.create().authentication_token
            stream = stream_client(running.base_url, token)
            batch = [
                event(meter.event_name, str(i), "c", identifier=f"{prefix}-{i}")
                for i in range(1, 11)
            ]
            send(stream, batch)
            send(stream, batch)  # a retry: every event is a repeat
            client.v1.billing.meter_events.create(
                {
                    "event_name": meter.event_name,
                    "payload": {"stripe_customer_id": "c", "value": "100"},
                    "identifier": f"{prefix}-v1",
                }
            )
            client.v1.billing.meter_event_adjustments.create(
                {
                    "event_name": meter.event_name,
                    "type": "cancel",
                    "cancel": {"identifier": f"{prefix}-3"},
                }
            )
            assert total(client, meter.id, "c") == 55 + 100 - 3
            children = _children(running.process.pid)
            assert len(children) == (1 if writer == "process" else 0)
        finally:
            stop_server(running)
        assert running.process.returncode == 0
        assert not any(process_alive(pid) for pid in children)


def _children(pid: int) -> list[int]:
    found = []
    for task in Path(f"/proc/{pid}/task").iterdir():
        found += [int(child) for child in (task / "children").read_text().split()]
    return found

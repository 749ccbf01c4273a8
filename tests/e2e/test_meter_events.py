"""Meter events, v1 and v2, through the official ``stripe`` SDK against a real ``meterd serve``.

v1 accepts every well-formed event (semantic problems become error reports, see
test_error_reports.py) and rejects only malformed requests and duplicate identifiers; v2
validates everything synchronously and answers each problem with its own code
(API-NOTES Part A, "Validation: what is synchronous").
"""

from __future__ import annotations

import time
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta, timezone
from decimal import Decimal
from typing import Any

import pytest
import stripe

from tests.conftest import RunningServer, new_account_key
from tests.e2e.support import new_meter, raw, rfc3339, total, unique, v1_error, v2_error
from tests.spec import assert_matches

V2 = "v2-billing-meters.json"
DAY = 86400


# --- creating events ------------------------------------------------------------------------


def test_v1_create_echoes_the_event_in_stripes_shape(shared: stripe.StripeClient) -> None:
    meter = new_meter(shared)
    ident = unique("id")
    ts = int(time.time()) - 3600
    before = int(time.time())
    event = shared.v1.billing.meter_events.create(
        {
            "event_name": meter.event_name,
            "payload": {"stripe_customer_id": "cus_a", "value": "25"},
            "identifier": ident,
            "timestamp": ts,
        }
    )
    body = raw(event)
    assert_matches(body, "billing.meter_event")
    assert "id" not in body
    assert body["object"] == "billing.meter_event"
    assert body["event_name"] == meter.event_name
    assert body["identifier"] == ident
    assert body["timestamp"] == ts
    assert body["payload"] == {"stripe_customer_id": "cus_a", "value": "25"}
    assert body["livemode"] is False
    assert before <= body["created"] <= int(time.time())
    assert total(shared, meter.id, "cus_a") == 25


def test_v1_generates_identifier_and_defaults_timestamp_to_now(
    shared: stripe.StripeClient,
) -> None:
    meter = new_meter(shared)
    before = int(time.time())
    events = [
        shared.v1.billing.meter_events.create(
            {"event_name": meter.event_name, "payload": {"stripe_customer_id": "c", "value": "1"}}
        )
        for _ in range(2)
    ]
    after = int(time.time())
    identifiers = [raw(e)["identifier"] for e in events]
    assert all(isinstance(i, str) and 0 < len(i) <= 100 for i in identifiers)
    assert identifiers[0] != identifiers[1]
    for event in events:
        assert before <= raw(event)["timestamp"] <= after
        assert raw(event)["timestamp"] == raw(event)["created"]
    assert total(shared, meter.id, "c") == 2


def test_v2_create_echoes_the_event_in_stripes_shape(shared: stripe.StripeClient) -> None:
    meter = new_meter(shared)
    ident = unique("id")
    when = datetime.now(UTC).replace(microsecond=0) - timedelta(hours=2)
    offset = when.astimezone(timezone(timedelta(hours=2)))
    event = shared.v2.billing.meter_events.create(
        {
            "event_name": meter.event_name,
            "payload": {"stripe_customer_id": "cus_b", "value": "2.5"},
            "identifier": ident,
            "timestamp": offset.isoformat(),
        }
    )
    body = raw(event)
    assert_matches(body, "v2.billing.meter_event", V2)
    assert "id" not in body
    assert body["object"] == "v2.billing.meter_event"
    assert body["identifier"] == ident
    assert body["event_name"] == meter.event_name
    assert body["payload"] == {"stripe_customer_id": "cus_b", "value": "2.5"}
    assert body["livemode"] is False
    assert rfc3339(body["timestamp"]) == when
    assert abs(rfc3339(body["created"]) - datetime.now(UTC)) < timedelta(seconds=30)
    assert total(shared, meter.id, "cus_b") == Decimal("2.5")


def test_v2_generates_identifier_and_defaults_timestamp_to_now(
    shared: stripe.StripeClient,
) -> None:
    meter = new_meter(shared)
    before = datetime.now(UTC).replace(microsecond=0)
    events = [
        shared.v2.billing.meter_events.create(
            {"event_name": meter.event_name, "payload": {"stripe_customer_id": "c", "value": "4"}}
        )
        for _ in range(2)
    ]
    after = datetime.now(UTC)
    bodies = [raw(e) for e in events]
    for body in bodies:
        assert_matches(body, "v2.billing.meter_event", V2)
        assert 0 < len(body["identifier"]) <= 100
        assert before <= rfc3339(body["timestamp"]) <= after
        assert body["timestamp"] == body["created"]
    assert bodies[0]["identifier"] != bodies[1]["identifier"]
    assert total(shared, meter.id, "c") == 8


def test_count_meter_needs_no_value(shared: stripe.StripeClient) -> None:
    meter = new_meter(shared, "count")
    shared.v1.billing.meter_events.create(
        {"event_name": meter.event_name, "payload": {"stripe_customer_id": "c"}}
    )
    shared.v2.billing.meter_events.create(
        {"event_name": meter.event_name, "payload": {"stripe_customer_id": "c"}}
    )
    # A value, even a nonsensical one, is ignored by a count meter.
    shared.v2.billing.meter_events.create(
        {"event_name": meter.event_name, "payload": {"stripe_customer_id": "c", "value": "9"}}
    )
    assert total(shared, meter.id, "c") == 3


def test_custom_payload_keys_are_honoured(shared: stripe.StripeClient) -> None:
    meter = new_meter(
        shared,
        customer_mapping={"type": "by_id", "event_payload_key": "cust"},
        value_settings={"event_payload_key": "tokens"},
    )
    shared.v1.billing.meter_events.create(
        {"event_name": meter.event_name, "payload": {"cust": "c", "tokens": "7"}}
    )
    with pytest.raises(stripe.InvalidRequestError) as exc:
        shared.v2.billing.meter_events.create(
            {"event_name": meter.event_name, "payload": {"stripe_customer_id": "c", "tokens": "1"}}
        )
    assert v2_error(exc)["code"] == "payload_no_customer_defined"
    assert total(shared, meter.id, "c") == 7


# --- duplicates and identifier scope ----------------------------------------------------------


def test_v1_duplicate_identifier_is_400_on_identifier(shared: stripe.StripeClient) -> None:
    meter = new_meter(shared)
    ident = unique("dup")
    params: Any = {
        "event_name": meter.event_name,
        "payload": {"stripe_customer_id": "c", "value": "3"},
        "identifier": ident,
    }
    shared.v1.billing.meter_events.create(params)
    with pytest.raises(stripe.InvalidRequestError) as exc:
        shared.v1.billing.meter_events.create(
            {**params, "payload": {"stripe_customer_id": "c", "value": "100"}}
        )
    error = v1_error(exc)
    assert error["type"] == "invalid_request_error"
    assert error["param"] == "identifier"
    assert error["message"] == f"An event already exists with identifier {ident}."
    assert total(shared, meter.id, "c") == 3


def test_identifiers_are_shared_by_v1_and_v2(shared: stripe.StripeClient) -> None:
    meter = new_meter(shared)
    ident = unique("both")
    payload = {"stripe_customer_id": "c", "value": "1"}
    shared.v1.billing.meter_events.create(
        {"event_name": meter.event_name, "payload": payload, "identifier": ident}
    )
    with pytest.raises(stripe.InvalidRequestError) as exc:
        shared.v2.billing.meter_events.create(
            {"event_name": meter.event_name, "payload": payload, "identifier": ident}
        )
    assert v2_error(exc, "v2.error.duplicate_meter_event")["code"] == "duplicate_meter_event"
    other = unique("both")
    shared.v2.billing.meter_events.create(
        {"event_name": meter.event_name, "payload": payload, "identifier": other}
    )
    with pytest.raises(stripe.InvalidRequestError) as exc1:
        shared.v1.billing.meter_events.create(
            {"event_name": meter.event_name, "payload": payload, "identifier": other}
        )
    assert v1_error(exc1)["param"] == "identifier"
    assert total(shared, meter.id, "c") == 2


def test_identifiers_are_per_account(server: RunningServer, shared: stripe.StripeClient) -> None:
    ident = unique("shared")
    mine = new_meter(shared)
    shared.v1.billing.meter_events.create(
        {
            "event_name": mine.event_name,
            "payload": {"stripe_customer_id": "c", "value": "1"},
            "identifier": ident,
        }
    )
    other = server.client(new_account_key(server, "test"))
    theirs = new_meter(other)
    for api in (other.v1, other.v2):
        api.billing.meter_events.create(
            {
                "event_name": theirs.event_name,
                "payload": {"stripe_customer_id": "c", "value": "5"},
                "identifier": ident if api is other.v1 else ident + "_2",
            }
        )
    assert total(other, theirs.id, "c") == 5 + 5
    assert total(shared, mine.id, "c") == 1


def test_identifiers_are_per_mode(server: RunningServer) -> None:
    # The first account's test key and a live key of the same account.
    test_client = server.client(server.secret_key)
    live_client = server.client(
        server.meterd("keys", "create", "--mode", "live").stdout.split()[-1]
    )
    ident = unique("mode")
    for client, value in ((test_client, "2"), (live_client, "3")):
        meter = new_meter(client)
        event = client.v1.billing.meter_events.create(
            {
                "event_name": meter.event_name,
                "payload": {"stripe_customer_id": "c", "value": value},
                "identifier": ident,
            }
        )
        assert event.livemode is (client is live_client)
        assert total(client, meter.id, "c") == int(value)


# --- v2 synchronous validation ----------------------------------------------------------------


def _v2_case(
    payload: dict[str, str] | None = None, timestamp: timedelta | None = None, **kw: Any
) -> dict[str, Any]:
    return {"payload": payload, "timestamp": timestamp, **kw}


V2_CASES = {
    "no_meter": _v2_case(event_name="missing"),
    "archived_meter": _v2_case(archived=True),
    "payload_no_customer_defined": _v2_case({"value": "1"}),
    "payload_no_value_defined": _v2_case({"stripe_customer_id": "c"}),
    "payload_invalid_value-negative": _v2_case({"stripe_customer_id": "c", "value": "-1"}),
    "payload_invalid_value-not-a-number": _v2_case({"stripe_customer_id": "c", "value": "ten"}),
    "payload_invalid_value-13-decimals": _v2_case(
        {"stripe_customer_id": "c", "value": "0.0000000000001"}
    ),
    "payload_invalid_value-21-digits": _v2_case(
        {"stripe_customer_id": "c", "value": "123456789012345678901"}
    ),
    "timestamp_too_far_in_past": _v2_case(timestamp=-timedelta(days=36)),
    "timestamp_in_future": _v2_case(timestamp=timedelta(minutes=10)),
}
SCHEMAS = {
    "no_meter",
    "archived_meter",
    "payload_no_customer_defined",
    "payload_no_value_defined",
    "payload_invalid_value",
}


@pytest.mark.parametrize("case", list(V2_CASES))
def test_v2_rejects_each_problem_synchronously_without_counting_or_reserving(
    shared: stripe.StripeClient, case: str
) -> None:
    code = case.split("-")[0]
    spec = V2_CASES[case]
    meter = new_meter(shared)
    if spec.get("archived"):
        shared.v1.billing.meters.deactivate(meter.id)
    ident = unique("rejected")
    bad: dict[str, Any] = {
        "event_name": meter.event_name if "event_name" not in spec else unique("nomtr"),
        "payload": spec["payload"] or {"stripe_customer_id": "c", "value": "1000"},
        "identifier": ident,
    }
    if spec["timestamp"] is not None:
        bad["timestamp"] = (datetime.now(UTC) + spec["timestamp"]).isoformat()
    with pytest.raises(stripe.InvalidRequestError) as exc:
        shared.v2.billing.meter_events.create(bad)
    error = v2_error(exc, f"v2.error.{code}" if code in SCHEMAS else "v2.error")
    assert error["code"] == code
    assert error["message"]
    assert exc.value.code == code

    if spec.get("archived"):
        shared.v1.billing.meters.reactivate(meter.id)
    assert total(shared, meter.id, "c") == 0, "a rejected event does not count"
    # Nothing was stored, so its identifier is still free.
    good = shared.v2.billing.meter_events.create(
        {
            "event_name": meter.event_name,
            "payload": {"stripe_customer_id": "c", "value": "2"},
            "identifier": ident,
        }
    )
    assert good.identifier == ident
    assert total(shared, meter.id, "c") == 2


def test_v2_duplicate_identifier_is_duplicate_meter_event(shared: stripe.StripeClient) -> None:
    meter = new_meter(shared)
    ident = unique("dup")
    params: Any = {
        "event_name": meter.event_name,
        "payload": {"stripe_customer_id": "c", "value": "3"},
        "identifier": ident,
    }
    shared.v2.billing.meter_events.create(params)
    with pytest.raises(stripe.InvalidRequestError) as exc:
        shared.v2.billing.meter_events.create(
            {**params, "payload": {"stripe_customer_id": "c", "value": "50"}}
        )
    error = v2_error(exc, "v2.error.duplicate_meter_event")
    assert error["code"] == "duplicate_meter_event"
    assert total(shared, meter.id, "c") == 3


def test_v2_accepts_the_edges_of_the_timestamp_window(shared: stripe.StripeClient) -> None:
    meter = new_meter(shared)
    now = datetime.now(UTC)
    for delta in (timedelta(days=34), -timedelta(minutes=4)):
        shared.v2.billing.meter_events.create(
            {
                "event_name": meter.event_name,
                "payload": {"stripe_customer_id": "c", "value": "1"},
                "timestamp": (now - delta).isoformat(),
            }
        )
    assert total(shared, meter.id, "c") == 2


# --- malformed requests -----------------------------------------------------------------------

GOOD = {"payload": {"stripe_customer_id": "c", "value": "1"}}


@pytest.mark.parametrize(
    ("params", "param", "code"),
    [
        ({"event_name": None}, "event_name", "parameter_missing"),
        ({"payload": None}, "payload", "parameter_missing"),
        ({"colour": "red"}, "colour", "parameter_unknown"),
        ({"identifier": "i" * 101}, "identifier", None),
        ({"event_name": "e" * 101}, "event_name", None),
        ({"event_name": ""}, "event_name", "parameter_invalid_empty"),
        ({"timestamp": "yesterday"}, "timestamp", None),
        ({"payload": "cus_1"}, "payload", None),
        (
            {"payload": {"stripe_customer_id": "c", "value": "1" * 101}},
            "payload[value]",
            None,
        ),
        (
            {"payload": {"stripe_customer_id": "c" * 101, "value": "1"}},
            "payload[stripe_customer_id]",
            None,
        ),
    ],
    ids=[
        "no-event_name",
        "no-payload",
        "unknown",
        "long-identifier",
        "long-event_name",
        "empty-event_name",
        "timestamp-not-int",
        "payload-not-hash",
        "long-value",
        "long-customer",
    ],
)
def test_v1_malformed_requests_are_400_naming_the_param(
    shared: stripe.StripeClient, params: dict[str, Any], param: str, code: str | None
) -> None:
    meter = new_meter(shared)
    sent = {
        k: v for k, v in {"event_name": meter.event_name, **GOOD, **params}.items() if v is not None
    }
    with pytest.raises(stripe.InvalidRequestError) as exc:
        shared.v1.billing.meter_events.create(sent)  # type: ignore[arg-type]
    error = v1_error(exc)
    assert error["type"] == "invalid_request_error"
    assert error["param"] == param
    assert error.get("code") == code
    if code == "parameter_missing":
        assert error["message"] == f"Missing required param: {param}."
    if code == "parameter_unknown":
        assert error["message"] == f"Received unknown parameter: {param}"
    assert "{'" not in error["message"], "the message shows the value, not a Python repr"
    assert total(shared, meter.id, "c") == 0


@pytest.mark.parametrize(
    ("params", "code", "mentions"),
    [
        ({"event_name": None}, "parameter_missing", "event_name"),
        ({"payload": None}, "parameter_missing", "payload"),
        ({"colour": "red"}, "parameter_unknown", "colour"),
        ({"identifier": "i" * 101}, None, "100 characters"),
        ({"payload": {"stripe_customer_id": "c", "value": "1" * 101}}, None, "100 characters"),
        ({"timestamp": "2024-01-01T00:00:00"}, None, "timestamp"),
        ({"timestamp": "not a time"}, None, None),
        ({"payload": {"stripe_customer_id": "c", "value": 1}}, None, None),
    ],
    ids=[
        "no-event_name",
        "no-payload",
        "unknown",
        "long-identifier",
        "long-value",
        "timestamp-without-offset",
        "timestamp-not-a-time",
        "value-not-a-string",
    ],
)
def test_v2_malformed_requests_are_400_never_500(
    shared: stripe.StripeClient, params: dict[str, Any], code: str | None, mentions: str | None
) -> None:
    meter = new_meter(shared)
    sent = {
        k: v for k, v in {"event_name": meter.event_name, **GOOD, **params}.items() if v is not None
    }
    with pytest.raises(stripe.InvalidRequestError) as exc:
        shared.v2.billing.meter_events.create(sent)  # type: ignore[arg-type]
    error = v2_error(exc)
    assert error["type"] == "invalid_request_error"
    if code is not None:
        assert error["code"] == code
    if mentions is not None:
        assert mentions in error["message"]
    assert total(shared, meter.id, "c") == 0


# --- the legacy global style ------------------------------------------------------------------


@pytest.fixture
def global_stripe(server: RunningServer, shared_key: str) -> Iterator[None]:
    saved = (stripe.api_key, stripe.api_base, stripe.max_network_retries)
    stripe.api_key = shared_key
    stripe.api_base = server.base_url
    stripe.max_network_retries = 0
    try:
        yield
    finally:
        stripe.api_key, stripe.api_base, stripe.max_network_retries = saved


def test_legacy_global_style_meter_event_create(
    global_stripe: None, shared: stripe.StripeClient
) -> None:
    meter = new_meter(shared)
    ident = unique("global")
    event = stripe.billing.MeterEvent.create(
        event_name=meter.event_name,
        payload={"stripe_customer_id": "c", "value": "6"},
        identifier=ident,
    )
    assert isinstance(event, stripe.billing.MeterEvent)
    assert_matches(raw(event), "billing.meter_event")
    assert event.identifier == ident
    with pytest.raises(stripe.InvalidRequestError) as exc:
        stripe.billing.MeterEvent.create(
            event_name=meter.event_name,
            payload={"stripe_customer_id": "c", "value": "6"},
            identifier=ident,
        )
    assert v1_error(exc)["param"] == "identifier"
    assert total(shared, meter.id, "c") == 6

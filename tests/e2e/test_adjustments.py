"""Meter event adjustments (cancel), v1 and v2: synchronous, exact, and idempotent.

API-NOTES Part A, "Adjustments": a cancel applies at once (status ``complete``), the cancelled
event leaves every summary immediately, cancelling again changes nothing, an unknown
identifier is 400 (``cancel[identifier]`` on v1, ``invalid_cancel_configuration`` on v2), and a
cancelled identifier stays reserved.
"""

from __future__ import annotations

import json
import time
from datetime import UTC, datetime, timedelta
from decimal import Decimal
from typing import Any

import pytest
import stripe

from tests.conftest import RunningServer, new_account_key
from tests.e2e.support import new_meter, raw, unique, v1_error, v2_error
from tests.spec import assert_matches

V2 = "v2-billing-meters.json"
HOUR = 3600
DAY = 86400


def base_hour() -> int:
    """An hour boundary a day and a half ago: well inside the 35-day window."""
    now = int(time.time())
    return now - now % HOUR - 36 * HOUR


def summary_values(
    client: stripe.StripeClient,
    meter_id: str,
    start: int,
    end: int,
    customer: str = "c",
    grouping: str | None = None,
) -> list[Decimal]:
    params: dict[str, Any] = {"customer": customer, "start_time": start, "end_time": end}
    if grouping:
        params["value_grouping_window"] = grouping
        params["limit"] = 100
    page = client.v1.billing.meters.event_summaries.list(meter_id, params)  # type: ignore[arg-type]
    assert page.last_response is not None
    body = json.loads(page.last_response.body, parse_float=Decimal)
    return [Decimal(s["aggregated_value"]) for s in body["data"]]


def total(client: stripe.StripeClient, meter_id: str, customer: str = "c") -> Decimal:
    now = int(time.time())
    [value] = summary_values(
        client, meter_id, (now - 40 * DAY) // 60 * 60, (now + DAY) // 60 * 60, customer
    )
    return value


def send(
    client: stripe.StripeClient,
    meter: Any,
    value: str | None = "1",
    ts: int | None = None,
    customer: str = "c",
) -> str:
    ident = unique("evt")
    payload = {"stripe_customer_id": customer}
    if value is not None:
        payload["value"] = value
    params: dict[str, Any] = {
        "event_name": meter.event_name,
        "payload": payload,
        "identifier": ident,
    }
    if ts is not None:
        params["timestamp"] = ts
    client.v1.billing.meter_events.create(params)  # type: ignore[arg-type]
    return ident


def cancel_v1(client: stripe.StripeClient, event_name: str, ident: str) -> Any:
    return client.v1.billing.meter_event_adjustments.create(
        {"event_name": event_name, "type": "cancel", "cancel": {"identifier": ident}}
    )


def cancel_v2(client: stripe.StripeClient, event_name: str, ident: str) -> Any:
    return client.v2.billing.meter_event_adjustments.create(
        {"event_name": event_name, "type": "cancel", "cancel": {"identifier": ident}}
    )


# --- shapes -------------------------------------------------------------------------------------


def test_v1_cancel_returns_a_complete_adjustment(shared: stripe.StripeClient) -> None:
    meter = new_meter(shared)
    keep, drop = send(shared, meter, "3"), send(shared, meter, "4")
    assert total(shared, meter.id) == 7
    adjustment = cancel_v1(shared, meter.event_name, drop)
    body = raw(adjustment)
    assert_matches(body, "billing.meter_event_adjustment")
    assert body == {
        "object": "billing.meter_event_adjustment",
        "cancel": {"identifier": drop},
        "event_name": meter.event_name,
        "livemode": False,
        "status": "complete",
        "type": "cancel",
    }
    assert total(shared, meter.id) == 3, "the cancelled event left the summary at once"
    assert keep != drop


def test_v2_cancel_returns_a_complete_adjustment(shared: stripe.StripeClient) -> None:
    meter = new_meter(shared)
    first, second = send(shared, meter, "5"), send(shared, meter, "6")
    before = datetime.now(UTC).replace(microsecond=0)
    adjustments = [cancel_v2(shared, meter.event_name, i) for i in (first, second)]
    bodies = [raw(a) for a in adjustments]
    for body, ident in zip(bodies, (first, second), strict=True):
        assert_matches(body, "v2.billing.meter_event_adjustment", V2)
        assert body["object"] == "v2.billing.meter_event_adjustment"
        assert body["status"] == "complete"
        assert body["type"] == "cancel"
        assert body["cancel"] == {"identifier": ident}
        assert body["event_name"] == meter.event_name
        assert body["livemode"] is False
        created = datetime.fromisoformat(body["created"].replace("Z", "+00:00"))
        assert before <= created <= datetime.now(UTC)
    assert bodies[0]["id"] and bodies[0]["id"] != bodies[1]["id"]
    assert total(shared, meter.id) == 0


# --- effect on summaries -----------------------------------------------------------------------


def test_cancel_on_a_count_meter(shared: stripe.StripeClient) -> None:
    meter = new_meter(shared, "count")
    idents = [send(shared, meter, None) for _ in range(3)]
    cancel_v2(shared, meter.event_name, idents[1])
    assert total(shared, meter.id) == 2


def test_cancel_updates_minute_and_hour_rollups_alike(shared: stripe.StripeClient) -> None:
    """Whole-hour ranges read hour rows, ragged ranges minute rows: both must drop the event."""
    meter = new_meter(shared)
    hour = base_hour()
    send(shared, meter, "1", hour + 5 * 60)
    drop = send(shared, meter, "10", hour + 30 * 60)
    send(shared, meter, "100", hour + HOUR + 60)
    cancel_v1(shared, meter.event_name, drop)
    assert summary_values(shared, meter.id, hour, hour + 2 * HOUR) == [101]
    assert summary_values(shared, meter.id, hour, hour + 2 * HOUR, grouping="hour") == [100, 1]
    assert summary_values(shared, meter.id, hour + 10 * 60, hour + 2 * HOUR - 60) == [100]
    assert summary_values(shared, meter.id, hour + 20 * 60, hour + 40 * 60) == [0]
    assert summary_values(shared, meter.id, hour, hour + 31 * 60) == [1]


def test_cancel_on_a_last_meter_keeps_the_latest_remaining(shared: stripe.StripeClient) -> None:
    meter = new_meter(shared, "last")
    hour = base_hour()
    send(shared, meter, "1", hour + 60)
    middle = send(shared, meter, "2", hour + 120)
    send(shared, meter, "3", hour + 185)
    send(shared, meter, "4", hour + 185)  # same timestamp, received later: the latest
    same_minute = send(shared, meter, "5", hour + 181)
    cancel_v1(shared, meter.event_name, middle)
    cancel_v1(shared, meter.event_name, same_minute)
    assert summary_values(shared, meter.id, hour, hour + HOUR) == [4]
    assert summary_values(shared, meter.id, hour + 180, hour + 240) == [4]


def test_cancelling_the_latest_event_of_a_last_meter(shared: stripe.StripeClient) -> None:
    meter = new_meter(shared, "last")
    hour = base_hour()
    send(shared, meter, "1", hour + 60)
    send(shared, meter, "2", hour + 2 * 60)
    latest = send(shared, meter, "3", hour + HOUR + 60)
    assert summary_values(shared, meter.id, hour, hour + 2 * HOUR) == [3]
    cancel_v2(shared, meter.event_name, latest)
    assert summary_values(shared, meter.id, hour, hour + 2 * HOUR) == [2]
    assert summary_values(shared, meter.id, hour, hour + 2 * HOUR, grouping="hour") == [0, 2]


def test_cancel_in_an_hour_window_meter_lets_the_previous_event_count(
    shared: stripe.StripeClient,
) -> None:
    meter = new_meter(shared, event_time_window="hour")
    hour = base_hour()
    send(shared, meter, "5", hour + 10)
    send(shared, meter, "6", hour + 20)
    send(shared, meter, "8", hour + 20)  # same timestamp, received later: the one that counts
    latest = send(shared, meter, "7", hour + 30)
    assert summary_values(shared, meter.id, hour, hour + HOUR) == [7]
    cancel_v1(shared, meter.event_name, latest)
    assert summary_values(shared, meter.id, hour, hour + HOUR) == [8]
    assert summary_values(shared, meter.id, hour, hour + 2 * HOUR, grouping="hour") == [0, 8]


def test_cancel_touches_only_its_customer(shared: stripe.StripeClient) -> None:
    meter = new_meter(shared)
    drop = send(shared, meter, "4", customer="cus_a")
    send(shared, meter, "4", customer="cus_b")
    cancel_v1(shared, meter.event_name, drop)
    assert total(shared, meter.id, "cus_a") == 0
    assert total(shared, meter.id, "cus_b") == 4


def test_cancelling_twice_is_complete_and_changes_nothing(shared: stripe.StripeClient) -> None:
    meter = new_meter(shared)
    send(shared, meter, "2")
    drop = send(shared, meter, "9")
    assert cancel_v1(shared, meter.event_name, drop).status == "complete"
    assert total(shared, meter.id) == 2
    again = cancel_v1(shared, meter.event_name, drop)
    assert raw(again)["status"] == "complete"
    assert cancel_v2(shared, meter.event_name, drop).status == "complete"
    assert total(shared, meter.id) == 2


# --- refusals ----------------------------------------------------------------------------------


def test_unknown_identifier_is_refused(shared: stripe.StripeClient) -> None:
    meter = new_meter(shared)
    send(shared, meter, "2")
    with pytest.raises(stripe.InvalidRequestError) as exc:
        cancel_v1(shared, meter.event_name, "never-sent")
    error = v1_error(exc)
    assert error["type"] == "invalid_request_error"
    assert error["param"] == "cancel[identifier]"
    with pytest.raises(stripe.InvalidRequestError) as exc2:
        cancel_v2(shared, meter.event_name, "never-sent")
    error2 = v2_error(exc2, "v2.error.invalid_cancel_configuration")
    assert error2["code"] == "invalid_cancel_configuration"
    assert total(shared, meter.id) == 2


def test_identifier_of_another_account_is_unknown(
    server: RunningServer, shared: stripe.StripeClient
) -> None:
    meter = new_meter(shared)
    ident = send(shared, meter, "2")
    other = server.client(new_account_key(server, "test"))
    new_meter(other)  # their meter has another name; even so the identifier is not theirs
    with pytest.raises(stripe.InvalidRequestError) as exc:
        cancel_v1(other, meter.event_name, ident)
    assert v1_error(exc)["param"] == "cancel[identifier]"
    with pytest.raises(stripe.InvalidRequestError) as exc2:
        cancel_v2(other, meter.event_name, ident)
    assert v2_error(exc2)["code"] == "invalid_cancel_configuration"
    assert total(shared, meter.id) == 2


@pytest.mark.parametrize(
    ("params", "param", "code"),
    [
        ({"cancel": None}, "cancel[identifier]", "parameter_missing"),
        ({"cancel": {}}, "cancel[identifier]", "parameter_missing"),
        ({"cancel": {"identifier": ""}}, "cancel[identifier]", "parameter_invalid_empty"),
        ({"cancel": {"identifier": "i" * 101}}, "cancel[identifier]", None),
        ({"type": None}, "type", "parameter_missing"),
        ({"type": "refund"}, "type", None),
        ({"event_name": None}, "event_name", "parameter_missing"),
        ({"colour": "red"}, "colour", "parameter_unknown"),
    ],
    ids=[
        "no-cancel",
        "empty-cancel",
        "empty-identifier",
        "long-identifier",
        "no-type",
        "bad-type",
        "no-event_name",
        "unknown",
    ],
)
def test_v1_malformed_adjustments_are_400_naming_the_param(
    shared: stripe.StripeClient, params: dict[str, Any], param: str, code: str | None
) -> None:
    meter = new_meter(shared)
    ident = send(shared, meter, "2")
    sent = {
        k: v
        for k, v in {
            "event_name": meter.event_name,
            "type": "cancel",
            "cancel": {"identifier": ident},
            **params,
        }.items()
        if v is not None
    }
    with pytest.raises(stripe.InvalidRequestError) as exc:
        shared.v1.billing.meter_event_adjustments.create(sent)  # type: ignore[arg-type]
    error = v1_error(exc)
    assert error["param"] == param
    assert error.get("code") == code
    if code == "parameter_missing":
        assert error["message"] == f"Missing required param: {param}."
    assert total(shared, meter.id) == 2


@pytest.mark.parametrize(
    ("params", "code"),
    [
        ({"cancel": None}, "parameter_missing"),
        ({"type": None}, "parameter_missing"),
        ({"event_name": None}, "parameter_missing"),
        ({"colour": "red"}, "parameter_unknown"),
        ({"type": "refund"}, None),
    ],
    ids=["no-cancel", "no-type", "no-event_name", "unknown", "bad-type"],
)
def test_v2_malformed_adjustments_are_400(
    shared: stripe.StripeClient, params: dict[str, Any], code: str | None
) -> None:
    meter = new_meter(shared)
    ident = send(shared, meter, "2")
    sent = {
        k: v
        for k, v in {
            "event_name": meter.event_name,
            "type": "cancel",
            "cancel": {"identifier": ident},
            **params,
        }.items()
        if v is not None
    }
    with pytest.raises(stripe.InvalidRequestError) as exc:
        shared.v2.billing.meter_event_adjustments.create(sent)  # type: ignore[arg-type]
    error = v2_error(exc)
    if code is not None:
        assert error["code"] == code
    assert total(shared, meter.id) == 2


def test_wrong_event_name_is_refused_and_cancels_nothing(shared: stripe.StripeClient) -> None:
    meter, other = new_meter(shared), new_meter(shared)
    ident = send(shared, meter, "8")
    for name in (other.event_name, unique("nomtr")):
        with pytest.raises(stripe.InvalidRequestError) as exc:
            cancel_v1(shared, name, ident)
        assert v1_error(exc)["param"] == "cancel[identifier]"
        with pytest.raises(stripe.InvalidRequestError) as exc2:
            cancel_v2(shared, name, ident)
        assert v2_error(exc2)["code"] == "invalid_cancel_configuration"
    assert total(shared, meter.id) == 8
    # The right name still works afterwards.
    cancel_v1(shared, meter.event_name, ident)
    assert total(shared, meter.id) == 0


def test_a_cancelled_identifier_stays_reserved(shared: stripe.StripeClient) -> None:
    meter = new_meter(shared)
    ident = send(shared, meter, "5")
    cancel_v1(shared, meter.event_name, ident)
    payload = {"stripe_customer_id": "c", "value": "5"}
    with pytest.raises(stripe.InvalidRequestError) as exc:
        shared.v1.billing.meter_events.create(
            {"event_name": meter.event_name, "payload": payload, "identifier": ident}
        )
    error = v1_error(exc)
    assert error["param"] == "identifier"
    assert error["message"] == f"An event already exists with identifier {ident}."
    with pytest.raises(stripe.InvalidRequestError) as exc2:
        shared.v2.billing.meter_events.create(
            {"event_name": meter.event_name, "payload": payload, "identifier": ident}
        )
    assert v2_error(exc2, "v2.error.duplicate_meter_event")["code"] == "duplicate_meter_event"
    assert total(shared, meter.id) == 0


def test_v2_event_can_be_cancelled_through_v1_and_back(shared: stripe.StripeClient) -> None:
    meter = new_meter(shared)
    ident = unique("v2evt")
    shared.v2.billing.meter_events.create(
        {
            "event_name": meter.event_name,
            "payload": {"stripe_customer_id": "c", "value": "11"},
            "identifier": ident,
            "timestamp": (datetime.now(UTC) - timedelta(hours=3)).isoformat(),
        }
    )
    v1_ident = send(shared, meter, "1")
    cancel_v1(shared, meter.event_name, ident)
    cancel_v2(shared, meter.event_name, v1_ident)
    assert total(shared, meter.id) == 0


def test_legacy_global_style_adjustment(server: RunningServer) -> None:
    key = new_account_key(server, "test")
    client = server.client(key)
    meter = new_meter(client)
    ident = send(client, meter, "4")
    saved = (stripe.api_key, stripe.api_base, stripe.max_network_retries)
    stripe.api_key, stripe.api_base, stripe.max_network_retries = key, server.base_url, 0
    try:
        adjustment = stripe.billing.MeterEventAdjustment.create(
            event_name=meter.event_name, type="cancel", cancel={"identifier": ident}
        )
    finally:
        stripe.api_key, stripe.api_base, stripe.max_network_retries = saved
    assert isinstance(adjustment, stripe.billing.MeterEventAdjustment)
    assert_matches(raw(adjustment), "billing.meter_event_adjustment")
    assert adjustment.status == "complete"
    assert total(client, meter.id) == 0


def test_wrong_event_name_is_refused_for_an_event_that_did_not_count(
    shared: stripe.StripeClient,
) -> None:
    """An accepted v1 event that only made an error report still belongs to its event name."""
    meter, other = new_meter(shared), new_meter(shared)
    ident = unique("uncounted")
    shared.v1.billing.meter_events.create(
        {"event_name": meter.event_name, "payload": {"value": "1"}, "identifier": ident}
    )
    with pytest.raises(stripe.InvalidRequestError) as exc:
        cancel_v1(shared, other.event_name, ident)
    assert v1_error(exc)["param"] == "cancel[identifier]"
    with pytest.raises(stripe.InvalidRequestError) as exc2:
        cancel_v2(shared, unique("nomtr"), ident)
    assert v2_error(exc2)["code"] == "invalid_cancel_configuration"

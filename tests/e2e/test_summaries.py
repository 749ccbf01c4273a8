"""Meter event summaries through the official ``stripe`` SDK against a real ``meterd serve``.

API-NOTES Part A, "Summaries" and "Values and arithmetic": exact decimal sums, ``last`` by
latest timestamp (ties to the event received last), ``event_time_window`` keeping one event per
customer and UTC hour/day, every grouping window newest first with zeros, deterministic ids,
aligned ranges, and read-your-writes.
"""

from __future__ import annotations

import json
import time
from decimal import Decimal
from typing import Any

import pytest
import stripe

from tests.conftest import RunningServer, new_account_key
from tests.e2e.support import new_meter
from tests.spec import assert_matches, assert_matches_response

MINUTE = 60
HOUR = 3600
DAY = 86400
LIST_PATH = "/v1/billing/meters/{id}/event_summaries"


def midnight() -> int:
    now = int(time.time())
    return now - now % DAY


def day0() -> int:
    """UTC midnight two days ago: the 48 hours after it are all past and inside 35 days."""
    return midnight() - 2 * DAY


def send(
    client: stripe.StripeClient,
    meter: Any,
    value: str | None,
    ts: int | None = None,
    customer: str = "c",
) -> None:
    payload = {"stripe_customer_id": customer}
    if value is not None:
        payload["value"] = value
    params: dict[str, Any] = {"event_name": meter.event_name, "payload": payload}
    if ts is not None:
        params["timestamp"] = ts
    client.v1.billing.meter_events.create(params)  # type: ignore[arg-type]


def listing(
    client: stripe.StripeClient,
    meter_id: str,
    start: int,
    end: int,
    customer: str = "c",
    **params: Any,
) -> Any:
    """The summaries list page as the SDK returned it."""
    query = {"customer": customer, "start_time": start, "end_time": end, **params}
    return client.v1.billing.meters.event_summaries.list(meter_id, query)  # type: ignore[arg-type]


def body_of(page: Any) -> Any:
    """The raw JSON, with fractional numbers kept exact."""
    assert page.last_response is not None
    return json.loads(page.last_response.body, parse_float=Decimal)


def values(
    client: stripe.StripeClient, meter_id: str, start: int, end: int, **params: Any
) -> list[Decimal]:
    body = body_of(listing(client, meter_id, start, end, limit=100, **params))
    assert body["has_more"] is False
    return [Decimal(s["aggregated_value"]) for s in body["data"]]


def total(client: stripe.StripeClient, meter_id: str, customer: str = "c") -> Decimal:
    now = int(time.time())
    [value] = values(
        client, meter_id, (now - 40 * DAY) // 60 * 60, (now + DAY) // 60 * 60, customer=customer
    )
    return value


def error_of(exc: pytest.ExceptionInfo[stripe.StripeError], status: int) -> dict[str, Any]:
    assert exc.value.http_status == status
    body = exc.value.json_body
    assert body is not None
    assert_matches(body, "error")
    return body["error"]  # type: ignore[no-any-return]


# --- shape ------------------------------------------------------------------------------------


def test_one_summary_for_the_whole_range_in_stripes_shape(shared: stripe.StripeClient) -> None:
    meter = new_meter(shared)
    start = day0()
    send(shared, meter, "2", start + 10)
    send(shared, meter, "3", start + 5 * HOUR)
    page = listing(shared, meter.id, start, start + DAY)
    body = body_of(page)
    assert_matches_response(json.loads(page.last_response.body), LIST_PATH)
    assert body["object"] == "list"
    assert body["url"] == f"/v1/billing/meters/{meter.id}/event_summaries"
    assert body["has_more"] is False
    [summary] = body["data"]
    assert_matches(json.loads(page.last_response.body)["data"][0], "billing.meter_event_summary")
    assert summary["object"] == "billing.meter_event_summary"
    assert summary["id"].startswith("mtrusg_")
    assert summary["meter"] == meter.id
    assert summary["livemode"] is False
    assert (summary["start_time"], summary["end_time"]) == (start, start + DAY)
    assert summary["aggregated_value"] == 5
    assert isinstance(page.data[0], stripe.billing.MeterEventSummary)


def test_empty_range_is_one_zero_summary(shared: stripe.StripeClient) -> None:
    meter = new_meter(shared)
    assert values(shared, meter.id, day0(), day0() + HOUR) == [0]


# --- aggregation ------------------------------------------------------------------------------


def test_sum_of_decimals_is_exact(shared: stripe.StripeClient) -> None:
    meter = new_meter(shared)
    start = day0()
    for _ in range(3):
        send(shared, meter, "0.1", start + 60)
    page = listing(shared, meter.id, start, start + HOUR)
    assert page.last_response is not None
    assert b'"aggregated_value":0.3,' in page.last_response.body.encode()
    assert body_of(page)["data"][0]["aggregated_value"] == Decimal("0.3")

    send(shared, meter, "99999999999999999999", start + 120, customer="big")
    send(shared, meter, "0.000000000001", start + 180, customer="big")
    send(shared, meter, "99999999999999999999", start + 240, customer="big")
    [big] = values(shared, meter.id, start, start + HOUR, customer="big")
    assert big == Decimal("199999999999999999998.000000000001")


def test_count_counts_events(shared: stripe.StripeClient) -> None:
    meter = new_meter(shared, "count")
    start = day0()
    for offset in (0, 59, 60, HOUR - 1, HOUR):
        send(shared, meter, None, start + offset)
    assert values(shared, meter.id, start, start + HOUR) == [4]
    assert values(shared, meter.id, start, start + 2 * HOUR, value_grouping_window="hour") == [
        1,
        4,
    ]
    assert values(shared, meter.id, start + MINUTE, start + HOUR) == [2]


def test_last_takes_the_latest_timestamp_ties_to_the_last_received(
    shared: stripe.StripeClient,
) -> None:
    meter = new_meter(shared, "last")
    start = day0()
    send(shared, meter, "9", start + 600)
    send(shared, meter, "1", start + 300)  # received later, but older
    assert values(shared, meter.id, start, start + HOUR) == [9]
    for value in ("5", "7", "3"):
        send(shared, meter, value, start + 900)
    assert values(shared, meter.id, start, start + HOUR) == [3]
    # A range that ends before the latest event shows the latest event inside it.
    assert values(shared, meter.id, start, start + 15 * MINUTE) == [9]
    assert values(shared, meter.id, start, start + 6 * MINUTE) == [1]
    # And over several hours, the latest of them all.
    send(shared, meter, "4", start + 2 * HOUR)
    assert values(shared, meter.id, start, start + 3 * HOUR) == [4]
    hourly = values(shared, meter.id, start, start + 3 * HOUR, value_grouping_window="hour")
    assert hourly == [4, 0, 3]


def test_hour_event_time_window_keeps_the_latest_event_per_customer_and_hour(
    shared: stripe.StripeClient,
) -> None:
    meter = new_meter(shared, event_time_window="hour")
    h = day0() + 10 * HOUR
    send(shared, meter, "5", h + 10)
    send(shared, meter, "7", h + 3000)
    send(shared, meter, "100", h + 20)  # sent last, but not the latest of its hour
    send(shared, meter, "2", h + HOUR + 5)
    send(shared, meter, "3", h + HOUR + 5)  # same timestamp, received last: it wins
    send(shared, meter, "1000", h + 30, customer="other")
    assert values(shared, meter.id, h, h + 2 * HOUR) == [10]
    assert values(shared, meter.id, h, h + 2 * HOUR, value_grouping_window="hour") == [3, 7]
    # The superseded events of the first hour count nowhere, not even in a sub-range.
    assert values(shared, meter.id, h, h + 3000 - 60) == [0]
    assert values(shared, meter.id, h, h + 2 * HOUR, customer="other") == [1000]


def test_hour_event_time_window_on_a_count_meter(shared: stripe.StripeClient) -> None:
    meter = new_meter(shared, "count", event_time_window="hour")
    h = day0()
    for offset in (0, 60, 120, HOUR + 1, 3 * HOUR + 59):
        send(shared, meter, None, h + offset)
    assert values(shared, meter.id, h, h + 4 * HOUR) == [3]


def test_day_event_time_window_keeps_the_latest_event_per_customer_and_day(
    shared: stripe.StripeClient,
) -> None:
    meter = new_meter(shared, event_time_window="day")
    d = day0()
    send(shared, meter, "4", d + HOUR)
    send(shared, meter, "6", d + 5 * HOUR)
    send(shared, meter, "50", d + 2 * HOUR)
    send(shared, meter, "1", d + DAY + 23 * HOUR)
    send(shared, meter, "30", d + 12 * HOUR, customer="other")
    assert values(shared, meter.id, d, d + 2 * DAY) == [7]
    assert values(shared, meter.id, d, d + 2 * DAY, value_grouping_window="day") == [1, 6]
    hourly = values(shared, meter.id, d, d + DAY, value_grouping_window="hour")
    assert len(hourly) == 24
    assert hourly[23 - 5] == 6 and sum(hourly) == 6, "the value sits in its event's hour"
    assert values(shared, meter.id, d, d + 2 * DAY, customer="other") == [30]


# --- grouping windows -------------------------------------------------------------------------


def test_hour_grouping_returns_every_hour_newest_first_with_zeros(
    shared: stripe.StripeClient,
) -> None:
    meter = new_meter(shared)
    h = day0() + 3 * HOUR
    send(shared, meter, "1", h + 60)
    send(shared, meter, "2", h + 4 * HOUR + 59 * MINUTE)
    send(shared, meter, "4", h + 4 * HOUR)
    send(shared, meter, "8", h + 6 * HOUR)  # outside the range
    body = body_of(listing(shared, meter.id, h, h + 6 * HOUR, value_grouping_window="hour"))
    assert body["has_more"] is False
    windows = [(s["start_time"], s["end_time"]) for s in body["data"]]
    assert windows == [(h + i * HOUR, h + (i + 1) * HOUR) for i in reversed(range(6))]
    assert [s["aggregated_value"] for s in body["data"]] == [0, 6, 0, 0, 0, 1]
    assert len({s["id"] for s in body["data"]}) == 6


def test_day_grouping_returns_every_day_newest_first_with_zeros(
    shared: stripe.StripeClient,
) -> None:
    meter = new_meter(shared)
    end = midnight()
    start = end - 5 * DAY
    send(shared, meter, "3", end - 2 * DAY + 60)
    send(shared, meter, "4", end - DAY - 1)
    send(shared, meter, "5", end - 5 * DAY + 1)
    body = body_of(listing(shared, meter.id, start, end, value_grouping_window="day"))
    windows = [(s["start_time"], s["end_time"]) for s in body["data"]]
    assert windows == [(end - (i + 1) * DAY, end - i * DAY) for i in range(5)]
    assert [s["aggregated_value"] for s in body["data"]] == [0, 7, 0, 0, 5]


def test_pagination_returns_every_window_exactly_once(shared: stripe.StripeClient) -> None:
    meter = new_meter(shared)
    start = day0()
    end = start + 30 * HOUR
    for i in range(0, 30, 4):
        send(shared, meter, str(i + 1), start + i * HOUR + 60)
    everything = body_of(
        listing(shared, meter.id, start, end, value_grouping_window="hour", limit=100)
    )
    ids = [s["id"] for s in everything["data"]]
    assert len(ids) == len(set(ids)) == 30

    first = listing(shared, meter.id, start, end, value_grouping_window="hour", limit=7)
    assert [s.id for s in first.data] == ids[:7]
    assert first.has_more is True
    paged = list(first.auto_paging_iter())
    assert [s.id for s in paged] == ids
    assert [s.start_time for s in paged] == [end - (i + 1) * HOUR for i in range(30)]
    assert sum(Decimal(str(s.aggregated_value)) for s in paged) == sum(
        i + 1 for i in range(0, 30, 4)
    )

    second = listing(
        shared, meter.id, start, end, value_grouping_window="hour", limit=7, starting_after=ids[6]
    )
    assert [s.id for s in second.data] == ids[7:14] and second.has_more is True
    last = listing(
        shared, meter.id, start, end, value_grouping_window="hour", limit=7, starting_after=ids[27]
    )
    assert [s.id for s in last.data] == ids[28:] and last.has_more is False
    back = listing(
        shared, meter.id, start, end, value_grouping_window="hour", limit=3, ending_before=ids[10]
    )
    assert [s.id for s in back.data] == ids[7:10] and back.has_more is True
    top = listing(
        shared, meter.id, start, end, value_grouping_window="hour", limit=7, ending_before=ids[7]
    )
    assert [s.id for s in top.data] == ids[:7] and top.has_more is False


def test_ids_are_deterministic_per_meter_customer_and_window(shared: stripe.StripeClient) -> None:
    meter = new_meter(shared)
    h = day0()
    send(shared, meter, "1", h + 60)

    def ids(start: int, end: int, customer: str = "c", **kw: Any) -> list[str]:
        body = body_of(listing(shared, meter.id, start, end, customer, limit=100, **kw))
        return [s["id"] for s in body["data"]]

    once = ids(h, h + 6 * HOUR, value_grouping_window="hour")
    assert ids(h, h + 6 * HOUR, value_grouping_window="hour") == once
    # An overlapping query names the shared windows the same way.
    assert ids(h + 2 * HOUR, h + 8 * HOUR, value_grouping_window="hour")[2:] == once[:4]
    assert set(ids(h, h + 6 * HOUR, "someone_else", value_grouping_window="hour")).isdisjoint(once)
    other_meter = new_meter(shared)
    other = body_of(
        listing(shared, other_meter.id, h, h + 6 * HOUR, value_grouping_window="hour", limit=100)
    )
    assert {s["id"] for s in other["data"]}.isdisjoint(once)
    assert ids(h, h + 6 * HOUR) == ids(h, h + 6 * HOUR)
    assert ids(h, h + 6 * HOUR) != ids(h, h + 5 * HOUR)


# --- errors -----------------------------------------------------------------------------------

D = 1_700_006_400  # a UTC midnight (2023-11-15)


@pytest.mark.parametrize(
    ("params", "param"),
    [
        pytest.param({"start_time": D + 30, "end_time": D + HOUR}, "start_time", id="start-sec"),
        pytest.param({"start_time": D, "end_time": D + HOUR + 1}, "end_time", id="end-sec"),
        pytest.param(
            {"start_time": D + MINUTE, "end_time": D + 2 * HOUR, "value_grouping_window": "hour"},
            "start_time",
            id="start-not-hour",
        ),
        pytest.param(
            {"start_time": D, "end_time": D + HOUR + MINUTE, "value_grouping_window": "hour"},
            "end_time",
            id="end-not-hour",
        ),
        pytest.param(
            {"start_time": D + HOUR, "end_time": D + DAY, "value_grouping_window": "day"},
            "start_time",
            id="start-not-midnight",
        ),
        pytest.param(
            {"start_time": D, "end_time": D + DAY + HOUR, "value_grouping_window": "day"},
            "end_time",
            id="end-not-midnight",
        ),
        pytest.param({"start_time": D, "end_time": D}, "end_time", id="end-equals-start"),
        pytest.param({"start_time": D + HOUR, "end_time": D}, "end_time", id="end-before-start"),
        pytest.param(
            {"start_time": D, "end_time": D + DAY, "value_grouping_window": "week"},
            "value_grouping_window",
            id="bad-grouping",
        ),
        pytest.param({"start_time": "noon", "end_time": D + DAY}, "start_time", id="not-int"),
        pytest.param({"start_time": D, "end_time": D + HOUR, "limit": 0}, "limit", id="limit-0"),
        pytest.param({"start_time": D, "end_time": D + HOUR, "limit": 101}, "limit", id="lim-101"),
        pytest.param(
            {"start_time": D, "end_time": D + HOUR, "colour": "red"}, "colour", id="unknown"
        ),
        pytest.param(
            {"start_time": D, "end_time": (2**70 // DAY) * DAY},
            "end_time",
            id="end-beyond-int64",
        ),
    ],
)
def test_bad_ranges_are_400_naming_the_param(
    shared: stripe.StripeClient, params: dict[str, Any], param: str
) -> None:
    meter = new_meter(shared)
    with pytest.raises(stripe.InvalidRequestError) as exc:
        shared.v1.billing.meters.event_summaries.list(
            meter.id,
            {"customer": "c", **params},  # type: ignore[typeddict-item]
        )
    error = error_of(exc, 400)
    assert error["type"] == "invalid_request_error"
    assert error["param"] == param


@pytest.mark.parametrize("missing", ["customer", "start_time", "end_time"])
def test_missing_required_param(shared: stripe.StripeClient, missing: str) -> None:
    meter = new_meter(shared)
    params = {"customer": "c", "start_time": D, "end_time": D + HOUR}
    del params[missing]
    with pytest.raises(stripe.InvalidRequestError) as exc:
        shared.v1.billing.meters.event_summaries.list(meter.id, params)  # type: ignore[arg-type]
    error = error_of(exc, 400)
    assert error["code"] == "parameter_missing"
    assert error["param"] == missing
    assert error["message"] == f"Missing required param: {missing}."


def test_unknown_meter_is_404(server: RunningServer, shared: stripe.StripeClient) -> None:
    query = {"customer": "c", "start_time": D, "end_time": D + HOUR}
    with pytest.raises(stripe.InvalidRequestError) as exc:
        shared.v1.billing.meters.event_summaries.list("mtr_test_doesnotexist", query)
    error = error_of(exc, 404)
    assert error["code"] == "resource_missing"
    assert error["param"] == "id"
    assert error["message"] == "No such meter: 'mtr_test_doesnotexist'"
    theirs = new_meter(server.client(new_account_key(server, "test")))
    with pytest.raises(stripe.InvalidRequestError) as exc2:
        shared.v1.billing.meters.event_summaries.list(theirs.id, query)
    assert error_of(exc2, 404)["code"] == "resource_missing"


@pytest.mark.parametrize("cursor", ["starting_after", "ending_before"])
def test_unknown_cursor_is_404(shared: stripe.StripeClient, cursor: str) -> None:
    meter = new_meter(shared)
    h = day0()
    foreign = listing(shared, meter.id, h, h + 4 * HOUR, "other", value_grouping_window="hour")
    for bad in ("mtrusg_test_doesnotexist", foreign.data[1].id):
        with pytest.raises(stripe.InvalidRequestError) as exc:
            listing(
                shared, meter.id, h, h + 4 * HOUR, value_grouping_window="hour", **{cursor: bad}
            )
        error = error_of(exc, 404)
        assert error["code"] == "resource_missing"
        assert error["param"] == cursor


# --- isolation and consistency ----------------------------------------------------------------


def test_other_customers_do_not_leak(shared: stripe.StripeClient) -> None:
    meter = new_meter(shared)
    h = day0()
    send(shared, meter, "1", h + 60, customer="cus_a")
    send(shared, meter, "20", h + 120, customer="cus_b")
    send(shared, meter, "300", h + 180, customer="cus_a_suffix")
    assert values(shared, meter.id, h, h + HOUR, customer="cus_a") == [1]
    assert values(shared, meter.id, h, h + HOUR, customer="cus_b") == [20]
    assert values(shared, meter.id, h, h + HOUR, customer="cus_nobody") == [0]


def test_other_meters_do_not_leak(shared: stripe.StripeClient) -> None:
    first, second = new_meter(shared), new_meter(shared)
    h = day0()
    send(shared, first, "1", h + 60)
    send(shared, second, "2", h + 60)
    assert values(shared, first.id, h, h + HOUR) == [1]
    assert values(shared, second.id, h, h + HOUR) == [2]


def test_read_your_writes(shared: stripe.StripeClient) -> None:
    meter = new_meter(shared)
    running = Decimal(0)
    for i in range(1, 7):
        value = f"{i}.5"
        if i % 2:
            send(shared, meter, value)
        else:
            shared.v2.billing.meter_events.create(
                {
                    "event_name": meter.event_name,
                    "payload": {"stripe_customer_id": "c", "value": value},
                }
            )
        running += Decimal(value)
        assert total(shared, meter.id) == running


def test_events_sent_while_inactive_never_count(shared: stripe.StripeClient) -> None:
    meter = new_meter(shared)
    h = day0()
    send(shared, meter, "1", h + 60)
    shared.v1.billing.meters.deactivate(meter.id)
    send(shared, meter, "10", h + 120)  # accepted by v1, reported, never counted
    with pytest.raises(stripe.InvalidRequestError):
        shared.v2.billing.meter_events.create(
            {"event_name": meter.event_name, "payload": {"stripe_customer_id": "c", "value": "10"}}
        )
    assert values(shared, meter.id, h, h + HOUR) == [1], "an inactive meter still summarises"
    shared.v1.billing.meters.reactivate(meter.id)
    assert values(shared, meter.id, h, h + HOUR) == [1]
    send(shared, meter, "100", h + 180)
    assert values(shared, meter.id, h, h + HOUR) == [101]


def test_legacy_global_style_list_event_summaries(
    server: RunningServer, shared: stripe.StripeClient, shared_key: str
) -> None:
    meter = new_meter(shared)
    h = day0()
    send(shared, meter, "2", h + 60)
    send(shared, meter, "3", h + HOUR + 60)
    saved = (stripe.api_key, stripe.api_base, stripe.max_network_retries)
    stripe.api_key, stripe.api_base, stripe.max_network_retries = shared_key, server.base_url, 0
    try:
        page = stripe.billing.Meter.list_event_summaries(
            meter.id, customer="c", start_time=h, end_time=h + 3 * HOUR
        )
        hourly = stripe.billing.Meter.list_event_summaries(
            meter.id,
            customer="c",
            start_time=h,
            end_time=h + 3 * HOUR,
            value_grouping_window="hour",
            limit=2,
        )
        every = list(hourly.auto_paging_iter())
    finally:
        stripe.api_key, stripe.api_base, stripe.max_network_retries = saved
    [summary] = page.data
    assert isinstance(summary, stripe.billing.MeterEventSummary)
    assert summary.aggregated_value == 5
    assert summary.meter == meter.id
    assert hourly.has_more is True
    assert [s.aggregated_value for s in every] == [0, 3, 2]


def test_a_cursor_past_either_end_gives_an_empty_page(shared: stripe.StripeClient) -> None:
    meter = new_meter(shared)
    start = day0()
    page = listing(shared, meter.id, start, start + 7200, value_grouping_window="hour")
    newest, oldest = page.data[0].id, page.data[-1].id
    for cursor in ({"starting_after": oldest}, {"ending_before": newest}):
        empty = listing(
            shared, meter.id, start, start + 7200, value_grouping_window="hour", **cursor
        )
        assert body_of(empty)["data"] == []
        assert empty.has_more is False

"""Error reports: v1 events that cannot count are accepted, then surface as v2 thin events.

Stripe reports such problems asynchronously as ``v1.billing.meter.error_report_triggered`` and
``v1.billing.meter.no_meter_found`` events; meterd lists them at ``/v2/core/events`` in the shape
the official SDK parses into its typed event classes (API-NOTES Part A, "Error reports").
"""

from __future__ import annotations

import json
import time
from datetime import datetime, timedelta
from decimal import Decimal
from typing import Any

import pytest
import stripe
from stripe.events import V1BillingMeterErrorReportTriggeredEvent, V1BillingMeterNoMeterFoundEvent

from tests.conftest import RunningServer, new_account_key
from tests.e2e.support import new_meter, raw, rfc3339, unique
from tests.spec import assert_matches

DAY = 86400
TRIGGERED = "V1BillingMeterErrorReportTriggeredEvent"
NO_METER = "V1BillingMeterNoMeterFoundEvent"


def total(client: stripe.StripeClient, meter_id: str, customer: str = "c") -> Decimal:
    """The meter's aggregate for ``customer`` over 40 days back to a day ahead."""
    now = int(time.time())
    page = client.v1.billing.meters.event_summaries.list(
        meter_id,
        {
            "customer": customer,
            "start_time": (now - 40 * DAY) // 60 * 60,
            "end_time": (now + DAY) // 60 * 60,
        },
    )
    [summary] = page.data
    return Decimal(str(summary.aggregated_value))


def reports(client: stripe.StripeClient, **params: Any) -> list[Any]:
    return list(client.v2.core.events.list(params).auto_paging_iter())  # type: ignore[arg-type]


def wait_for_fresh_minute(needed: float = 5.0) -> None:
    """Reports group per one-minute window: leave enough of the minute for what follows."""
    left = 60 - time.time() % 60
    if left < needed:
        time.sleep(left + 0.1)


def send_v1(
    client: stripe.StripeClient, event_name: str, payload: dict[str, str], **kw: Any
) -> Any:
    ident = unique("err")
    event = client.v1.billing.meter_events.create(
        {"event_name": event_name, "payload": payload, "identifier": ident, **kw}
    )
    assert_matches(raw(event), "billing.meter_event")
    assert event.identifier == ident
    return event


CASES: dict[str, dict[str, Any]] = {
    "no_meter": {"payload": {"stripe_customer_id": "c", "value": "1"}, "no_meter": True},
    "archived_meter": {"payload": {"stripe_customer_id": "c", "value": "1"}, "archived": True},
    "meter_event_no_customer_defined": {"payload": {"value": "1"}},
    "meter_event_invalid_value": {"payload": {"stripe_customer_id": "c", "value": "-3"}},
    "meter_event_value_too_many_digits": {
        "payload": {"stripe_customer_id": "c", "value": "1.0000000000001"}
    },
    "timestamp_too_far_in_past": {
        "payload": {"stripe_customer_id": "c", "value": "1"},
        "offset": -36 * DAY,
    },
    "timestamp_in_future": {
        "payload": {"stripe_customer_id": "c", "value": "1"},
        "offset": 600,
    },
}


@pytest.mark.parametrize("code", list(CASES))
def test_each_problem_is_accepted_and_reported_with_its_code(
    client: stripe.StripeClient, code: str
) -> None:
    case = CASES[code]
    meter = new_meter(client)
    event_name = unique("nomtr") if case.get("no_meter") else meter.event_name
    if case.get("archived"):
        client.v1.billing.meters.deactivate(meter.id)
    extra = {"timestamp": int(time.time()) + case["offset"]} if "offset" in case else {}
    before = datetime.now().astimezone().replace(microsecond=0)
    event = send_v1(client, event_name, case["payload"], **extra)

    listed = client.v2.core.events.list()
    assert listed.last_response is not None
    body = json.loads(listed.last_response.body)
    assert body["next_page_url"] is None
    [report] = listed.data
    expected = NO_METER if case.get("no_meter") else TRIGGERED
    assert type(report).__name__ == expected
    expected_class = (
        V1BillingMeterNoMeterFoundEvent
        if case.get("no_meter")
        else V1BillingMeterErrorReportTriggeredEvent
    )
    assert isinstance(report, expected_class)
    assert report.object == "v2.core.event"
    assert report.type == (
        "v1.billing.meter.no_meter_found"
        if case.get("no_meter")
        else "v1.billing.meter.error_report_triggered"
    )
    assert report.livemode is False
    reason = report.data.reason
    assert reason.error_count == 1
    [error_type] = reason.error_types
    assert error_type.code == code
    assert error_type.error_count == 1
    [sample] = error_type.sample_errors
    assert sample.request.identifier == event.identifier
    assert sample.error_message
    assert report.data.developer_message_summary
    start, end = rfc3339(report.data.validation_start), rfc3339(report.data.validation_end)
    assert end - start == timedelta(minutes=1)
    assert start.second == 0
    assert before - timedelta(minutes=1) < start <= datetime.now().astimezone()
    if case.get("no_meter"):
        assert getattr(report, "related_object", None) is None
    else:
        assert report.related_object.id == meter.id
        assert report.related_object.type == "billing.meter"
        assert report.related_object.url == f"/v1/billing/meters/{meter.id}"

    fetched = client.v2.core.events.retrieve(report.id)
    assert type(fetched).__name__ == expected
    assert raw(fetched) == body["data"][0]

    # The event never counts, not even once its problem goes away.
    if case.get("archived"):
        client.v1.billing.meters.reactivate(meter.id)
    if case.get("no_meter"):
        late = client.v1.billing.meters.create(
            {
                "display_name": "created afterwards",
                "event_name": event_name,
                "default_aggregation": {"formula": "count"},
            }
        )
        assert total(client, late.id) == 0
    assert total(client, meter.id) == 0


def test_missing_value_is_reported_as_invalid_value(client: stripe.StripeClient) -> None:
    meter = new_meter(client)
    event = send_v1(client, meter.event_name, {"stripe_customer_id": "c"})
    [report] = reports(client)
    [error_type] = report.data.reason.error_types
    assert error_type.code == "meter_event_invalid_value"
    assert error_type.sample_errors[0].request.identifier == event.identifier
    assert total(client, meter.id) == 0


def test_valid_events_make_no_report(client: stripe.StripeClient) -> None:
    meter = new_meter(client)
    send_v1(client, meter.event_name, {"stripe_customer_id": "c", "value": "2"})
    count = new_meter(client, "count")
    send_v1(client, count.event_name, {"stripe_customer_id": "c"})
    assert reports(client) == []
    assert total(client, meter.id) == 2


def test_errors_of_one_event_name_within_a_minute_make_one_report(
    client: stripe.StripeClient,
) -> None:
    meter = new_meter(client)
    wait_for_fresh_minute()
    no_customer = [send_v1(client, meter.event_name, {"value": "1"}) for _ in range(3)]
    bad_value = [
        send_v1(client, meter.event_name, {"stripe_customer_id": "c", "value": v})
        for v in ("x", "-1")
    ]
    good = send_v1(client, meter.event_name, {"stripe_customer_id": "c", "value": "4"})

    [report] = reports(client)
    assert type(report).__name__ == TRIGGERED
    assert report.related_object.id == meter.id
    reason = report.data.reason
    assert reason.error_count == 5
    by_code = {t.code: t for t in reason.error_types}
    assert set(by_code) == {"meter_event_no_customer_defined", "meter_event_invalid_value"}
    assert by_code["meter_event_no_customer_defined"].error_count == 3
    assert by_code["meter_event_invalid_value"].error_count == 2
    assert {
        s.request.identifier for s in by_code["meter_event_no_customer_defined"].sample_errors
    } == {e.identifier for e in no_customer}
    assert {s.request.identifier for s in by_code["meter_event_invalid_value"].sample_errors} == {
        e.identifier for e in bad_value
    }
    all_samples = {s.request.identifier for t in reason.error_types for s in t.sample_errors}
    assert good.identifier not in all_samples
    assert raw(client.v2.core.events.retrieve(report.id))["data"]["reason"]["error_count"] == 5
    assert total(client, meter.id) == 4


def test_different_event_names_make_separate_reports(client: stripe.StripeClient) -> None:
    first, second = new_meter(client), new_meter(client)
    missing = unique("nomtr")
    wait_for_fresh_minute()
    send_v1(client, first.event_name, {"value": "1"})
    send_v1(client, second.event_name, {"value": "1"})
    send_v1(client, missing, {"stripe_customer_id": "c"})
    send_v1(client, second.event_name, {"value": "1"})
    listed = reports(client)
    assert len(listed) == 3
    related = [getattr(r, "related_object", None) for r in listed]
    assert sorted(x.id for x in related if x) == sorted([first.id, second.id])
    counts = {
        r.related_object.id: r.data.reason.error_count
        for r in listed
        if type(r).__name__ == TRIGGERED
    }
    assert counts == {first.id: 1, second.id: 2}
    assert [type(r).__name__ for r in listed].count(NO_METER) == 1


def test_object_id_filter_returns_only_that_meters_reports(client: stripe.StripeClient) -> None:
    first, second = new_meter(client), new_meter(client)
    send_v1(client, first.event_name, {"value": "1"})
    send_v1(client, second.event_name, {"value": "1"})
    send_v1(client, unique("nomtr"), {"stripe_customer_id": "c", "value": "1"})
    only_first = reports(client, object_id=first.id)
    assert [r.related_object.id for r in only_first] == [first.id]
    assert [r.related_object.id for r in reports(client, object_id=second.id)] == [second.id]
    assert reports(client, object_id="mtr_test_unknown") == []
    assert len(reports(client)) == 3


def test_pagination_follows_next_page_url_newest_first(client: stripe.StripeClient) -> None:
    names = [unique(f"nomtr{i}") for i in range(7)]
    for name in names:
        send_v1(client, name, {"stripe_customer_id": "c", "value": "1"})

    first_page = client.v2.core.events.list({"limit": 3})
    assert len(first_page.data) == 3
    assert first_page.next_page_url is not None
    assert first_page.next_page_url.startswith("/v2/core/events?")
    assert "limit=3" in first_page.next_page_url

    every = list(first_page.auto_paging_iter())
    ids = [r.id for r in every]
    assert len(ids) == 7 == len(set(ids)), "every report exactly once"
    # Newest first: the report of the last event name sent comes first.
    summaries = [r.data.developer_message_summary for r in every]
    assert all(name in summary for name, summary in zip(reversed(names), summaries, strict=True))
    assert all(type(r).__name__ == NO_METER for r in every)

    last = client.v2.core.events.list({"limit": 7})
    assert [r.id for r in last.data] == ids
    assert last.next_page_url is None


def test_unknown_event_is_404(client: stripe.StripeClient) -> None:
    with pytest.raises(stripe.InvalidRequestError) as exc:
        client.v2.core.events.retrieve("evt_test_doesnotexist")
    assert exc.value.http_status == 404
    body = exc.value.json_body
    assert body is not None
    assert_matches(body, "v2.error", "v2-billing-meters.json")
    assert body["error"]["code"] == "resource_missing"


def test_reports_are_invisible_to_another_account(
    server: RunningServer, client: stripe.StripeClient
) -> None:
    meter = new_meter(client)
    send_v1(client, meter.event_name, {"value": "1"})
    send_v1(client, unique("nomtr"), {"stripe_customer_id": "c", "value": "1"})
    mine = reports(client)
    assert len(mine) == 2

    other = server.client(new_account_key(server, "test"))
    assert reports(other) == []
    assert reports(other, object_id=meter.id) == []
    for report in mine:
        with pytest.raises(stripe.InvalidRequestError) as exc:
            other.v2.core.events.retrieve(report.id)
        assert exc.value.http_status == 404

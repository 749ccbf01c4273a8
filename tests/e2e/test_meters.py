"""The meter lifecycle through the official ``stripe`` SDK against a real ``meterd serve``."""

from __future__ import annotations

import json
import time
from typing import Any

import pytest
import stripe

from tests.conftest import RunningServer, new_account_key
from tests.spec import assert_matches, assert_matches_response

CREATE = {
    "display_name": "API calls",
    "event_name": "api_call",
    "default_aggregation": {"formula": "sum"},
}


def raw(obj: stripe.StripeObject) -> Any:
    """The JSON body meterd sent, as the SDK received it."""
    assert obj.last_response is not None
    return json.loads(obj.last_response.body)


def test_create_returns_stripe_shaped_meter_with_defaults(client: stripe.StripeClient) -> None:
    before = int(time.time())
    meter = client.v1.billing.meters.create(CREATE)
    body = raw(meter)
    assert_matches(body, "billing.meter")
    assert body["object"] == "billing.meter"
    assert body["id"].startswith("mtr_test_") and len(body["id"]) > 20
    assert body["customer_mapping"] == {"event_payload_key": "stripe_customer_id", "type": "by_id"}
    assert body["value_settings"] == {"event_payload_key": "value"}
    assert body["default_aggregation"] == {"formula": "sum"}
    assert body["status"] == "active"
    assert body["status_transitions"] == {"deactivated_at": None}
    assert body["event_time_window"] is None
    assert body["livemode"] is False
    assert before <= body["created"] == body["updated"] <= int(time.time())


def test_create_with_every_option(client: stripe.StripeClient) -> None:
    meter = client.v1.billing.meters.create(
        {
            "display_name": "Tokens",
            "event_name": "tokens",
            "default_aggregation": {"formula": "last"},
            "customer_mapping": {"type": "by_id", "event_payload_key": "cust"},
            "value_settings": {"event_payload_key": "tokens"},
            "event_time_window": "hour",
            "expand": ["customer_mapping"],
        }
    )
    body = raw(meter)
    assert_matches(body, "billing.meter")
    assert body["customer_mapping"] == {"event_payload_key": "cust", "type": "by_id"}
    assert body["value_settings"] == {"event_payload_key": "tokens"}
    assert body["default_aggregation"] == {"formula": "last"}
    assert body["event_time_window"] == "hour"


def test_ids_are_random_not_sequential(client: stripe.StripeClient) -> None:
    ids = [client.v1.billing.meters.create({**CREATE, "event_name": f"e{i}"}).id for i in range(3)]
    assert len(set(ids)) == 3
    assert sorted(ids) != ids or sorted(ids, reverse=True) != ids or len({i[-6:] for i in ids}) == 3


def test_retrieve_update_deactivate_reactivate(client: stripe.StripeClient) -> None:
    meter = client.v1.billing.meters.create(CREATE)
    fetched = client.v1.billing.meters.retrieve(meter.id)
    assert raw(fetched) == raw(meter)

    time.sleep(1.05)
    renamed = client.v1.billing.meters.update(meter.id, {"display_name": "Renamed"})
    assert_matches(raw(renamed), "billing.meter")
    assert renamed.display_name == "Renamed"
    assert renamed.updated > meter.updated
    assert renamed.created == meter.created

    off = client.v1.billing.meters.deactivate(meter.id)
    assert_matches(raw(off), "billing.meter")
    assert off.status == "inactive"
    assert off.status_transitions.deactivated_at is not None
    assert off.status_transitions.deactivated_at >= renamed.updated
    again = client.v1.billing.meters.deactivate(meter.id)
    assert raw(again) == raw(off), "deactivating an inactive meter returns it unchanged"

    on = client.v1.billing.meters.reactivate(meter.id)
    assert on.status == "active"
    assert on.status_transitions.deactivated_at is None
    assert raw(client.v1.billing.meters.reactivate(meter.id)) == raw(on)
    assert raw(client.v1.billing.meters.retrieve(meter.id)) == raw(on)


def test_legacy_global_style_resource_methods(server: RunningServer, account_key: str) -> None:
    stripe.api_key = account_key
    stripe.api_base = server.base_url
    try:
        meter = stripe.billing.Meter.create(**CREATE)  # type: ignore[arg-type]
        assert stripe.billing.Meter.modify(meter.id, display_name="x").display_name == "x"
        assert stripe.billing.Meter.deactivate(meter.id).status == "inactive"
        assert stripe.billing.Meter.reactivate(meter.id).status == "active"
        assert [m.id for m in stripe.billing.Meter.list(status="active").data] == [meter.id]
    finally:
        stripe.api_key = None
        stripe.api_base = "https://api.stripe.com"


def test_list_newest_first_with_pagination_and_status_filter(client: stripe.StripeClient) -> None:
    created = [
        client.v1.billing.meters.create({**CREATE, "event_name": f"event_{i}"}).id
        for i in range(23)
    ]
    newest_first = created[::-1]
    client.v1.billing.meters.deactivate(created[0])
    client.v1.billing.meters.deactivate(created[5])

    page = client.v1.billing.meters.list({"limit": 10})
    assert_matches_response(raw(page), "/v1/billing/meters")
    assert raw(page)["url"] == "/v1/billing/meters"
    assert [m.id for m in page.data] == newest_first[:10]
    assert page.has_more is True

    assert [m.id for m in page.auto_paging_iter()] == newest_first

    default = client.v1.billing.meters.list()
    assert len(default.data) == 10

    after = client.v1.billing.meters.list({"limit": 5, "starting_after": newest_first[19]})
    assert [m.id for m in after.data] == newest_first[20:]
    assert after.has_more is False

    before = client.v1.billing.meters.list({"limit": 3, "ending_before": newest_first[10]})
    assert [m.id for m in before.data] == newest_first[7:10]
    assert before.has_more is True

    inactive = client.v1.billing.meters.list({"status": "inactive"})
    assert [m.id for m in inactive.data] == [created[5], created[0]]
    active = list(
        client.v1.billing.meters.list({"status": "active", "limit": 4}).auto_paging_iter()
    )
    assert len(active) == 21
    assert all(m.status == "active" for m in active)

    full = client.v1.billing.meters.list({"limit": 100})
    assert len(full.data) == 23 and full.has_more is False


def test_accounts_and_modes_are_isolated(
    server: RunningServer, client: stripe.StripeClient
) -> None:
    mine = client.v1.billing.meters.create(CREATE)
    other = server.client(new_account_key(server, "test"))
    assert other.v1.billing.meters.list().data == []
    with pytest.raises(stripe.InvalidRequestError) as missing:
        other.v1.billing.meters.retrieve(mine.id)
    assert missing.value.http_status == 404
    # The same event name is free in another account.
    assert other.v1.billing.meters.create(CREATE).event_name == "api_call"

    live = server.client(new_account_key(server, "live"))
    live_meter = live.v1.billing.meters.create(CREATE)
    assert live_meter.livemode is True
    assert live_meter.id.startswith("mtr_") and not live_meter.id.startswith("mtr_test_")


def test_live_and_test_keys_of_one_account_see_separate_data(server: RunningServer) -> None:
    test_key = new_account_key(server, "test")
    # `keys create` without --new-account adds to the first account; make one pair by hand.
    test_client = server.client(test_key)
    test_client.v1.billing.meters.create(CREATE)
    first_live = server.client(server.meterd("keys", "create", "--mode", "live").stdout.split()[-1])
    first_test = server.client(server.secret_key)
    first_test.v1.billing.meters.create({**CREATE, "event_name": "shared_name"})
    assert all(m.livemode for m in first_live.v1.billing.meters.list().data)
    assert "shared_name" not in [m.event_name for m in first_live.v1.billing.meters.list().data]
    # The same event name may exist once per mode.
    assert first_live.v1.billing.meters.create({**CREATE, "event_name": "shared_name"}).livemode


def error_of(exc: pytest.ExceptionInfo[stripe.StripeError]) -> dict[str, Any]:
    body = exc.value.json_body
    assert body is not None
    assert_matches(body, "error")
    return body["error"]  # type: ignore[no-any-return]


@pytest.mark.parametrize(
    ("params", "param", "code", "message"),
    [
        ({**CREATE, "event_name": None}, "event_name", "parameter_missing", None),
        (
            {k: v for k, v in CREATE.items() if k != "default_aggregation"},
            "default_aggregation",
            "parameter_missing",
            "Missing required param: default_aggregation.",
        ),
        (
            {**CREATE, "default_aggregation": {}},
            "default_aggregation",
            "parameter_missing",
            None,
        ),
        (
            {**CREATE, "default_aggregation": {"formula": "avg"}},
            "default_aggregation[formula]",
            None,
            "Invalid default_aggregation[formula]: must be one of count, last, or sum",
        ),
        ({**CREATE, "display_name": "x" * 251}, "display_name", None, None),
        ({**CREATE, "event_name": "e" * 101}, "event_name", None, None),
        ({**CREATE, "display_name": ""}, "display_name", "parameter_invalid_empty", None),
        ({**CREATE, "color": "red"}, "color", "parameter_unknown", None),
        (
            {**CREATE, "customer_mapping": {"type": "by_id"}},
            "customer_mapping[event_payload_key]",
            "parameter_missing",
            None,
        ),
        (
            {**CREATE, "customer_mapping": {"type": "by_email", "event_payload_key": "c"}},
            "customer_mapping[type]",
            None,
            None,
        ),
        (
            {**CREATE, "customer_mapping": {"type": "by_id", "event_payload_key": "c", "x": "y"}},
            "customer_mapping[x]",
            "parameter_unknown",
            "Received unknown parameter: customer_mapping[x]",
        ),
        (
            {**CREATE, "value_settings": {"event_payload_key": ""}},
            "value_settings[event_payload_key]",
            "parameter_invalid_empty",
            None,
        ),
        (
            {**CREATE, "value_settings": {"event_payload_key": "v" * 101}},
            "value_settings[event_payload_key]",
            None,
            None,
        ),
        ({**CREATE, "event_time_window": "week"}, "event_time_window", None, None),
        ({**CREATE, "display_name": {"nested": "hash"}}, "display_name", None, None),
    ],
)
def test_create_rejects_bad_input_like_stripe(
    client: stripe.StripeClient,
    params: dict[str, Any],
    param: str,
    code: str | None,
    message: str | None,
) -> None:
    sent = {k: v for k, v in params.items() if v is not None}
    with pytest.raises(stripe.InvalidRequestError) as exc:
        client.v1.billing.meters.create(sent)  # type: ignore[arg-type]
    assert exc.value.http_status == 400
    error = error_of(exc)
    assert error["type"] == "invalid_request_error"
    assert error["param"] == param
    assert error.get("code") == code
    if message is not None:
        assert error["message"] == message
    assert client.v1.billing.meters.list().data == [], "a rejected create wrote nothing"


def test_event_name_is_unique_among_active_and_inactive_meters(client: stripe.StripeClient) -> None:
    meter = client.v1.billing.meters.create(CREATE)
    client.v1.billing.meters.deactivate(meter.id)
    with pytest.raises(stripe.InvalidRequestError) as exc:
        client.v1.billing.meters.create({**CREATE, "display_name": "again"})
    assert exc.value.http_status == 400
    assert error_of(exc)["param"] == "event_name"
    assert [m.id for m in client.v1.billing.meters.list().data] == [meter.id]


def test_update_accepts_only_display_name(client: stripe.StripeClient) -> None:
    meter = client.v1.billing.meters.create(CREATE)
    for params, param in [
        ({"event_name": "other"}, "event_name"),
        ({"default_aggregation": {"formula": "count"}}, "default_aggregation"),
        ({"display_name": ""}, "display_name"),
    ]:
        with pytest.raises(stripe.InvalidRequestError) as exc:
            client.v1.billing.meters.update(meter.id, params)  # type: ignore[arg-type]
        assert error_of(exc)["param"] == param
    assert raw(client.v1.billing.meters.retrieve(meter.id)) == raw(meter)


@pytest.mark.parametrize("action", ["retrieve", "update", "deactivate", "reactivate"])
def test_unknown_meter_is_404_resource_missing(client: stripe.StripeClient, action: str) -> None:
    with pytest.raises(stripe.InvalidRequestError) as exc:
        getattr(client.v1.billing.meters, action)("mtr_test_doesnotexist")
    assert exc.value.http_status == 404
    error = error_of(exc)
    assert error == {
        "type": "invalid_request_error",
        "code": "resource_missing",
        "doc_url": "https://stripe.com/docs/error-codes/resource_missing",
        "message": "No such meter: 'mtr_test_doesnotexist'",
        "param": "id",
    }


@pytest.mark.parametrize(
    ("params", "param"),
    [
        ({"limit": 0}, "limit"),
        ({"limit": 101}, "limit"),
        ({"limit": "ten"}, "limit"),
        ({"status": "archived"}, "status"),
        ({"starting_after": "mtr_test_nope"}, "starting_after"),
        ({"ending_before": "mtr_test_nope"}, "ending_before"),
        ({"colour": "blue"}, "colour"),
    ],
)
def test_list_rejects_bad_params(
    client: stripe.StripeClient, params: dict[str, Any], param: str
) -> None:
    with pytest.raises(stripe.InvalidRequestError) as exc:
        client.v1.billing.meters.list(params)  # type: ignore[arg-type]
    assert exc.value.http_status in (400, 404)
    assert error_of(exc)["param"] == param


def test_wrong_key_is_401_authentication_error(server: RunningServer) -> None:
    bad = server.client("sk_test_thisisnotarealkey1234")
    with pytest.raises(stripe.AuthenticationError) as exc:
        bad.v1.billing.meters.list()
    assert exc.value.http_status == 401
    error = error_of(exc)  # type: ignore[arg-type]
    assert error["type"] == "invalid_request_error"
    assert "1234" in error["message"]
    assert "thisisnotarealkey" not in error["message"], "only the last four characters show"

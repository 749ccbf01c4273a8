"""Idempotency-Key on event writes, kept inside the group commit with the events."""

from __future__ import annotations

import concurrent.futures
import time
from collections.abc import Iterator
from decimal import Decimal
from typing import Any

import httpx
import pytest
import stripe

from tests.conftest import RunningServer
from tests.e2e.support import new_meter, unique

FORM = {"Content-Type": "application/x-www-form-urlencoded"}


@pytest.fixture
def http(server: RunningServer, shared_key: str) -> Iterator[httpx.Client]:
    with httpx.Client(
        base_url=server.base_url, headers={"Authorization": f"Bearer {shared_key}"}
    ) as client:
        yield client


def v1_event(http: httpx.Client, event_name: str, value: str, key: str) -> httpx.Response:
    body = f"event_name={event_name}&payload[stripe_customer_id]=c&payload[value]={value}"
    return http.post(
        "/v1/billing/meter_events", content=body, headers={**FORM, "Idempotency-Key": key}
    )


def v2_event(http: httpx.Client, event_name: str, value: str, key: str) -> httpx.Response:
    body = {"event_name": event_name, "payload": {"stripe_customer_id": "c", "value": value}}
    return http.post("/v2/billing/meter_events", json=body, headers={"Idempotency-Key": key})


def total(client: stripe.StripeClient, meter_id: str) -> Decimal:
    now = int(time.time())
    start = now - now % 3600 - 3600
    page = client.v1.billing.meters.event_summaries.list(
        meter_id, {"customer": "c", "start_time": start, "end_time": start + 3 * 3600}
    )
    return Decimal(str(page.data[0].aggregated_value))


@pytest.mark.parametrize("send", [v1_event, v2_event], ids=["v1", "v2"])
def test_a_retry_replays_the_first_answer_and_counts_once(
    http: httpx.Client, shared: stripe.StripeClient, send: Any
) -> None:
    meter = new_meter(shared)
    key = unique("key")
    first = send(http, meter.event_name, "5", key)
    again = send(http, meter.event_name, "5", key)
    assert first.status_code == again.status_code == 200
    assert again.content == first.content  # same generated identifier, same timestamps
    assert again.headers["idempotent-replayed"] == "true"
    assert "idempotent-replayed" not in first.headers
    assert total(shared, meter.id) == 5


@pytest.mark.parametrize("send", [v1_event, v2_event], ids=["v1", "v2"])
def test_the_same_key_with_other_params_is_an_idempotency_error(
    http: httpx.Client, shared: stripe.StripeClient, send: Any
) -> None:
    meter = new_meter(shared)
    key = unique("key")
    assert send(http, meter.event_name, "5", key).status_code == 200
    reused = send(http, meter.event_name, "6", key)
    assert reused.status_code == 400
    assert reused.json()["error"]["type"] == "idempotency_error"
    assert total(shared, meter.id) == 5


def test_concurrent_requests_with_one_key_write_once(
    http: httpx.Client, shared: stripe.StripeClient
) -> None:
    meter = new_meter(shared)
    key = unique("key")
    with concurrent.futures.ThreadPoolExecutor(16) as pool:
        answers = list(pool.map(lambda _: v1_event(http, meter.event_name, "2", key), range(16)))
    assert {a.status_code for a in answers} == {200}
    assert len({a.content for a in answers}) == 1
    assert sum(a.headers.get("idempotent-replayed") == "true" for a in answers) == 15
    assert total(shared, meter.id) == 2


def test_a_key_first_used_for_a_meter_refuses_an_event(
    http: httpx.Client, shared: stripe.StripeClient
) -> None:
    meter = new_meter(shared)
    key = unique("key")
    created = http.post(
        "/v1/billing/meters",
        content=f"display_name=x&event_name={unique('ev')}&default_aggregation[formula]=sum",
        headers={**FORM, "Idempotency-Key": key},
    )
    assert created.status_code == 200
    refused = v1_event(http, meter.event_name, "1", key)
    assert refused.status_code == 400
    assert refused.json()["error"]["type"] == "idempotency_error"
    assert total(shared, meter.id) == 0


def test_a_rejected_event_does_not_keep_its_key(
    http: httpx.Client, shared: stripe.StripeClient
) -> None:
    event_name = unique("ev")
    key = unique("key")
    rejected = v2_event(http, event_name, "1", key)
    assert rejected.status_code == 400
    assert rejected.json()["error"]["code"] == "no_meter"
    meter = new_meter(shared, event_name=event_name)
    retried = v2_event(http, event_name, "1", key)
    assert retried.status_code == 200
    assert "idempotent-replayed" not in retried.headers
    assert total(shared, meter.id) == 1


def test_the_sdk_retry_path_counts_once(shared: stripe.StripeClient) -> None:
    """The SDK sends an Idempotency-Key with every POST; an explicit one makes it a retry."""
    meter = new_meter(shared)
    params: Any = {"event_name": meter.event_name, "payload": {"stripe_customer_id": "c"}}
    params["payload"]["value"] = "3"
    options: Any = {"idempotency_key": unique("key")}
    first = shared.v1.billing.meter_events.create(params, options)
    again = shared.v1.billing.meter_events.create(params, options)
    assert again.identifier == first.identifier
    assert total(shared, meter.id) == 3

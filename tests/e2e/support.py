"""Helpers the end-to-end tests share: unique names, meters, raw bodies, error envelopes."""

from __future__ import annotations

import json
import time
import uuid
from datetime import datetime
from decimal import Decimal
from typing import Any

import pytest
import stripe

from tests.spec import assert_matches

V2 = "v2-billing-meters.json"


def unique(prefix: str) -> str:
    return f"{prefix}_{uuid.uuid4().hex[:16]}"


def new_meter(client: stripe.StripeClient, formula: str = "sum", **extra: Any) -> Any:
    """A meter with a unique event name, so tests sharing an account never meet."""
    return client.v1.billing.meters.create(
        {
            "display_name": "Meter under test",
            "event_name": unique("ev"),
            "default_aggregation": {"formula": formula},  # type: ignore[typeddict-item]
            **extra,
        }
    )


def raw(obj: stripe.StripeObject) -> Any:
    """The JSON body meterd sent, as the SDK received it."""
    assert obj.last_response is not None
    return json.loads(obj.last_response.body)


def rfc3339(value: str) -> datetime:
    return datetime.fromisoformat(value.replace("Z", "+00:00"))


def v1_error(exc: pytest.ExceptionInfo[stripe.StripeError]) -> dict[str, Any]:
    assert exc.value.http_status == 400
    body = exc.value.json_body
    assert body is not None
    assert_matches(body, "error")
    return body["error"]  # type: ignore[no-any-return]


def error_of(exc: pytest.ExceptionInfo[stripe.InvalidRequestError], status: int) -> Any:
    """The v1 error of an answer with ``status``, checked against Stripe's schema."""
    assert exc.value.http_status == status
    body: Any = exc.value.json_body
    assert body is not None
    assert_matches(body, "error")
    return body["error"]


def not_found(exc: pytest.ExceptionInfo[stripe.InvalidRequestError]) -> Any:
    return error_of(exc, 404)


def v2_error(exc: pytest.ExceptionInfo[stripe.StripeError], schema: str = "v2.error") -> Any:
    assert exc.value.http_status == 400
    body = exc.value.json_body
    assert body is not None
    assert_matches(body, "v2.error", V2)
    assert_matches(body, schema, V2)
    return body["error"]


DAY = 86400


def total(
    client: stripe.StripeClient,
    meter_id: str,
    customer: str = "c",
    start: int | None = None,
    end: int | None = None,
) -> Decimal:
    """The meter's aggregate for ``customer`` (by default 40 days back to a day ahead), exact."""
    now = int(time.time())
    start = (now - 40 * DAY) // 60 * 60 if start is None else start
    end = (now + DAY) // 60 * 60 if end is None else end
    page = client.v1.billing.meters.event_summaries.list(
        meter_id, {"customer": customer, "start_time": start, "end_time": end}
    )
    assert page.last_response is not None
    body = json.loads(page.last_response.body, parse_float=Decimal)
    assert len(body["data"]) == 1
    return Decimal(body["data"][0]["aggregated_value"])

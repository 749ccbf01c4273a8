"""``meterd usage``: a customer's metered usage priced under a plan, against a real server's
database, with events sent through the official SDK."""

from __future__ import annotations

import json
import subprocess
import sys
import time
from decimal import Decimal
from typing import Any

import pytest
import stripe

from tests.conftest import RunningServer, new_account_key
from tests.e2e.support import new_meter, unique

HOUR = 3600


@pytest.fixture(scope="module")
def account(server: RunningServer) -> tuple[str, stripe.StripeClient]:
    """A new account's id (as ``meterd keys list`` shows it) and a client for it."""
    key = new_account_key(server, "test")
    listing = server.meterd("keys", "list").stdout
    row = next(line for line in listing.splitlines() if key[-4:] in line)
    account_id = next(word for word in row.replace("│", " ").split() if word.startswith("acct_"))
    return account_id, server.client(key)


def usage(server: RunningServer, *args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "meterd", "usage", *args, "--database", server.database_url],
        capture_output=True,
        text=True,
        timeout=60,
    )


def usage_json(server: RunningServer, account_id: str, *args: str) -> dict[str, Any]:
    result = usage(server, "--account", account_id, "--json", *args)
    assert result.returncode == 0, result.stderr
    return json.loads(result.stdout)  # type: ignore[no-any-return]


def period() -> tuple[str, str]:
    """The current hour and the next, as unix seconds."""
    start = int(time.time()) // HOUR * HOUR
    return str(start), str(start + 2 * HOUR)


def metered_plan(client: stripe.StripeClient, meter_id: str, **pricing: Any) -> str:
    plan_id = unique("plan")
    client.v1.plans.create(
        {
            "id": plan_id,
            "currency": "usd",
            "interval": "month",
            "usage_type": "metered",
            "meter": meter_id,
            "product": {"name": "Usage"},
            **pricing,
        }
    )
    return plan_id


def send(client: stripe.StripeClient, meter: Any, customer: str, *values: str) -> list[str]:
    identifiers = []
    for value in values:
        identifier = unique("evt")
        client.v1.billing.meter_events.create(
            {
                "event_name": meter.event_name,
                "identifier": identifier,
                "payload": {"stripe_customer_id": customer, "value": value},
            }
        )
        identifiers.append(identifier)
    return identifiers


def test_graduated_tiers_price_the_meter_sum(
    server: RunningServer, account: tuple[str, stripe.StripeClient]
) -> None:
    account_id, client = account
    meter = new_meter(client, "sum")
    plan_id = metered_plan(
        client,
        meter.id,
        billing_scheme="tiered",
        tiers_mode="graduated",
        tiers=[
            {"up_to": 5, "unit_amount_decimal": "0.5"},
            {"up_to": "inf", "unit_amount": 3, "flat_amount": 100},
        ],
    )
    customer = unique("cus")
    send(client, meter, customer, "2", "3.5", "4")
    start, end = period()
    found = usage_json(server, account_id, "--plan", plan_id, "--customer", customer,
                       "--start", start, "--end", end)  # fmt: skip
    # 9.5 units: 5 x 0.5 in the first tier, then 4.5 x 3 + 100 flat in the second.
    assert Decimal(found["quantity"]) == Decimal("9.5")
    assert Decimal(found["amount_decimal"]) == Decimal("116")
    assert found["amount"] == 116
    assert found["currency"] == "usd"
    assert found["meter"] == meter.id


def test_volume_tiers_and_a_cancelled_event(
    server: RunningServer, account: tuple[str, stripe.StripeClient]
) -> None:
    account_id, client = account
    meter = new_meter(client, "count")
    plan_id = metered_plan(
        client,
        meter.id,
        billing_scheme="tiered",
        tiers_mode="volume",
        tiers=[{"up_to": 3, "unit_amount": 10}, {"up_to": "inf", "unit_amount": 7}],
    )
    customer = unique("cus")
    identifiers = send(client, meter, customer, "1", "1", "1", "1")
    start, end = period()
    args = ("--plan", plan_id, "--customer", customer, "--start", start, "--end", end)
    assert usage_json(server, account_id, *args)["amount"] == 4 * 7
    client.v1.billing.meter_event_adjustments.create(
        {"event_name": meter.event_name, "type": "cancel", "cancel": {"identifier": identifiers[0]}}
    )
    found = usage_json(server, account_id, *args)
    assert Decimal(found["quantity"]) == 3
    assert found["amount"] == 3 * 10


def test_per_unit_with_transform_usage_and_a_decimal_amount(
    server: RunningServer, account: tuple[str, stripe.StripeClient]
) -> None:
    account_id, client = account
    meter = new_meter(client, "sum")
    plan_id = metered_plan(
        client, meter.id, amount_decimal="0.75", transform_usage={"divide_by": 4, "round": "up"}
    )
    customer = unique("cus")
    send(client, meter, customer, "7", "7")
    start, end = period()
    found = usage_json(server, account_id, "--plan", plan_id, "--customer", customer,
                       "--start", start, "--end", end)  # fmt: skip
    # 14 units, divided by 4 and rounded up: 4 billed units at 0.75 cents = 3 cents.
    assert Decimal(found["quantity"]) == 14
    assert Decimal(found["billed_quantity"]) == 4
    assert Decimal(found["amount_decimal"]) == Decimal("3")
    assert found["amount"] == 3


def test_the_table_and_iso_dates(
    server: RunningServer, account: tuple[str, stripe.StripeClient]
) -> None:
    account_id, client = account
    meter = new_meter(client, "sum")
    plan_id = metered_plan(client, meter.id, amount=250)
    customer = unique("cus")
    send(client, meter, customer, "3")
    hour = int(time.time()) // HOUR * HOUR
    start = time.strftime("%Y-%m-%dT%H:00:00Z", time.gmtime(hour))
    end = str(hour + 2 * HOUR)
    result = usage(server, "--account", account_id, "--plan", plan_id, "--customer", customer,
                   "--start", start, "--end", end)  # fmt: skip
    assert result.returncode == 0, result.stderr
    assert "7.50 USD" in result.stdout
    assert "750 usd minor units" in result.stdout
    assert meter.id in result.stdout


def test_live_mode_plans_need_live(server: RunningServer) -> None:
    """``meterd keys create --mode live`` adds a live key to the first account."""
    live = server.client(server.meterd("keys", "create", "--mode", "live").stdout.split()[-1])
    meter = new_meter(live, "sum")
    plan_id = metered_plan(live, meter.id, amount=1)
    customer = unique("cus")
    send(live, meter, customer, "5")
    start, end = period()
    args = ("--plan", plan_id, "--customer", customer, "--start", start, "--end", end, "--json")
    assert usage(server, *args).returncode == 2
    result = usage(server, *args, "--live")
    assert result.returncode == 0, result.stderr
    assert json.loads(result.stdout)["amount"] == 5


@pytest.mark.parametrize(
    ("case", "message"),
    [
        ("unknown plan", "No such plan"),
        ("licensed plan", "licensed, not metered"),
        ("unaligned end", "--end must be aligned with minute boundaries"),
        ("end before start", "--end must be after the --start"),
    ],
)
def test_problems_exit_2_with_a_message(
    server: RunningServer, account: tuple[str, stripe.StripeClient], case: str, message: str
) -> None:
    account_id, client = account
    start, end = period()
    plan_id = unique("plan")
    if case == "licensed plan":
        client.v1.plans.create(
            {
                "id": plan_id,
                "currency": "usd",
                "interval": "month",
                "amount": 1,
                "product": {"name": "Seat"},
            }
        )
    if case == "unaligned end":
        end = str(int(end) + 30)
    if case == "end before start":
        start, end = end, start
    result = usage(server, "--account", account_id, "--plan", plan_id, "--customer", "cus_x",
                   "--start", start, "--end", end)  # fmt: skip
    assert result.returncode == 2
    assert message in result.stderr
    assert "Traceback" not in result.stderr


def test_a_date_that_is_not_one(server: RunningServer) -> None:
    result = usage(server, "--plan", "p", "--customer", "c", "--start", "yesterday", "--end", "0")
    assert result.returncode == 2
    assert "ISO 8601" in result.stderr

"""v1 Plans through the official ``stripe`` SDK against a real ``meterd serve``.

API-NOTES section 7: create (per_unit or tiered, licensed or metered on an active meter, an
existing product or an inline one), retrieve, update (only active, metadata, nickname, product,
trial_period_days), list (active, product, created, cursor pagination, newest first) and delete.
``tiers`` appear only when expanded. Every cross-field rule of ``billing/plans.py`` answers 400
naming its param.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Iterator
from decimal import Decimal
from typing import Any

import pytest
import stripe

from tests.conftest import RunningServer, new_account_key
from tests.e2e.support import error_of, new_meter, not_found, raw, unique, v1_error
from tests.spec import assert_matches, assert_matches_response

MISSING = object()
"""Marks a key to drop from the base params in a parametrized case."""


@pytest.fixture(scope="module")
def product(shared: stripe.StripeClient) -> str:
    """One product for the module's plans that need nothing special from theirs."""
    return shared.v1.products.create({"name": "Plans under test"}).id


def plan_params(product: Any, /, **changes: Any) -> Any:
    """A valid per_unit licensed plan, with ``changes`` applied (``MISSING`` drops a key)."""
    params: dict[str, Any] = {
        "currency": "usd",
        "interval": "month",
        "amount": 1000,
        "product": product,
    }
    params.update(changes)
    return {k: v for k, v in params.items() if v is not MISSING}


def create(client: stripe.StripeClient, params: Any) -> Any:
    """Create a plan and check the body meterd sent against Stripe's schema."""
    plan = client.v1.plans.create(params)
    assert_matches(raw(plan), "plan")
    return plan


def rejected(client: stripe.StripeClient, params: Any) -> dict[str, Any]:
    """The v1 error of a create that must fail with 400."""
    with pytest.raises(stripe.InvalidRequestError) as exc:
        client.v1.plans.create(params)
    return v1_error(exc)


def count_plans(client: stripe.StripeClient) -> int:
    return len(list(client.v1.plans.list({"limit": 100}).auto_paging_iter()))


GRADUATED_TIERS = [
    {"up_to": 100, "unit_amount": 10, "flat_amount": 500},
    {"up_to": 1000, "unit_amount_decimal": "0.5"},
    {"up_to": "inf", "flat_amount_decimal": "12.345", "unit_amount_decimal": "2.00"},
]
GRADUATED_RENDERED = [
    {
        "flat_amount": 500,
        "flat_amount_decimal": "500",
        "unit_amount": 10,
        "unit_amount_decimal": "10",
        "up_to": 100,
    },
    {
        "flat_amount": None,
        "flat_amount_decimal": None,
        "unit_amount": None,
        "unit_amount_decimal": "0.5",
        "up_to": 1000,
    },
    {
        "flat_amount": None,
        "flat_amount_decimal": "12.345",
        "unit_amount": 2,
        "unit_amount_decimal": "2",
        "up_to": None,
    },
]


def tiered_params(product: str, mode: str = "graduated", /, **changes: Any) -> Any:
    tiered = {"amount": MISSING, "billing_scheme": "tiered", "tiers_mode": mode}
    return plan_params(product, **{**tiered, "tiers": GRADUATED_TIERS, **changes})


# --- create: per_unit -------------------------------------------------------------------------


def test_create_per_unit_plan_with_stripe_defaults(
    shared: stripe.StripeClient, product: str
) -> None:
    before = int(time.time())
    plan = create(shared, plan_params(product))
    body = raw(plan)
    assert body["object"] == "plan"
    assert body["id"].startswith("price_") and len(body["id"]) == len("price_") + 24
    assert before <= body["created"] <= int(time.time())
    assert "tiers" not in body, "tiers appear only when expanded"
    assert {k: v for k, v in body.items() if k not in ("id", "created")} == {
        "object": "plan",
        "active": True,
        "amount": 1000,
        "amount_decimal": "1000",
        "billing_scheme": "per_unit",
        "currency": "usd",
        "interval": "month",
        "interval_count": 1,
        "livemode": False,
        "metadata": {},
        "meter": None,
        "nickname": None,
        "product": product,
        "tiers_mode": None,
        "transform_usage": None,
        "trial_period_days": None,
        "usage_type": "licensed",
    }
    assert isinstance(plan, stripe.Plan)
    assert raw(shared.v1.plans.retrieve(plan.id)) == body


@pytest.mark.parametrize(
    ("given", "amount", "amount_decimal"),
    [
        ({"amount": 0}, 0, "0"),
        ({"amount": 2500}, 2500, "2500"),
        ({"amount_decimal": "0.05"}, None, "0.05"),
        ({"amount_decimal": "2000.00"}, 2000, "2000"),
        ({"amount_decimal": "12.50"}, None, "12.5"),
        ({"amount_decimal": "0.000000000001"}, None, "0.000000000001"),
        ({"amount_decimal": "7"}, 7, "7"),
        ({"amount": 2**63 - 1}, 2**63 - 1, str(2**63 - 1)),
        ({"amount_decimal": "1.0000000000000"}, 1, "1"),
        ({"amount_decimal": "007.50"}, None, "7.5"),
        ({"amount_decimal": "-0"}, 0, "0"),
    ],
)
def test_per_unit_amount_and_amount_decimal_are_rendered_together(
    shared: stripe.StripeClient,
    product: str,
    given: dict[str, Any],
    amount: int | None,
    amount_decimal: str,
) -> None:
    plan = create(shared, plan_params(product, **{"amount": MISSING, **given}))
    body = raw(plan)
    assert body["amount"] == amount
    assert body["amount_decimal"] == amount_decimal
    assert raw(shared.v1.plans.retrieve(plan.id)) == body


def test_create_with_every_optional_field(shared: stripe.StripeClient, product: str) -> None:
    plan = create(
        shared,
        plan_params(
            product,
            active=False,
            interval="week",
            interval_count=2,
            metadata={"tier": "gold", "empty": ""},
            nickname="Gold weekly",
            trial_period_days=14,
            currency="eur",
        ),
    )
    body = raw(plan)
    assert body["active"] is False
    assert body["interval"] == "week"
    assert body["interval_count"] == 2
    assert body["metadata"] == {"tier": "gold"}, "an empty value is not stored on create"
    assert body["nickname"] == "Gold weekly"
    assert body["trial_period_days"] == 14
    assert body["currency"] == "eur"


def test_uppercase_currency_is_accepted_and_rendered_lowercase(
    shared: stripe.StripeClient, product: str
) -> None:
    plan = create(shared, plan_params(product, currency="USD"))
    assert raw(plan)["currency"] == "usd"
    assert raw(shared.v1.plans.retrieve(plan.id))["currency"] == "usd"


@pytest.mark.parametrize(
    ("interval", "longest"), [("day", 1095), ("week", 156), ("month", 36), ("year", 3)]
)
def test_interval_count_up_to_three_years_is_accepted(
    shared: stripe.StripeClient, product: str, interval: str, longest: int
) -> None:
    plan = create(shared, plan_params(product, interval=interval, interval_count=longest))
    assert raw(plan)["interval_count"] == longest


def test_trial_period_days_bounds(shared: stripe.StripeClient, product: str) -> None:
    assert create(shared, plan_params(product, trial_period_days=730)).trial_period_days == 730
    assert create(shared, plan_params(product, trial_period_days=0)).trial_period_days == 0


def test_transform_usage_is_rendered(shared: stripe.StripeClient, product: str) -> None:
    plan = create(shared, plan_params(product, transform_usage={"divide_by": 1000, "round": "up"}))
    body = raw(plan)
    assert body["transform_usage"] == {"divide_by": 1000, "round": "up"}
    assert_matches(body["transform_usage"], "transform_usage")
    fetched = shared.v1.plans.retrieve(plan.id, {"expand": ["transform_usage"]})
    assert raw(fetched)["transform_usage"] == {"divide_by": 1000, "round": "up"}


# --- create: tiered ---------------------------------------------------------------------------


@pytest.mark.parametrize("mode", ["graduated", "volume"])
def test_tiered_plan_shows_tiers_only_when_expanded(
    shared: stripe.StripeClient, product: str, mode: str
) -> None:
    plan = create(shared, tiered_params(product, mode))
    body = raw(plan)
    assert "tiers" not in body
    assert body["billing_scheme"] == "tiered"
    assert body["tiers_mode"] == mode
    assert body["amount"] is None and body["amount_decimal"] is None

    expanded = shared.v1.plans.retrieve(plan.id, {"expand": ["tiers"]})
    expanded_body = raw(expanded)
    assert_matches(expanded_body, "plan")
    assert expanded_body["tiers"] == GRADUATED_RENDERED
    for tier in expanded_body["tiers"]:
        assert_matches(tier, "plan_tier")
    assert expanded.tiers is not None and expanded.tiers[-1].up_to is None, "inf is null"
    assert {k: v for k, v in expanded_body.items() if k != "tiers"} == body

    assert "tiers" not in raw(shared.v1.plans.retrieve(plan.id))


def test_create_with_expand_tiers_answers_with_tiers(
    shared: stripe.StripeClient, product: str
) -> None:
    plan = create(
        shared,
        tiered_params(
            product,
            "volume",
            tiers=[{"up_to": 5, "flat_amount": 0}, {"up_to": "inf", "unit_amount": 3}],
            expand=["tiers"],
        ),
    )
    assert raw(plan)["tiers"] == [
        {
            "flat_amount": 0,
            "flat_amount_decimal": "0",
            "unit_amount": None,
            "unit_amount_decimal": None,
            "up_to": 5,
        },
        {
            "flat_amount": None,
            "flat_amount_decimal": None,
            "unit_amount": 3,
            "unit_amount_decimal": "3",
            "up_to": None,
        },
    ]


def test_a_single_inf_tier_is_valid(shared: stripe.StripeClient, product: str) -> None:
    plan = create(
        shared,
        tiered_params(product, tiers=[{"up_to": "inf", "unit_amount": 1}], expand=["tiers"]),
    )
    assert [t["up_to"] for t in raw(plan)["tiers"]] == [None]


def test_expand_tiers_on_a_per_unit_plan_adds_nothing(
    shared: stripe.StripeClient, product: str
) -> None:
    plan = create(shared, plan_params(product))
    fetched = raw(shared.v1.plans.retrieve(plan.id, {"expand": ["tiers"]}))
    assert_matches(fetched, "plan")
    assert fetched.get("tiers") in (None, [])


# --- product: by id, inline, expanded ---------------------------------------------------------


def test_expand_product_renders_the_full_product(shared: stripe.StripeClient, product: str) -> None:
    plan = create(shared, plan_params(product, expand=["product"]))
    body = raw(plan)
    assert_matches(body["product"], "product")
    assert body["product"]["id"] == product
    assert body["product"]["object"] == "product"
    assert body["product"]["name"] == "Plans under test"
    assert isinstance(plan.product, stripe.Product)

    fetched = raw(shared.v1.plans.retrieve(plan.id, {"expand": ["product"]}))
    assert_matches(fetched, "plan")
    assert fetched["product"] == raw(shared.v1.products.retrieve(product))
    assert raw(shared.v1.plans.retrieve(plan.id))["product"] == product


def test_inline_product_is_created_with_the_plan(shared: stripe.StripeClient) -> None:
    plan = create(
        shared,
        plan_params(
            MISSING,
            product={
                "name": "Gold",
                "unit_label": "seat",
                "statement_descriptor": "GOLD PLAN",
                "metadata": {"k": "v"},
            },
        ),
    )
    product_id = raw(plan)["product"]
    assert isinstance(product_id, str) and product_id.startswith("prod_")
    product = shared.v1.products.retrieve(product_id)
    body = raw(product)
    assert body["name"] == "Gold"
    assert body["unit_label"] == "seat"
    assert body["statement_descriptor"] == "GOLD PLAN"
    assert body["metadata"] == {"k": "v"}
    assert body["active"] is True
    assert body["livemode"] is False


def test_inline_product_with_custom_id_and_expand(shared: stripe.StripeClient) -> None:
    product_id = unique("prod")
    plan = create(
        shared,
        plan_params(MISSING, product={"id": product_id, "name": "Silver"}, expand=["product"]),
    )
    body = raw(plan)
    assert body["product"]["id"] == product_id
    assert body["product"]["name"] == "Silver"
    assert raw(shared.v1.products.retrieve(product_id)) == body["product"]


def test_missing_product_is_parameter_missing(shared: stripe.StripeClient) -> None:
    error = rejected(shared, plan_params(MISSING))
    assert error["code"] == "parameter_missing"
    assert error["param"] == "product"
    assert error["message"] == "Missing required param: product."


def test_unknown_product_is_resource_missing(shared: stripe.StripeClient) -> None:
    error = rejected(shared, plan_params("prod_doesnotexist"))
    assert error == {
        "type": "invalid_request_error",
        "code": "resource_missing",
        "doc_url": "https://stripe.com/docs/error-codes/resource_missing",
        "message": "No such product: 'prod_doesnotexist'",
        "param": "product",
    }


def test_product_of_another_account_is_resource_missing(
    server: RunningServer, shared: stripe.StripeClient
) -> None:
    other = server.client(new_account_key(server, "test"))
    theirs = other.v1.products.create({"name": "Theirs"}).id
    error = rejected(shared, plan_params(theirs))
    assert error["code"] == "resource_missing"
    assert error["param"] == "product"


def test_inline_product_id_clash_leaves_no_plan_behind(
    client: stripe.StripeClient,
) -> None:
    taken = client.v1.products.create({"name": "Taken", "id": unique("prod")}).id
    create(client, plan_params(taken))
    before = count_plans(client)
    plan_id = unique("plan")
    error = rejected(
        client, plan_params(MISSING, id=plan_id, product={"id": taken, "name": "Clash"})
    )
    assert error["code"] == "resource_already_exists"
    assert error["param"] == "product[id]"
    assert count_plans(client) == before
    with pytest.raises(stripe.InvalidRequestError) as exc:
        client.v1.plans.retrieve(plan_id)
    assert not_found(exc)["param"] == "plan"
    assert client.v1.products.retrieve(taken).name == "Taken", "the existing product is intact"


def test_plan_id_clash_leaves_no_inline_product_behind(client: stripe.StripeClient) -> None:
    plan_id = unique("plan")
    create(client, plan_params(MISSING, id=plan_id, product={"name": "First"}))
    products_before = len(client.v1.products.list({"limit": 100}).data)
    product_id = unique("prod")
    error = rejected(
        client, plan_params(MISSING, id=plan_id, product={"id": product_id, "name": "Second"})
    )
    assert error["code"] == "resource_already_exists"
    assert error["param"] == "id"
    with pytest.raises(stripe.InvalidRequestError) as exc:
        client.v1.products.retrieve(product_id)
    assert not_found(exc)["code"] == "resource_missing"
    assert len(client.v1.products.list({"limit": 100}).data) == products_before


# --- metered plans and meters -----------------------------------------------------------------


def test_metered_plan_on_an_active_meter(shared: stripe.StripeClient, product: str) -> None:
    meter = new_meter(shared)
    plan = create(shared, plan_params(product, usage_type="metered", meter=meter.id))
    body = raw(plan)
    assert body["usage_type"] == "metered"
    assert body["meter"] == meter.id
    assert raw(shared.v1.plans.retrieve(plan.id))["meter"] == meter.id


def test_metered_tiered_plan(shared: stripe.StripeClient, product: str) -> None:
    meter = new_meter(shared)
    plan = create(shared, tiered_params(product, "graduated", usage_type="metered", meter=meter.id))
    assert raw(plan)["meter"] == meter.id
    assert raw(plan)["usage_type"] == "metered"


def test_a_meter_that_plans_use_can_be_deactivated_and_reactivated(
    shared: stripe.StripeClient, product: str
) -> None:
    meter = new_meter(shared)
    plan = create(shared, plan_params(product, usage_type="metered", meter=meter.id))
    assert shared.v1.billing.meters.deactivate(meter.id).status == "inactive"
    assert raw(shared.v1.plans.retrieve(plan.id))["meter"] == meter.id
    updated = shared.v1.plans.update(plan.id, {"nickname": "on an inactive meter"})
    assert raw(updated)["meter"] == meter.id
    shared.v1.billing.meters.reactivate(meter.id)
    create(shared, plan_params(product, usage_type="metered", meter=meter.id))


def test_metered_plan_on_an_inactive_meter_is_rejected(
    shared: stripe.StripeClient, product: str
) -> None:
    meter = new_meter(shared)
    shared.v1.billing.meters.deactivate(meter.id)
    error = rejected(shared, plan_params(product, usage_type="metered", meter=meter.id))
    assert error["param"] == "meter"
    assert meter.id in error["message"]
    assert "inactive" in error["message"]


def test_metered_plan_on_another_accounts_meter_is_resource_missing(
    server: RunningServer, shared: stripe.StripeClient, product: str
) -> None:
    other = server.client(new_account_key(server, "test"))
    theirs = new_meter(other)
    error = rejected(shared, plan_params(product, usage_type="metered", meter=theirs.id))
    assert error["param"] == "meter"
    assert error["code"] == "resource_missing"
    assert error["message"] == f"No such meter: '{theirs.id}'"


def test_metered_plan_on_an_unknown_meter_is_resource_missing(
    shared: stripe.StripeClient, product: str
) -> None:
    error = rejected(shared, plan_params(product, usage_type="metered", meter="mtr_test_nope"))
    assert error["param"] == "meter"
    assert error["code"] == "resource_missing"


def test_meter_on_a_licensed_plan_is_rejected(shared: stripe.StripeClient, product: str) -> None:
    meter = new_meter(shared)
    error = rejected(shared, plan_params(product, meter=meter.id))
    assert error["param"] == "meter"
    assert error["message"] == "A `meter` can only be set when `usage_type=metered`."


def test_metered_plan_without_meter_is_rejected(shared: stripe.StripeClient, product: str) -> None:
    error = rejected(shared, plan_params(product, usage_type="metered"))
    assert error["param"] == "meter"
    assert "requires a `meter`" in error["message"]


# --- custom ids -------------------------------------------------------------------------------


def test_custom_id_and_clash(shared: stripe.StripeClient, product: str) -> None:
    plan_id = unique("plan")
    plan = create(shared, plan_params(product, id=plan_id))
    assert raw(plan)["id"] == plan_id
    error = rejected(shared, plan_params(product, id=plan_id, amount=1))
    assert error["code"] == "resource_already_exists"
    assert error["param"] == "id"
    assert error["message"] == "Plan already exists."
    assert raw(shared.v1.plans.retrieve(plan_id))["amount"] == 1000, "the first plan is intact"


def account_of(server: RunningServer, key: str) -> str:
    """The account column of ``meterd keys list`` for the row showing ``key``'s last four."""
    shown = f"{key[:8]}...{key[-4:]}"
    rows = [line for line in server.meterd("keys", "list").stdout.splitlines() if shown in line]
    assert len(rows) == 1, rows
    cells = [cell.strip() for cell in rows[0].split("\u2502")]
    return cells[2]


def test_same_custom_id_in_live_mode_of_the_same_account(server: RunningServer) -> None:
    # `keys create` without --new-account adds a key to the first account, so these two keys
    # are one account in its two modes (whichever account `first_account()` picks).
    test_key = server.meterd("keys", "create", "--mode", "test").stdout.split()[-1]
    live_key = server.meterd("keys", "create", "--mode", "live").stdout.split()[-1]
    assert test_key.startswith("sk_test_") and live_key.startswith("sk_live_")
    assert account_of(server, test_key) == account_of(server, live_key)
    test_client = server.client(test_key)
    live_client = server.client(live_key)
    plan_id = unique("plan")

    test_product = test_client.v1.products.create({"name": "Test mode"}).id
    test_plan = create(test_client, plan_params(test_product, id=plan_id))
    assert raw(test_plan)["livemode"] is False

    # The test-mode product is invisible in live mode.
    error = rejected(live_client, plan_params(test_product, id=plan_id))
    assert error["code"] == "resource_missing" and error["param"] == "product"

    live_plan = create(live_client, plan_params(MISSING, id=plan_id, product={"name": "Live"}))
    live_body = raw(live_plan)
    assert live_body["id"] == plan_id
    assert live_body["livemode"] is True
    assert raw(live_client.v1.products.retrieve(live_body["product"]))["livemode"] is True
    assert test_client.v1.plans.retrieve(plan_id).livemode is False
    assert live_client.v1.plans.retrieve(plan_id).livemode is True


def test_same_custom_id_in_another_account(
    server: RunningServer, shared: stripe.StripeClient, product: str
) -> None:
    plan_id = unique("plan")
    create(shared, plan_params(product, id=plan_id))
    other = server.client(new_account_key(server, "test"))
    theirs = create(other, plan_params(MISSING, id=plan_id, product={"name": "Theirs"}))
    assert theirs.id == plan_id
    assert theirs.product != product


# --- create: cross-field rules and malformed input --------------------------------------------

TIERED: dict[str, Any] = {"amount": MISSING, "billing_scheme": "tiered", "tiers_mode": "volume"}
INF = {"up_to": "inf", "unit_amount": 1}


@pytest.mark.parametrize(
    ("changes", "param", "code", "message"),
    [
        (
            {"amount_decimal": "10"},
            None,
            "parameters_exclusive",
            "You may only specify one of these parameters: amount, amount_decimal.",
        ),
        (
            {"amount": MISSING},
            "amount",
            None,
            "Plans require an `amount` parameter to be set when `billing_scheme=per_unit`.",
        ),
        (
            {"tiers": [INF]},
            "tiers",
            None,
            "Tiers can only be set when `billing_scheme=tiered`.",
        ),
        (
            {"tiers_mode": "graduated"},
            "tiers_mode",
            None,
            "A tiers_mode can only be set when `billing_scheme=tiered`.",
        ),
        (
            {**TIERED},
            "tiers",
            None,
            "Plans require `tiers` to be set when `billing_scheme=tiered`.",
        ),
        (
            {**TIERED, "tiers_mode": MISSING, "tiers": [INF]},
            "tiers_mode",
            None,
            "Plans require `tiers_mode` to be set when `billing_scheme=tiered`.",
        ),
        ({**TIERED, "amount": 5, "tiers": [INF]}, "amount", None, None),
        ({**TIERED, "amount_decimal": "5", "tiers": [INF]}, "amount_decimal", None, None),
        (
            {**TIERED, "tiers": [INF], "transform_usage": {"divide_by": 10, "round": "up"}},
            "transform_usage",
            None,
            "transform_usage cannot be combined with tiers.",
        ),
        (
            {**TIERED, "tiers": [{"up_to": 10, "unit_amount": 1}, {"up_to": 20, "unit_amount": 1}]},
            "tiers[1][up_to]",
            None,
            "The last tier must have `up_to` set to `inf`.",
        ),
        (
            {**TIERED, "tiers": [INF, {"up_to": 20, "unit_amount": 1}]},
            "tiers[0][up_to]",
            None,
            "Only the last tier can have `up_to` set to `inf`.",
        ),
        (
            {**TIERED, "tiers": [INF, INF]},
            "tiers[0][up_to]",
            None,
            "Only the last tier can have `up_to` set to `inf`.",
        ),
        (
            {
                **TIERED,
                "tiers": [{"up_to": 10, "unit_amount": 1}, {"up_to": 10, "unit_amount": 1}, INF],
            },
            "tiers[1][up_to]",
            None,
            "Each tier's `up_to` must be greater than the previous tier's.",
        ),
        (
            {
                **TIERED,
                "tiers": [{"up_to": 10, "unit_amount": 1}, {"up_to": 5, "unit_amount": 1}, INF],
            },
            "tiers[1][up_to]",
            None,
            "Each tier's `up_to` must be greater than the previous tier's.",
        ),
        ({**TIERED, "tiers": [{"up_to": 0, "unit_amount": 1}, INF]}, "tiers[0][up_to]", None, None),
        (
            {**TIERED, "tiers": [{"up_to": "ten", "unit_amount": 1}, INF]},
            "tiers[0][up_to]",
            None,
            None,
        ),
        ({**TIERED, "tiers": [{"up_to": 10}, INF]}, "tiers[0]", None, None),
        ({**TIERED, "tiers": [{"up_to": "inf"}]}, "tiers[0]", None, None),
        (
            {**TIERED, "tiers": [{"up_to": "inf", "unit_amount": 1, "unit_amount_decimal": "1"}]},
            None,
            "parameters_exclusive",
            "You may only specify one of these parameters: tiers[0][unit_amount], "
            "tiers[0][unit_amount_decimal].",
        ),
        (
            {**TIERED, "tiers": [{"up_to": "inf", "flat_amount": 1, "flat_amount_decimal": "1"}]},
            None,
            "parameters_exclusive",
            None,
        ),
        (
            {**TIERED, "tiers": [{"up_to": "inf", "unit_amount_decimal": "abc"}]},
            "tiers[0][unit_amount_decimal]",
            None,
            None,
        ),
        (
            {**TIERED, "tiers": [{"up_to": "inf", "flat_amount": -1}]},
            "tiers[0][flat_amount]",
            None,
            None,
        ),
        (
            {**TIERED, "tiers": [{"up_to": "inf", "unit_amount": 1, "colour": "red"}]},
            "tiers[0][colour]",
            "parameter_unknown",
            "Received unknown parameter: tiers[0][colour]",
        ),
        (
            {**TIERED, "tiers": [{"unit_amount": 1}]},
            "tiers[0][up_to]",
            "parameter_missing",
            None,
        ),
        (
            {"interval_count": 0},
            "interval_count",
            None,
            "This value must be greater than or equal to 1.",
        ),
        ({"interval_count": 37}, "interval_count", None, None),
        ({"interval": "year", "interval_count": 4}, "interval_count", None, None),
        ({"interval": "week", "interval_count": 157}, "interval_count", None, None),
        ({"interval": "day", "interval_count": 1096}, "interval_count", None, None),
        ({"interval": "fortnight"}, "interval", None, None),
        ({"interval": MISSING}, "interval", "parameter_missing", None),
        ({"currency": MISSING}, "currency", "parameter_missing", None),
        ({"currency": "xyz"}, "currency", None, None),
        ({"currency": "dollars"}, "currency", None, None),
        (
            {"trial_period_days": 731},
            "trial_period_days",
            None,
            "The maximum number of trial period days is 730 (2 years).",
        ),
        ({"trial_period_days": -1}, "trial_period_days", None, None),
        ({"amount": -1}, "amount", None, "This value must be greater than or equal to 0."),
        ({"amount": "ten"}, "amount", None, None),
        ({"amount": MISSING, "amount_decimal": "abc"}, "amount_decimal", None, None),
        ({"amount": MISSING, "amount_decimal": "1e3"}, "amount_decimal", None, None),
        ({"amount": MISSING, "amount_decimal": "-0.5"}, "amount_decimal", None, None),
        (
            {"amount": MISSING, "amount_decimal": "0.0000000000001"},
            "amount_decimal",
            None,
            None,
        ),
        (
            {"transform_usage": {"divide_by": 0, "round": "up"}},
            "transform_usage[divide_by]",
            None,
            None,
        ),
        (
            {"transform_usage": {"divide_by": 10, "round": "sideways"}},
            "transform_usage[round]",
            None,
            None,
        ),
        (
            {"transform_usage": {"round": "up"}},
            "transform_usage[divide_by]",
            "parameter_missing",
            None,
        ),
        ({"usage_type": "rented"}, "usage_type", None, None),
        ({"billing_scheme": "flat"}, "billing_scheme", None, None),
        ({"tiers_mode": "stairs"}, "tiers_mode", None, None),
        ({"metadata": "not-a-hash"}, "metadata", None, None),
        ({"metadata": {"k" * 41: "v"}}, "metadata", None, None),
        ({"metadata": {"k": "v" * 501}}, "metadata[k]", None, None),
        ({"nickname": "n" * 5001}, "nickname", None, None),
        ({"id": ""}, "id", "parameter_invalid_empty", None),
        (
            {"colour": "red"},
            "colour",
            "parameter_unknown",
            "Received unknown parameter: colour",
        ),
        ({"aggregate_usage": "sum"}, "aggregate_usage", "parameter_unknown", None),
        ({"expand": ["customer"]}, "expand", None, None),
        (
            {"product": {"name": "x", "description": "d"}},
            "product[description]",
            "parameter_unknown",
            None,
        ),
        ({"product": {"unit_label": "seat"}}, "product[name]", "parameter_missing", None),
        ({"product": {"name": ""}}, "product[name]", "parameter_invalid_empty", None),
        (
            {"product": {"name": "x", "statement_descriptor": "<GOLD>"}},
            "product[statement_descriptor]",
            None,
            None,
        ),
        (
            {"product": {"name": "x", "statement_descriptor": "s" * 23}},
            "product[statement_descriptor]",
            None,
            None,
        ),
        (
            {"product": {"name": "x", "statement_descriptor": "12345"}},
            "product[statement_descriptor]",
            None,
            None,
        ),
    ],
)
def test_create_rejects_what_stripe_rejects(
    shared: stripe.StripeClient,
    product: str,
    changes: dict[str, Any],
    param: str | None,
    code: str | None,
    message: str | None,
) -> None:
    error = rejected(shared, plan_params(product, **changes))
    assert error["type"] == "invalid_request_error"
    assert error.get("param") == param
    assert error.get("code") == code
    if message is not None:
        assert error["message"] == message


@pytest.mark.parametrize(
    ("changes", "param"),
    [
        ({"amount": 2**63}, "amount"),
        ({"amount": MISSING, "amount_decimal": str(2**63)}, "amount_decimal"),
        (
            {**TIERED, "tiers": [{"up_to": "inf", "unit_amount": 2**63}]},
            "tiers[0][unit_amount]",
        ),
    ],
)
def test_amounts_beyond_a_signed_64_bit_integer_are_rejected(
    shared: stripe.StripeClient, product: str, changes: dict[str, Any], param: str
) -> None:
    error = rejected(shared, plan_params(product, **changes))
    assert error["param"] == param


@pytest.mark.parametrize(
    "text", ["1_000", "+1", ".5", "5.", " 1", "1 ", "1,5", "0x10", "Infinity", "\u0661"]
)
@pytest.mark.parametrize("where", ["amount_decimal", "tiers[0][unit_amount_decimal]"])
def test_decimal_strings_must_be_plain_ascii_digits(
    shared: stripe.StripeClient, product: str, text: str, where: str
) -> None:
    if where == "amount_decimal":
        changes: dict[str, Any] = {"amount": MISSING, "amount_decimal": text}
    else:
        changes = {**TIERED, "tiers": [{"up_to": "inf", "unit_amount_decimal": text}]}
    error = rejected(shared, plan_params(product, **changes))
    assert error["param"] == where
    assert error["message"].startswith("Invalid decimal")


def test_a_rejected_create_writes_nothing(client: stripe.StripeClient) -> None:
    product = client.v1.products.create({"name": "Nothing"}).id
    rejected(client, plan_params(product, interval_count=0))
    rejected(client, plan_params(MISSING, interval_count=0, product={"name": "Inline"}))
    rejected(client, plan_params(product, usage_type="metered", meter="mtr_test_nope"))
    assert client.v1.plans.list().data == []
    assert [p.id for p in client.v1.products.list().data] == [product]


def test_a_retried_create_with_one_idempotency_key_makes_one_plan(
    client: stripe.StripeClient,
) -> None:
    params = plan_params(MISSING, product={"name": "Once"})
    options: Any = {"idempotency_key": unique("key")}
    first = client.v1.plans.create(params, options)
    again = client.v1.plans.create(params, options)
    assert raw(again) == raw(first)
    assert again.last_response is not None
    assert again.last_response.headers.get("Idempotent-Replayed") == "true"
    assert [p.id for p in client.v1.plans.list().data] == [first.id]
    assert [p.id for p in client.v1.products.list().data] == [first.product]
    with pytest.raises(stripe.IdempotencyError) as exc:
        client.v1.plans.create(plan_params(MISSING, product={"name": "Other"}), options)
    assert exc.value.http_status == 400
    assert count_plans(client) == 1


# --- update -----------------------------------------------------------------------------------


def test_update_active_nickname_trial_and_product(
    shared: stripe.StripeClient, product: str
) -> None:
    plan = create(shared, plan_params(product, nickname="Old", trial_period_days=7))
    other_product = shared.v1.products.create({"name": "Other"}).id
    updated = shared.v1.plans.update(
        plan.id,
        {
            "active": False,
            "nickname": "New",
            "trial_period_days": 30,
            "product": other_product,
        },
    )
    body = raw(updated)
    assert_matches(body, "plan")
    assert body["active"] is False
    assert body["nickname"] == "New"
    assert body["trial_period_days"] == 30
    assert body["product"] == other_product
    unchanged = ("amount", "amount_decimal", "currency", "interval", "created", "id", "metadata")
    assert {k: body[k] for k in unchanged} == {k: raw(plan)[k] for k in unchanged}
    assert raw(shared.v1.plans.retrieve(plan.id)) == body

    cleared = shared.v1.plans.update(plan.id, {"nickname": ""})
    assert raw(cleared)["nickname"] is None, "an empty nickname unsets it"
    assert raw(shared.v1.plans.update(plan.id, {"active": True}))["active"] is True


def test_update_with_no_params_returns_the_plan(shared: stripe.StripeClient, product: str) -> None:
    plan = create(shared, plan_params(product))
    assert raw(shared.v1.plans.update(plan.id)) == raw(plan)


def test_update_with_expand(shared: stripe.StripeClient, product: str) -> None:
    plan = create(shared, tiered_params(product))
    body = raw(shared.v1.plans.update(plan.id, {"nickname": "x", "expand": ["tiers", "product"]}))
    assert_matches(body, "plan")
    assert body["tiers"] == GRADUATED_RENDERED
    assert body["product"]["id"] == product


def test_metadata_semantics_on_update(shared: stripe.StripeClient, product: str) -> None:
    plan = create(shared, plan_params(product, metadata={"a": "1", "b": "2", "c": ""}))
    assert raw(plan)["metadata"] == {"a": "1", "b": "2"}

    merged = shared.v1.plans.update(plan.id, {"metadata": {"b": "", "d": "4", "a": "one"}})
    assert raw(merged)["metadata"] == {"a": "one", "d": "4"}, "merge; an empty value removes"
    assert raw(shared.v1.plans.retrieve(plan.id))["metadata"] == {"a": "one", "d": "4"}

    cleared = shared.v1.plans.update(plan.id, {"metadata": ""})
    assert raw(cleared)["metadata"] == {}, 'metadata="" clears every key'
    assert raw(shared.v1.plans.retrieve(plan.id))["metadata"] == {}


@pytest.mark.parametrize(
    ("params", "param", "code"),
    [
        ({"amount": 5}, "amount", "parameter_unknown"),
        ({"currency": "eur"}, "currency", "parameter_unknown"),
        ({"interval": "year"}, "interval", "parameter_unknown"),
        ({"tiers_mode": "volume"}, "tiers_mode", "parameter_unknown"),
        ({"id": "plan_renamed"}, "id", "parameter_unknown"),
        ({"meter": "mtr_test_x"}, "meter", "parameter_unknown"),
        ({"trial_period_days": 731}, "trial_period_days", None),
        ({"trial_period_days": -1}, "trial_period_days", None),
        ({"product": "prod_doesnotexist"}, "product", "resource_missing"),
        ({"product": {"name": "inline"}}, "product", None),
        ({"active": "maybe"}, "active", None),
        ({"metadata": "x"}, "metadata", None),
        ({"expand": ["customer"]}, "expand", None),
    ],
)
def test_update_rejects_what_stripe_rejects(
    shared: stripe.StripeClient,
    product: str,
    params: dict[str, Any],
    param: str,
    code: str | None,
) -> None:
    plan = create(shared, plan_params(product))
    with pytest.raises(stripe.InvalidRequestError) as exc:
        shared.v1.plans.update(plan.id, params)  # type: ignore[arg-type]
    error = v1_error(exc)
    assert error["param"] == param
    assert error.get("code") == code
    if code == "parameter_unknown":
        assert error["message"] == f"Received unknown parameter: {param}"
    assert raw(shared.v1.plans.retrieve(plan.id)) == raw(plan), "a rejected update changes nothing"


# --- retrieve and delete ----------------------------------------------------------------------


def test_delete_then_retrieve_is_404(shared: stripe.StripeClient, product: str) -> None:
    plan = create(shared, plan_params(product))
    deleted = shared.v1.plans.delete(plan.id)
    body = raw(deleted)
    assert_matches(body, "deleted_plan")
    assert body == {"id": plan.id, "object": "plan", "deleted": True}

    actions: list[Callable[[], Any]] = [
        lambda: shared.v1.plans.retrieve(plan.id),
        lambda: shared.v1.plans.update(plan.id, {"nickname": "x"}),
        lambda: shared.v1.plans.delete(plan.id),
    ]
    for action in actions:
        with pytest.raises(stripe.InvalidRequestError) as exc:
            action()
        assert not_found(exc) == {
            "type": "invalid_request_error",
            "code": "resource_missing",
            "doc_url": "https://stripe.com/docs/error-codes/resource_missing",
            "message": f"No such plan: '{plan.id}'",
            "param": "plan",
        }
    assert plan.id not in [p.id for p in shared.v1.plans.list({"product": product, "limit": 100})]


def test_a_deleted_custom_id_can_be_used_again(shared: stripe.StripeClient, product: str) -> None:
    plan_id = unique("plan")
    create(shared, plan_params(product, id=plan_id))
    shared.v1.plans.delete(plan_id)
    again = create(shared, plan_params(product, id=plan_id, amount=5))
    assert raw(again)["amount"] == 5


def test_delete_rejects_params(shared: stripe.StripeClient, product: str) -> None:
    plan = create(shared, plan_params(product))
    with pytest.raises(stripe.InvalidRequestError) as exc:
        shared.v1.plans.delete(plan.id, {"colour": "red"})  # type: ignore[arg-type]
    assert v1_error(exc)["code"] == "parameter_unknown"
    assert shared.v1.plans.retrieve(plan.id).id == plan.id


def test_another_account_cannot_see_or_touch_a_plan(
    server: RunningServer, shared: stripe.StripeClient, product: str
) -> None:
    plan = create(shared, plan_params(product))
    other = server.client(new_account_key(server, "test"))
    assert other.v1.plans.list().data == []
    actions: list[Callable[[], Any]] = [
        lambda: other.v1.plans.retrieve(plan.id),
        lambda: other.v1.plans.update(plan.id, {"active": False}),
        lambda: other.v1.plans.delete(plan.id),
    ]
    for action in actions:
        with pytest.raises(stripe.InvalidRequestError) as exc:
            action()
        assert not_found(exc)["code"] == "resource_missing"
    assert raw(shared.v1.plans.retrieve(plan.id)) == raw(plan)


# --- list -------------------------------------------------------------------------------------


@pytest.fixture
def six_plans(client: stripe.StripeClient) -> Iterator[tuple[stripe.StripeClient, list[Any]]]:
    """A fresh account with six plans on two products, the second and fifth inactive."""
    first = client.v1.products.create({"name": "First"}).id
    second = client.v1.products.create({"name": "Second"}).id
    plans = [
        create(
            client, plan_params(first if i % 2 == 0 else second, amount=i, active=i not in (1, 4))
        )
        for i in range(6)
    ]
    yield client, plans


def test_list_newest_first_with_pagination(
    six_plans: tuple[stripe.StripeClient, list[Any]],
) -> None:
    client, plans = six_plans
    newest_first = [p.id for p in reversed(plans)]

    page = client.v1.plans.list({"limit": 4})
    body = raw(page)
    assert_matches_response(body, "/v1/plans")
    assert body["object"] == "list"
    assert body["url"] == "/v1/plans"
    assert [p["id"] for p in body["data"]] == newest_first[:4]
    assert body["has_more"] is True
    assert all("tiers" not in p for p in body["data"])

    after = client.v1.plans.list({"limit": 4, "starting_after": newest_first[3]})
    assert [p.id for p in after.data] == newest_first[4:]
    assert after.has_more is False

    before = client.v1.plans.list({"limit": 2, "ending_before": newest_first[4]})
    assert [p.id for p in before.data] == newest_first[2:4]
    assert before.has_more is True

    assert [p.id for p in client.v1.plans.list({"limit": 1}).auto_paging_iter()] == newest_first
    assert [p.id for p in client.v1.plans.list().data] == newest_first, "default limit is 10"


def test_list_filters_active_and_product(
    six_plans: tuple[stripe.StripeClient, list[Any]],
) -> None:
    client, plans = six_plans
    ids = [p.id for p in plans]
    active = client.v1.plans.list({"active": True})
    assert [p.id for p in active.data] == [ids[5], ids[3], ids[2], ids[0]]
    inactive = client.v1.plans.list({"active": False})
    assert [p.id for p in inactive.data] == [ids[4], ids[1]]

    first = plans[0].product
    assert [p.id for p in client.v1.plans.list({"product": first}).data] == [
        ids[4],
        ids[2],
        ids[0],
    ]
    both = client.v1.plans.list({"product": plans[1].product, "active": True})
    assert [p.id for p in both.data] == [ids[5], ids[3]]
    paged = client.v1.plans.list({"product": first, "limit": 1}).auto_paging_iter()
    assert [p.id for p in paged] == [ids[4], ids[2], ids[0]]
    assert client.v1.plans.list({"product": "prod_doesnotexist"}).data == []


def test_list_filters_created(six_plans: tuple[stripe.StripeClient, list[Any]]) -> None:
    client, plans = six_plans
    created = {p.id: p.created for p in plans}
    low, high = min(created.values()), max(created.values())

    def listed(flt: Any) -> set[str]:
        page = client.v1.plans.list({"created": flt, "limit": 100})
        assert_matches_response(raw(page), "/v1/plans")
        return {p.id for p in page.data}

    def where(test: Any) -> set[str]:
        return {i for i, c in created.items() if test(c)}

    assert listed(low) == where(lambda c: c == low)
    assert listed(high) == where(lambda c: c == high)
    assert listed(low - 1) == set()
    assert listed({"gte": low}) == set(created)
    assert listed({"gt": low}) == where(lambda c: c > low)
    assert listed({"lte": high}) == set(created)
    assert listed({"lt": high}) == where(lambda c: c < high)
    assert listed({"gt": high}) == set()
    assert listed({"lt": low}) == set()
    assert listed({"gte": low, "lte": high}) == set(created)
    assert listed({"gte": high, "lte": low}) == where(lambda c: c == low == high)


def test_list_expands_tiers_and_product(client: stripe.StripeClient) -> None:
    product = client.v1.products.create({"name": "Listed"}).id
    tiered = create(client, tiered_params(product))
    per_unit = create(client, plan_params(product))

    plain = raw(client.v1.plans.list())
    assert all("tiers" not in p for p in plain["data"])

    expanded = raw(client.v1.plans.list({"expand": ["data.tiers", "data.product"]}))
    assert_matches_response(expanded, "/v1/plans")
    by_id = {p["id"]: p for p in expanded["data"]}
    assert by_id[tiered.id]["tiers"] == GRADUATED_RENDERED
    assert by_id[per_unit.id].get("tiers") in (None, [])
    full_product = raw(client.v1.products.retrieve(product))
    assert by_id[tiered.id]["product"] == full_product
    assert by_id[per_unit.id]["product"] == full_product

    for wrong in (["tiers"], ["data.customer"]):
        with pytest.raises(stripe.InvalidRequestError) as exc:
            client.v1.plans.list({"expand": wrong})
        assert v1_error(exc)["param"] == "expand"


@pytest.mark.parametrize(
    ("params", "param", "status"),
    [
        ({"starting_after": "price_doesnotexist"}, "starting_after", 404),
        ({"ending_before": "price_doesnotexist"}, "ending_before", 404),
        ({"limit": 0}, "limit", 400),
        ({"limit": 101}, "limit", 400),
        ({"active": "maybe"}, "active", 400),
        ({"created": {"after": 1}}, "created[after]", 400),
        ({"colour": "blue"}, "colour", 400),
    ],
)
def test_list_rejects_bad_params(
    shared: stripe.StripeClient, params: dict[str, Any], param: str, status: int
) -> None:
    with pytest.raises(stripe.InvalidRequestError) as exc:
        shared.v1.plans.list(params)  # type: ignore[arg-type]
    error = error_of(exc, status)
    assert error["param"] == param
    if status == 404:
        assert error["code"] == "resource_missing"
        assert error["message"] == "No such plan: 'price_doesnotexist'"


def test_a_cursor_from_another_account_is_unknown(
    server: RunningServer, shared: stripe.StripeClient, product: str
) -> None:
    plan = create(shared, plan_params(product))
    other = server.client(new_account_key(server, "test"))
    with pytest.raises(stripe.InvalidRequestError) as exc:
        other.v1.plans.list({"starting_after": plan.id})
    assert not_found(exc)["param"] == "starting_after"


def test_both_cursors_are_exclusive(shared: stripe.StripeClient) -> None:
    with pytest.raises(stripe.InvalidRequestError) as exc:
        shared.v1.plans.list({"starting_after": "a", "ending_before": "b"})
    assert v1_error(exc)["code"] == "parameters_exclusive"


# --- the legacy global style ------------------------------------------------------------------


def test_legacy_global_style_resource_methods(server: RunningServer, account_key: str) -> None:
    stripe.api_key = account_key
    stripe.api_base = server.base_url
    try:
        plan = stripe.Plan.create(
            currency="usd",
            interval="month",
            amount_decimal=Decimal("0.05"),
            product={"name": "Legacy"},
            nickname="legacy",
        )
        assert isinstance(plan, stripe.Plan)
        assert_matches(raw(plan), "plan")
        assert plan.amount is None and plan.amount_decimal == Decimal("0.05")
        fetched = stripe.Plan.retrieve(plan.id)
        assert raw(fetched) == raw(plan)
        modified = stripe.Plan.modify(plan.id, nickname="renamed", metadata={"k": "v"})
        assert modified.nickname == "renamed" and raw(modified)["metadata"] == {"k": "v"}
        assert [p.id for p in stripe.Plan.list(active=True).data] == [plan.id]
        deleted = stripe.Plan.delete(plan.id)
        assert_matches(raw(deleted), "deleted_plan")
        assert deleted.deleted is True
        assert stripe.Plan.list().data == []
    finally:
        stripe.api_key = None
        stripe.api_base = "https://api.stripe.com"

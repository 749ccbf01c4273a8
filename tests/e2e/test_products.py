"""v1 Products, as plans need them, through the official ``stripe`` SDK.

Create (name, active, description, metadata, unit_label, statement_descriptor, custom id),
retrieve, update (an empty string unsets an optional text field; metadata merges), list
(active, ids, created, cursor pagination, newest first) and delete, which a product with
plans refuses, as Stripe does.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from typing import Any

import pytest
import stripe

from tests.conftest import RunningServer, new_account_key
from tests.e2e.support import error_of, not_found, raw, unique, v1_error
from tests.spec import assert_matches

EMPTY_FIELDS: dict[str, Any] = {
    "default_price": None,
    "images": [],
    "marketing_features": [],
    "package_dimensions": None,
    "shippable": None,
    "tax_code": None,
    "url": None,
}


def create(client: stripe.StripeClient, params: Any) -> Any:
    product = client.v1.products.create(params)
    assert_matches(raw(product), "product")
    return product


def rejected_create(client: stripe.StripeClient, params: Any) -> dict[str, Any]:
    with pytest.raises(stripe.InvalidRequestError) as exc:
        client.v1.products.create(params)
    return v1_error(exc)


def monthly(client: stripe.StripeClient, product: str) -> Any:
    return client.v1.plans.create(
        {"currency": "usd", "interval": "month", "amount": 100, "product": product}
    )


# --- create and retrieve ----------------------------------------------------------------------


def test_create_with_only_a_name_has_stripe_defaults(shared: stripe.StripeClient) -> None:
    before = int(time.time())
    product = create(shared, {"name": "Basic"})
    body = raw(product)
    assert body["id"].startswith("prod_") and len(body["id"]) == len("prod_") + 14
    assert before <= body["created"] == body["updated"] <= int(time.time())
    assert {k: v for k, v in body.items() if k not in ("id", "created", "updated")} == {
        "object": "product",
        "active": True,
        "description": None,
        "livemode": False,
        "metadata": {},
        "name": "Basic",
        "statement_descriptor": None,
        "unit_label": None,
        **EMPTY_FIELDS,
    }
    assert isinstance(product, stripe.Product)
    assert raw(shared.v1.products.retrieve(product.id)) == body


def test_create_with_core_fields_and_custom_id(shared: stripe.StripeClient) -> None:
    product_id = unique("prod")
    product = create(
        shared,
        {
            "id": product_id,
            "name": "Gold",
            "active": False,
            "description": "The gold tier",
            "metadata": {"tier": "gold", "dropped": ""},
            "unit_label": "seat",
            "statement_descriptor": "ACME GOLD",
        },
    )
    body = raw(product)
    assert body["id"] == product_id
    assert body["name"] == "Gold"
    assert body["active"] is False
    assert body["description"] == "The gold tier"
    assert body["metadata"] == {"tier": "gold"}, "an empty value is not stored on create"
    assert body["unit_label"] == "seat"
    assert body["statement_descriptor"] == "ACME GOLD"
    assert raw(shared.v1.products.retrieve(product_id)) == body


def test_custom_id_clash(shared: stripe.StripeClient) -> None:
    product_id = unique("prod")
    create(shared, {"id": product_id, "name": "First"})
    error = rejected_create(shared, {"id": product_id, "name": "Second"})
    assert error["code"] == "resource_already_exists"
    assert error["param"] == "id"
    assert error["message"] == "Product already exists."
    assert shared.v1.products.retrieve(product_id).name == "First"


def test_statement_descriptor_of_22_characters_is_accepted(shared: stripe.StripeClient) -> None:
    descriptor = "ACME " + "X" * 17
    assert len(descriptor) == 22
    assert create(shared, {"name": "Long", "statement_descriptor": descriptor}).statement_descriptor
    assert create(shared, {"name": "Digits", "statement_descriptor": "A1234"})


@pytest.mark.parametrize(
    ("params", "param", "code", "message"),
    [
        ({}, "name", "parameter_missing", "Missing required param: name."),
        ({"name": ""}, "name", "parameter_invalid_empty", None),
        ({"name": "x", "statement_descriptor": "A" * 23}, "statement_descriptor", None, None),
        (
            {"name": "x", "statement_descriptor": "<ACME>"},
            "statement_descriptor",
            None,
            "The statement descriptor may not include any of the special characters < > \\ ' \" *",
        ),
        ({"name": "x", "statement_descriptor": "ACME*"}, "statement_descriptor", None, None),
        ({"name": "x", "statement_descriptor": "O'Hara"}, "statement_descriptor", None, None),
        (
            {"name": "x", "statement_descriptor": "12345"},
            "statement_descriptor",
            None,
            "The statement descriptor must contain at least one letter.",
        ),
        ({"name": "x", "statement_descriptor": "-- 99 --"}, "statement_descriptor", None, None),
        ({"name": "x", "unit_label": "u" * 13}, "unit_label", None, None),
        ({"name": "x", "active": "maybe"}, "active", None, None),
        ({"name": "x", "metadata": "not-a-hash"}, "metadata", None, None),
        ({"name": "x", "metadata": {"k": "v" * 501}}, "metadata[k]", None, None),
        ({"name": "x", "id": ""}, "id", "parameter_invalid_empty", None),
        (
            {"name": "x", "colour": "red"},
            "colour",
            "parameter_unknown",
            "Received unknown parameter: colour",
        ),
    ],
)
def test_create_rejects_what_stripe_rejects(
    shared: stripe.StripeClient,
    params: dict[str, Any],
    param: str,
    code: str | None,
    message: str | None,
) -> None:
    error = rejected_create(shared, params)
    assert error["type"] == "invalid_request_error"
    assert error["param"] == param
    assert error.get("code") == code
    if message is not None:
        assert error["message"] == message


@pytest.mark.parametrize("action", ["retrieve", "update", "delete"])
def test_unknown_product_is_404_with_param_id(shared: stripe.StripeClient, action: str) -> None:
    with pytest.raises(stripe.InvalidRequestError) as exc:
        getattr(shared.v1.products, action)("prod_doesnotexist")
    assert not_found(exc) == {
        "type": "invalid_request_error",
        "code": "resource_missing",
        "doc_url": "https://stripe.com/docs/error-codes/resource_missing",
        "message": "No such product: 'prod_doesnotexist'",
        "param": "id",
    }


# --- update -----------------------------------------------------------------------------------


def test_update_changes_fields_and_empty_strings_unset(shared: stripe.StripeClient) -> None:
    product = create(
        shared,
        {
            "name": "Before",
            "description": "words",
            "unit_label": "seat",
            "statement_descriptor": "ACME",
            "metadata": {"a": "1", "b": "2"},
        },
    )
    updated = shared.v1.products.update(
        product.id, {"name": "After", "active": False, "metadata": {"b": "", "c": "3"}}
    )
    body = raw(updated)
    assert_matches(body, "product")
    assert body["name"] == "After"
    assert body["active"] is False
    assert body["metadata"] == {"a": "1", "c": "3"}, "metadata merges; an empty value removes"
    assert body["description"] == "words"
    assert body["created"] == raw(product)["created"]
    assert body["updated"] >= body["created"]

    unset = shared.v1.products.update(
        product.id, {"description": "", "unit_label": "", "statement_descriptor": ""}
    )
    body = raw(unset)
    assert body["description"] is None
    assert body["unit_label"] is None
    assert body["statement_descriptor"] is None
    assert raw(shared.v1.products.retrieve(product.id)) == body

    reset = shared.v1.products.update(
        product.id, {"description": "again", "unit_label": "user", "statement_descriptor": "NEW"}
    )
    assert (reset.description, reset.unit_label, reset.statement_descriptor) == (
        "again",
        "user",
        "NEW",
    )

    cleared = shared.v1.products.update(product.id, {"metadata": ""})
    assert raw(cleared)["metadata"] == {}


def test_update_with_no_params_returns_the_product(shared: stripe.StripeClient) -> None:
    product = create(shared, {"name": "Same"})
    assert raw(shared.v1.products.update(product.id)) == raw(product)


@pytest.mark.parametrize(
    ("params", "param", "code"),
    [
        ({"statement_descriptor": "A" * 23}, "statement_descriptor", None),
        ({"statement_descriptor": "<ACME>"}, "statement_descriptor", None),
        ({"statement_descriptor": "\\ACME"}, "statement_descriptor", None),
        ({"statement_descriptor": "1234"}, "statement_descriptor", None),
        ({"unit_label": "u" * 13}, "unit_label", None),
        ({"name": ""}, "name", "parameter_invalid_empty"),
        ({"active": "maybe"}, "active", None),
        ({"metadata": "x"}, "metadata", None),
        ({"id": "prod_renamed"}, "id", "parameter_unknown"),
        ({"colour": "red"}, "colour", "parameter_unknown"),
    ],
)
def test_update_rejects_what_stripe_rejects(
    shared: stripe.StripeClient, params: dict[str, Any], param: str, code: str | None
) -> None:
    product = create(shared, {"name": "Unchanged", "statement_descriptor": "ACME"})
    with pytest.raises(stripe.InvalidRequestError) as exc:
        shared.v1.products.update(product.id, params)  # type: ignore[arg-type]
    error = v1_error(exc)
    assert error["param"] == param
    assert error.get("code") == code
    assert raw(shared.v1.products.retrieve(product.id)) == raw(product)


# --- delete -----------------------------------------------------------------------------------


def test_delete_then_retrieve_is_404(shared: stripe.StripeClient) -> None:
    product = create(shared, {"name": "Gone"})
    deleted = shared.v1.products.delete(product.id)
    body = raw(deleted)
    assert_matches(body, "deleted_product")
    assert body == {"id": product.id, "object": "product", "deleted": True}
    for action in ("retrieve", "delete"):
        with pytest.raises(stripe.InvalidRequestError) as exc:
            getattr(shared.v1.products, action)(product.id)
        assert not_found(exc)["message"] == f"No such product: '{product.id}'"
    with pytest.raises(stripe.InvalidRequestError) as exc:
        shared.v1.products.update(product.id, {"name": "x"})
    assert not_found(exc)["param"] == "id"


def test_a_product_with_plans_cannot_be_deleted_until_they_are(
    shared: stripe.StripeClient,
) -> None:
    product = create(shared, {"name": "Priced"})
    plans = [monthly(shared, product.id) for _ in range(2)]
    for remaining in plans:
        with pytest.raises(stripe.InvalidRequestError) as exc:
            shared.v1.products.delete(product.id)
        error = v1_error(exc)
        assert error["type"] == "invalid_request_error"
        assert error["message"] == (
            "This product cannot be deleted because it has one or more user-created prices."
        )
        assert raw(shared.v1.products.retrieve(product.id)) == raw(product)
        shared.v1.plans.delete(remaining.id)
    deleted = shared.v1.products.delete(product.id)
    assert raw(deleted) == {"id": product.id, "object": "product", "deleted": True}


def test_an_inactive_plan_still_blocks_the_delete(shared: stripe.StripeClient) -> None:
    product = create(shared, {"name": "Archived plan"})
    plan = monthly(shared, product.id)
    shared.v1.plans.update(plan.id, {"active": False})
    with pytest.raises(stripe.InvalidRequestError) as exc:
        shared.v1.products.delete(product.id)
    assert "user-created prices" in v1_error(exc)["message"]


def test_a_plan_moved_to_another_product_frees_the_first(shared: stripe.StripeClient) -> None:
    first = create(shared, {"name": "First"})
    second = create(shared, {"name": "Second"})
    plan = monthly(shared, first.id)
    shared.v1.plans.update(plan.id, {"product": second.id})
    assert raw(shared.v1.products.delete(first.id))["deleted"] is True
    with pytest.raises(stripe.InvalidRequestError):
        shared.v1.products.delete(second.id)


def test_a_deleted_custom_id_can_be_used_again(shared: stripe.StripeClient) -> None:
    product_id = unique("prod")
    create(shared, {"id": product_id, "name": "One"})
    shared.v1.products.delete(product_id)
    assert create(shared, {"id": product_id, "name": "Two"}).name == "Two"


# --- list -------------------------------------------------------------------------------------


def test_list_newest_first_with_filters_and_pagination(client: stripe.StripeClient) -> None:
    products = [create(client, {"name": f"P{i}", "active": i not in (1, 4)}) for i in range(6)]
    ids = [p.id for p in products]
    newest_first = ids[::-1]

    page = client.v1.products.list({"limit": 4})
    body = raw(page)
    assert body["object"] == "list"
    assert body["url"] == "/v1/products"
    assert body["has_more"] is True
    assert [p["id"] for p in body["data"]] == newest_first[:4]
    for item in body["data"]:
        assert_matches(item, "product")

    after = client.v1.products.list({"limit": 4, "starting_after": newest_first[3]})
    assert [p.id for p in after.data] == newest_first[4:]
    assert after.has_more is False
    before = client.v1.products.list({"limit": 2, "ending_before": newest_first[4]})
    assert [p.id for p in before.data] == newest_first[2:4]
    assert before.has_more is True
    assert [p.id for p in client.v1.products.list({"limit": 1}).auto_paging_iter()] == newest_first
    assert [p.id for p in client.v1.products.list().data] == newest_first

    assert [p.id for p in client.v1.products.list({"active": True}).data] == [
        ids[5],
        ids[3],
        ids[2],
        ids[0],
    ]
    assert [p.id for p in client.v1.products.list({"active": False}).data] == [ids[4], ids[1]]

    chosen = client.v1.products.list({"ids": [ids[0], ids[3], "prod_doesnotexist"]})
    assert [p.id for p in chosen.data] == [ids[3], ids[0]]
    both = client.v1.products.list({"ids": [ids[1], ids[2]], "active": True})
    assert [p.id for p in both.data] == [ids[2]]
    paged = client.v1.products.list({"ids": ids[:3], "limit": 2})
    assert [p.id for p in paged.auto_paging_iter()] == [ids[2], ids[1], ids[0]]

    created = {p.id: p.created for p in products}
    low, high = min(created.values()), max(created.values())

    def listed(flt: Any) -> set[str]:
        return {p.id for p in client.v1.products.list({"created": flt, "limit": 100}).data}

    assert listed(low) == {i for i, c in created.items() if c == low}
    assert listed({"gte": low, "lte": high}) == set(ids)
    assert listed({"gt": high}) == set()
    assert listed({"lt": low}) == set()
    assert listed({"gt": low}) == {i for i, c in created.items() if c > low}
    assert listed({"lt": high}) == {i for i, c in created.items() if c < high}


@pytest.mark.parametrize(
    ("params", "param", "status"),
    [
        ({"starting_after": "prod_doesnotexist"}, "starting_after", 404),
        ({"ending_before": "prod_doesnotexist"}, "ending_before", 404),
        ({"limit": 0}, "limit", 400),
        ({"limit": 101}, "limit", 400),
        ({"active": "maybe"}, "active", 400),
        ({"created": {"after": 1}}, "created[after]", 400),
        ({"shippable": True}, "shippable", 400),
    ],
)
def test_list_rejects_bad_params(
    shared: stripe.StripeClient, params: dict[str, Any], param: str, status: int
) -> None:
    with pytest.raises(stripe.InvalidRequestError) as exc:
        shared.v1.products.list(params)  # type: ignore[arg-type]
    error = error_of(exc, status)
    assert error["param"] == param
    if status == 404:
        assert error["code"] == "resource_missing"
        assert error["message"] == "No such product: 'prod_doesnotexist'"


# --- isolation --------------------------------------------------------------------------------


def test_another_account_cannot_see_or_touch_a_product(
    server: RunningServer, shared: stripe.StripeClient
) -> None:
    product = create(shared, {"name": "Mine", "id": unique("prod")})
    other = server.client(new_account_key(server, "test"))
    assert other.v1.products.list().data == []
    assert other.v1.products.list({"ids": [product.id]}).data == []
    actions: list[Callable[[], Any]] = [
        lambda: other.v1.products.retrieve(product.id),
        lambda: other.v1.products.update(product.id, {"name": "Theirs"}),
        lambda: other.v1.products.delete(product.id),
        lambda: other.v1.products.list({"starting_after": product.id}),
    ]
    for action in actions:
        with pytest.raises(stripe.InvalidRequestError) as exc:
            action()
        assert not_found(exc)["code"] == "resource_missing"
    assert raw(shared.v1.products.retrieve(product.id)) == raw(product)
    # The same custom id is free in another account.
    assert create(other, {"name": "Theirs", "id": product.id}).name == "Theirs"
    assert shared.v1.products.retrieve(product.id).name == "Mine"

"""Products and plans in both stores: round trips, filters, and what stays unwritten."""

from __future__ import annotations

import asyncio
from collections.abc import Coroutine, Iterator
from decimal import Decimal
from pathlib import Path
from typing import Any, TypeVar

import msgspec
import pytest

from meterd import keys
from meterd.billing.plans import PlanInput, TierInput, TransformUsage, new_plan
from meterd.billing.products import Product, new_product
from meterd.scope import Scope
from meterd.storage import (
    AlreadyExists,
    CreatedBounds,
    CursorNotFound,
    PageRequest,
    PlanFilter,
    ProductFilter,
    ReferenceMissing,
    StillReferenced,
    Store,
)
from meterd.storage.open import open_store
from tests.conftest import fresh_database

T = TypeVar("T")
NOW = 1_700_000_000
ALL = PageRequest(limit=100)


def run(coro: Coroutine[Any, Any, T]) -> T:
    return asyncio.run(coro)


@pytest.fixture
def store(backend: str, tmp_path: Path) -> Iterator[Store]:
    with fresh_database(backend, tmp_path) as url:
        opened = run(open_store(url))
        yield opened
        run(opened.close())


def new_scope(store: Store, livemode: bool = False) -> Scope:
    account = keys.new_account(NOW)
    key, _ = keys.new_api_key(account.id, livemode=livemode, now=NOW)
    run(store.create_account(account, key))
    return Scope(account.id, livemode)


@pytest.fixture
def scope(store: Store) -> Scope:
    return new_scope(store)


def product(scope: Scope, product_id: str | None = None, now: int = NOW, **fields: Any) -> Product:
    values: dict[str, Any] = {
        "name": "Gold",
        "active": True,
        "description": None,
        "metadata": {},
        "statement_descriptor": None,
        "unit_label": None,
        "tax_code": None,
        **fields,
    }
    return new_product(scope, product_id=product_id, now=now, **values)


def tiered(scope: Scope, product_id: str, plan_id: str | None = None, now: int = NOW) -> Any:
    given = PlanInput(
        id=plan_id,
        currency="usd",
        interval="month",
        billing_scheme="tiered",
        tiers_mode="volume",
        metadata={"k": "v"},
        tiers=[TierInput(10, unit_amount_decimal="0.125"), TierInput("inf", flat_amount=700)],
    )
    return new_plan(scope, given, product=product_id, now=now)


def test_a_plan_and_its_inline_product_round_trip(store: Store, scope: Scope) -> None:
    made = product(scope, metadata={"a": "b"}, unit_label="call")
    plan = tiered(scope, made.id)
    run(store.insert_plan(plan, made))
    assert run(store.get_plan(scope, plan.id)) == plan
    assert run(store.get_product(scope, made.id)) == made
    per_unit = new_plan(
        scope,
        PlanInput(
            currency="jpy",
            interval="year",
            amount_decimal="1234567890123456789.123456789012",
            transform_usage=TransformUsage(7, "down"),
            trial_period_days=14,
        ),
        product=made.id,
        now=NOW,
    )
    run(store.insert_plan(per_unit))
    stored = run(store.get_plan(scope, per_unit.id))
    assert stored == per_unit
    assert stored is not None and stored.amount == Decimal("1234567890123456789.123456789012")


def test_a_clash_on_the_inline_product_writes_nothing(store: Store, scope: Scope) -> None:
    existing = product(scope, "prod_taken")
    run(store.insert_product(existing))
    plan = tiered(scope, "prod_taken", "plan_x")
    with pytest.raises(AlreadyExists) as clash:
        run(store.insert_plan(plan, product(scope, "prod_taken", name="Other")))
    assert clash.value.field == "product"
    assert run(store.get_plan(scope, "plan_x")) is None
    assert run(store.get_product(scope, "prod_taken")) == existing


def test_plan_ids_clash_per_account_and_mode_only(store: Store, scope: Scope) -> None:
    run(store.insert_product(product(scope, "prod_a")))
    run(store.insert_plan(tiered(scope, "prod_a", "gold")))
    with pytest.raises(AlreadyExists) as clash:
        run(store.insert_plan(tiered(scope, "prod_a", "gold")))
    assert clash.value.field == "id"
    other = new_scope(store)
    run(store.insert_product(product(other, "prod_a")))
    run(store.insert_plan(tiered(other, "prod_a", "gold")))
    live = Scope(scope.account_id, True)
    run(store.insert_product(product(live, "prod_a")))
    run(store.insert_plan(tiered(live, "prod_a", "gold")))


def test_a_plan_needs_its_product_in_the_same_scope(store: Store, scope: Scope) -> None:
    other = new_scope(store)
    run(store.insert_product(product(other, "prod_elsewhere")))
    with pytest.raises(ReferenceMissing):
        run(store.insert_plan(tiered(scope, "prod_elsewhere")))


def test_products_in_use_are_not_deleted(store: Store, scope: Scope) -> None:
    run(store.insert_product(product(scope, "prod_used")))
    run(store.insert_plan(tiered(scope, "prod_used", "p1")))
    with pytest.raises(StillReferenced):
        run(store.delete_product(scope, "prod_used"))
    assert run(store.delete_plan(scope, "p1")) is True
    assert run(store.delete_plan(scope, "p1")) is False
    assert run(store.delete_product(scope, "prod_used")) is True
    assert run(store.get_product(scope, "prod_used")) is None
    assert run(store.delete_product(scope, "prod_used")) is False


def test_updates_keep_what_cannot_change(store: Store, scope: Scope) -> None:
    run(store.insert_product(product(scope, "prod_1")))
    run(store.insert_product(product(scope, "prod_2")))
    plan = tiered(scope, "prod_1")
    run(store.insert_plan(plan))
    changed = msgspec.structs.replace(
        plan, active=False, nickname="n", product="prod_2", trial_period_days=3, metadata={}
    )
    run(store.save_plan(msgspec.structs.replace(changed, currency="eur", tiers=())))
    assert run(store.get_plan(scope, plan.id)) == changed
    renamed = product(scope, "prod_1", name="Silver", tax_code="txcd_1", now=NOW + 5)
    run(store.save_product(renamed))
    stored = run(store.get_product(scope, "prod_1"))
    assert stored is not None and (stored.name, stored.tax_code) == ("Silver", "txcd_1")


def test_plan_lists_filter_and_page_newest_first(store: Store, scope: Scope) -> None:
    run(store.insert_product(product(scope, "prod_a")))
    run(store.insert_product(product(scope, "prod_b")))
    ids = []
    for n in range(6):
        plan = tiered(scope, "prod_a" if n % 2 else "prod_b", f"plan_{n}", now=NOW + n)
        if n == 5:
            plan = msgspec.structs.replace(plan, active=False)
        run(store.insert_plan(plan))
        ids.append(plan.id)

    def listed(page: PageRequest = ALL, **where: Any) -> list[str]:
        return [p.id for p in run(store.list_plans(scope, page, PlanFilter(**where))).items]

    assert listed() == ids[::-1]
    assert listed(product="prod_a") == ["plan_5", "plan_3", "plan_1"]
    assert listed(active=False) == ["plan_5"]
    assert listed(active=True, product="prod_a") == ["plan_3", "plan_1"]
    assert listed(created=CreatedBounds(low=NOW + 2, high=NOW + 3)) == ["plan_3", "plan_2"]
    first = run(store.list_plans(scope, PageRequest(limit=2), PlanFilter()))
    assert [p.id for p in first.items] == ["plan_5", "plan_4"] and first.has_more
    after = listed(PageRequest(limit=2, starting_after="plan_4"))
    assert after == ["plan_3", "plan_2"]
    assert listed(PageRequest(limit=2, ending_before="plan_1")) == ["plan_3", "plan_2"]
    with pytest.raises(CursorNotFound):
        listed(PageRequest(starting_after="plan_nope"))
    assert listed(PageRequest(limit=100), product="prod_nope") == []


def test_product_lists_filter_by_ids_active_and_created(store: Store, scope: Scope) -> None:
    for n in range(4):
        run(store.insert_product(product(scope, f"prod_{n}", now=NOW + n, active=n != 1)))
    other = new_scope(store)
    run(store.insert_product(product(other, "prod_0")))

    def listed(**where: Any) -> list[str]:
        page = run(store.list_products(scope, PageRequest(limit=100), ProductFilter(**where)))
        return [p.id for p in page.items]

    assert listed() == ["prod_3", "prod_2", "prod_1", "prod_0"]
    assert listed(ids=("prod_0", "prod_2", "prod_9")) == ["prod_2", "prod_0"]
    assert listed(ids=()) == []
    assert listed(active=False) == ["prod_1"]
    assert listed(created=CreatedBounds(low=NOW + 3)) == ["prod_3"]
    found = run(store.get_products(scope, ["prod_0", "prod_3", "prod_x", "prod_0"]))
    assert sorted(found) == ["prod_0", "prod_3"]
    assert run(store.get_products(scope, [])) == {}

"""Products and plans in SQL both databases speak: rows, queries, and the one transaction that
creates a plan together with its inline product."""

from __future__ import annotations

from collections.abc import Sequence
from decimal import Decimal
from typing import Any

import msgspec

from meterd.billing.plans import Plan, Tier, TransformUsage
from meterd.billing.products import Product
from meterd.scope import Scope
from meterd.storage.base import (
    AlreadyExists,
    CreatedBounds,
    Page,
    PageRequest,
    PlanFilter,
    ProductFilter,
    ReferenceMissing,
    StillReferenced,
)
from meterd.storage.sql_errors import INTEGRITY_ERRORS, violation
from meterd.storage.sql_pages import Connection, keyset_page, page_of

PRODUCT_COLUMNS = (
    "id, account_id, livemode, name, active, description, metadata, statement_descriptor, "
    "unit_label, tax_code, created, updated"
)
PLAN_COLUMNS = (
    "id, account_id, livemode, active, amount, billing_scheme, currency, billing_interval, "
    "interval_count, metadata, meter_id, nickname, product_id, tiers, tiers_mode, "
    "transform_usage, trial_period_days, usage_type, created"
)
_SCOPED = "account_id = ? AND livemode = ?"
_tiers_decoder = msgspec.json.Decoder(tuple[Tier, ...])
_transform_decoder = msgspec.json.Decoder(TransformUsage)
_metadata_decoder = msgspec.json.Decoder(dict[str, str])


def insert_product(conn: Connection, product: Product, clash: str = "id") -> None:
    try:
        conn.execute(
            f"INSERT INTO products ({PRODUCT_COLUMNS}) VALUES ({_marks(12)})",
            _product_row(product),
        )
    except INTEGRITY_ERRORS as exc:
        if violation(exc) == "unique":
            raise AlreadyExists(clash) from None
        raise


def get_product(conn: Connection, scope: Scope, product_id: str) -> Product | None:
    row = conn.execute(
        f"SELECT {PRODUCT_COLUMNS} FROM products WHERE id = ? AND {_SCOPED}",
        (product_id, scope.account_id, scope.livemode),
    ).fetchone()
    return _product_from_row(row) if row else None


def get_products(conn: Connection, scope: Scope, product_ids: Sequence[str]) -> dict[str, Product]:
    wanted = sorted(set(product_ids))
    if not wanted:
        return {}
    rows = conn.execute(
        f"SELECT {PRODUCT_COLUMNS} FROM products WHERE {_SCOPED} AND id IN ({_marks(len(wanted))})",
        (scope.account_id, scope.livemode, *wanted),
    ).fetchall()
    return {row[0]: _product_from_row(row) for row in rows}


def save_product(conn: Connection, product: Product) -> None:
    conn.execute(
        "UPDATE products SET name = ?, active = ?, description = ?, metadata = ?, "
        "statement_descriptor = ?, unit_label = ?, tax_code = ?, updated = ? "
        f"WHERE id = ? AND {_SCOPED}",
        (
            product.name,
            product.active,
            product.description,
            _json(product.metadata),
            product.statement_descriptor,
            product.unit_label,
            product.tax_code,
            product.updated,
            product.id,
            product.account_id,
            product.livemode,
        ),
    )


def delete_product(conn: Connection, scope: Scope, product_id: str) -> bool:
    used = conn.execute(
        f"SELECT 1 FROM plans WHERE {_SCOPED} AND product_id = ? LIMIT 1",
        (scope.account_id, scope.livemode, product_id),
    ).fetchone()
    if used:
        raise StillReferenced(product_id)
    deleted = conn.execute(
        f"DELETE FROM products WHERE id = ? AND {_SCOPED}",
        (product_id, scope.account_id, scope.livemode),
    ).rowcount
    return bool(deleted)


def list_products(
    conn: Connection, scope: Scope, page: PageRequest, where: ProductFilter
) -> Page[Product]:
    sql, args = _scoped(scope, where.created, active=where.active)
    if where.ids is not None:
        sql += f" AND id IN ({_marks(len(where.ids))})" if where.ids else " AND 1 = 0"
        args.extend(where.ids)
    rows = keyset_page(conn, "products", PRODUCT_COLUMNS, sql, args, scope, page)
    return page_of(rows, page, _product_from_row)


def insert_plan(conn: Connection, plan: Plan, new_product: Product | None) -> None:
    if new_product is not None:
        insert_product(conn, new_product, clash="product")
    try:
        conn.execute(f"INSERT INTO plans ({PLAN_COLUMNS}) VALUES ({_marks(19)})", _plan_row(plan))
    except INTEGRITY_ERRORS as exc:
        if violation(exc) == "unique":
            raise AlreadyExists("id") from None
        if violation(exc) == "foreign_key":
            raise ReferenceMissing("product") from None
        raise


def get_plan(conn: Connection, scope: Scope, plan_id: str) -> Plan | None:
    row = conn.execute(
        f"SELECT {PLAN_COLUMNS} FROM plans WHERE id = ? AND {_SCOPED}",
        (plan_id, scope.account_id, scope.livemode),
    ).fetchone()
    return _plan_from_row(row) if row else None


def save_plan(conn: Connection, plan: Plan) -> None:
    """Only what Stripe lets an update change: active, metadata, nickname, product, trial."""
    conn.execute(
        "UPDATE plans SET active = ?, metadata = ?, nickname = ?, product_id = ?, "
        f"trial_period_days = ? WHERE id = ? AND {_SCOPED}",
        (
            plan.active,
            _json(plan.metadata),
            plan.nickname,
            plan.product,
            plan.trial_period_days,
            plan.id,
            plan.account_id,
            plan.livemode,
        ),
    )


def delete_plan(conn: Connection, scope: Scope, plan_id: str) -> bool:
    deleted = conn.execute(
        f"DELETE FROM plans WHERE id = ? AND {_SCOPED}",
        (plan_id, scope.account_id, scope.livemode),
    ).rowcount
    return bool(deleted)


def list_plans(conn: Connection, scope: Scope, page: PageRequest, where: PlanFilter) -> Page[Plan]:
    sql, args = _scoped(scope, where.created, active=where.active, product_id=where.product)
    rows = keyset_page(conn, "plans", PLAN_COLUMNS, sql, args, scope, page)
    return page_of(rows, page, _plan_from_row)


def _scoped(scope: Scope, created: CreatedBounds, **equal: Any) -> tuple[str, list[Any]]:
    """A list's WHERE clause: the scope, the creation bounds, and each column in ``equal``
    whose value is not None."""
    sql = _SCOPED
    args: list[Any] = [scope.account_id, scope.livemode]
    for column, value in equal.items():
        if value is not None:
            sql += f" AND {column} = ?"
            args.append(value)
    if created.low is not None:
        sql += " AND created >= ?"
        args.append(created.low)
    if created.high is not None:
        sql += " AND created <= ?"
        args.append(created.high)
    return sql, args


def _marks(count: int) -> str:
    return ", ".join("?" * count)


def _json(value: Any) -> str:
    return msgspec.json.encode(value).decode()


def _product_row(product: Product) -> tuple[Any, ...]:
    return (
        product.id,
        product.account_id,
        product.livemode,
        product.name,
        product.active,
        product.description,
        _json(product.metadata),
        product.statement_descriptor,
        product.unit_label,
        product.tax_code,
        product.created,
        product.updated,
    )


def _product_from_row(row: Any) -> Product:
    return Product(
        id=row[0],
        account_id=row[1],
        livemode=bool(row[2]),
        name=row[3],
        active=bool(row[4]),
        description=row[5],
        metadata=_metadata_decoder.decode(row[6]),
        statement_descriptor=row[7],
        unit_label=row[8],
        tax_code=row[9],
        created=row[10],
        updated=row[11],
    )


def _plan_row(plan: Plan) -> tuple[Any, ...]:
    return (
        plan.id,
        plan.account_id,
        plan.livemode,
        plan.active,
        None if plan.amount is None else str(plan.amount),
        plan.billing_scheme,
        plan.currency,
        plan.interval,
        plan.interval_count,
        _json(plan.metadata),
        plan.meter,
        plan.nickname,
        plan.product,
        _json(plan.tiers) if plan.tiers else None,
        plan.tiers_mode,
        None if plan.transform_usage is None else _json(plan.transform_usage),
        plan.trial_period_days,
        plan.usage_type,
        plan.created,
    )


def _plan_from_row(row: Any) -> Plan:
    return Plan(
        id=row[0],
        account_id=row[1],
        livemode=bool(row[2]),
        active=bool(row[3]),
        amount=None if row[4] is None else Decimal(row[4]),
        billing_scheme=row[5],
        currency=row[6],
        interval=row[7],
        interval_count=row[8],
        metadata=_metadata_decoder.decode(row[9]),
        meter=row[10],
        nickname=row[11],
        product=row[12],
        tiers=_tiers_decoder.decode(row[13]) if row[13] else (),
        tiers_mode=row[14],
        transform_usage=None if row[15] is None else _transform_decoder.decode(row[15]),
        trial_period_days=row[16],
        usage_type=row[17],
        created=row[18],
    )

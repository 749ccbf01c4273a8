"""v1 Plans (the legacy prices API): create, retrieve, update, list, delete.

A plan's product is an existing product's id or, inline, a new product created in the same
transaction. A metered plan names an active billing meter of the same account and mode.
``tiers`` appear only when expanded (``expand[]=tiers``), as on Stripe.
"""

from __future__ import annotations

from collections.abc import Set as AbstractSet
from typing import Annotated, Any

import msgspec
from msgspec import UNSET, Meta, UnsetType
from starlette.routing import BaseRoute

from meterd.api.endpoint import ApiCall, resource, v1
from meterd.api.pagination import ListParams, cursor_missing, list_object
from meterd.api.products import (
    ProductFields,
    already_exists,
    product_from_fields,
    product_object,
)
from meterd.api.shared_params import (
    CreatedParam,
    ExpandParams,
    NoParams,
    created_bounds,
    expansions,
    given,
)
from meterd.billing import amounts, currencies, metadata, plans
from meterd.billing.metadata import MetadataParam
from meterd.billing.plans import (
    BillingScheme,
    Interval,
    Plan,
    PlanInput,
    Rounding,
    Tier,
    TierInput,
    TiersMode,
    TransformUsage,
    UsageType,
)
from meterd.billing.products import Product
from meterd.errors import InvalidRequestError, no_such
from meterd.storage import AlreadyExists, CursorNotFound, PlanFilter, ReferenceMissing

ObjectId = Annotated[str, Meta(min_length=1, max_length=5000)]
Text = Annotated[str, Meta(max_length=5000)]
EXPANDABLE = ("product", "tiers", "transform_usage")


class InlineProductParams(ProductFields):
    id: ObjectId | UnsetType = UNSET


class TierParams(msgspec.Struct, forbid_unknown_fields=True, kw_only=True):
    up_to: int | str
    flat_amount: int | UnsetType = UNSET
    flat_amount_decimal: str | UnsetType = UNSET
    unit_amount: int | UnsetType = UNSET
    unit_amount_decimal: str | UnsetType = UNSET


class TransformUsageParams(msgspec.Struct, forbid_unknown_fields=True):
    divide_by: int
    round: Rounding


class CreatePlanParams(ExpandParams):
    currency: Annotated[str, Meta(min_length=1)]
    interval: Interval
    active: bool = True
    amount: int | UnsetType = UNSET
    amount_decimal: Annotated[str, Meta(min_length=1)] | UnsetType = UNSET
    billing_scheme: BillingScheme = "per_unit"
    id: ObjectId | UnsetType = UNSET
    interval_count: int = 1
    metadata: MetadataParam | UnsetType = UNSET
    meter: ObjectId | UnsetType = UNSET
    nickname: Text | UnsetType = UNSET
    product: InlineProductParams | ObjectId | UnsetType = UNSET
    tiers: list[TierParams] | UnsetType = UNSET
    tiers_mode: TiersMode | UnsetType = UNSET
    transform_usage: TransformUsageParams | UnsetType = UNSET
    trial_period_days: int | UnsetType = UNSET
    usage_type: UsageType = "licensed"


class UpdatePlanParams(ExpandParams):
    active: bool | UnsetType = UNSET
    metadata: MetadataParam | UnsetType = UNSET
    nickname: Text | UnsetType = UNSET
    product: ObjectId | UnsetType = UNSET
    trial_period_days: int | UnsetType = UNSET


class ListPlansParams(ListParams):
    active: bool | UnsetType = UNSET
    created: CreatedParam | UnsetType = UNSET
    product: ObjectId | UnsetType = UNSET


def plan_object(
    plan: Plan,
    expand: AbstractSet[str] = frozenset(),
    products: dict[str, Product] | None = None,
) -> dict[str, Any]:
    """The ``plan`` object as Stripe renders it, with ``product`` and ``tiers`` expanded when
    asked for."""
    product: Any = plan.product
    if "product" in expand:
        found = (products or {}).get(plan.product)
        product = (
            product_object(found)
            if found
            else {"id": plan.product, "object": "product", "deleted": True}
        )
    show_tiers = "tiers" in expand and plan.billing_scheme == "tiered"
    body: dict[str, Any] = {
        "id": plan.id,
        "object": "plan",
        "active": plan.active,
        "amount": None if plan.amount is None else amounts.as_integer(plan.amount),
        "amount_decimal": None if plan.amount is None else amounts.as_text(plan.amount),
        "billing_scheme": plan.billing_scheme,
        "created": plan.created,
        "currency": plan.currency,
        "interval": plan.interval,
        "interval_count": plan.interval_count,
        "livemode": plan.livemode,
        "metadata": plan.metadata,
        "meter": plan.meter,
        "nickname": plan.nickname,
        "product": product,
        **({"tiers": [tier_object(t) for t in plan.tiers]} if show_tiers else {}),
        "tiers_mode": plan.tiers_mode,
        "transform_usage": (
            None
            if plan.transform_usage is None
            else {"divide_by": plan.transform_usage.divide_by, "round": plan.transform_usage.round}
        ),
        "trial_period_days": plan.trial_period_days,
        "usage_type": plan.usage_type,
    }
    return body


def tier_object(tier: Tier) -> dict[str, Any]:
    return {
        "flat_amount": _integer(tier.flat_amount),
        "flat_amount_decimal": _text(tier.flat_amount),
        "unit_amount": _integer(tier.unit_amount),
        "unit_amount_decimal": _text(tier.unit_amount),
        "up_to": tier.up_to,
    }


def _integer(value: Any) -> int | None:
    return None if value is None else amounts.as_integer(value)


def _text(value: Any) -> str | None:
    return None if value is None else amounts.as_text(value)


async def _rendered(call: ApiCall, plan: Plan, expand: set[str]) -> dict[str, Any]:
    products = None
    if "product" in expand:
        products = await call.store.get_products(call.scope, [plan.product])
    return plan_object(plan, expand, products)


async def create_plan(call: ApiCall) -> dict[str, Any]:
    params = call.parse(CreatePlanParams)
    expand = expansions(params.expand, EXPANDABLE)
    if params.product is UNSET:
        raise InvalidRequestError(
            "Missing required param: product.", param="product", code="parameter_missing"
        )
    request = PlanInput(
        id=given(params.id),
        active=params.active,
        amount=given(params.amount),
        amount_decimal=given(params.amount_decimal),
        billing_scheme=params.billing_scheme,
        currency=currencies.checked(params.currency),
        interval=params.interval,
        interval_count=params.interval_count,
        metadata=metadata.created(given(params.metadata)),
        meter=given(params.meter),
        nickname=given(params.nickname),
        tiers=None if params.tiers is UNSET else [_tier_input(t) for t in params.tiers],
        tiers_mode=given(params.tiers_mode),
        transform_usage=(
            None
            if params.transform_usage is UNSET
            else TransformUsage(params.transform_usage.divide_by, params.transform_usage.round)
        ),
        trial_period_days=given(params.trial_period_days),
        usage_type=params.usage_type,
    )
    new_product = None
    if isinstance(params.product, InlineProductParams):
        new_product = product_from_fields(
            call, params.product, given(params.product.id), None, param_prefix="product"
        )
        product_id = new_product.id
    else:
        product_id = params.product
    plan = plans.new_plan(call.scope, request, product=product_id, now=call.now)
    if plan.meter is not None:
        plans.check_meter(plan.meter, await call.store.get_meter(call.scope, plan.meter))
    if new_product is None and await call.store.get_product(call.scope, product_id) is None:
        raise _no_such_product(product_id)
    try:
        await call.store.insert_plan(plan, new_product)
    except AlreadyExists as clash:
        if clash.field == "product":
            raise already_exists("product[id]") from None
        raise InvalidRequestError(
            "Plan already exists.", param="id", code="resource_already_exists"
        ) from None
    except ReferenceMissing:
        raise _no_such_product(product_id) from None
    products = {new_product.id: new_product} if new_product else None
    if "product" in expand and products is None:
        products = await call.store.get_products(call.scope, [product_id])
    return plan_object(plan, expand, products)


async def _existing(call: ApiCall) -> Plan:
    plan_id = call.path_param("plan")
    plan = await call.store.get_plan(call.scope, plan_id)
    if plan is None:
        raise no_such("plan", plan_id, param="plan")
    return plan


async def retrieve_plan(call: ApiCall) -> dict[str, Any]:
    expand = expansions(call.parse(ExpandParams).expand, EXPANDABLE)
    return await _rendered(call, await _existing(call), expand)


async def update_plan(call: ApiCall) -> dict[str, Any]:
    params = call.parse(UpdatePlanParams)
    expand = expansions(params.expand, EXPANDABLE)
    plan = await _existing(call)
    changes: dict[str, Any] = {}
    if params.active is not UNSET:
        changes["active"] = params.active
    if params.metadata is not UNSET:
        changes["metadata"] = metadata.updated(plan.metadata, params.metadata)
    if params.nickname is not UNSET:
        changes["nickname"] = params.nickname or None
    if params.trial_period_days is not UNSET:
        plans.check_trial_period_days(params.trial_period_days)
        changes["trial_period_days"] = params.trial_period_days
    if params.product is not UNSET:
        if await call.store.get_product(call.scope, params.product) is None:
            raise _no_such_product(params.product)
        changes["product"] = params.product
    if changes:
        plan = msgspec.structs.replace(plan, **changes)
        await call.store.save_plan(plan)
    return await _rendered(call, plan, expand)


async def delete_plan(call: ApiCall) -> dict[str, Any]:
    call.parse(NoParams)
    plan_id = call.path_param("plan")
    if not await call.store.delete_plan(call.scope, plan_id):
        raise no_such("plan", plan_id, param="plan")
    return {"id": plan_id, "object": "plan", "deleted": True}


async def list_plans(call: ApiCall) -> dict[str, Any]:
    params = call.parse(ListPlansParams)
    expand = expansions(params.expand, EXPANDABLE, in_list=True)
    where = PlanFilter(
        active=given(params.active),
        product=given(params.product),
        created=created_bounds(params.created),
    )
    try:
        page = await call.store.list_plans(call.scope, params.page_request(), where)
    except CursorNotFound as error:
        raise cursor_missing("plan", error) from None
    products = None
    if "product" in expand:
        products = await call.store.get_products(call.scope, [p.product for p in page.items])
    return list_object(page, "/v1/plans", lambda plan: plan_object(plan, expand, products))


def _tier_input(tier: TierParams) -> TierInput:
    return TierInput(
        up_to=tier.up_to,
        unit_amount=given(tier.unit_amount),
        unit_amount_decimal=given(tier.unit_amount_decimal),
        flat_amount=given(tier.flat_amount),
        flat_amount_decimal=given(tier.flat_amount_decimal),
    )


def _no_such_product(product_id: str) -> InvalidRequestError:
    return InvalidRequestError(
        f"No such product: '{product_id}'", param="product", code="resource_missing"
    )


routes: list[BaseRoute] = [
    resource("/v1/plans", GET=v1(list_plans), POST=v1(create_plan)),
    resource(
        "/v1/plans/{plan}",
        GET=v1(retrieve_plan),
        POST=v1(update_plan),
        DELETE=v1(delete_plan),
    ),
]

"""v1 Products, as plans need them: create, retrieve, update, list, delete."""

from __future__ import annotations

from typing import Annotated, Any

import msgspec
from msgspec import UNSET, Meta, UnsetType
from starlette.routing import BaseRoute

from meterd.api.endpoint import ApiCall, resource, v1
from meterd.api.pagination import ListParams, cursor_missing, list_object
from meterd.api.shared_params import (
    CreatedParam,
    ExpandParams,
    NoParams,
    created_bounds,
    expansions,
    given,
)
from meterd.billing import metadata
from meterd.billing.metadata import MetadataParam
from meterd.billing.products import Product, checked_statement_descriptor, new_product
from meterd.errors import InvalidRequestError, no_such
from meterd.storage import AlreadyExists, CursorNotFound, ProductFilter, StillReferenced

ObjectId = Annotated[str, Meta(min_length=1, max_length=5000)]
Name = Annotated[str, Meta(min_length=1, max_length=5000)]
Description = Annotated[str, Meta(max_length=40000)]
StatementDescriptor = Annotated[str, Meta(max_length=22)]
UnitLabel = Annotated[str, Meta(max_length=12)]
TaxCode = Annotated[str, Meta(max_length=5000)]
EXPANDABLE = ("default_price",)
"""Stripe's one expandable product field; meterd has no prices, so it stays null."""


class ProductFields(ExpandParams):
    """The fields a product is created with, here and inline in ``POST /v1/plans``."""

    name: Name
    active: bool = True
    metadata: MetadataParam | UnsetType = UNSET
    statement_descriptor: Annotated[str, Meta(min_length=1, max_length=22)] | UnsetType = UNSET
    unit_label: Annotated[str, Meta(min_length=1, max_length=12)] | UnsetType = UNSET
    tax_code: Annotated[str, Meta(min_length=1, max_length=5000)] | UnsetType = UNSET


class CreateProductParams(ProductFields):
    id: ObjectId | UnsetType = UNSET
    description: Annotated[str, Meta(min_length=1, max_length=40000)] | UnsetType = UNSET


class UpdateProductParams(ExpandParams):
    """Empty strings unset the optional text fields, as on Stripe."""

    name: Name | UnsetType = UNSET
    active: bool | UnsetType = UNSET
    description: Description | UnsetType = UNSET
    metadata: MetadataParam | UnsetType = UNSET
    statement_descriptor: StatementDescriptor | UnsetType = UNSET
    unit_label: UnitLabel | UnsetType = UNSET
    tax_code: TaxCode | UnsetType = UNSET


class ListProductsParams(ListParams):
    active: bool | UnsetType = UNSET
    created: CreatedParam | UnsetType = UNSET
    ids: list[ObjectId] | UnsetType = UNSET


def product_object(product: Product) -> dict[str, Any]:
    """The ``product`` object as Stripe renders it; fields meterd does not keep are empty."""
    return {
        "id": product.id,
        "object": "product",
        "active": product.active,
        "created": product.created,
        "default_price": None,
        "description": product.description,
        "images": [],
        "livemode": product.livemode,
        "marketing_features": [],
        "metadata": product.metadata,
        "name": product.name,
        "package_dimensions": None,
        "shippable": None,
        "statement_descriptor": product.statement_descriptor,
        "tax_code": product.tax_code,
        "unit_label": product.unit_label,
        "updated": product.updated,
        "url": None,
    }


def product_from_fields(
    call: ApiCall,
    fields: ProductFields,
    product_id: str | None,
    description: str | None,
    *,
    param_prefix: str = "",
) -> Product:
    return new_product(
        call.scope,
        product_id=product_id,
        name=fields.name,
        active=fields.active,
        description=description,
        metadata=metadata.created(given(fields.metadata)),
        statement_descriptor=given(fields.statement_descriptor),
        unit_label=given(fields.unit_label),
        tax_code=given(fields.tax_code),
        now=call.now,
        param_prefix=param_prefix,
    )


def already_exists(param: str = "id") -> InvalidRequestError:
    return InvalidRequestError(
        "Product already exists.", param=param, code="resource_already_exists"
    )


async def create_product(call: ApiCall) -> dict[str, Any]:
    params = call.parse(CreateProductParams)
    expansions(params.expand, EXPANDABLE)
    product = product_from_fields(call, params, given(params.id), given(params.description))
    try:
        await call.store.insert_product(product)
    except AlreadyExists:
        raise already_exists() from None
    return product_object(product)


async def _existing(call: ApiCall) -> Product:
    product_id = call.path_param("id")
    product = await call.store.get_product(call.scope, product_id)
    if product is None:
        raise no_such("product", product_id)
    return product


async def retrieve_product(call: ApiCall) -> dict[str, Any]:
    expansions(call.parse(ExpandParams).expand, EXPANDABLE)
    return product_object(await _existing(call))


async def update_product(call: ApiCall) -> dict[str, Any]:
    params = call.parse(UpdateProductParams)
    expansions(params.expand, EXPANDABLE)
    product = await _existing(call)
    changes: dict[str, Any] = {}
    if params.name is not UNSET:
        changes["name"] = params.name
    if params.active is not UNSET:
        changes["active"] = params.active
    if params.metadata is not UNSET:
        changes["metadata"] = metadata.updated(product.metadata, params.metadata)
    for field in ("description", "statement_descriptor", "unit_label", "tax_code"):
        sent = getattr(params, field)
        if sent is not UNSET:
            changes[field] = sent or None
    if "statement_descriptor" in changes:
        checked_statement_descriptor(changes["statement_descriptor"], "statement_descriptor")
    if changes:
        product = msgspec.structs.replace(product, **changes, updated=call.now)
        await call.store.save_product(product)
    return product_object(product)


async def delete_product(call: ApiCall) -> dict[str, Any]:
    call.parse(NoParams)
    product_id = call.path_param("id")
    try:
        deleted = await call.store.delete_product(call.scope, product_id)
    except StillReferenced:
        raise InvalidRequestError(
            "This product cannot be deleted because it has one or more user-created prices."
        ) from None
    if not deleted:
        raise no_such("product", product_id)
    return {"id": product_id, "object": "product", "deleted": True}


async def list_products(call: ApiCall) -> dict[str, Any]:
    params = call.parse(ListProductsParams)
    expansions(params.expand, EXPANDABLE, in_list=True)
    where = ProductFilter(
        active=given(params.active),
        ids=tuple(params.ids) if params.ids is not UNSET else None,
        created=created_bounds(params.created),
    )
    try:
        page = await call.store.list_products(call.scope, params.page_request(), where)
    except CursorNotFound as error:
        raise cursor_missing("product", error) from None
    return list_object(page, "/v1/products", product_object)


routes: list[BaseRoute] = [
    resource("/v1/products", GET=v1(list_products), POST=v1(create_product)),
    resource(
        "/v1/products/{id}",
        GET=v1(retrieve_product),
        POST=v1(update_product),
        DELETE=v1(delete_product),
    ),
]

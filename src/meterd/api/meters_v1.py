"""v1 Billing Meters: create, retrieve, update, list, deactivate, reactivate."""

from __future__ import annotations

from collections.abc import Callable
from typing import Annotated, Any, Literal

import msgspec
from msgspec import UNSET, Meta, UnsetType
from starlette.routing import BaseRoute

from meterd.api.endpoint import ApiCall, resource, v1
from meterd.api.pagination import ListParams, cursor_missing, list_object
from meterd.api.shared_params import ExpandParams
from meterd.errors import InvalidRequestError, no_such
from meterd.metering import meters
from meterd.metering.meters import EventTimeWindow, Formula, Meter, MeterStatus
from meterd.storage import AlreadyExists, CursorNotFound

PayloadKey = Annotated[str, Meta(min_length=1, max_length=100)]
DisplayName = Annotated[str, Meta(min_length=1, max_length=250)]
EventName = Annotated[str, Meta(min_length=1, max_length=100)]


class CustomerMappingParams(msgspec.Struct, forbid_unknown_fields=True):
    event_payload_key: PayloadKey
    type: Literal["by_id"]


class DefaultAggregationParams(msgspec.Struct, forbid_unknown_fields=True):
    formula: Formula


class ValueSettingsParams(msgspec.Struct, forbid_unknown_fields=True):
    event_payload_key: PayloadKey


class CreateMeterParams(ExpandParams):
    default_aggregation: DefaultAggregationParams
    display_name: DisplayName
    event_name: EventName
    customer_mapping: CustomerMappingParams | UnsetType = UNSET
    event_time_window: EventTimeWindow | UnsetType = UNSET
    value_settings: ValueSettingsParams | UnsetType = UNSET


class UpdateMeterParams(ExpandParams):
    display_name: DisplayName | UnsetType = UNSET


class ListMetersParams(ListParams):
    status: MeterStatus | UnsetType = UNSET


def meter_object(meter: Meter) -> dict[str, Any]:
    """The ``billing.meter`` object exactly as Stripe renders it."""
    return {
        "id": meter.id,
        "object": "billing.meter",
        "created": meter.created,
        "customer_mapping": {"event_payload_key": meter.customer_key, "type": "by_id"},
        "default_aggregation": {"formula": meter.formula},
        "display_name": meter.display_name,
        "event_name": meter.event_name,
        "event_time_window": meter.event_time_window,
        "livemode": meter.livemode,
        "status": meter.status,
        "status_transitions": {"deactivated_at": meter.deactivated_at},
        "updated": meter.updated,
        "value_settings": {"event_payload_key": meter.value_key},
    }


async def create_meter(call: ApiCall) -> dict[str, Any]:
    params = call.parse(CreateMeterParams)
    meter = meters.new_meter(
        call.scope,
        display_name=params.display_name,
        event_name=params.event_name,
        formula=params.default_aggregation.formula,
        customer_key=(
            params.customer_mapping.event_payload_key if params.customer_mapping else None
        ),
        value_key=params.value_settings.event_payload_key if params.value_settings else None,
        event_time_window=params.event_time_window or None,
        now=call.now,
    )
    try:
        await call.store.insert_meter(meter)
        call.pipeline.forget_meters()
    except AlreadyExists:
        raise InvalidRequestError(
            f"A meter with event_name '{params.event_name}' already exists. An event name can "
            "be used by only one meter.",
            param="event_name",
            code="resource_already_exists",
        ) from None
    return meter_object(meter)


async def _existing(call: ApiCall) -> Meter:
    meter_id = call.path_param("id")
    meter = await call.store.get_meter(call.scope, meter_id)
    if meter is None:
        raise no_such("meter", meter_id)
    return meter


async def retrieve_meter(call: ApiCall) -> dict[str, Any]:
    call.parse(ExpandParams)
    return meter_object(await _existing(call))


async def update_meter(call: ApiCall) -> dict[str, Any]:
    params = call.parse(UpdateMeterParams)
    meter = await _existing(call)
    if params.display_name is not UNSET:
        meter = meters.renamed(meter, params.display_name, call.now)
        await call.store.save_meter(meter)
        call.pipeline.forget_meters()
    return meter_object(meter)


async def list_meters(call: ApiCall) -> dict[str, Any]:
    params = call.parse(ListMetersParams)
    try:
        page = await call.store.list_meters(
            call.scope, params.page_request(), params.status or None
        )
    except CursorNotFound as error:
        raise cursor_missing("meter", error) from None
    return list_object(page, "/v1/billing/meters", meter_object)


async def _transition(call: ApiCall, change: Callable[[Meter, int], Meter]) -> dict[str, Any]:
    call.parse(ExpandParams)
    meter = await _existing(call)
    changed = change(meter, call.now)
    if changed is not meter:
        await call.store.save_meter(changed)
        call.pipeline.forget_meters()
    return meter_object(changed)


async def deactivate_meter(call: ApiCall) -> dict[str, Any]:
    return await _transition(call, meters.deactivated)


async def reactivate_meter(call: ApiCall) -> dict[str, Any]:
    return await _transition(call, meters.reactivated)


routes: list[BaseRoute] = [
    resource("/v1/billing/meters", GET=v1(list_meters), POST=v1(create_meter)),
    resource("/v1/billing/meters/{id}", GET=v1(retrieve_meter), POST=v1(update_meter)),
    resource("/v1/billing/meters/{id}/deactivate", POST=v1(deactivate_meter)),
    resource("/v1/billing/meters/{id}/reactivate", POST=v1(reactivate_meter)),
]

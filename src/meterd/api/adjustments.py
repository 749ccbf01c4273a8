"""Meter event adjustments (v1 and v2): cancel one event by its identifier, synchronously."""

from __future__ import annotations

from typing import Annotated, Any, Literal

import msgspec
from msgspec import UNSET, Meta, UnsetType
from starlette.routing import BaseRoute

from meterd import ids
from meterd.api.endpoint import ApiCall, resource, v1, v2
from meterd.errors import InvalidRequestError, missing_param
from meterd.ingest.writes import CancelRefused
from meterd.metering.error_reports import rfc3339

EventName = Annotated[str, Meta(min_length=1, max_length=100)]
Identifier = Annotated[str, Meta(min_length=1, max_length=100)]


class CancelParams(msgspec.Struct, forbid_unknown_fields=True):
    identifier: Identifier | UnsetType = UNSET


class CancelV2Params(msgspec.Struct, forbid_unknown_fields=True):
    identifier: Identifier


class AdjustmentV1Params(msgspec.Struct, forbid_unknown_fields=True, kw_only=True):
    event_name: EventName
    type: Literal["cancel"]
    cancel: CancelParams | UnsetType = UNSET
    expand: list[str] = []


class AdjustmentV2Params(msgspec.Struct, forbid_unknown_fields=True, kw_only=True):
    event_name: EventName
    type: Literal["cancel"]
    cancel: CancelV2Params


async def _cancel(call: ApiCall, event_name: str, identifier: str) -> None:
    scope, now = call.scope, call.now
    await call.pipeline.cancel(scope, event_name, identifier, now)


async def create_adjustment_v1(call: ApiCall) -> dict[str, Any]:
    params = call.parse(AdjustmentV1Params)
    if params.cancel is UNSET or params.cancel.identifier is UNSET:
        raise missing_param("cancel[identifier]")
    identifier = params.cancel.identifier
    try:
        await _cancel(call, params.event_name, identifier)
    except CancelRefused as refused:
        raise InvalidRequestError(str(refused), param="cancel[identifier]") from None
    return {
        "object": "billing.meter_event_adjustment",
        "cancel": {"identifier": identifier},
        "event_name": params.event_name,
        "livemode": call.scope.livemode,
        "status": "complete",
        "type": "cancel",
    }


async def create_adjustment_v2(call: ApiCall) -> dict[str, Any]:
    params = call.parse(AdjustmentV2Params)
    identifier = params.cancel.identifier
    try:
        await _cancel(call, params.event_name, identifier)
    except CancelRefused as refused:
        raise InvalidRequestError(str(refused), code="invalid_cancel_configuration") from None
    return {
        "id": ids.object_id("mtradj", call.scope.livemode),
        "object": "v2.billing.meter_event_adjustment",
        "cancel": {"identifier": identifier},
        "created": rfc3339(call.now),
        "event_name": params.event_name,
        "livemode": call.scope.livemode,
        "status": "complete",
        "type": "cancel",
    }


routes: list[BaseRoute] = [
    resource("/v1/billing/meter_event_adjustments", POST=v1(create_adjustment_v1)),
    resource("/v2/billing/meter_event_adjustments", POST=v2(create_adjustment_v2)),
]

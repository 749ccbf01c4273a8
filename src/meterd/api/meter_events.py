"""Meter events: ``POST /v1/billing/meter_events`` (form) and ``/v2/billing/meter_events`` (JSON).

v1 accepts every well-formed event and reports semantic problems later as error reports; v2
validates synchronously and answers a problem with its own error code (API-NOTES Part A).
"""

from __future__ import annotations

import uuid
from datetime import datetime
from typing import Annotated, Any

import msgspec
from msgspec import UNSET, Meta, UnsetType
from starlette.responses import Response
from starlette.routing import BaseRoute

from meterd.api import idempotency
from meterd.api.endpoint import ApiCall, event_write, resource
from meterd.api.responses import encoded_response
from meterd.errors import InvalidRequestError
from meterd.ingest.writes import Duplicate, KeyInUse, KeyReused, Rejected, Replayed
from meterd.metering.error_reports import rfc3339
from meterd.metering.events import EventSubmission, IdempotentWrite, Origin

EventName = Annotated[str, Meta(min_length=1, max_length=100)]
Identifier = Annotated[str, Meta(min_length=1, max_length=100)]
Payload = dict[str, Annotated[str, Meta(max_length=100)]]

_encoder = msgspec.json.Encoder()


class CreateEventV1Params(msgspec.Struct, forbid_unknown_fields=True, kw_only=True):
    event_name: EventName
    payload: Payload
    identifier: Identifier | UnsetType = UNSET
    timestamp: int | UnsetType = UNSET
    expand: list[str] = []


class CreateEventV2Params(msgspec.Struct, forbid_unknown_fields=True, kw_only=True):
    event_name: EventName
    payload: Payload
    identifier: Identifier | UnsetType = UNSET
    timestamp: datetime | UnsetType = UNSET


def new_identifier() -> str:
    """What Stripe does when no identifier is sent: a random, globally unique one."""
    return str(uuid.uuid4())


def submission(
    call: ApiCall,
    *,
    event_name: str,
    payload: dict[str, str],
    identifier: str | UnsetType,
    timestamp: int | UnsetType,
    origin: Origin,
) -> EventSubmission:
    return EventSubmission(
        scope=call.scope,
        event_name=event_name,
        identifier=identifier or new_identifier(),
        payload=payload,
        timestamp=call.now if timestamp is UNSET else timestamp,
        created=call.now,
        origin=origin,
    )


async def submit(call: ApiCall, event: EventSubmission, body: dict[str, Any]) -> Response:
    """Write one event (with the caller's Idempotency-Key, if any) and answer for it."""
    encoded = _encoder.encode(body)
    key = call.request.headers.get("idempotency-key")
    if key is not None:
        idempotency.check_key(key)
        digest = idempotency.fingerprint("POST", call.request.url.path, call.params)
        event = msgspec.structs.replace(event, idempotency=IdempotentWrite(key, digest, encoded))
    [outcome] = await call.pipeline.submit([event])
    if isinstance(outcome, Replayed):
        return idempotency.replay(outcome.status, outcome.body)
    if isinstance(outcome, KeyReused):
        raise idempotency.reused(key or "")
    if isinstance(outcome, KeyInUse):
        raise idempotency.in_use()
    if isinstance(outcome, Duplicate):
        if event.origin == "v1":
            raise duplicate_v1(event.identifier)
        raise InvalidRequestError(
            f"An event with identifier {event.identifier} was already submitted in the last "
            "24 hours; a duplicate identifier has already been submitted.",
            code="duplicate_meter_event",
        )
    if isinstance(outcome, Rejected):
        raise InvalidRequestError(outcome.problem.message, code=outcome.problem.v2_code)
    return encoded_response(encoded)


def duplicate_v1(identifier: str) -> InvalidRequestError:
    return InvalidRequestError(
        f"An event already exists with identifier {identifier}.",
        param="identifier",
        code="resource_already_exists",
    )


def v1_event_object(event: EventSubmission) -> dict[str, Any]:
    return {
        "object": "billing.meter_event",
        "created": event.created,
        "event_name": event.event_name,
        "identifier": event.identifier,
        "livemode": event.scope.livemode,
        "payload": event.payload,
        "timestamp": event.timestamp,
    }


def v2_event_object(event: EventSubmission) -> dict[str, Any]:
    return {
        "object": "v2.billing.meter_event",
        "created": rfc3339(event.created),
        "event_name": event.event_name,
        "identifier": event.identifier,
        "livemode": event.scope.livemode,
        "payload": event.payload,
        "timestamp": rfc3339(event.timestamp),
    }


async def create_event_v1(call: ApiCall) -> Response:
    params = call.parse(CreateEventV1Params)
    event = submission(
        call,
        event_name=params.event_name,
        payload=params.payload,
        identifier=params.identifier,
        timestamp=params.timestamp,
        origin="v1",
    )
    return await submit(call, event, v1_event_object(event))


async def create_event_v2(call: ApiCall) -> Response:
    params = call.parse(CreateEventV2Params)
    timestamp: int | UnsetType = UNSET
    if params.timestamp is not UNSET:
        if params.timestamp.tzinfo is None:
            raise InvalidRequestError(
                "Invalid timestamp: must be an RFC 3339 date-time with a time zone offset.",
                param="timestamp",
            )
        timestamp = int(params.timestamp.timestamp() // 1)
    event = submission(
        call,
        event_name=params.event_name,
        payload=params.payload,
        identifier=params.identifier,
        timestamp=timestamp,
        origin="v2",
    )
    return await submit(call, event, v2_event_object(event))


routes: list[BaseRoute] = [
    resource("/v1/billing/meter_events", POST=event_write(create_event_v1, "v1")),
    resource("/v2/billing/meter_events", POST=event_write(create_event_v2, "v2")),
]

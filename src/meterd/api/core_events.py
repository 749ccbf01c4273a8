"""``GET /v2/core/events`` and ``/v2/core/events/:id``: the meter error reports, as thin events."""

from __future__ import annotations

from typing import Annotated, Any
from urllib.parse import urlencode

import msgspec
from msgspec import UNSET, Meta, UnsetType
from starlette.routing import BaseRoute

from meterd.api.endpoint import ApiCall, resource, v2
from meterd.errors import NotFoundError
from meterd.metering.error_reports import event_object
from meterd.storage import CursorNotFound


class ListEventsParams(msgspec.Struct, forbid_unknown_fields=True, kw_only=True):
    limit: Annotated[int, Meta(ge=1, le=100)] = 20
    object_id: str | UnsetType = UNSET
    page: str | UnsetType = UNSET


async def list_events(call: ApiCall) -> dict[str, Any]:
    params = call.parse(ListEventsParams)
    try:
        page = await call.store.list_error_reports(
            call.scope, params.limit, params.page or None, params.object_id or None
        )
    except CursorNotFound as missing:
        raise NotFoundError(f"No such page: '{missing.object_id}'", param="page") from None
    next_page_url = None
    if page.has_more:
        query: dict[str, str | int] = {"limit": params.limit, "page": page.items[-1].id}
        if params.object_id:
            query["object_id"] = params.object_id
        next_page_url = "/v2/core/events?" + urlencode(query)
    return {
        "data": [event_object(report) for report in page.items],
        "next_page_url": next_page_url,
        "previous_page_url": None,
    }


async def retrieve_event(call: ApiCall) -> dict[str, Any]:
    event_id = call.path_param("id")
    report = await call.store.get_error_report(call.scope, event_id)
    if report is None:
        raise NotFoundError(f"No such event: '{event_id}'", param="id")
    return event_object(report)


routes: list[BaseRoute] = [
    resource("/v2/core/events", GET=v2(list_events)),
    resource("/v2/core/events/{id}", GET=v2(retrieve_event)),
]

"""``GET /v2/core/events`` and ``/v2/core/events/:id``: the meter error reports, as thin events."""

from __future__ import annotations

import math
from datetime import datetime
from typing import Annotated, Any
from urllib.parse import urlencode

import msgspec
from msgspec import UNSET, Meta, UnsetType
from starlette.routing import BaseRoute

from meterd.api.endpoint import ApiCall, resource, v2
from meterd.errors import NotFoundError
from meterd.metering.error_reports import event_object
from meterd.storage import CursorNotFound
from meterd.storage.base import ReportFilter


class CreatedParams(msgspec.Struct, forbid_unknown_fields=True, kw_only=True):
    gt: datetime | UnsetType = UNSET
    gte: datetime | UnsetType = UNSET
    lt: datetime | UnsetType = UNSET
    lte: datetime | UnsetType = UNSET


class ListEventsParams(msgspec.Struct, forbid_unknown_fields=True, kw_only=True):
    limit: Annotated[int, Meta(ge=1, le=100)] = 20
    object_id: str | UnsetType = UNSET
    page: str | UnsetType = UNSET
    types: Annotated[list[str], Meta(max_length=20)] = []
    created: CreatedParams | UnsetType = UNSET

    def report_filter(self) -> ReportFilter:
        after = before = None
        if self.created:
            bounds = self.created
            if bounds.gt:
                after = math.floor(bounds.gt.timestamp()) + 1
            if bounds.gte:
                after = max(after or 0, math.ceil(bounds.gte.timestamp()))
            if bounds.lt:
                before = math.ceil(bounds.lt.timestamp()) - 1
            if bounds.lte:
                lte = math.floor(bounds.lte.timestamp())
                before = lte if before is None else min(before, lte)
        return ReportFilter(
            object_id=self.object_id or None,
            types=tuple(self.types),
            created_after=after,
            created_before=before,
        )


async def list_events(call: ApiCall) -> dict[str, Any]:
    params = call.parse(ListEventsParams)
    try:
        page = await call.store.list_error_reports(
            call.scope, params.limit, params.page or None, params.report_filter()
        )
    except CursorNotFound as missing:
        raise NotFoundError(f"No such page: '{missing.object_id}'", param="page") from None
    next_page_url = None
    if page.has_more:
        next_page_url = "/v2/core/events?" + urlencode(
            [("page", page.items[-1].id), *_filters(call.params)], doseq=False
        )
    return {
        "data": [event_object(report) for report in page.items],
        "next_page_url": next_page_url,
        "previous_page_url": None,
    }


def _filters(params: Any) -> list[tuple[str, str]]:
    """The caller's own filters and limit, carried into ``next_page_url`` as they were sent."""
    pairs: list[tuple[str, str]] = []
    for name, value in params.items():
        if name == "page":
            continue
        if isinstance(value, list):
            pairs.extend((f"{name}[{i}]", str(item)) for i, item in enumerate(value))
        elif isinstance(value, dict):
            pairs.extend((f"{name}[{key}]", str(item)) for key, item in value.items())
        else:
            pairs.append((name, str(value)))
    return pairs


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

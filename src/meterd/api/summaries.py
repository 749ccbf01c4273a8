"""``GET /v1/billing/meters/:id/event_summaries``: per-customer aggregates over a time range."""

from __future__ import annotations

from typing import Annotated, Any

from msgspec import UNSET, Meta, UnsetType
from starlette.routing import BaseRoute

from meterd.api.endpoint import ApiCall, resource, v1
from meterd.api.pagination import ListParams
from meterd.errors import no_such
from meterd.metering import summaries
from meterd.metering.meters import Meter
from meterd.metering.rollups import Rollup
from meterd.metering.summaries import GroupingWindow, Window


class SummaryParams(ListParams):
    customer: Annotated[str, Meta(min_length=1, max_length=5000)]
    start_time: int
    end_time: int
    value_grouping_window: GroupingWindow | UnsetType = UNSET


def summary_object(
    meter: Meter, customer: str, window: Window, row: Rollup | None
) -> dict[str, Any]:
    return {
        "id": summaries.summary_id(meter, customer, window),
        "object": "billing.meter_event_summary",
        "aggregated_value": summaries.aggregated_value(meter, row),
        "end_time": window[1],
        "livemode": meter.livemode,
        "meter": meter.id,
        "start_time": window[0],
    }


async def list_event_summaries(call: ApiCall) -> dict[str, Any]:
    params = call.parse(SummaryParams)
    page = params.page_request()
    meter_id = call.path_param("id")
    meter = await call.store.get_meter(call.scope, meter_id)
    if meter is None:
        raise no_such("meter", meter_id)
    grouping = params.value_grouping_window or None
    start, end, customer = params.start_time, params.end_time, params.customer
    summaries.check_range(start, end, grouping)
    total = summaries.window_count(start, end, grouping)

    first, stop = 0, min(page.limit, total)
    for param, cursor in (
        ("starting_after", page.starting_after),
        ("ending_before", page.ending_before),
    ):
        if cursor is None:
            continue
        index = summaries.index_of(cursor, meter, customer, start, end, grouping)
        if index is None:
            raise no_such("billing.meter_event_summary", cursor, param=param)
        if param == "starting_after":
            first, stop = index + 1, min(index + 1 + page.limit, total)
        else:
            first, stop = max(0, index - page.limit), index
    page_windows = [summaries.window_at(start, end, grouping, i) for i in range(first, stop)]
    has_more = (stop < total) if page.ending_before is None else first > 0

    spans = summaries.spans_for(meter, page_windows, grouped=grouping is not None)
    found = await call.store.read_rollups(meter, customer, spans)
    rows = summaries.per_window(meter, page_windows, found)
    return {
        "object": "list",
        "data": [summary_object(meter, customer, w, rows.get(w)) for w in page_windows],
        "has_more": has_more,
        "url": f"/v1/billing/meters/{meter.id}/event_summaries",
    }


routes: list[BaseRoute] = [
    resource("/v1/billing/meters/{id}/event_summaries", GET=v1(list_event_summaries)),
]

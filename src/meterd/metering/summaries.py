"""Meter event summaries: aligned ranges, grouping windows newest first, deterministic ids.

A summary covers ``[start, end)``. Without a grouping window the whole range is one summary;
with ``hour`` or ``day`` every window of the range is returned, zeros included, newest first.
"""

from __future__ import annotations

import hashlib
from decimal import Decimal
from typing import Literal

from meterd import ids
from meterd.errors import InvalidRequestError
from meterd.metering import rollups, values
from meterd.metering.meters import Meter
from meterd.metering.rollups import DAY, HOUR, MINUTE, Rollup, floor_to

GroupingWindow = Literal["hour", "day"]
GROUPING_SECONDS: dict[str, int] = {"hour": HOUR, "day": DAY}

MAX_TIMESTAMP = 253402300799
"""9999-12-31T23:59:59Z: beyond it no calendar, and no 64-bit database column, can follow."""

_START_DIGITS = 7  # 62**7 > MAX_TIMESTAMP

Window = tuple[int, int]
Span = tuple[int, int, int]
"""(rollup size, first bucket, end): the rows of one size whose bucket is in [first, end)."""


def check_range(start: int, end: int, grouping: GroupingWindow | None) -> None:
    """Raise Stripe's 400 for a range that is not aligned as the grouping requires."""
    step = GROUPING_SECONDS[grouping] if grouping else MINUTE
    unit = {MINUTE: "minute", HOUR: "hour", DAY: "day (UTC midnight)"}[step]
    for name, value in (("start_time", start), ("end_time", end)):
        if not 0 <= value <= MAX_TIMESTAMP:
            raise InvalidRequestError(
                f"Invalid {name}: must be a unix timestamp between 0 and {MAX_TIMESTAMP} "
                "(the end of year 9999).",
                param=name,
            )
        if value % step:
            raise InvalidRequestError(
                f"The {name} must be aligned with {unit} boundaries"
                + (f" when value_grouping_window is {grouping}." if grouping else "."),
                param=name,
            )
    if end <= start:
        raise InvalidRequestError("The end_time must be after the start_time.", param="end_time")


def windows(start: int, end: int, grouping: GroupingWindow | None) -> list[Window]:
    """Every window of the range, newest first."""
    if grouping is None:
        return [(start, end)]
    step = GROUPING_SECONDS[grouping]
    return [(t, t + step) for t in range(end - step, start - 1, -step)]


def window_count(start: int, end: int, grouping: GroupingWindow | None) -> int:
    return 1 if grouping is None else (end - start) // GROUPING_SECONDS[grouping]


def window_at(start: int, end: int, grouping: GroupingWindow | None, index: int) -> Window:
    """The ``index``-th window, newest first, without listing them all."""
    if grouping is None:
        return (start, end)
    step = GROUPING_SECONDS[grouping]
    high = end - index * step
    return (high - step, high)


def summary_id(meter: Meter, customer: str, window: Window) -> str:
    """``mtrusg_...``: the same (meter, customer, window) always gets the same id.

    The id ends with the window's start in fixed-width base62, so a cursor finds its window
    without hashing every window of a long range; the hash in front ties it to the rest.
    """
    digest = hashlib.blake2b(
        f"{meter.id}\x00{customer}\x00{window[0]}\x00{window[1]}".encode(), digest_size=12
    ).digest()
    mode = "" if meter.livemode else "test_"
    hashed = ids.base62(int.from_bytes(digest, "big")).rjust(17, "0")
    return f"mtrusg_{mode}{hashed}{ids.base62(window[0]).rjust(_START_DIGITS, '0')}"


def index_of(
    summary: str,
    meter: Meter,
    customer: str,
    start: int,
    end: int,
    grouping: GroupingWindow | None,
) -> int | None:
    """Where a summary id sits in this query's windows (newest first), or None."""
    try:
        window_start = ids.from_base62(summary[-_START_DIGITS:])
    except ValueError:
        return None
    if grouping is None:
        index = 0
    else:
        step = GROUPING_SECONDS[grouping]
        index, misaligned = divmod(end - step - window_start, step)
        if misaligned or not 0 <= index < window_count(start, end, grouping):
            return None
    expected = summary_id(meter, customer, window_at(start, end, grouping, index))
    return index if expected == summary else None


def raw_spans(start: int, end: int) -> list[Span]:
    """Whole days from day rows, whole hours at their edges from hour rows, minutes at the ends.

    The spans cover ``[start, end)`` exactly once, and at most 1 + 2 * 23 + 2 * 59 rows are
    read besides the day rows, however many events the range holds.
    """
    spans: list[Span] = []
    low, high = start, end
    for size, finer in ((DAY, HOUR), (HOUR, MINUTE)):
        first = -(-low // size) * size
        last = floor_to(high, size)
        if first >= last:
            continue
        spans.append((size, first, last))
        if low < first:
            spans.append((finer, low, first))
        if last < high:
            spans.append((finer, last, high))
        return _refine(spans, size)
    return [(MINUTE, start, end)]


def _refine(spans: list[Span], coarsest: int) -> list[Span]:
    """Split the hour-sized edges left beside whole days into hours and minutes."""
    if coarsest != DAY:
        return spans
    refined: list[Span] = [spans[0]]
    for _size, low, high in spans[1:]:
        refined.extend(raw_spans(low, high))
    return refined


def spans_for(meter: Meter, windows: list[Window], grouped: bool) -> list[Span]:
    """The rollup rows that cover a page of windows (newest first), read in one go."""
    if not windows:
        return []
    low, high = windows[-1][0], windows[0][1]
    if rollups.is_windowed(meter):
        size = rollups.sizes(meter)[0]
        return [(size, floor_to(low, size), high)]
    if grouped:
        step = windows[0][1] - windows[0][0]
        return [(step, low, high)]
    return raw_spans(low, high)


def per_window(
    meter: Meter, windows: list[Window], found: list[tuple[int, int, Rollup]]
) -> dict[Window, Rollup | None]:
    """Combine the rows read for :func:`spans_for` into one row per window.

    Unwindowed rows belong to the window holding their bucket; a windowed meter's row is one
    counted event, so it belongs where that event's timestamp falls.
    """
    if not windows:
        return {}
    windowed = rollups.is_windowed(meter)
    grouped: dict[Window, list[Rollup]] = {w: [] for w in windows}
    high, step = windows[0][1], windows[0][1] - windows[0][0]
    for _size, bucket, row in found:
        at = row.latest_ts if windowed else bucket
        index = (high - 1 - at) // step
        if 0 <= index < len(windows) and windows[index][0] <= at < windows[index][1]:
            grouped[windows[index]].append(row)
    return {w: rollups.combine(rows) for w, rows in grouped.items()}


def aggregated_value(meter: Meter, row: Rollup | None) -> int | Decimal:
    """The meter's formula over a window's combined row: 0 when nothing counted there."""
    if row is None:
        return 0
    if meter.formula == "count":
        return row.count
    if meter.formula == "sum":
        return values.as_number(row.total)
    return values.as_number(row.latest_value)

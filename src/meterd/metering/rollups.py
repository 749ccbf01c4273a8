"""Rollups: what each (meter, customer, bucket) adds up to, kept current as events arrive.

Meters without an ``event_time_window`` count every event: they keep a row per minute, per
hour and per UTC day with the count, the exact scaled sum and the latest event (timestamp,
arrival order, value). Meters with a window count only the latest event of each customer's
UTC hour or day: they keep one row per window, holding that event. Summaries read these rows,
never raw events, so their cost follows the number of windows asked for, not the number of
events stored.
"""

from __future__ import annotations

from collections.abc import Iterable
from typing import NamedTuple

import msgspec

from meterd.metering.meters import Meter

MINUTE = 60
HOUR = 3600
DAY = 86400
WINDOW_SECONDS = {"hour": HOUR, "day": DAY}
SQL_SUM_LIMIT = 2**62
"""A batch whose scaled values add up to less than this can be summed by the database in
64-bit integers; a bigger one is folded in Python (exact at any size)."""


class RollupKey(NamedTuple):
    meter_seq: int
    customer: str
    size: int
    bucket: int


class Rollup(msgspec.Struct, frozen=True):
    count: int
    total: int
    latest_ts: int
    latest_seq: int
    latest_value: int

    @property
    def latest(self) -> tuple[int, int]:
        return (self.latest_ts, self.latest_seq)


class StoredEvent(NamedTuple):
    """A raw event as rollups see it; ``value`` is scaled by 10^12 (0 for count meters)."""

    seq: int
    customer: str
    ts: int
    value: int


def is_windowed(meter: Meter) -> bool:
    return meter.event_time_window is not None


def tracks_latest(meter: Meter) -> bool:
    """Whether the meter's rows keep their latest event (only ``last`` and windows read it).

    The others keep zeros there, so that cancelling one of their events is a subtraction and
    never needs the bucket's raw events again.
    """
    return meter.formula == "last" or meter.event_time_window is not None


def sizes(meter: Meter) -> tuple[int, ...]:
    """The bucket sizes a meter keeps rows for; the first is the leaf raw events point at."""
    if meter.event_time_window is not None:
        return (WINDOW_SECONDS[meter.event_time_window],)
    return (MINUTE, HOUR, DAY)


def floor_to(ts: int, size: int) -> int:
    return ts - ts % size


def single(event: StoredEvent, latest: bool = True) -> Rollup:
    if not latest:
        return Rollup(1, event.value, 0, 0, 0)
    return Rollup(1, event.value, event.ts, event.seq, event.value)


def without(row: Rollup, event: StoredEvent) -> Rollup | None:
    """``row`` after one of its events is cancelled, for meters that do not track the latest."""
    if row.count <= 1:
        return None
    return Rollup(row.count - 1, row.total - event.value, 0, 0, 0)


def merge(old: Rollup | None, new: Rollup, windowed: bool) -> Rollup:
    """``old`` plus ``new``; in a window only the latest event counts, ties to the later arrival."""
    if old is None:
        return new
    if windowed:
        return new if new.latest > old.latest else old
    latest = new if new.latest > old.latest else old
    return Rollup(
        old.count + new.count,
        old.total + new.total,
        latest.latest_ts,
        latest.latest_seq,
        latest.latest_value,
    )


def fold(
    rows: dict[RollupKey, Rollup], meter: Meter, meter_seq: int, events: Iterable[StoredEvent]
) -> None:
    """Add ``events`` of one meter into ``rows`` (a batch's deltas, merged in memory first).

    Events go into the finest rows first; each coarser row is then merged from the finer
    rows of the batch, so a batch costs one merge per event plus one per touched row.
    """
    windowed = is_windowed(meter)
    latest = tracks_latest(meter)
    levels = sizes(meter)
    leaf = levels[0]
    finer: dict[RollupKey, Rollup] = {}
    for event in events:
        key = RollupKey(meter_seq, event.customer, leaf, event.ts - event.ts % leaf)
        finer[key] = merge(finer.get(key), single(event, latest), windowed)
    _merge_into(rows, finer, windowed)
    for size in levels[1:]:
        coarser: dict[RollupKey, Rollup] = {}
        for key, row in finer.items():
            up = RollupKey(meter_seq, key.customer, size, key.bucket - key.bucket % size)
            coarser[up] = merge(coarser.get(up), row, windowed)
        _merge_into(rows, coarser, windowed)
        finer = coarser


def _merge_into(
    rows: dict[RollupKey, Rollup], deltas: dict[RollupKey, Rollup], windowed: bool
) -> None:
    for key, row in deltas.items():
        rows[key] = merge(rows.get(key), row, windowed)


def recount(events: Iterable[StoredEvent], windowed: bool) -> Rollup | None:
    """One bucket's row from its uncancelled raw events (or None when none are left)."""
    row: Rollup | None = None
    for event in events:
        row = merge(row, single(event), windowed)
    return row


def combine(rows: Iterable[Rollup]) -> Rollup | None:
    """Rows of disjoint buckets into one (for windowed meters each row is one counted event)."""
    result: Rollup | None = None
    for row in rows:
        result = merge(result, row, windowed=False)
    return result

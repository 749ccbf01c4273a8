"""Rollup algebra: merge, fold, recount and combine agree with each other and with the rules."""

from __future__ import annotations

import random
from collections import defaultdict
from functools import reduce

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from meterd.metering import rollups
from meterd.metering.meters import EventTimeWindow, Meter, new_meter
from meterd.metering.rollups import (
    DAY,
    HOUR,
    MINUTE,
    Rollup,
    RollupKey,
    StoredEvent,
    combine,
    floor_to,
    fold,
    merge,
    recount,
    single,
)
from meterd.metering.values import SCALE
from meterd.scope import Scope

NOW = 1_767_225_600  # 2026-01-01T00:00:00Z
METER_SEQ = 7
WINDOWS: tuple[EventTimeWindow | None, ...] = (None, "hour", "day")


def meter(window: EventTimeWindow | None = None, formula: str = "last") -> Meter:
    """A meter whose rows track the latest event (``last``) unless ``formula`` says otherwise."""
    return new_meter(
        Scope("acct_rollups", False),
        display_name="Tokens",
        event_name="tokens",
        formula=formula,  # type: ignore[arg-type]
        customer_key=None,
        value_key=None,
        event_time_window=window,
        now=NOW,
    )


@st.composite
def event_lists(draw: st.DrawFn, max_size: int = 30) -> list[StoredEvent]:
    """Events in arrival order (seq ascending), with clustered and equal timestamps."""
    stamps = draw(st.lists(st.integers(-2 * DAY, 2 * DAY), min_size=1, max_size=4))
    events = []
    for seq in range(1, draw(st.integers(0, max_size)) + 1):
        near = draw(st.sampled_from(stamps))
        ts = NOW + near + draw(st.sampled_from((0, 0, 1, -1, 59, 60, HOUR, -HOUR, DAY)))
        customer = draw(st.sampled_from(("cus_a", "cus_b")))
        value = draw(st.one_of(st.integers(0, 10 * SCALE), st.integers(0, 10**32)))
        events.append(StoredEvent(seq, customer, ts, value))
    return events


@st.composite
def rollup_rows(draw: st.DrawFn, seqs: st.SearchStrategy[int]) -> Rollup:
    value = draw(st.integers(0, 10**25))
    return Rollup(
        draw(st.integers(1, 10**6)),
        draw(st.integers(0, 10**30)),
        NOW + draw(st.integers(-DAY, DAY)),
        draw(seqs),
        value,
    )


def newest(events: list[StoredEvent]) -> StoredEvent:
    return max(events, key=lambda e: (e.ts, e.seq))


def folded(m: Meter, events: list[StoredEvent]) -> dict[RollupKey, Rollup]:
    rows: dict[RollupKey, Rollup] = {}
    fold(rows, m, METER_SEQ, events)
    return rows


def by_bucket(events: list[StoredEvent], size: int) -> dict[RollupKey, list[StoredEvent]]:
    grouped: defaultdict[RollupKey, list[StoredEvent]] = defaultdict(list)
    for event in events:
        grouped[RollupKey(METER_SEQ, event.customer, size, event.ts - event.ts % size)].append(
            event
        )
    return dict(grouped)


# sizes and buckets --------------------------------------------------------------------------


def test_sizes() -> None:
    assert rollups.sizes(meter()) == (MINUTE, HOUR, DAY)
    assert rollups.sizes(meter("hour")) == (HOUR,)
    assert rollups.sizes(meter("day")) == (DAY,)
    assert not rollups.is_windowed(meter())
    assert rollups.is_windowed(meter("hour")) and rollups.is_windowed(meter("day"))


@given(ts=st.integers(-(10**10), 10**12), size=st.sampled_from((MINUTE, HOUR, DAY)))
def test_floor_to(ts: int, size: int) -> None:
    floor = floor_to(ts, size)
    assert floor % size == 0 and floor <= ts < floor + size


def test_single() -> None:
    assert single(StoredEvent(4, "c", NOW + 5, 3 * SCALE)) == Rollup(
        1, 3 * SCALE, NOW + 5, 4, 3 * SCALE
    )


# merge --------------------------------------------------------------------------------------


def test_merge_adds_and_keeps_the_latest() -> None:
    old = Rollup(2, 5 * SCALE, NOW + 10, 3, SCALE)
    new = Rollup(1, 2 * SCALE, NOW + 5, 9, 2 * SCALE)  # later arrival, earlier timestamp
    assert merge(old, new, windowed=False) == Rollup(3, 7 * SCALE, NOW + 10, 3, SCALE)
    tie = Rollup(1, 4 * SCALE, NOW + 10, 9, 4 * SCALE)  # same timestamp, later arrival wins
    assert merge(old, tie, windowed=False) == Rollup(3, 9 * SCALE, NOW + 10, 9, 4 * SCALE)
    assert merge(None, new, windowed=False) == new
    assert merge(None, new, windowed=True) == new


def test_merge_of_windowed_rows_keeps_the_newest_event() -> None:
    old = Rollup(1, 5 * SCALE, NOW + 10, 3, 5 * SCALE)
    earlier = Rollup(1, 2 * SCALE, NOW + 5, 9, 2 * SCALE)
    tie = Rollup(1, 4 * SCALE, NOW + 10, 9, 4 * SCALE)
    assert merge(old, earlier, windowed=True) == old
    assert merge(earlier, old, windowed=True) == old
    assert merge(old, tie, windowed=True) == tie
    assert merge(tie, old, windowed=True) == tie


distinct_seqs = st.integers(1, 10**9)


@settings(max_examples=300)
@given(
    rows=st.lists(rollup_rows(distinct_seqs), min_size=3, max_size=3, unique_by=lambda r: r.latest)
)
@pytest.mark.parametrize("windowed", [False, True])
def test_merge_is_commutative_and_associative(rows: list[Rollup], windowed: bool) -> None:
    a, b, c = rows
    assert merge(a, b, windowed) == merge(b, a, windowed)
    assert merge(merge(a, b, windowed), c, windowed) == merge(a, merge(b, c, windowed), windowed)


@settings(max_examples=200)
@given(
    rows=st.lists(rollup_rows(distinct_seqs), min_size=1, max_size=8, unique_by=lambda r: r.latest)
)
def test_windowed_merge_is_the_newest_row(rows: list[Rollup]) -> None:
    result = reduce(lambda acc, r: merge(acc, r, True), rows[1:], rows[0])
    assert result == max(rows, key=lambda r: r.latest)


@settings(max_examples=200)
@given(
    rows=st.lists(rollup_rows(distinct_seqs), min_size=1, max_size=8, unique_by=lambda r: r.latest)
)
def test_unwindowed_merge_of_many_rows_is_combine(rows: list[Rollup]) -> None:
    result = reduce(lambda acc, r: merge(acc, r, False), rows[1:], rows[0])
    assert result == combine(rows)
    assert result.count == sum(r.count for r in rows)
    assert result.total == sum(r.total for r in rows)
    assert result.latest == max(r.latest for r in rows)


# combine and recount ------------------------------------------------------------------------


def test_empty_inputs() -> None:
    assert combine([]) is None
    assert recount([], windowed=False) is None
    assert recount([], windowed=True) is None
    assert recount(iter([]), windowed=False) is None


@settings(max_examples=200)
@given(
    rows=st.lists(rollup_rows(distinct_seqs), min_size=1, max_size=8, unique_by=lambda r: r.latest)
)
def test_combine_ignores_order(rows: list[Rollup]) -> None:
    shuffled = list(rows)
    random.Random(len(rows)).shuffle(shuffled)
    assert combine(rows) == combine(shuffled) == combine(iter(rows))
    assert combine(rows[:1]) == rows[0]


@settings(max_examples=300)
@given(events=event_lists(max_size=12))
def test_recount_is_the_rule(events: list[StoredEvent]) -> None:
    if not events:
        return
    windowed = recount(events, windowed=True)
    assert windowed == single(newest(events))
    total = recount(events, windowed=False)
    assert total is not None
    assert total.count == len(events)
    assert total.total == sum(e.value for e in events)
    assert (total.latest_ts, total.latest_seq, total.latest_value) == (
        newest(events).ts,
        newest(events).seq,
        newest(events).value,
    )


# fold ---------------------------------------------------------------------------------------


@settings(max_examples=120)
@given(events=event_lists(), window=st.sampled_from(WINDOWS))
def test_fold_equals_combining_per_event_singles(
    events: list[StoredEvent], window: EventTimeWindow | None
) -> None:
    m = meter(window)
    rows = folded(m, events)
    expected: dict[RollupKey, Rollup] = {}
    for size in rollups.sizes(m):
        for key, members in by_bucket(events, size).items():
            # Windowed: only the customer's newest event of the hour/day counts.
            row = combine(map(single, members)) if window is None else single(newest(members))
            assert row is not None
            expected[key] = row
    assert rows == expected


@settings(max_examples=120)
@given(events=event_lists(), window=st.sampled_from(WINDOWS))
def test_fold_agrees_with_recount_of_each_leaf(
    events: list[StoredEvent], window: EventTimeWindow | None
) -> None:
    m = meter(window)
    leaf = rollups.sizes(m)[0]
    rows = folded(m, events)
    for key, members in by_bucket(events, leaf).items():
        assert rows[key] == recount(members, rollups.is_windowed(m))


@settings(max_examples=120)
@given(events=event_lists(), window=st.sampled_from(WINDOWS), data=st.data())
def test_fold_in_parts_equals_fold_at_once(
    events: list[StoredEvent], window: EventTimeWindow | None, data: st.DataObject
) -> None:
    """Batches folded one after another (as ingest does) give the rows of one big batch."""
    m = meter(window)
    cut = data.draw(st.integers(0, len(events)))
    rows: dict[RollupKey, Rollup] = {}
    fold(rows, m, METER_SEQ, events[:cut])
    fold(rows, m, METER_SEQ, events[cut:])
    assert rows == folded(m, events)

    # Deltas folded separately, then merged row by row (what merge_rollups does in SQL).
    first, second = folded(m, events[:cut]), folded(m, events[cut:])
    merged = dict(first)
    for key, delta in second.items():
        merged[key] = merge(merged.get(key), delta, rollups.is_windowed(m))
    assert merged == folded(m, events)


@settings(max_examples=120)
@given(events=event_lists(), window=st.sampled_from(WINDOWS), seed=st.integers(0, 2**32))
def test_fold_ignores_the_order_events_are_listed_in(
    events: list[StoredEvent], window: EventTimeWindow | None, seed: int
) -> None:
    shuffled = list(events)
    random.Random(seed).shuffle(shuffled)
    assert folded(meter(window), shuffled) == folded(meter(window), events)


@settings(max_examples=120)
@given(events=event_lists(), window=st.sampled_from(WINDOWS))
def test_fold_accepts_any_iterable(
    events: list[StoredEvent], window: EventTimeWindow | None
) -> None:
    rows: dict[RollupKey, Rollup] = {}
    fold(rows, meter(window), METER_SEQ, (e for e in events))
    assert rows == folded(meter(window), events)


@settings(max_examples=120)
@given(events=event_lists())
def test_coarser_rows_combine_the_finer_rows_under_them(events: list[StoredEvent]) -> None:
    """What recount_bucket relies on to rebuild an hour or day row after a cancellation."""
    rows = folded(meter(), events)
    for finer, coarser in ((MINUTE, HOUR), (HOUR, DAY)):
        for key, row in rows.items():
            if key.size != coarser:
                continue
            under = [
                r
                for k, r in rows.items()
                if k.size == finer
                and k.customer == key.customer
                and key.bucket <= k.bucket < key.bucket + coarser
            ]
            assert combine(under) == row


def test_windowed_fold_keeps_one_event_per_customer_and_window() -> None:
    m = meter("day")
    events = [
        StoredEvent(1, "cus_a", NOW + 100, 1 * SCALE),
        StoredEvent(2, "cus_a", NOW + 200, 2 * SCALE),
        StoredEvent(3, "cus_a", NOW + 200, 3 * SCALE),  # same timestamp, received last: wins
        StoredEvent(4, "cus_a", NOW + 150, 4 * SCALE),
        StoredEvent(5, "cus_b", NOW + 50, 5 * SCALE),
        StoredEvent(6, "cus_a", NOW + DAY, 6 * SCALE),  # next day
    ]
    assert folded(m, events) == {
        RollupKey(METER_SEQ, "cus_a", DAY, NOW): Rollup(1, 3 * SCALE, NOW + 200, 3, 3 * SCALE),
        RollupKey(METER_SEQ, "cus_b", DAY, NOW): Rollup(1, 5 * SCALE, NOW + 50, 5, 5 * SCALE),
        RollupKey(METER_SEQ, "cus_a", DAY, NOW + DAY): Rollup(
            1, 6 * SCALE, NOW + DAY, 6, 6 * SCALE
        ),
    }


def test_unwindowed_fold_example() -> None:
    events = [
        StoredEvent(1, "c", NOW + 61, 2 * SCALE),
        StoredEvent(2, "c", NOW + 119, SCALE // 2),
        StoredEvent(3, "c", NOW + HOUR, 10**30),  # beyond 64 bits: still exact
    ]
    rows = folded(meter(), events)
    assert rows[RollupKey(METER_SEQ, "c", MINUTE, NOW + 60)] == Rollup(
        2, 2 * SCALE + SCALE // 2, NOW + 119, 2, SCALE // 2
    )
    assert rows[RollupKey(METER_SEQ, "c", HOUR, NOW)] == Rollup(
        2, 2 * SCALE + SCALE // 2, NOW + 119, 2, SCALE // 2
    )
    assert rows[RollupKey(METER_SEQ, "c", DAY, NOW)] == Rollup(
        3, 2 * SCALE + SCALE // 2 + 10**30, NOW + HOUR, 3, 10**30
    )
    assert len(rows) == 5  # two minutes, two hours, one day


@settings(max_examples=120)
@given(events=event_lists(), formula=st.sampled_from(["sum", "count"]), data=st.data())
def test_count_and_sum_rows_keep_no_latest_and_cancel_by_subtraction(
    events: list[StoredEvent], formula: str, data: st.DataObject
) -> None:
    """Rows of meters that do not track the latest event: zeros there, and ``without``
    gives what a fold of the remaining events gives (so a cancel needs no raw events)."""
    m = meter(None, formula)
    rows = folded(m, events)
    assert all((r.latest_ts, r.latest_seq, r.latest_value) == (0, 0, 0) for r in rows.values())
    if not events:
        return
    gone = data.draw(st.sampled_from(events))
    rest = [e for e in events if e is not gone]
    expected = folded(m, rest)
    for size in rollups.sizes(m):
        key = RollupKey(METER_SEQ, gone.customer, size, gone.ts - gone.ts % size)
        assert rollups.without(rows[key], gone) == expected.get(key)

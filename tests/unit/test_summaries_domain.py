"""Summary ranges: alignment errors, windows newest first, stable ids, the rollup spans read."""

from __future__ import annotations

import itertools
import re
from decimal import Decimal

import msgspec
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from meterd.errors import InvalidRequestError
from meterd.metering import summaries
from meterd.metering.meters import EventTimeWindow, Formula, Meter, deactivated, new_meter
from meterd.metering.rollups import DAY, HOUR, MINUTE, Rollup
from meterd.metering.summaries import MAX_TIMESTAMP, GroupingWindow
from meterd.metering.values import SCALE
from meterd.scope import Scope

NOW = 1_767_225_600  # 2026-01-01T00:00:00Z
STEP = {None: MINUTE, "hour": HOUR, "day": DAY}
GROUPINGS: tuple[GroupingWindow | None, ...] = (None, "hour", "day")


def meter(
    formula: Formula = "sum",
    window: EventTimeWindow | None = None,
    livemode: bool = False,
) -> Meter:
    return new_meter(
        Scope("acct_summaries", livemode),
        display_name="Tokens",
        event_name="tokens",
        formula=formula,
        customer_key=None,
        value_key=None,
        event_time_window=window,
        now=NOW,
    )


# check_range --------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("start", "end", "grouping", "param"),
    [
        (-60, 60, None, "start_time"),
        (0, -60, None, "end_time"),
        (MAX_TIMESTAMP + 1, MAX_TIMESTAMP + 61, None, "start_time"),
        (0, MAX_TIMESTAMP + 1, None, "end_time"),
        (NOW + 30, NOW + 120, None, "start_time"),
        (NOW, NOW + 150, None, "end_time"),
        (NOW + 1, NOW + 2, None, "start_time"),
        (NOW + 60, NOW + 2 * HOUR, "hour", "start_time"),
        (NOW, NOW + HOUR + 60, "hour", "end_time"),
        (NOW + HOUR, NOW + 2 * DAY, "day", "start_time"),
        (NOW, NOW + DAY + HOUR, "day", "end_time"),
        (NOW, NOW, None, "end_time"),
        (NOW + 120, NOW + 60, None, "end_time"),
        (NOW, NOW, "hour", "end_time"),
        (NOW + DAY, NOW, "day", "end_time"),
    ],
)
def test_check_range_names_the_bad_param(
    start: int, end: int, grouping: GroupingWindow | None, param: str
) -> None:
    with pytest.raises(InvalidRequestError) as raised:
        summaries.check_range(start, end, grouping)
    assert raised.value.param == param
    assert raised.value.http_status == 400
    assert raised.value.v1_body()["error"]["type"] == "invalid_request_error"
    assert param in raised.value.message


def test_alignment_messages_name_the_unit() -> None:
    with pytest.raises(InvalidRequestError, match="minute"):
        summaries.check_range(NOW + 1, NOW + 60, None)
    with pytest.raises(InvalidRequestError, match="hour"):
        summaries.check_range(NOW + 60, NOW + HOUR, "hour")
    with pytest.raises(InvalidRequestError, match="day"):
        summaries.check_range(NOW + HOUR, NOW + DAY, "day")


@pytest.mark.parametrize(
    ("start", "end", "grouping"),
    [
        (0, 60, None),
        (0, HOUR, "hour"),
        (0, DAY, "day"),
        (NOW + 60, NOW + 120, None),
        (NOW + HOUR, NOW + DAY, "hour"),
        (NOW, NOW + 35 * DAY, "day"),
        (NOW + 60, NOW + 35 * DAY + 60, None),
    ],
)
def test_aligned_ranges_pass(start: int, end: int, grouping: GroupingWindow | None) -> None:
    summaries.check_range(start, end, grouping)


moments = st.builds(
    lambda count, unit, jitter: NOW + count * unit + jitter,
    st.integers(-40, 40),
    st.sampled_from((MINUTE, HOUR, DAY)),
    st.sampled_from((0, 0, 0, 1, 59, MINUTE, HOUR)),
)


@settings(max_examples=500)
@given(start=moments, end=moments, grouping=st.sampled_from(GROUPINGS))
def test_check_range_accepts_exactly_the_aligned_ranges(
    start: int, end: int, grouping: GroupingWindow | None
) -> None:
    step = STEP[grouping]
    if start % step == 0 and end % step == 0 and end > start:
        summaries.check_range(start, end, grouping)
    else:
        with pytest.raises(InvalidRequestError):
            summaries.check_range(start, end, grouping)


# windows ------------------------------------------------------------------------------------


@st.composite
def ranges(draw: st.DrawFn) -> tuple[int, int, GroupingWindow | None]:
    grouping = draw(st.sampled_from(GROUPINGS))
    step = STEP[grouping]
    start = NOW + draw(st.integers(-400, 400)) * step
    return start, start + draw(st.integers(1, 400)) * step, grouping


def test_windows_of_an_ungrouped_range_is_the_range() -> None:
    assert summaries.windows(NOW, NOW + 7 * MINUTE, None) == [(NOW, NOW + 7 * MINUTE)]
    assert summaries.window_count(NOW, NOW + 7 * MINUTE, None) == 1


def test_windows_newest_first() -> None:
    assert summaries.windows(NOW, NOW + 3 * HOUR, "hour") == [
        (NOW + 2 * HOUR, NOW + 3 * HOUR),
        (NOW + HOUR, NOW + 2 * HOUR),
        (NOW, NOW + HOUR),
    ]
    assert summaries.windows(NOW, NOW + DAY, "day") == [(NOW, NOW + DAY)]


@settings(max_examples=300)
@given(case=ranges())
def test_windows_tile_the_range_newest_first(case: tuple[int, int, GroupingWindow | None]) -> None:
    start, end, grouping = case
    windows = summaries.windows(start, end, grouping)
    assert len(windows) == summaries.window_count(start, end, grouping)
    assert windows[0][1] == end and windows[-1][0] == start
    for newer, older in itertools.pairwise(windows):
        assert older[1] == newer[0], "contiguous, newest first"
    if grouping is not None:
        assert all(high - low == STEP[grouping] for low, high in windows)
        assert all(low % STEP[grouping] == 0 for low, _ in windows)


@settings(max_examples=300)
@given(case=ranges())
def test_window_at_agrees_with_windows(case: tuple[int, int, GroupingWindow | None]) -> None:
    start, end, grouping = case
    windows = summaries.windows(start, end, grouping)
    assert [summaries.window_at(start, end, grouping, i) for i in range(len(windows))] == windows


# summary ids --------------------------------------------------------------------------------


def test_summary_ids_look_like_stripes() -> None:
    test_id = summaries.summary_id(meter(), "cus_1", (NOW, NOW + HOUR))
    live_id = summaries.summary_id(meter(livemode=True), "cus_1", (NOW, NOW + HOUR))
    assert re.fullmatch(r"mtrusg_test_[0-9A-Za-z]+", test_id)
    assert re.fullmatch(r"mtrusg_[0-9A-Za-z]+", live_id) and not live_id.startswith("mtrusg_test")


def test_summary_ids_are_deterministic_and_survive_meter_changes() -> None:
    m = meter()
    window = (NOW, NOW + HOUR)
    first = summaries.summary_id(m, "cus_1", window)
    assert summaries.summary_id(m, "cus_1", window) == first
    copy = msgspec.convert(msgspec.to_builtins(m), Meter)
    assert summaries.summary_id(copy, "cus_1", window) == first
    assert summaries.summary_id(deactivated(m, NOW + 5), "cus_1", window) == first
    renamed = msgspec.structs.replace(m, display_name="Renamed", updated=NOW + 9)
    assert summaries.summary_id(renamed, "cus_1", window) == first


@settings(max_examples=200)
@given(
    a=st.tuples(st.sampled_from(("cus_1", "cus_2", "cus_10")), st.integers(0, 50)),
    b=st.tuples(st.sampled_from(("cus_1", "cus_2", "cus_10")), st.integers(0, 50)),
    width=st.sampled_from((MINUTE, HOUR, DAY)),
)
def test_different_summaries_get_different_ids(
    a: tuple[str, int], b: tuple[str, int], width: int
) -> None:
    m = meter()
    window_a = (NOW + a[1] * width, NOW + (a[1] + 1) * width)
    window_b = (NOW + b[1] * width, NOW + (b[1] + 1) * width)
    same = a == b
    assert (summaries.summary_id(m, a[0], window_a) == summaries.summary_id(m, b[0], window_b)) == (
        same
    )


def test_ids_differ_between_meters_and_window_ends() -> None:
    one, two = meter(), meter()
    assert summaries.summary_id(one, "c", (NOW, NOW + HOUR)) != summaries.summary_id(
        two, "c", (NOW, NOW + HOUR)
    )
    assert summaries.summary_id(one, "c", (NOW, NOW + HOUR)) != summaries.summary_id(
        one, "c", (NOW, NOW + 2 * HOUR)
    )


@settings(max_examples=200)
@given(case=ranges())
def test_index_of_round_trips(case: tuple[int, int, GroupingWindow | None]) -> None:
    start, end, grouping = case
    m = meter()
    for index in range(summaries.window_count(start, end, grouping)):
        window = summaries.window_at(start, end, grouping, index)
        summary = summaries.summary_id(m, "cus_1", window)
        assert summaries.index_of(summary, m, "cus_1", start, end, grouping) == index
    newest = summaries.summary_id(m, "cus_1", summaries.window_at(start, end, grouping, 0))
    assert summaries.index_of(newest, m, "cus_2", start, end, grouping) is None
    assert summaries.index_of(newest, meter(), "cus_1", start, end, grouping) is None


@pytest.mark.parametrize("grouping", GROUPINGS)
def test_index_of_rejects_ids_outside_the_range(grouping: GroupingWindow | None) -> None:
    m = meter()
    step = STEP[grouping]
    start, end = NOW + 10 * step, NOW + 20 * step
    for outside in ((start - step, start), (end, end + step), (start, end + step)):
        summary = summaries.summary_id(m, "cus_1", outside)
        assert summaries.index_of(summary, m, "cus_1", start, end, grouping) is None


@pytest.mark.parametrize(
    "garbage",
    ["", "x", "mtrusg_test_", "mtrusg_test_!!!!!!!!!!!!!!!!!!!!!!!!", "mtrusg_" + "z" * 40],
)
def test_index_of_rejects_garbage(garbage: str) -> None:
    assert summaries.index_of(garbage, meter(), "cus_1", NOW, NOW + DAY, "hour") is None


def test_a_window_shared_by_two_ranges_keeps_its_id() -> None:
    """Ids depend on the window, not on the query, so a cursor stays valid across ranges."""
    m = meter()
    window = (NOW + 3 * HOUR, NOW + 4 * HOUR)
    summary = summaries.summary_id(m, "cus_1", window)
    assert summaries.index_of(summary, m, "cus_1", NOW, NOW + 10 * HOUR, "hour") == 6
    assert summaries.index_of(summary, m, "cus_1", NOW + 2 * HOUR, NOW + 5 * HOUR, "hour") == 1


# spans --------------------------------------------------------------------------------------


def covered(spans: list[tuple[int, int, int]]) -> list[tuple[int, int]]:
    """The time intervals the spans' rows cover, sorted."""
    return sorted((first, end) for _size, first, end in spans)


@settings(max_examples=500)
@given(
    start=st.integers(-3 * 1440, 3 * 1440).map(lambda m: NOW + m * MINUTE),
    minutes=st.integers(1, 12 * 1440),
)
def test_raw_spans_cover_the_range_exactly_once(start: int, minutes: int) -> None:
    end = start + minutes * MINUTE
    spans = summaries.raw_spans(start, end)
    for size, first, high in spans:
        assert size in (MINUTE, HOUR, DAY)
        assert first < high
        assert first % size == 0 and high % size == 0, "whole rows only, no overshoot"
    intervals = covered(spans)
    assert intervals[0][0] == start and intervals[-1][1] == end
    for (_, high), (low, _) in itertools.pairwise(intervals):
        assert high == low, "no gap and no overlap"
    hour_rows = sum((h - f) // HOUR for s, f, h in spans if s == HOUR)
    minute_rows = sum((h - f) // MINUTE for s, f, h in spans if s == MINUTE)
    assert hour_rows <= 2 * 23 and minute_rows <= 2 * 59


def test_raw_spans_examples() -> None:
    assert summaries.raw_spans(NOW + 60, NOW + 120) == [(MINUTE, NOW + 60, NOW + 120)]
    assert summaries.raw_spans(NOW, NOW + HOUR) == [(HOUR, NOW, NOW + HOUR)]
    assert summaries.raw_spans(NOW, NOW + DAY) == [(DAY, NOW, NOW + DAY)]
    assert sorted(summaries.raw_spans(NOW - 60, NOW + DAY + HOUR + 60)) == sorted(
        [
            (DAY, NOW, NOW + DAY),
            (MINUTE, NOW - 60, NOW),
            (HOUR, NOW + DAY, NOW + DAY + HOUR),
            (MINUTE, NOW + DAY + HOUR, NOW + DAY + HOUR + 60),
        ]
    )


def test_spans_for_windowed_meters_read_whole_windows() -> None:
    hourly = meter(window="hour")
    windows = [(NOW + 90 * MINUTE, NOW + 100 * MINUTE)]
    assert summaries.spans_for(hourly, windows, grouped=False) == [
        (HOUR, NOW + HOUR, NOW + 100 * MINUTE)
    ]
    daily = meter(window="day")
    windows = summaries.windows(NOW + HOUR, NOW + 3 * HOUR, "hour")
    assert summaries.spans_for(daily, windows, grouped=True) == [(DAY, NOW, NOW + 3 * HOUR)]


def test_spans_for_grouped_unwindowed_meters_read_rows_of_the_window_size() -> None:
    m = meter()
    hours = summaries.windows(NOW, NOW + 5 * HOUR, "hour")
    assert summaries.spans_for(m, hours, grouped=True) == [(HOUR, NOW, NOW + 5 * HOUR)]
    days = summaries.windows(NOW, NOW + 3 * DAY, "day")
    assert summaries.spans_for(m, days, grouped=True) == [(DAY, NOW, NOW + 3 * DAY)]
    assert summaries.spans_for(m, [(NOW + 60, NOW + 120)], grouped=False) == [
        (MINUTE, NOW + 60, NOW + 120)
    ]
    assert summaries.spans_for(m, [], grouped=True) == []


# per_window and aggregated_value ------------------------------------------------------------


def row(count: int, total: int, ts: int, seq: int, value: int) -> Rollup:
    return Rollup(count, total, ts, seq, value)


def test_an_empty_page_has_no_windows() -> None:
    """A page past the last window (``starting_after`` the oldest) reads nothing."""
    for m in (meter(), meter(window="hour")):
        assert summaries.per_window(m, [], []) == {}


@settings(max_examples=300)
@given(
    case=ranges(),
    placed=st.lists(st.tuples(st.integers(-50, 450), st.integers(1, 5)), max_size=30),
)
def test_per_window_puts_unwindowed_rows_in_the_window_of_their_bucket(
    case: tuple[int, int, GroupingWindow | None], placed: list[tuple[int, int]]
) -> None:
    start, end, grouping = case
    m = meter()
    windows = summaries.windows(start, end, grouping)
    unit = STEP[grouping]
    found = []
    for seq, (offset, count) in enumerate(placed):
        bucket = start + offset * unit
        found.append((unit, bucket, row(count, count * SCALE, bucket + 1, seq, SCALE)))
    rows = summaries.per_window(m, windows, found)
    assert set(rows) == set(windows)
    for window in windows:
        inside = [r for _s, b, r in found if window[0] <= b < window[1]]
        got = rows[window]
        if not inside:
            assert got is None
        else:
            assert got is not None
            assert got.count == sum(r.count for r in inside)
            assert got.total == sum(r.total for r in inside)
            assert got.latest == max(r.latest for r in inside)


def test_per_window_places_a_windowed_row_by_its_events_timestamp() -> None:
    daily = meter(window="day")
    windows = summaries.windows(NOW, NOW + DAY, "hour")
    event = row(1, 5 * SCALE, NOW + 5 * HOUR + 17, 3, 5 * SCALE)
    rows = summaries.per_window(daily, windows, [(DAY, NOW, event)])
    assert rows[(NOW + 5 * HOUR, NOW + 6 * HOUR)] == event
    assert sum(r is not None for r in rows.values()) == 1
    # An event outside the page's windows is not counted even though its day row was read.
    narrow = [(NOW, NOW + HOUR)]
    assert summaries.per_window(daily, narrow, [(DAY, NOW, event)]) == {(NOW, NOW + HOUR): None}


@pytest.mark.parametrize("formula", ["count", "sum", "last"])
def test_nothing_counted_is_zero(formula: Formula) -> None:
    value = summaries.aggregated_value(meter(formula), None)
    assert value == 0 and type(value) is int


def test_aggregated_value_per_formula() -> None:
    combined = row(3, 7 * SCALE + SCALE // 2, NOW, 9, SCALE // 4)
    assert summaries.aggregated_value(meter("count"), combined) == 3
    assert summaries.aggregated_value(meter("sum"), combined) == Decimal("7.5")
    assert summaries.aggregated_value(meter("last"), combined) == Decimal("0.25")
    whole = row(2, 4 * SCALE, NOW, 2, 2 * SCALE)
    assert type(summaries.aggregated_value(meter("sum"), whole)) is int
    huge = row(1, 10**40 + 1, NOW, 1, 10**40 + 1)
    assert summaries.aggregated_value(meter("sum"), huge) == Decimal(
        "10000000000000000000000000000.000000000001"
    )

"""``assess_streamed`` (the stream's one-pass common case) agrees with ``assess_batch`` of the
same request's submissions whenever it answers, and answers for the common case.

Requests mix every meter of ``test_assess_batch`` with identifiers sent or not, timestamps
absent, with a time zone or without, inside the window or past it, and the values and
customers of that test.
"""

from __future__ import annotations

from datetime import UTC, datetime, timedelta, timezone
from typing import Any

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from msgspec import UNSET, UnsetType

from meterd.api.meter_event_stream import StreamEvent, StreamParams, submissions
from meterd.ingest.writes import assess_batch, assess_streamed
from meterd.metering.events import FUTURE_WINDOW_SECONDS, PAST_WINDOW_SECONDS
from meterd.scope import Scope

from .test_assess_batch import METERS, NOW, SCOPES, offsets, payloads

NAMES = ["sum", "count", "last", "hourly", "archived", "none"]


@st.composite
def stream_events(draw: st.DrawFn) -> StreamEvent:
    payload = draw(payloads())
    sent = draw(st.sampled_from(["none", "aware", "naive"]))
    moment = datetime.fromtimestamp(NOW + draw(offsets), UTC)
    timestamp: datetime | UnsetType = UNSET
    if sent == "aware":
        timestamp = moment.astimezone(timezone_of(draw(st.integers(-12, 12))))
    elif sent == "naive":
        timestamp = moment.replace(tzinfo=None)
    return StreamEvent(
        event_name=draw(st.sampled_from(NAMES)),
        payload=payload,
        identifier=draw(st.one_of(st.just(UNSET), st.text(min_size=1, max_size=8))),
        timestamp=timestamp,
    )


def timezone_of(hours: int) -> timezone:
    return timezone(timedelta(hours=hours))


def lookup_for(scope: Scope, events: list[StreamEvent]) -> dict[Any, Any]:
    return {(scope, e.event_name): METERS[(scope, e.event_name)] for e in events}


@settings(max_examples=500, deadline=None)
@given(st.sampled_from(SCOPES), st.lists(stream_events(), min_size=1, max_size=20))
def test_assess_streamed_agrees_with_assess_batch(scope: Scope, events: list[StreamEvent]) -> None:
    params = StreamParams(events=events)
    lookup = lookup_for(scope, events)
    fast = assess_streamed(scope, events, NOW, lookup)
    if fast is None:
        return
    built = submissions(scope, params, NOW)
    full = assess_batch(built, lookup)
    assert fast.verdicts == full.verdicts
    assert fast.hashes == full.hashes
    assert fast.total == full.total
    assert fast.plain == full.plain
    assert fast.keyless and full.keyless
    assert fast.folded_meters == {m for m in full.folded_meters if m in fast.meters}


@settings(max_examples=200, deadline=None)
@given(
    st.sampled_from(SCOPES),
    st.lists(
        st.tuples(
            st.sampled_from(["sum", "count", "last", "hourly"]),
            st.text(min_size=1, max_size=8),
            st.integers(0, 9_999_999).map(str),
            st.booleans(),
        ),
        min_size=1,
        max_size=20,
    ),
)
def test_the_common_case_is_answered(scope: Scope, rows: list[tuple[str, str, str, bool]]) -> None:
    """Active meters, a customer, plain values, identifiers sent, timestamps absent or aware and
    inside the window: the stream never falls back to building submissions for these."""
    events = [
        StreamEvent(
            event_name=name,
            payload={"cust": "cus_1", "val": value},
            identifier=identifier,
            timestamp=datetime.fromtimestamp(NOW - 60, UTC) if timed else UNSET,
        )
        for name, identifier, value, timed in rows
    ]
    assessed = assess_streamed(scope, events, NOW, lookup_for(scope, events))
    assert assessed is not None
    assert len(assessed.verdicts) == len(events)
    assert assessed.plain == all(name != "hourly" for name, *_ in rows)


@pytest.mark.parametrize(
    "offset",
    [
        -PAST_WINDOW_SECONDS - 1,
        -PAST_WINDOW_SECONDS,
        0,
        FUTURE_WINDOW_SECONDS,
        FUTURE_WINDOW_SECONDS + 1,
    ],
)
@pytest.mark.parametrize("hours", [-5, 0, 9])
def test_the_window_edges_are_those_of_assess_batch(offset: int, hours: int) -> None:
    scope = SCOPES[0]
    moment = datetime.fromtimestamp(NOW + offset, UTC).astimezone(timezone_of(hours))
    events = [
        StreamEvent(
            event_name="sum", payload={"cust": "c", "val": "3"}, identifier="i", timestamp=moment
        )
    ]
    lookup = lookup_for(scope, events)
    fast = assess_streamed(scope, events, NOW, lookup)
    full = assess_batch(submissions(scope, StreamParams(events=events), NOW), lookup)
    inside = -PAST_WINDOW_SECONDS <= offset <= FUTURE_WINDOW_SECONDS
    assert (fast is not None) == inside
    if fast is not None:
        assert fast.verdicts == full.verdicts
    else:
        assert not full.plain

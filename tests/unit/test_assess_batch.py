"""``assess_batch`` decides common events without calling ``assess``: both must always agree.

The reference below builds every verdict from :func:`meterd.metering.events.assess` alone, as
``assess_batch`` did before it had a fast path. Hypothesis generates batches that mix meters
(every formula, windows, inactive, missing), customers (present, empty, absent), values at
and past the fast path's edges (seven digits, eight, decimals, signs, non-ASCII digits) and
timestamps on both sides of the accepted window.
"""

from __future__ import annotations

from collections.abc import Sequence

from hypothesis import given, settings
from hypothesis import strategies as st

from meterd.ingest.writes import MeterLookup, assess_batch
from meterd.metering import rollups
from meterd.metering.events import (
    FUTURE_WINDOW_SECONDS,
    PAST_WINDOW_SECONDS,
    Counted,
    EventSubmission,
    assess,
)
from meterd.metering.meters import Meter, deactivated, new_meter
from meterd.scope import Scope
from meterd.storage.base import NewEvent, identifier_hash

NOW = 1_767_225_600
SCOPES = (Scope("acct_a", False), Scope("acct_a", True), Scope("acct_b", False))


def _meter(scope: Scope, name: str, formula: str, window: str | None, active: bool) -> Meter:
    meter = new_meter(
        scope,
        display_name=name,
        event_name=name,
        formula=formula,  # type: ignore[arg-type]
        customer_key="cust",
        value_key="val",
        event_time_window=window,  # type: ignore[arg-type]
        now=NOW - 100,
    )
    return meter if active else deactivated(meter, NOW - 50)


def _lookup() -> MeterLookup:
    """Every scope has meters ``sum``, ``count``, ``last``, ``hourly``, ``archived``; the
    name ``none`` has no meter."""
    found: dict[tuple[Scope, str], tuple[Meter, int] | None] = {}
    seq = 0
    for scope in SCOPES:
        for name, formula, window, active in (
            ("sum", "sum", None, True),
            ("count", "count", None, True),
            ("last", "last", None, True),
            ("hourly", "sum", "hour", True),
            ("archived", "sum", None, False),
        ):
            seq += 1
            found[(scope, name)] = (_meter(scope, name, formula, window, active), seq)
        found[(scope, "none")] = None
    return found


METERS = _lookup()

values = st.one_of(
    st.none(),
    st.integers(0, 10**9).map(str),
    st.sampled_from(
        [
            "",
            "0",
            "0000000",
            "9999999",
            "12345678",
            "2.5",
            ".5",
            "5.",
            "-1",
            "+1",
            "1e3",
            "\u0661\u0662",
            " 1",
            "0.0000000000001",
            "99999999999999999999",
            "abc",
        ]
    ),
)
customers = st.one_of(st.none(), st.sampled_from(["", "cus_1", "cus_2", "\u00e9"]))
offsets = st.one_of(
    st.integers(-PAST_WINDOW_SECONDS - 2, FUTURE_WINDOW_SECONDS + 2),
    st.sampled_from(
        [
            -PAST_WINDOW_SECONDS - 1,
            -PAST_WINDOW_SECONDS,
            0,
            FUTURE_WINDOW_SECONDS,
            FUTURE_WINDOW_SECONDS + 1,
        ]
    ),
)
"""A timestamp's distance from the moment its event was received."""


@st.composite
def payloads(draw: st.DrawFn) -> dict[str, str]:
    """A customer under ``cust`` and a value under ``val``, each maybe absent."""
    payload = {"other": "x"}
    customer = draw(customers)
    if customer is not None:
        payload["cust"] = customer
    value = draw(values)
    if value is not None:
        payload["val"] = value
    return payload


@st.composite
def events(draw: st.DrawFn) -> EventSubmission:
    payload = draw(payloads())
    created = NOW + draw(st.integers(0, 2))
    return EventSubmission(
        scope=draw(st.sampled_from(SCOPES)),
        event_name=draw(st.sampled_from(["sum", "count", "last", "hourly", "archived", "none"])),
        identifier=draw(st.text(min_size=1, max_size=8)),
        payload=payload,
        timestamp=created + draw(offsets),
        created=created,
        origin=draw(st.sampled_from(["v1", "v2", "stream"])),
    )


def reference(batch: Sequence[EventSubmission]) -> tuple[list[object], int, set[int], bool]:
    verdicts: list[object] = []
    total = 0
    folded: set[int] = set()
    plain = True
    for event in batch:
        found = METERS[(event.scope, event.event_name)]
        verdict = assess(event, found[0] if found else None, event.created)
        if not isinstance(verdict, Counted):
            verdicts.append(verdict)
            plain = False
            continue
        assert found is not None
        meter, meter_seq = found
        leaf = rollups.sizes(meter)[0] if rollups.tracks_latest(meter) else None
        if rollups.is_windowed(meter):
            folded.add(meter_seq)
        if verdict.value is not None:
            total += verdict.value
        row: NewEvent = (
            meter_seq,
            verdict.customer,
            event.timestamp,
            verdict.value,
            event.identifier,
            event.created,
            None if leaf is None else event.timestamp - event.timestamp % leaf,
            event.scope.account_id,
            event.scope.livemode,
        )
        verdicts.append(row)
    return verdicts, total, folded, plain and not folded


@settings(max_examples=400, deadline=None)
@given(st.lists(events(), min_size=1, max_size=30))
def test_assess_batch_agrees_with_assess(batch: list[EventSubmission]) -> None:
    lookup = {key: METERS[key] for key in {(e.scope, e.event_name) for e in batch}}
    assessed = assess_batch(batch, lookup)
    verdicts, total, folded, plain = reference(batch)
    assert assessed.verdicts == verdicts
    assert assessed.total == total
    assert assessed.hashes == [
        identifier_hash(e.scope.account_id, e.scope.livemode, e.identifier) for e in batch
    ]
    assert folded <= assessed.folded_meters
    assert assessed.plain == plain


def test_a_windowed_meter_with_no_counted_event_leaves_the_batch_on_the_general_path() -> None:
    """Its meter is in the lookup, so the batch is not plain; that costs speed, not counts."""
    event = EventSubmission(
        scope=SCOPES[0],
        event_name="hourly",
        identifier="x",
        payload={},
        timestamp=NOW,
        created=NOW,
        origin="stream",
    )
    assessed = assess_batch([event], {(SCOPES[0], "hourly"): METERS[(SCOPES[0], "hourly")]})
    assert not assessed.plain

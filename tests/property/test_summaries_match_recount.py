"""Summaries equal a brute-force recount of the rules in API-NOTES Part A.

Random streams of ingests, cancellations and meter (de/re)activations run against the real
store of each backend (a temp SQLite file, a fresh PostgreSQL schema) through :func:`ingest`
and :func:`cancel`. A model written here from the rules alone (not from the rollup code)
decides which events count; every summary, computed
the way ``GET /v1/billing/meters/:id/event_summaries`` computes a page, must equal the model's
recount exactly (int / Decimal, never float). Rebuilding rollups from raw events must change
nothing, and error reports must add up to the accepted events that cannot count.

``HYPOTHESIS_PROFILE=long`` runs many more examples.
"""

from __future__ import annotations

import asyncio
import os
import re
import tempfile
from collections import Counter, defaultdict
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import UTC, datetime
from decimal import Decimal, Inexact, localcontext
from functools import partial
from pathlib import Path

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import event as note
from hypothesis import strategies as st

from meterd import keys
from meterd.ingest.writes import (
    Accepted,
    CancelRefused,
    Duplicate,
    Outcome,
    Rejected,
    RollupsChecked,
    cancel,
    check_rollups,
    ingest,
    rebuild_rollups,
)
from meterd.metering import meters, summaries
from meterd.metering.events import EventSubmission, Origin
from meterd.metering.meters import EventTimeWindow, Formula, Meter, new_meter
from meterd.metering.summaries import GroupingWindow, Window
from meterd.scope import Scope
from meterd.storage import Store
from meterd.storage.base import ReportFilter
from meterd.storage.open import open_store
from tests.conftest import fresh_database

settings.register_profile(
    "meterd-fast",
    max_examples=70,
    deadline=None,
    suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large],
)
settings.register_profile(
    "long",
    max_examples=2000,
    deadline=None,
    suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large],
)
PROFILE = settings.get_profile(
    "long" if os.environ.get("HYPOTHESIS_PROFILE") == "long" else "meterd-fast"
)

MINUTE, HOUR, DAY = 60, 3600, 86400
PAST = 35 * DAY  # events may be at most 35 days old ...
FUTURE = 5 * MINUTE  # ... and at most 5 minutes ahead of the moment they are received
IDENTIFIER_TTL = DAY  # an identifier is taken for 24 h (live while its age is < 24 h)
BASE = 1_767_225_600  # 2026-01-01T00:00:00Z

NO_METER_FOUND = "v1.billing.meter.no_meter_found"
ERROR_REPORT_TRIGGERED = "v1.billing.meter.error_report_triggered"
INVALID_VALUE = "meter_event_invalid_value"
TOO_MANY_DIGITS = "meter_event_value_too_many_digits"

SCOPE_COUNT = 3  # account A test mode, account A live mode, account B test mode
EVENT_NAMES = ("api_calls", "tokens", "seats", "storage")
UNMETERED = "never_metered"
CUSTOMERS = ("cus_a", "cus_b", "cus_c")
IDENTIFIER_POOL = ("id_0", "id_1", "id_2", "id_3")
MAX_OPS = 25


# the stream ---------------------------------------------------------------------------------


@dataclass(frozen=True)
class MeterSpec:
    scope: int
    event_name: str
    formula: Formula
    window: EventTimeWindow | None
    customer_key: str
    value_key: str
    initial: str  # "active", "inactive" or "absent" (created later by a MeterOp, or never)


@dataclass(frozen=True)
class EventSpec:
    scope: int
    event_name: str
    identifier: str
    payload: tuple[tuple[str, str], ...]
    timestamp: int
    origin: Origin


@dataclass(frozen=True)
class IngestOp:
    advance: int
    events: tuple[EventSpec, ...]


@dataclass(frozen=True)
class CancelOp:
    advance: int
    scope: int
    event_name: str
    identifier: str


@dataclass(frozen=True)
class MeterOp:
    advance: int
    meter: int
    action: str  # "create", "deactivate" or "reactivate"


Op = IngestOp | CancelOp | MeterOp


@dataclass(frozen=True)
class Stream:
    meters: tuple[MeterSpec, ...]
    start: int
    ops: tuple[Op, ...]


meter_specs = st.lists(
    st.builds(
        MeterSpec,
        scope=st.integers(0, SCOPE_COUNT - 1),
        event_name=st.sampled_from(EVENT_NAMES),
        formula=st.sampled_from(("count", "sum", "last")),
        window=st.sampled_from((None, "hour", "day")),
        customer_key=st.sampled_from(("stripe_customer_id", "stripe_customer_id", "account")),
        value_key=st.sampled_from(("value", "value", "units")),
        initial=st.sampled_from(("active",) * 6 + ("inactive", "absent")),
    ),
    min_size=1,
    max_size=5,
    unique_by=lambda m: (m.scope, m.event_name),
)


def _decimal_text(digits: int, places: int) -> str:
    if places == 0:
        return str(digits)
    whole, fraction = divmod(digits, 10**places)
    return f"{whole}.{fraction:0{places}d}"


@st.composite
def valid_values(draw: st.DrawFn) -> str:
    """At most 12 fractional and 20 significant digits, written plainly ("0.5", "25")."""
    places = draw(st.integers(0, 12))
    digits = draw(st.one_of(st.integers(0, 999), st.integers(0, 10**20 - 1)))
    return _decimal_text(digits, places)


@st.composite
def too_many_digits(draw: st.DrawFn) -> str:
    """13+ fractional digits, or 21+ significant ones; the last digit is never a zero."""
    last = draw(st.integers(1, 9))
    if draw(st.booleans()):
        places = draw(st.integers(13, 16))
        fraction = draw(st.integers(0, 10 ** (places - 1) - 1)) * 10 + last
        return f"{draw(st.integers(0, 99))}.{fraction:0{places}d}"
    total = draw(st.integers(21, 24))
    digits = draw(st.integers(10 ** (total - 2), 10 ** (total - 1) - 1)) * 10 + last
    return _decimal_text(digits, draw(st.integers(0, 12)))


invalid_values = st.sampled_from(
    ("", "abc", "-1", "-0.5", "1.2.3", "1,5", "NaN", "Infinity", "0x10", "١٢", "--1", "1-", ".")
)
VALUE_KINDS = ("valid",) * 12 + ("invalid", "too_many", "missing")


@st.composite
def payloads(draw: st.DrawFn, spec: MeterSpec | None) -> tuple[tuple[str, str], ...]:
    customer_key = spec.customer_key if spec else "stripe_customer_id"
    value_key = spec.value_key if spec else "value"
    other_key = "account" if customer_key == "stripe_customer_id" else "stripe_customer_id"
    items: dict[str, str] = {}
    customer = draw(st.sampled_from(CUSTOMERS * 4 + ("", None)))
    if customer is not None:
        items[draw(st.sampled_from((customer_key,) * 9 + (other_key,)))] = customer
    kind = draw(st.sampled_from(VALUE_KINDS))
    if kind != "missing":
        strategy = {
            "valid": valid_values(),
            "invalid": invalid_values,
            "too_many": too_many_digits(),
        }
        key = draw(st.sampled_from((value_key,) * 9 + ("other_value",)))
        items[key] = draw(strategy[kind])
    return tuple(sorted(items.items()))


OFFSETS = st.one_of(
    st.sampled_from(
        (0, 0, -1, 1, -59, -60, -HOUR, -DAY, FUTURE - 1, FUTURE, FUTURE + 1, -PAST, -PAST - 1)
    ),
    st.integers(-2 * HOUR, FUTURE),
    st.integers(-3 * DAY, 0),
)
ADVANCES = st.one_of(
    st.sampled_from((0, 0, 0, 1, 59, 60, HOUR - 1, HOUR, DAY - 1, DAY, DAY + 1, 36 * DAY)),
    st.integers(0, 2 * HOUR),
    st.integers(0, 10 * MINUTE),
)
EDGE = (-1, 0, 1)
ORIGINS: st.SearchStrategy[Origin] = st.sampled_from(("v1", "v1", "stream", "v2"))


@st.composite
def streams(draw: st.DrawFn) -> Stream:
    specs = tuple(draw(meter_specs))
    start = BASE + draw(st.integers(0, 2 * DAY))
    clock = start
    moments = [start]
    ops: list[Op] = []
    timestamps: list[int] = []
    last_name: dict[tuple[int, str], str] = {}  # (scope, identifier) -> event name last sent
    fresh = 0
    for _ in range(draw(st.integers(1, MAX_OPS))):
        kind = draw(st.sampled_from(("ingest",) * 8 + ("cancel", "cancel", "meter")))
        if draw(st.integers(0, 5)) == 0:  # to where an earlier op's identifiers expire
            expiry = draw(st.sampled_from(moments)) + IDENTIFIER_TTL + draw(st.sampled_from(EDGE))
            advance = max(0, expiry - clock)
        else:
            advance = draw(ADVANCES)
        clock += advance
        moments.append(clock)
        if kind == "ingest":
            events = []
            for _ in range(draw(st.integers(1, 6))):
                target = draw(st.sampled_from((*specs, *specs, *specs, None)))
                if target is None:  # any scope and name: maybe no meter, maybe another's
                    scope = draw(st.integers(0, SCOPE_COUNT - 1))
                    name = draw(st.sampled_from((*EVENT_NAMES, UNMETERED)))
                else:
                    scope, name = target.scope, target.event_name
                spec = next((m for m in specs if (m.scope, m.event_name) == (scope, name)), None)
                identifier = draw(st.sampled_from((*IDENTIFIER_POOL, *[None] * 8)))
                if identifier is None:
                    identifier, fresh = f"u{fresh}", fresh + 1
                if timestamps and draw(st.integers(0, 4)) == 0:
                    timestamp = draw(st.sampled_from(timestamps))  # equal timestamps
                else:
                    timestamp = clock + draw(OFFSETS)
                timestamps.append(timestamp)
                last_name[(scope, identifier)] = name
                events.append(
                    EventSpec(
                        scope, name, identifier, draw(payloads(spec)), timestamp, draw(ORIGINS)
                    )
                )
            ops.append(IngestOp(advance, tuple(events)))
        elif kind == "cancel":
            sent = list(last_name)
            target = draw(st.sampled_from((*sent, *sent, *sent, None))) if sent else None
            if target is None:  # anything: maybe unknown, maybe sent in another scope
                scope = draw(st.integers(0, SCOPE_COUNT - 1))
                identifier = draw(st.sampled_from((*IDENTIFIER_POOL, "never_sent")))
            else:
                scope, identifier = target
            name = last_name.get((scope, identifier))
            if name is None or draw(st.integers(0, 4)) == 0:
                name = draw(st.sampled_from((*EVENT_NAMES, UNMETERED)))
            ops.append(CancelOp(advance, scope, name, identifier))
        else:
            index = draw(st.integers(0, len(specs) - 1))
            action = draw(
                st.sampled_from(("create", "create", "reactivate", "reactivate", "deactivate"))
            )
            ops.append(MeterOp(advance, index, action))
    return Stream(specs, start, tuple(ops))


# the model: Part A's rules, applied one event at a time --------------------------------------


def judge_value(text: str) -> Decimal | str:
    """The exact value, or the error code; only for the unambiguous texts generated above."""
    if not re.fullmatch(r"[0-9]+(\.[0-9]+)?", text):
        return INVALID_VALUE
    whole, _, fraction = text.partition(".")
    fraction = fraction.rstrip("0")
    if len(fraction) > 12 or len((whole + fraction).lstrip("0")) > 20:
        return TOO_MANY_DIGITS
    return Decimal(text)


@dataclass
class CountedEvent:
    arrival: int
    meter: int
    customer: str
    timestamp: int
    value: Decimal | None
    cancelled: bool = False


@dataclass
class Reservation:
    received: int
    event_name: str
    event: CountedEvent | None  # None: accepted but never counted


ReportKey = tuple[int, str, str, int]  # (scope, type, event name, validation window)


class Model:
    def __init__(self, specs: Sequence[MeterSpec]) -> None:
        self.specs = specs
        self.status = ["absent"] * len(specs)
        self.counted: list[CountedEvent] = []
        self.reservations: dict[tuple[int, str], Reservation] = {}
        self.reports: Counter[tuple[ReportKey, str]] = Counter()
        self.report_meter: dict[ReportKey, int | None] = {}
        self.report_identifiers: defaultdict[tuple[ReportKey, str], set[str]] = defaultdict(set)

    def meter_for(self, scope: int, event_name: str) -> int | None:
        for index, spec in enumerate(self.specs):
            if (spec.scope, spec.event_name) == (scope, event_name):
                return None if self.status[index] == "absent" else index
        return None

    def problems(self, event: EventSpec, now: int) -> set[str]:
        """Every rule the event breaks (the store may report any one of them)."""
        index = self.meter_for(event.scope, event.event_name)
        if index is None:
            return {"no_meter"}
        spec, payload, found = self.specs[index], dict(event.payload), set()
        if self.status[index] == "inactive":
            found.add("archived_meter")
        if event.timestamp < now - PAST:
            found.add("timestamp_too_far_in_past")
        if event.timestamp > now + FUTURE:
            found.add("timestamp_in_future")
        if not payload.get(spec.customer_key):
            found.add("meter_event_no_customer_defined")
        if spec.formula != "count":
            raw = payload.get(spec.value_key)
            verdict = INVALID_VALUE if raw is None else judge_value(raw)
            if isinstance(verdict, str):
                found.add(verdict)
        return found

    def live(self, scope: int, identifier: str, now: int) -> Reservation | None:
        found = self.reservations.get((scope, identifier))
        return found if found is not None and now - found.received < IDENTIFIER_TTL else None

    def apply_event(self, event: EventSpec, now: int, outcome: Outcome) -> None:
        problems = self.problems(event, now)
        duplicate = self.live(event.scope, event.identifier, now) is not None
        context = f"{event} received at {now}: {outcome}, expected problems {problems}"
        if event.origin == "v2" and problems:  # answered 400, nothing stored or reserved
            if isinstance(outcome, Rejected):
                assert outcome.problem.code in problems, context
            else:
                assert duplicate and isinstance(outcome, Duplicate), context
            return
        if duplicate:
            assert isinstance(outcome, Duplicate), context
            return
        assert isinstance(outcome, Accepted), context
        key = (event.scope, event.identifier)
        if problems:
            assert outcome.problem is not None and outcome.problem.code in problems, context
            self.reservations[key] = Reservation(now, event.event_name, None)
            index = self.meter_for(event.scope, event.event_name)
            kind = NO_METER_FOUND if index is None else ERROR_REPORT_TRIGGERED
            report = (event.scope, kind, event.event_name, now - now % MINUTE)
            self.report_meter[report] = index
            self.reports[(report, outcome.problem.code)] += 1
            self.report_identifiers[(report, outcome.problem.code)].add(event.identifier)
            return
        assert outcome.problem is None, context
        index = self.meter_for(event.scope, event.event_name)
        assert index is not None
        spec, payload = self.specs[index], dict(event.payload)
        value = None if spec.formula == "count" else Decimal(payload[spec.value_key])
        counted = CountedEvent(
            len(self.counted), index, payload[spec.customer_key], event.timestamp, value
        )
        self.counted.append(counted)
        self.reservations[key] = Reservation(now, event.event_name, counted)

    def apply_cancel(self, op: CancelOp, now: int, refused: bool) -> None:
        context = f"{op} at {now}, refused={refused}"
        found = self.live(op.scope, op.identifier, now)
        # Unknown, received 24 h ago or more, or sent with another event name: refused.
        if found is None or found.event_name != op.event_name:
            assert refused, context
        else:  # complete; an event that never counted has nothing to take back
            assert not refused, context
            if found.event is not None:
                found.event.cancelled = True

    def recount(self, index: int, customer: str, window: Window) -> int | Decimal:
        spec = self.specs[index]
        events = [
            e
            for e in self.counted
            if e.meter == index and e.customer == customer and not e.cancelled
        ]
        if spec.window is not None:
            newest: dict[object, CountedEvent] = {}
            for event in events:
                moment = datetime.fromtimestamp(event.timestamp, UTC)
                period = (
                    moment.date() if spec.window == "day" else moment.replace(minute=0, second=0)
                )
                held = newest.get(period)
                if held is None or (event.timestamp, event.arrival) > (
                    held.timestamp,
                    held.arrival,
                ):
                    newest[period] = event
            events = list(newest.values())
        inside = [e for e in events if window[0] <= e.timestamp < window[1]]
        if spec.formula == "count":
            return len(inside)
        if not inside:
            return 0
        if spec.formula == "last":
            value = max(inside, key=lambda e: (e.timestamp, e.arrival)).value
            assert value is not None
            return value
        with localcontext() as exact:
            exact.prec = 200
            exact.traps[Inexact] = True
            return sum((e.value or Decimal(0) for e in inside), Decimal(0))


# driving the store --------------------------------------------------------------------------


async def summarize(
    store: Store,
    meter: Meter,
    customer: str,
    start: int,
    end: int,
    grouping: GroupingWindow | None,
    limit: int,
) -> list[tuple[Window, int | Decimal]]:
    """Every window of the range, page by page, the way the summaries endpoint computes one."""
    summaries.check_range(start, end, grouping)
    total = summaries.window_count(start, end, grouping)
    result: list[tuple[Window, int | Decimal]] = []
    for first in range(0, total, limit):
        page = [
            summaries.window_at(start, end, grouping, i)
            for i in range(first, min(first + limit, total))
        ]
        spans = summaries.spans_for(meter, page, grouped=grouping is not None)
        found = await store.read_rollups(meter, customer, spans)
        rows = summaries.per_window(meter, page, found)
        result.extend((w, summaries.aggregated_value(meter, rows.get(w))) for w in page)
    return result


RangeSpec = tuple[GroupingWindow | None, int, int, int]  # grouping, start, end, page limit


def draw_ranges(data: st.DataObject, anchors: list[int]) -> list[RangeSpec]:
    ranges: list[RangeSpec] = []
    shapes: tuple[tuple[GroupingWindow | None, int, int, int], ...] = (
        (None, MINUTE, 180, 3 * DAY // MINUTE),
        ("hour", HOUR, 50, 75),
        ("day", DAY, 3, 9),
    )
    for grouping, unit, back, length in shapes:
        for _ in range(2):
            anchor = data.draw(st.sampled_from(anchors), label="anchor")
            start = anchor - anchor % unit - data.draw(st.integers(0, back), label="back") * unit
            end = start + data.draw(st.integers(1, length), label="windows") * unit
            ranges.append((grouping, start, end, data.draw(st.integers(1, 12), label="limit")))
    low, high = min(anchors), max(anchors)
    ranges.append((None, low - low % MINUTE, high - high % MINUTE + MINUTE, 1))
    ranges.append(("day", low - low % DAY, high - high % DAY + DAY, 25))
    return ranges


async def check_summaries(
    store: Store,
    model: Model,
    stored: dict[int, Meter],
    scopes: list[Scope],
    ranges: list[RangeSpec],
    when: str,
) -> None:
    for index, created in stored.items():
        meter = await store.get_meter(scopes[model.specs[index].scope], created.id)
        assert meter is not None
        for customer in (*CUSTOMERS, "cus_nobody"):
            for grouping, start, end, limit in ranges:
                got = await summarize(store, meter, customer, start, end, grouping, limit)
                step = end - start if grouping is None else {"hour": HOUR, "day": DAY}[grouping]
                windows = [(t - step, t) for t in range(end, start, -step)]
                assert [w for w, _ in got] == windows, "windows, newest first"
                for window, value in got:
                    expected = model.recount(index, customer, window)
                    assert type(value) in (int, Decimal), value
                    if model.specs[index].formula == "count":
                        assert type(value) is int, value
                    if expected:
                        note(f"non-zero {model.specs[index].formula} {model.specs[index].window}")
                    assert value == expected, (
                        f"{when}: {model.specs[index]} customer {customer} window {window} "
                        f"(range {start}..{end} by {grouping}): summary {value!r}, "
                        f"recount {expected!r}"
                    )


async def check_error_reports(
    store: Store, model: Model, stored: dict[int, Meter], scopes: list[Scope]
) -> None:
    counts: Counter[tuple[ReportKey, str]] = Counter()
    for scope_index, scope in enumerate(scopes):
        after: str | None = None
        while True:
            page = await store.list_error_reports(scope, 100, after, ReportFilter())
            for report in page.items:
                key = (scope_index, report.type, report.event_name, report.window_start)
                assert key in model.report_meter, f"unexpected report {report}"
                meter_index = model.report_meter[key]
                expected_id = None if meter_index is None else stored[meter_index].id
                assert report.meter_id == expected_id
                for entry in report.error_types:
                    assert (key, entry.code) not in counts, "one report per key and code"
                    counts[(key, entry.code)] = entry.error_count
                    assert 0 < len(entry.samples) <= entry.error_count
                    sampled = {s.identifier for s in entry.samples}
                    assert sampled <= model.report_identifiers[(key, entry.code)]
            if not page.has_more:
                break
            after = page.items[-1].id
    assert counts == model.reports


async def run_stream(stream: Stream, data: st.DataObject, url: str) -> None:
    store = await open_store(url)
    try:
        scopes = []
        for _ in range(2):
            account = keys.new_account(BASE)
            key, _secret = keys.new_api_key(account.id, livemode=False, now=BASE)
            await store.create_account(account, key)
            scopes.append(Scope(account.id, livemode=False))
        scopes.insert(1, Scope(scopes[0].account_id, livemode=True))
        assert len(scopes) == SCOPE_COUNT

        model = Model(stream.meters)
        stored: dict[int, Meter] = {}

        async def create(index: int, now: int) -> None:
            spec = stream.meters[index]
            meter = new_meter(
                scopes[spec.scope],
                display_name=f"{spec.event_name} meter",
                event_name=spec.event_name,
                formula=spec.formula,
                customer_key=spec.customer_key,
                value_key=spec.value_key,
                event_time_window=spec.window,
                now=now,
            )
            await store.insert_meter(meter)
            stored[index] = meter
            model.status[index] = "active"

        async def set_status(index: int, action: str, now: int) -> None:
            spec = stream.meters[index]
            meter = await store.get_meter(scopes[spec.scope], stored[index].id)
            assert meter is not None
            change = meters.deactivated if action == "deactivate" else meters.reactivated
            await store.save_meter(change(meter, now))
            model.status[index] = "inactive" if action == "deactivate" else "active"

        clock = stream.start
        for index, spec in enumerate(stream.meters):
            if spec.initial != "absent":
                await create(index, clock)
            if spec.initial == "inactive":
                await set_status(index, "deactivate", clock)

        for op in stream.ops:
            clock += op.advance
            if isinstance(op, IngestOp):
                batch = [
                    EventSubmission(
                        scope=scopes[e.scope],
                        event_name=e.event_name,
                        identifier=e.identifier,
                        payload=dict(e.payload),
                        timestamp=e.timestamp,
                        created=clock,
                        origin=e.origin,
                    )
                    for e in op.events
                ]
                outcomes = await store.transact(partial(ingest, batch=batch))
                assert len(outcomes) == len(batch)
                for event, outcome in zip(op.events, outcomes, strict=True):
                    model.apply_event(event, clock, outcome)
            elif isinstance(op, CancelOp):
                work = partial(
                    cancel,
                    scope=scopes[op.scope],
                    event_name=op.event_name,
                    identifier=op.identifier,
                    now=clock,
                )
                try:
                    await store.transact(work)
                    refused = False
                except CancelRefused:
                    refused = True
                model.apply_cancel(op, clock, refused)
            elif model.status[op.meter] == "absent":
                if op.action == "create":
                    await create(op.meter, clock)
            elif op.action != "create":
                await set_status(op.meter, op.action, clock)

        await check_error_reports(store, model, stored, scopes)
        note(f"counted events: {min(len(model.counted), 20) // 5 * 5}+")
        note(f"cancelled: {min(sum(e.cancelled for e in model.counted), 3)}")

        if not stored:
            return
        anchors = [stream.start, clock]
        anchors += [e.timestamp for op in stream.ops if isinstance(op, IngestOp) for e in op.events]
        ranges = draw_ranges(data, anchors)
        await check_summaries(store, model, stored, scopes, ranges, "incremental rollups")

        with pytest.raises(RollupsChecked) as checked:
            await store.transact(check_rollups)
        assert checked.value.differing == [], "check_rollups found rows that differ"
        assert checked.value.events == len(model.counted)

        assert await store.transact(rebuild_rollups) == len(model.counted)
        await check_summaries(store, model, stored, scopes, ranges, "after rebuild_rollups")
    finally:
        await store.close()


@settings(PROFILE)
@given(stream=streams(), data=st.data())
def test_summaries_match_a_brute_force_recount(
    backend: str, stream: Stream, data: st.DataObject
) -> None:
    with (
        tempfile.TemporaryDirectory() as directory,
        fresh_database(backend, Path(directory)) as url,
    ):
        asyncio.run(run_stream(stream, data, url))


@settings(max_examples=200, deadline=None)
@given(
    case=st.one_of(
        valid_values().map(lambda t: ("valid", t)),
        too_many_digits().map(lambda t: (TOO_MANY_DIGITS, t)),
        invalid_values.map(lambda t: (INVALID_VALUE, t)),
    )
)
def test_the_models_value_judge_agrees_with_its_generators(case: tuple[str, str]) -> None:
    """Guard for the model itself: each generated text is judged as it was generated."""
    kind, text = case
    verdict = judge_value(text)
    if kind == "valid":
        assert isinstance(verdict, Decimal) and verdict >= 0
    else:
        assert verdict == kind

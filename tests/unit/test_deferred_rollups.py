"""SQLite defers a batch's rollups (``deferred_rollups``): nothing that reads or rewrites
rollups may see them wait. Exactness over many random histories is in
tests/property; here each way a deferred range is folded, on a real SQLite file."""

from __future__ import annotations

import asyncio
import sqlite3
from collections.abc import Coroutine
from functools import partial
from pathlib import Path
from typing import Any, TypeVar

import pytest

from meterd import keys
from meterd.ingest.writes import RollupsChecked, cancel, check_rollups, ingest
from meterd.metering.events import EventSubmission
from meterd.metering.meters import Meter, new_meter
from meterd.metering.rollups import DAY, HOUR, MINUTE, SQL_SUM_LIMIT
from meterd.scope import Scope
from meterd.storage import sqlite_events
from meterd.storage.sqlite import SQLiteStore
from meterd.storage.sqlite_events import _fold_chunks

T = TypeVar("T")

NOW = 1_700_000_000 - 1_700_000_000 % DAY + 5 * HOUR


def run(coro: Coroutine[Any, Any, T]) -> T:
    return asyncio.run(coro)


@pytest.fixture
def scope(sqlite_store: SQLiteStore) -> Scope:
    account = keys.new_account(NOW)
    key, _ = keys.new_api_key(account.id, livemode=False, now=NOW)
    run(sqlite_store.create_account(account, key))
    return Scope(account.id, livemode=False)


def add_meter(sqlite_store: SQLiteStore, scope: Scope, name: str, **fields: Any) -> Meter:
    meter = new_meter(
        scope,
        display_name=name,
        event_name=name,
        formula=fields.get("formula", "sum"),
        customer_key=None,
        value_key=None,
        event_time_window=fields.get("event_time_window"),
        now=NOW,
    )
    run(sqlite_store.insert_meter(meter))
    return meter


def send(sqlite_store: SQLiteStore, scope: Scope, events: list[tuple[str, str, int, int]]) -> None:
    """(event name, identifier, seconds after NOW, value) -> one batch, all counted."""
    batch = [
        EventSubmission(
            scope=scope,
            event_name=name,
            identifier=identifier,
            payload={"stripe_customer_id": "cus_1", "value": str(value)},
            timestamp=NOW + offset,
            created=NOW + 2 * HOUR,
            origin="stream",
        )
        for name, identifier, offset, value in events
    ]
    run(sqlite_store.transact(partial(ingest, batch=batch)))


def waiting(sqlite_db: Path) -> int:
    with sqlite3.connect(sqlite_db) as conn:
        return int(conn.execute("SELECT count(*) FROM deferred_rollups").fetchone()[0])


def rollup_rows(sqlite_db: Path) -> int:
    with sqlite3.connect(sqlite_db) as conn:
        return int(conn.execute("SELECT count(*) FROM meter_rollups").fetchone()[0])


def totals(sqlite_store: SQLiteStore, meter: Meter) -> dict[int, tuple[int, int]]:
    """(count, total in whole units) at each size, over the day around NOW."""
    day = NOW - NOW % DAY
    spans = [(MINUTE, day, day + DAY), (HOUR, day, day + DAY), (DAY, day, day + DAY)]
    found: dict[int, tuple[int, int]] = {}
    for size, _, row in run(sqlite_store.read_rollups(meter, "cus_1", spans)):
        count, total = found.get(size, (0, 0))
        found[size] = (count + row.count, total + row.total // 10**12)
    return found


def assert_rollups_match_raw_events(sqlite_store: SQLiteStore) -> None:
    with pytest.raises(RollupsChecked) as checked:
        run(sqlite_store.transact(check_rollups))
    assert checked.value.differing == []


def test_a_read_folds_what_batches_deferred(
    sqlite_store: SQLiteStore, scope: Scope, sqlite_db: Path
) -> None:
    meter = add_meter(sqlite_store, scope, "calls")
    send(sqlite_store, scope, [("calls", "a", 0, 2), ("calls", "b", 61, 3)])
    send(sqlite_store, scope, [("calls", "c", HOUR, 5)])
    assert (waiting(sqlite_db), rollup_rows(sqlite_db)) == (2, 0), "the rollups wait"
    assert totals(sqlite_store, meter) == {MINUTE: (3, 10), HOUR: (3, 10), DAY: (3, 10)}
    assert (waiting(sqlite_db), rollup_rows(sqlite_db)) == (0, 6), "3 minutes, 2 hours, 1 day"


def test_deferred_ranges_survive_a_restart(sqlite_db: Path) -> None:
    sqlite_store = run(SQLiteStore.open(str(sqlite_db)))
    account = keys.new_account(NOW)
    key, _ = keys.new_api_key(account.id, livemode=False, now=NOW)
    run(sqlite_store.create_account(account, key))
    scope = Scope(account.id, livemode=False)
    meter = add_meter(sqlite_store, scope, "calls")
    send(sqlite_store, scope, [("calls", "a", 0, 7)])
    run(sqlite_store.close())
    assert waiting(sqlite_db) == 1
    sqlite_store = run(SQLiteStore.open(str(sqlite_db)))
    try:
        assert totals(sqlite_store, meter) == {MINUTE: (1, 7), HOUR: (1, 7), DAY: (1, 7)}
    finally:
        run(sqlite_store.close())


def test_another_process_reads_what_this_one_deferred(
    sqlite_store: SQLiteStore, scope: Scope, sqlite_db: Path
) -> None:
    """``meterd usage`` opens the file beside ``meterd serve``: a range deferred after it
    opened is folded before it reads, though its own process deferred nothing."""
    meter = add_meter(sqlite_store, scope, "calls")
    other = run(SQLiteStore.open(str(sqlite_db)))
    try:
        send(sqlite_store, scope, [("calls", "a", 0, 4)])
        assert waiting(sqlite_db) == 1
        assert totals(other, meter) == {MINUTE: (1, 4), HOUR: (1, 4), DAY: (1, 4)}
        assert waiting(sqlite_db) == 0
    finally:
        run(other.close())


@pytest.mark.parametrize("formula", ["sum", "last"])
def test_cancelling_a_deferred_event_folds_first(
    sqlite_store: SQLiteStore, scope: Scope, sqlite_db: Path, formula: str
) -> None:
    """A sum subtracts the event from each row; a meter that keeps the latest event recounts
    its rows from the rows under them: either would be wrong on a row still waiting."""
    meter = add_meter(sqlite_store, scope, "calls", formula=formula)
    add_meter(sqlite_store, scope, "windowed", event_time_window="hour")
    send(
        sqlite_store, scope, [("calls", "a", 0, 2), ("windowed", "w", 0, 1), ("calls", "b", 30, 3)]
    )
    send(sqlite_store, scope, [("calls", "c", 90, 4), ("windowed", "x", 5, 1)])
    assert waiting(sqlite_db) == 2, "ranges apart: the windowed meter's events lie between them"
    run(
        sqlite_store.transact(
            partial(cancel, scope=scope, event_name="calls", identifier="c", now=NOW)
        )
    )
    assert waiting(sqlite_db) == 0
    expected = (2, 5) if formula == "sum" else (2, 3)
    assert totals(sqlite_store, meter)[HOUR] == totals(sqlite_store, meter)[DAY]
    assert totals(sqlite_store, meter)[DAY][0] == expected[0]
    if formula == "sum":
        assert totals(sqlite_store, meter)[DAY] == expected
    assert_rollups_match_raw_events(sqlite_store)


def test_a_batch_folds_once_the_oldest_range_waited_long_enough(
    sqlite_store: SQLiteStore, scope: Scope, sqlite_db: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    add_meter(sqlite_store, scope, "calls")
    send(sqlite_store, scope, [("calls", "a", 0, 1)])
    assert waiting(sqlite_db) == 1
    monkeypatch.setattr(sqlite_events, "FOLD_SECONDS", 0.0)
    send(sqlite_store, scope, [("calls", "b", 0, 1)])
    assert (waiting(sqlite_db), rollup_rows(sqlite_db)) == (0, 3)
    assert_rollups_match_raw_events(sqlite_store)


def test_check_rollups_sees_deferred_rows_folded(sqlite_store: SQLiteStore, scope: Scope) -> None:
    add_meter(sqlite_store, scope, "calls")
    for n in range(5):
        send(sqlite_store, scope, [("calls", f"e{n}", n * 700, n)])
    assert_rollups_match_raw_events(sqlite_store)


def test_ranges_fold_together_only_when_adjacent_and_summable() -> None:
    half = SQL_SUM_LIMIT // 2
    assert _fold_chunks([]) == []
    assert _fold_chunks([(1, 5, 0), (5, 9, 0), (12, 20, 0)]) == [(1, 9), (12, 20)]
    assert _fold_chunks([(1, 5, half), (5, 9, half - 1), (9, 10, 1)]) == [(1, 9), (9, 10)]
    big = sqlite_events._FOLD_CHUNK_EVENTS
    assert _fold_chunks([(1, big, 0), (big, big + 2, 0)]) == [(1, big), (big, big + 2)]

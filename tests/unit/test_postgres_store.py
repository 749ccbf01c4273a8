"""What only the PostgreSQL store does: migrations under a lock when several processes open one
database at once, monthly partitions of raw events (added ahead, dropped whole), and the races
two processes sharing a database run (Idempotency-Key claims, meter event names).

Each "process" is a PostgresStore of its own (its own pool and threads) on one fresh schema.
"""

from __future__ import annotations

import asyncio
import datetime as dt
import re
import time
from collections.abc import Coroutine, Iterator
from functools import partial
from pathlib import Path
from typing import Any, TypeVar

import pytest

from meterd import keys
from meterd.ingest.writes import Accepted, ingest
from meterd.metering.events import EventSubmission
from meterd.metering.meters import Meter, new_meter
from meterd.scope import Scope
from meterd.storage import migrations
from meterd.storage.base import AlreadyExists, EventTransaction, PageRequest, RawEvent
from meterd.storage.open import open_store
from meterd.storage.postgres import PostgresStore
from tests.conftest import POSTGRES_SKIP_REASON, POSTGRES_URL, database_rows, fresh_database

pytestmark = pytest.mark.skipif(not POSTGRES_URL, reason=POSTGRES_SKIP_REASON)

T = TypeVar("T")

NOW = 1_700_000_000
ROUNDS = 40


def run(coro: Coroutine[Any, Any, T]) -> T:
    return asyncio.run(coro)


@pytest.fixture
def url(tmp_path: Path) -> Iterator[str]:
    with fresh_database("postgresql", tmp_path) as opened:
        yield opened


async def open_postgres(url: str) -> PostgresStore:
    store = await open_store(url)
    assert isinstance(store, PostgresStore)
    return store


@pytest.fixture
def store(url: str) -> Iterator[PostgresStore]:
    opened = run(open_postgres(url))
    yield opened
    run(opened.close())


@pytest.fixture
def two_stores(url: str) -> Iterator[tuple[PostgresStore, PostgresStore]]:
    """Two stores on one database, as two meterd processes would have."""
    first = run(open_postgres(url))
    second = run(open_postgres(url))
    yield first, second
    run(first.close())
    run(second.close())


def new_scope(store: PostgresStore, livemode: bool = False) -> Scope:
    account = keys.new_account(NOW)
    key, _ = keys.new_api_key(account.id, livemode=livemode, now=NOW)
    run(store.create_account(account, key))
    return Scope(account.id, livemode)


def meter(scope: Scope, event_name: str, now: int = NOW) -> Meter:
    return new_meter(
        scope,
        display_name=f"Meter {event_name}",
        event_name=event_name,
        formula="sum",
        customer_key=None,
        value_key=None,
        event_time_window=None,
        now=now,
    )


# months and partitions --------------------------------------------------------------------


def month_start(timestamp: float, ahead: int = 0) -> int:
    """The start of the (UTC) month ``ahead`` months after the one ``timestamp`` is in."""
    moment = dt.datetime.fromtimestamp(timestamp, dt.UTC)
    months = moment.year * 12 + moment.month - 1 + ahead
    return int(dt.datetime(months // 12, months % 12 + 1, 1, tzinfo=dt.UTC).timestamp())


def partition_name(timestamp: int) -> str:
    return "meter_events_" + dt.datetime.fromtimestamp(timestamp, dt.UTC).strftime("%Y_%m")


def partitions(url: str) -> dict[str, tuple[int, int] | None]:
    """The partitions of meter_events in the test's schema, with their [low, high) range
    (None for the default partition)."""
    rows = database_rows(
        url,
        "SELECT c.relname, pg_get_expr(c.relpartbound, c.oid) FROM pg_inherits i "
        "JOIN pg_class c ON c.oid = i.inhrelid JOIN pg_class p ON p.oid = i.inhparent "
        "JOIN pg_namespace n ON n.oid = p.relnamespace "
        "WHERE p.relname = 'meter_events' AND n.nspname = current_schema()",
    )
    found: dict[str, tuple[int, int] | None] = {}
    for name, bound in rows:
        if bound == "DEFAULT":
            found[name] = None
            continue
        match = re.fullmatch(r"FOR VALUES FROM \('?(\d+)'?\) TO \('?(\d+)'?\)", bound)
        assert match, bound
        found[name] = (int(match[1]), int(match[2]))
    return found


def monthly(url: str, *months: int) -> dict[str, tuple[int, int] | None]:
    """What :func:`partitions` should be: the default one and one per month start given."""
    expected: dict[str, tuple[int, int] | None] = {"meter_events_default": None}
    for start in months:
        expected[partition_name(start)] = (start, month_start(start, 1))
    return expected


def test_month_helpers() -> None:
    assert month_start(NOW) == 1_698_796_800  # 2023-11-01
    assert month_start(NOW, 2) == 1_704_067_200  # 2024-01-01, over the year's end
    assert month_start(NOW, -11) == 1_669_852_800  # 2022-12-01
    assert partition_name(month_start(NOW, 2)) == "meter_events_2024_01"


# opening ----------------------------------------------------------------------------------


def test_concurrent_opens_apply_migrations_once(tmp_path: Path) -> None:
    applied = migrations.load("postgresql")
    latest = max(m.version for m in applied)
    for _ in range(3):
        with fresh_database("postgresql", tmp_path) as url:

            async def both() -> list[PostgresStore]:
                return list(await asyncio.gather(open_postgres(url), open_postgres(url)))

            stores = run(both())
            try:
                assert [s.schema_version() for s in stores] == [latest, latest]
                recorded = database_rows(
                    url,
                    "SELECT version, name, count(*) OVER (PARTITION BY version) "
                    "FROM schema_migrations ORDER BY version",
                )
                assert [tuple(row) for row in recorded] == [(m.version, m.name, 1) for m in applied]
                # both are usable: one sees what the other wrote
                scope = new_scope(stores[0])
                run(stores[1].insert_meter(meter(scope, "shared")))
                found = run(stores[0].find_meter_by_event_name(scope, "shared"))
                assert found is not None
            finally:
                for s in stores:
                    run(s.close())


def test_postgres_scheme_alias_opens_a_postgres_store(url: str) -> None:
    alias = "postgres://" + url.removeprefix("postgresql://")
    assert alias != url
    store = run(open_postgres(alias))
    try:
        assert store.schema_version() == max(m.version for m in migrations.load("postgresql"))
    finally:
        run(store.close())


def test_this_and_next_months_partitions_exist_after_open(store: PostgresStore, url: str) -> None:
    this_month = month_start(time.time())
    assert partitions(url) == monthly(url, this_month, month_start(this_month, 1))


def test_maintain_adds_the_months_of_its_time(
    two_stores: tuple[PostgresStore, PostgresStore], url: str
) -> None:
    this_month = month_start(time.time())
    later = month_start(this_month, 3) + 10 * 86400

    async def both() -> None:  # two processes' upkeep at once takes turns
        await asyncio.gather(*(s.maintain(later) for s in two_stores))

    run(both())
    run(two_stores[0].maintain(later))  # and again: nothing to add
    expected_months = [this_month, *(month_start(this_month, n) for n in (1, 3, 4))]
    assert partitions(url) == monthly(url, *expected_months)


# dropping old months ----------------------------------------------------------------------


def ingest_at(store: PostgresStore, scope: Scope, created: int, identifiers: list[str]) -> None:
    batch = [
        EventSubmission(
            scope=scope,
            event_name="tokens",
            identifier=identifier,
            payload={"stripe_customer_id": "cus_1", "value": "2"},
            timestamp=created - 60,
            created=created,
            origin="v1",
        )
        for identifier in identifiers
    ]
    outcomes = run(store.transact(partial(ingest, batch=batch)))
    assert outcomes == [Accepted()] * len(batch)


def raw_events(store: PostgresStore) -> list[RawEvent]:
    def read(tx: EventTransaction) -> list[RawEvent]:
        return tx.all_events(0, 10_000)

    return run(store.transact(read))


def test_drop_events_before_drops_whole_old_months(store: PostgresStore, url: str) -> None:
    this_month = month_start(time.time())
    months = [this_month, *(month_start(this_month, n) for n in (1, 3, 4))]
    run(store.maintain(months[2] + 86400))
    scope = new_scope(store)
    run(store.insert_meter(meter(scope, "tokens", now=this_month - 86400)))
    ingest_at(store, scope, this_month + 3600, ["m0-a", "m0-b"])
    ingest_at(store, scope, months[1] + 3600, ["m1-a"])
    ingest_at(store, scope, months[2] + 3600, ["m3-a", "m3-b"])
    assert len(raw_events(store)) == 5
    rollups = run(store.transact(lambda tx: tx.all_rollups()))
    assert rollups and sum(r.count for r in rollups.values()) == 5 * 3  # minute, hour, day

    later = months[2] + 86400  # as if it were month 3 now: months 0 and 1 are over
    assert run(store.drop_events_before(months[1], now=later)) == [partition_name(this_month)]
    assert partitions(url) == monthly(url, *months[1:])
    assert sorted(e.identifier for e in raw_events(store)) == ["m1-a", "m3-a", "m3-b"]
    assert run(store.transact(lambda tx: tx.all_rollups())) == rollups
    assert run(store.drop_events_before(months[1], now=later)) == []

    # a month is dropped only once it has ended entirely, and never the current one
    assert run(store.drop_events_before(months[3], now=later)) == [partition_name(months[1])]
    assert sorted(e.identifier for e in raw_events(store)) == ["m3-a", "m3-b"]
    assert run(store.transact(lambda tx: tx.all_rollups())) == rollups

    # the months left still take events
    ingest_at(store, scope, months[2] + 7200, ["m3-c"])
    assert len(raw_events(store)) == 3


def test_dropping_before_next_month_does_not_break_later_opens(
    store: PostgresStore, url: str
) -> None:
    now = int(time.time())
    scope = new_scope(store)
    run(store.insert_meter(meter(scope, "tokens", now=now - 3600)))
    assert run(store.drop_events_before(month_start(now, 1))) == []  # this month is not over
    ingest_at(store, scope, now, ["arrived-after-the-drop"])

    run(store.maintain(now))
    reopened = run(open_postgres(url))
    run(reopened.close())
    assert [e.identifier for e in raw_events(store)] == ["arrived-after-the-drop"]
    assert partition_name(month_start(now)) in partitions(url)


# two processes racing ---------------------------------------------------------------------


def test_racing_claims_of_one_idempotency_key(
    two_stores: tuple[PostgresStore, PostgresStore],
) -> None:
    first, second = two_stores
    scope = new_scope(first)

    async def race(key: str, now: int) -> list[Any]:
        return list(
            await asyncio.gather(
                first.claim_idempotency_key(scope, key, "fp-first", now),
                second.claim_idempotency_key(scope, key, "fp-second", now),
            )
        )

    for round_ in range(ROUNDS):
        key = f"key-{round_}"
        outcomes = run(race(key, NOW))
        assert outcomes.count(None) == 1, outcomes
        winner = outcomes.index(None)
        record = outcomes[1 - winner]
        assert record.fingerprint == ("fp-first", "fp-second")[winner]
        assert (record.created, record.status, record.body) == (NOW, None, None)

        # a day later the record has expired: again exactly one takes it over
        later = NOW + 86400
        outcomes = run(race(key, later))
        assert outcomes.count(None) == 1, outcomes
        record = outcomes[1 - outcomes.index(None)]
        assert (record.created, record.status) == (later, None)


def test_racing_meters_of_one_event_name(two_stores: tuple[PostgresStore, PostgresStore]) -> None:
    first, second = two_stores
    scope = new_scope(first)

    async def race(event_name: str) -> list[BaseException | None]:
        return list(
            await asyncio.gather(
                first.insert_meter(meter(scope, event_name)),
                second.insert_meter(meter(scope, event_name)),
                return_exceptions=True,
            )
        )

    for round_ in range(ROUNDS):
        outcomes = run(race(f"race_{round_}"))
        assert outcomes.count(None) == 1, outcomes
        refused = [o for o in outcomes if o is not None]
        assert isinstance(refused[0], AlreadyExists) and refused[0].field == "event_name"
    page = run(second.list_meters(scope, PageRequest(limit=100), None))
    assert sorted(m.event_name for m in page.items) == sorted(f"race_{i}" for i in range(ROUNDS))


# unfinished claims ------------------------------------------------------------------------


def test_release_unfinished_leaves_claims_younger_than_ten_minutes(
    two_stores: tuple[PostgresStore, PostgresStore],
) -> None:
    first, second = two_stores
    scope = new_scope(first)
    now = int(time.time())
    run(first.claim_idempotency_key(scope, "in-flight", "fp", now))
    run(first.claim_idempotency_key(scope, "nine-minutes", "fp", now - 540))
    run(first.claim_idempotency_key(scope, "abandoned", "fp", now - 660))
    run(first.claim_idempotency_key(scope, "answered", "fp", now - 3600))
    run(first.complete_idempotency_key(scope, "answered", 200, b"ok"))

    # another process starting up must not release the first one's requests in flight
    assert run(second.release_unfinished_idempotency_keys()) == 1
    assert run(second.release_unfinished_idempotency_keys()) == 0

    for key, created in (("in-flight", now), ("nine-minutes", now - 540)):
        held = run(first.claim_idempotency_key(scope, key, "other", now))
        assert held is not None and (held.created, held.status) == (created, None)
    answered = run(first.claim_idempotency_key(scope, "answered", "other", now))
    assert answered is not None and (answered.status, answered.body) == (200, b"ok")
    assert run(first.claim_idempotency_key(scope, "abandoned", "other", now)) is None

"""The stores on real databases: migrations, keys, meters, keyset pages, idempotency records,
sessions. Most tests run on both backends (a temp SQLite file, a fresh PostgreSQL schema); the
ones about SQLite itself (pragmas, file paths) are grouped at the end. PostgreSQL's own
behaviour (partitions, several processes) is in test_postgres_store.py."""

from __future__ import annotations

import asyncio
import sqlite3
import time
from collections.abc import Coroutine, Iterator
from functools import partial
from pathlib import Path
from typing import Any, TypeVar

import msgspec
import pytest

from meterd import keys
from meterd.ingest.writes import Accepted, Duplicate, ingest
from meterd.keys import Account, ApiKey
from meterd.metering.events import EventSubmission
from meterd.metering.meters import Meter, MeterStatus, new_meter
from meterd.metering.sessions import new_session
from meterd.scope import Scope
from meterd.storage import migrations
from meterd.storage.base import (
    IDEMPOTENCY_TTL_SECONDS,
    AlreadyExists,
    CursorNotFound,
    Page,
    PageRequest,
    Store,
)
from meterd.storage.open import UnsupportedDatabase, open_store, sqlite_path
from meterd.storage.postgres import PostgresStore
from meterd.storage.sql_errors import INTEGRITY_ERRORS
from meterd.storage.sqlite import SQLiteStore
from tests.conftest import database_rows, fresh_database

T = TypeVar("T")

NOW = 1_700_000_000
TTL = IDEMPOTENCY_TTL_SECONDS


def run(coro: Coroutine[Any, Any, T]) -> T:
    return asyncio.run(coro)


@pytest.fixture
def url(backend: str, tmp_path: Path) -> Iterator[str]:
    """A database of ``backend`` that nothing else uses."""
    with fresh_database(backend, tmp_path) as opened:
        yield opened


@pytest.fixture
def store(url: str) -> Iterator[Store]:
    opened = run(open_store(url))
    yield opened
    run(opened.close())


def schema_version(store: Store) -> int:
    assert isinstance(store, SQLiteStore | PostgresStore)
    return store.schema_version()


def table_names(url: str) -> set[str]:
    if url.startswith("sqlite:///"):
        return {row[0] for row in database_rows(url, "SELECT name FROM sqlite_master")}
    rows = database_rows(
        url,
        "SELECT table_name FROM information_schema.tables WHERE table_schema = current_schema()",
    )
    return {row[0] for row in rows}


def make_account(store: Store, livemode: bool = False) -> tuple[Account, ApiKey, str]:
    account = keys.new_account(NOW)
    key, secret = keys.new_api_key(account.id, livemode=livemode, now=NOW)
    run(store.create_account(account, key))
    return account, key, secret


@pytest.fixture
def scope(store: Store) -> Scope:
    account, _, _ = make_account(store)
    return Scope(account.id, livemode=False)


def meter(scope: Scope, event_name: str, now: int = NOW, **fields: Any) -> Meter:
    return new_meter(
        scope,
        display_name=fields.pop("display_name", f"Meter {event_name}"),
        event_name=event_name,
        formula=fields.pop("formula", "sum"),
        customer_key=fields.pop("customer_key", None),
        value_key=fields.pop("value_key", None),
        event_time_window=fields.pop("event_time_window", None),
        now=now,
    )


def cursor(param: str, object_id: str) -> PageRequest:
    if param == "starting_after":
        return PageRequest(starting_after=object_id)
    return PageRequest(ending_before=object_id)


def ids(page: Page[Meter]) -> list[str]:
    return [m.id for m in page.items]


# migrations -------------------------------------------------------------------------------


def test_open_applies_migrations_and_records_them(store: Store, url: str, backend: str) -> None:
    applied = migrations.load(backend)
    assert schema_version(store) == max(m.version for m in applied)
    assert {"accounts", "api_keys", "meters", "idempotency_keys"} <= table_names(url)
    recorded = database_rows(url, "SELECT version, name FROM schema_migrations ORDER BY version")
    assert [tuple(row) for row in recorded] == [(m.version, m.name) for m in applied]
    assert (1, "initial") in [tuple(row) for row in recorded]


def test_open_store_opens_the_backend_of_the_url(store: Store, backend: str) -> None:
    assert isinstance(store, SQLiteStore if backend == "sqlite" else PostgresStore)
    assert run(store.has_accounts()) is False


def test_reopening_does_not_reapply_migrations(url: str) -> None:
    first = run(open_store(url))
    version = schema_version(first)
    run(first.close())
    before = database_rows(url, "SELECT * FROM schema_migrations ORDER BY version")

    second = run(open_store(url))  # would fail on "table already exists" if re-applied
    try:
        assert schema_version(second) == version
    finally:
        run(second.close())
    assert database_rows(url, "SELECT * FROM schema_migrations ORDER BY version") == before


def test_reopening_applies_only_new_migrations(
    url: str, backend: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    run(run(open_store(url)).close())
    existing = migrations.load(backend)
    extra = migrations.Migration(
        existing[-1].version + 1, "extra", ["CREATE TABLE extra (x INTEGER)"]
    )
    monkeypatch.setattr(migrations, "load", lambda dialect: [*existing, extra])

    store = run(open_store(url))
    try:
        assert schema_version(store) == extra.version
    finally:
        run(store.close())
    versions = database_rows(url, "SELECT version FROM schema_migrations ORDER BY version")
    assert [row[0] for row in versions] == [m.version for m in [*existing, extra]]
    assert database_rows(url, "SELECT count(*) FROM extra")[0][0] == 0


def test_a_meter_of_an_unknown_account_is_refused(store: Store) -> None:
    orphan = meter(Scope("acct_doesnotexist", livemode=False), "orphan")
    with pytest.raises(INTEGRITY_ERRORS):
        run(store.insert_meter(orphan))
    assert run(store.has_accounts()) is False


# accounts and keys ------------------------------------------------------------------------


def test_create_account_and_find_key_by_hash(store: Store) -> None:
    assert run(store.has_accounts()) is False
    assert run(store.first_account()) is None

    account, key, secret = make_account(store)

    assert run(store.has_accounts()) is True
    assert run(store.first_account()) == account
    found = run(store.find_api_key(keys.hash_secret(secret)))
    assert found == key
    assert found is not None and found.livemode is False and found.revoked_at is None
    assert run(store.find_api_key(keys.hash_secret(secret + "x"))) is None
    assert run(store.find_api_key(secret)) is None  # only the hash is a lookup key


def test_first_account_is_the_oldest(store: Store) -> None:
    older = keys.new_account(NOW - 100)
    newer = keys.new_account(NOW)
    for account in (newer, older):
        key, _ = keys.new_api_key(account.id, livemode=False, now=account.created)
        run(store.create_account(account, key))
    assert run(store.first_account()) == older


def test_revoked_keys_are_still_found_with_revoked_at(store: Store) -> None:
    account, _, _ = make_account(store)
    key, secret = keys.new_api_key(account.id, livemode=True, now=NOW + 1)
    key.revoked_at = NOW + 50
    run(store.add_api_key(key))

    found = run(store.find_api_key(keys.hash_secret(secret)))
    assert found is not None
    assert found.revoked_at == NOW + 50
    assert found.livemode is True
    assert found == key


def test_list_api_keys(store: Store) -> None:
    assert run(store.list_api_keys()) == []
    account, first, _ = make_account(store)
    live, _ = keys.new_api_key(account.id, livemode=True, now=NOW + 1)
    run(store.add_api_key(live))
    other_account, other, _ = make_account(store)

    listed = run(store.list_api_keys())
    assert sorted(k.id for k in listed) == sorted([first.id, live.id, other.id])
    assert [k.created for k in listed] == sorted(k.created for k in listed)
    by_id = {k.id: k for k in listed}
    assert by_id[live.id] == live and by_id[live.id].livemode is True
    assert by_id[other.id].account_id == other_account.id


def test_a_secret_hash_is_unique(store: Store) -> None:
    _, key, _ = make_account(store)
    clone = msgspec.structs.replace(key, id="key_clone")
    with pytest.raises(INTEGRITY_ERRORS):
        run(store.add_api_key(clone))
    assert [k.id for k in run(store.list_api_keys())] == [key.id]


def test_a_failed_account_creation_leaves_no_account(store: Store, url: str) -> None:
    first, key, _ = make_account(store)
    newcomer = keys.new_account(NOW + 1)
    clash = msgspec.structs.replace(key, id="key_clash", account_id=newcomer.id)
    with pytest.raises(INTEGRITY_ERRORS):
        run(store.create_account(newcomer, clash))
    assert [row[0] for row in database_rows(url, "SELECT id FROM accounts")] == [first.id]
    assert [k.id for k in run(store.list_api_keys())] == [key.id]


# meters -----------------------------------------------------------------------------------


@pytest.mark.parametrize("livemode", [False, True])
def test_meter_round_trip(store: Store, livemode: bool) -> None:
    account, _, _ = make_account(store)
    scope = Scope(account.id, livemode)
    original = Meter(
        id="mtr_" + ("" if livemode else "test_") + "roundtrip",
        account_id=account.id,
        livemode=livemode,
        display_name="API calls ✓ «quoted»",
        event_name="api_call",
        formula="last",
        customer_key="customer",
        value_key="amount",
        event_time_window="hour",
        status="inactive",
        deactivated_at=NOW + 5,
        created=NOW,
        updated=NOW + 5,
    )
    run(store.insert_meter(original))

    loaded = run(store.get_meter(scope, original.id))
    assert loaded == original
    assert loaded is not None and loaded.livemode is livemode

    defaults = meter(scope, "defaults")
    run(store.insert_meter(defaults))
    loaded = run(store.get_meter(scope, defaults.id))
    assert loaded == defaults
    assert loaded is not None
    assert loaded.event_time_window is None and loaded.deactivated_at is None
    assert loaded.status == "active"


def test_get_meter_is_scoped_to_account_and_mode(store: Store, scope: Scope) -> None:
    other_account, _, _ = make_account(store)
    created = meter(scope, "scoped")
    run(store.insert_meter(created))

    assert run(store.get_meter(scope, created.id)) == created
    assert run(store.get_meter(Scope(scope.account_id, livemode=True), created.id)) is None
    assert run(store.get_meter(Scope(other_account.id, livemode=False), created.id)) is None
    assert run(store.get_meter(scope, "mtr_test_missing")) is None


def test_event_name_is_unique_per_account_and_mode(store: Store, scope: Scope) -> None:
    run(store.insert_meter(meter(scope, "api_call")))

    with pytest.raises(AlreadyExists) as raised:
        run(store.insert_meter(meter(scope, "api_call")))
    assert raised.value.field == "event_name"

    live = Scope(scope.account_id, livemode=True)
    other_account, _, _ = make_account(store)
    other = Scope(other_account.id, livemode=False)
    run(store.insert_meter(meter(live, "api_call")))
    run(store.insert_meter(meter(other, "api_call")))
    for each in (scope, live, other):
        page = run(store.list_meters(each, PageRequest(), None))
        assert [m.event_name for m in page.items] == ["api_call"]


def test_a_failed_insert_leaves_nothing_behind(store: Store, scope: Scope) -> None:
    run(store.insert_meter(meter(scope, "api_call")))
    clash = meter(scope, "api_call")
    with pytest.raises(AlreadyExists):
        run(store.insert_meter(clash))
    assert run(store.get_meter(scope, clash.id)) is None
    # The transaction was rolled back cleanly: every connection (PostgreSQL has a pool of
    # them) still takes writes and reads.
    for i in range(20):
        run(store.insert_meter(meter(scope, f"next_{i}")))
    page = run(store.list_meters(scope, PageRequest(limit=100), None))
    assert len(page.items) == 21 and clash.id not in ids(page)


def test_concurrent_inserts_of_one_event_name(store: Store, scope: Scope) -> None:
    async def race() -> list[BaseException | None]:
        attempts = [store.insert_meter(meter(scope, "race")) for _ in range(10)]
        return await asyncio.gather(*attempts, return_exceptions=True)

    outcomes = run(race())
    assert outcomes.count(None) == 1
    assert all(isinstance(o, AlreadyExists) for o in outcomes if o is not None)


def test_save_meter(store: Store, scope: Scope) -> None:
    created = meter(scope, "saved")
    run(store.insert_meter(created))

    changed = msgspec.structs.replace(
        created,
        display_name="Renamed",
        status="inactive",
        deactivated_at=NOW + 10,
        updated=NOW + 10,
    )
    run(store.save_meter(changed))
    assert run(store.get_meter(scope, created.id)) == changed

    reactivated = msgspec.structs.replace(
        changed, status="active", deactivated_at=None, updated=NOW + 20
    )
    run(store.save_meter(reactivated))
    assert run(store.get_meter(scope, created.id)) == reactivated


# listing and cursors ----------------------------------------------------------------------


@pytest.fixture
def many(store: Store, scope: Scope) -> list[Meter]:
    """25 meters in ``scope``, newest first, with neighbours in other scopes."""
    created = []
    for i in range(25):
        m = meter(scope, f"event_{i:02d}", now=NOW + i)
        run(store.insert_meter(m))
        created.append(m)
        if i % 5 == 0:  # interleave meters other scopes own
            other_account, _, _ = make_account(store)
            run(store.insert_meter(meter(Scope(other_account.id, False), f"event_{i:02d}")))
            run(store.insert_meter(meter(Scope(scope.account_id, True), f"event_{i:02d}")))
    return created[::-1]


def test_list_meters_newest_first_with_limit_and_has_more(
    store: Store, scope: Scope, many: list[Meter]
) -> None:
    everything = [m.id for m in many]
    default = run(store.list_meters(scope, PageRequest(), None))
    assert ids(default) == everything[:10] and default.has_more is True

    for limit, has_more in [(1, True), (24, True), (25, False), (26, False), (100, False)]:
        page = run(store.list_meters(scope, PageRequest(limit=limit), None))
        assert ids(page) == everything[:limit]
        assert page.has_more is has_more, limit
    assert run(store.list_meters(scope, PageRequest(), None)).items[0] == many[0]


def test_an_empty_scope_lists_nothing(store: Store, scope: Scope) -> None:
    page = run(store.list_meters(scope, PageRequest(), None))
    assert page.items == [] and page.has_more is False


@pytest.mark.parametrize("limit", [1, 3, 7, 10, 25, 100])
def test_walking_forward_with_starting_after(
    store: Store, scope: Scope, many: list[Meter], limit: int
) -> None:
    seen: list[str] = []
    cursor: str | None = None
    for _ in range(30):
        page = run(store.list_meters(scope, PageRequest(limit=limit, starting_after=cursor), None))
        seen.extend(ids(page))
        if not page.has_more:
            break
        cursor = page.items[-1].id
    assert seen == [m.id for m in many]


@pytest.mark.parametrize("limit", [1, 3, 7, 10, 25, 100])
def test_walking_backward_with_ending_before(
    store: Store, scope: Scope, many: list[Meter], limit: int
) -> None:
    oldest = many[-1].id
    seen: list[str] = []
    cursor = oldest
    for _ in range(30):
        page = run(store.list_meters(scope, PageRequest(limit=limit, ending_before=cursor), None))
        seen[:0] = ids(page)  # each page is newest first and comes before what we have
        if not page.has_more:
            break
        cursor = page.items[0].id
    assert seen == [m.id for m in many[:-1]]


def test_cursor_pages_are_the_neighbours_of_the_cursor(
    store: Store, scope: Scope, many: list[Meter]
) -> None:
    everything = [m.id for m in many]
    after = run(store.list_meters(scope, PageRequest(limit=3, starting_after=everything[10]), None))
    assert ids(after) == everything[11:14] and after.has_more is True
    before = run(store.list_meters(scope, PageRequest(limit=3, ending_before=everything[10]), None))
    assert ids(before) == everything[7:10] and before.has_more is True
    first = run(store.list_meters(scope, PageRequest(limit=3, ending_before=everything[2]), None))
    assert ids(first) == everything[0:2] and first.has_more is False
    last = run(store.list_meters(scope, PageRequest(limit=3, starting_after=everything[-1]), None))
    assert last.items == [] and last.has_more is False


@pytest.mark.parametrize("status", ["active", "inactive"])
def test_list_meters_status_filter(
    store: Store, scope: Scope, many: list[Meter], status: MeterStatus
) -> None:
    inactive = {m.id for m in many[::3]}
    for m in many:
        if m.id in inactive:
            run(store.save_meter(msgspec.structs.replace(m, status="inactive")))
    wanted = [m.id for m in many if (m.id in inactive) == (status == "inactive")]

    page = run(store.list_meters(scope, PageRequest(limit=100), status))
    assert ids(page) == wanted and page.has_more is False
    assert {m.status for m in page.items} == {status}

    seen: list[str] = []
    cursor: str | None = None
    while True:
        page = run(store.list_meters(scope, PageRequest(limit=4, starting_after=cursor), status))
        seen.extend(ids(page))
        if not page.has_more:
            break
        cursor = page.items[-1].id
    assert seen == wanted


@pytest.mark.parametrize("param", ["starting_after", "ending_before"])
def test_unknown_cursor(store: Store, scope: Scope, many: list[Meter], param: str) -> None:
    with pytest.raises(CursorNotFound) as raised:
        run(store.list_meters(scope, cursor(param, "mtr_test_nope"), None))
    assert (raised.value.param, raised.value.object_id) == (param, "mtr_test_nope")


@pytest.mark.parametrize("param", ["starting_after", "ending_before"])
@pytest.mark.parametrize("other", ["account", "mode"])
def test_a_cursor_of_another_scope_is_not_found(
    store: Store, scope: Scope, many: list[Meter], param: str, other: str
) -> None:
    if other == "account":
        account, _, _ = make_account(store)
        foreign_scope = Scope(account.id, livemode=False)
    else:
        foreign_scope = Scope(scope.account_id, livemode=True)
    foreign = meter(foreign_scope, "foreign")
    run(store.insert_meter(foreign))

    with pytest.raises(CursorNotFound) as raised:
        run(store.list_meters(scope, cursor(param, foreign.id), None))
    assert (raised.value.param, raised.value.object_id) == (param, foreign.id)
    with pytest.raises(CursorNotFound):
        run(store.list_meters(foreign_scope, cursor(param, many[0].id), None))


# idempotency ------------------------------------------------------------------------------


def test_claim_complete_and_replay(store: Store, scope: Scope) -> None:
    assert run(store.claim_idempotency_key(scope, "k1", "fp-a", NOW)) is None

    in_progress = run(store.claim_idempotency_key(scope, "k1", "fp-b", NOW + 1))
    assert in_progress is not None
    assert (in_progress.fingerprint, in_progress.created) == ("fp-a", NOW)
    assert (in_progress.status, in_progress.body) == (None, None)

    body = b'{"id": "mtr_test_x"}\xff\x00'
    run(store.complete_idempotency_key(scope, "k1", 200, body))
    done = run(store.claim_idempotency_key(scope, "k1", "fp-c", NOW + 2))
    assert done is not None
    assert (done.fingerprint, done.created, done.status, done.body) == ("fp-a", NOW, 200, body)


def test_idempotency_keys_are_scoped(store: Store, scope: Scope) -> None:
    other_account, _, _ = make_account(store)
    assert run(store.claim_idempotency_key(scope, "k", "fp", NOW)) is None
    assert run(store.claim_idempotency_key(Scope(scope.account_id, True), "k", "fp", NOW)) is None
    assert run(store.claim_idempotency_key(Scope(other_account.id, False), "k", "fp", NOW)) is None
    assert run(store.claim_idempotency_key(scope, "k", "fp", NOW)) is not None


def test_release_deletes_only_unfinished_claims(store: Store, scope: Scope) -> None:
    run(store.claim_idempotency_key(scope, "open", "fp", NOW))
    run(store.claim_idempotency_key(scope, "done", "fp", NOW))
    run(store.complete_idempotency_key(scope, "done", 400, b"error"))

    run(store.release_idempotency_key(scope, "open"))
    run(store.release_idempotency_key(scope, "done"))
    run(store.release_idempotency_key(scope, "never-claimed"))

    assert run(store.claim_idempotency_key(scope, "open", "fp2", NOW + 1)) is None
    done = run(store.claim_idempotency_key(scope, "done", "fp2", NOW + 1))
    assert done is not None and (done.status, done.body) == (400, b"error")


@pytest.mark.parametrize("completed", [False, True])
def test_a_record_older_than_the_ttl_is_absent(store: Store, scope: Scope, completed: bool) -> None:
    assert run(store.claim_idempotency_key(scope, "k", "old", NOW)) is None
    if completed:
        run(store.complete_idempotency_key(scope, "k", 200, b"old body"))

    still = run(store.claim_idempotency_key(scope, "k", "new", NOW + TTL - 1))
    assert still is not None and still.fingerprint == "old"

    assert run(store.claim_idempotency_key(scope, "k", "new", NOW + TTL)) is None
    replaced = run(store.claim_idempotency_key(scope, "k", "newer", NOW + TTL + 1))
    assert replaced is not None
    assert (replaced.fingerprint, replaced.created) == ("new", NOW + TTL)
    assert (replaced.status, replaced.body) == (None, None)


def test_prune_deletes_only_expired_rows(store: Store, scope: Scope) -> None:
    ages = {"ancient": 10 * TTL, "expired": TTL + 5, "boundary": TTL, "young": TTL - 5, "new": 0}
    for key, age in ages.items():
        run(store.claim_idempotency_key(scope, key, "fp", NOW - age))
    run(store.complete_idempotency_key(scope, "expired", 200, b"{}"))
    run(store.complete_idempotency_key(scope, "young", 200, b"{}"))

    assert run(store.prune_idempotency_keys(NOW)) == 3
    assert run(store.prune_idempotency_keys(NOW)) == 0
    for key in ("young", "new"):
        kept = run(store.claim_idempotency_key(scope, key, "other", NOW))
        assert kept is not None and kept.created == NOW - ages[key]
    for key in ("ancient", "expired", "boundary"):
        assert run(store.claim_idempotency_key(scope, key, "other", NOW)) is None


def test_release_unfinished_idempotency_keys(store: Store, scope: Scope) -> None:
    """Claims made long ago (NOW is in 2023) are released by both stores; PostgreSQL keeps
    younger ones (test_postgres_store.py)."""
    live = Scope(scope.account_id, livemode=True)
    run(store.claim_idempotency_key(scope, "a", "fp", NOW))
    run(store.claim_idempotency_key(live, "b", "fp", NOW))
    run(store.claim_idempotency_key(scope, "done", "fp", NOW))
    run(store.complete_idempotency_key(scope, "done", 201, b"ok"))

    assert run(store.release_unfinished_idempotency_keys()) == 2
    assert run(store.release_unfinished_idempotency_keys()) == 0
    assert run(store.claim_idempotency_key(scope, "a", "fp", NOW)) is None
    assert run(store.claim_idempotency_key(live, "b", "fp", NOW)) is None
    done = run(store.claim_idempotency_key(scope, "done", "fp", NOW))
    assert done is not None and done.status == 201


def test_concurrent_claims_of_one_key(store: Store, scope: Scope) -> None:
    async def race(key: str, now: int) -> list[Any]:
        claims = [store.claim_idempotency_key(scope, key, f"fp-{i}", now) for i in range(10)]
        return await asyncio.gather(*claims)

    outcomes = run(race("new", NOW))
    assert outcomes.count(None) == 1
    holders = {(o.fingerprint, o.created) for o in outcomes if o is not None}
    assert len(holders) == 1 and holders.pop()[1] == NOW

    # an expired record is taken over by exactly one of the racers too
    outcomes = run(race("new", NOW + TTL))
    assert outcomes.count(None) == 1
    holders = {(o.fingerprint, o.created, o.status) for o in outcomes if o is not None}
    assert len(holders) == 1 and holders.pop()[1:] == (NOW + TTL, None)


# meter event sessions ---------------------------------------------------------------------


def test_session_round_trip_and_prune(store: Store, scope: Scope) -> None:
    live = Scope(scope.account_id, livemode=True)
    first, first_token = new_session(scope, NOW, 900)
    second, second_token = new_session(live, NOW + 100, 900)
    run(store.insert_session(first))
    run(store.insert_session(second))

    found = run(store.find_session(keys.hash_secret(first_token)))
    assert found == first and found is not None and found.scope == scope
    assert run(store.find_session(keys.hash_secret(second_token))) == second
    assert run(store.find_session(keys.hash_secret(first_token + "x"))) is None
    assert run(store.find_session(first_token)) is None  # only the hash is a lookup key

    assert run(store.prune_sessions(NOW + 899)) == 0
    assert run(store.prune_sessions(NOW + 900)) == 1  # expires_at <= the bound
    assert run(store.find_session(keys.hash_secret(first_token))) is None
    assert run(store.find_session(keys.hash_secret(second_token))) == second
    assert run(store.prune_sessions(NOW + 900)) == 0


def test_a_session_needs_its_account_and_a_unique_token(store: Store, scope: Scope) -> None:
    session, _ = new_session(scope, NOW, 900)
    run(store.insert_session(session))
    with pytest.raises(INTEGRITY_ERRORS):
        run(store.insert_session(msgspec.structs.replace(session, id="mes_test_clone")))
    orphan, _ = new_session(Scope("acct_doesnotexist", livemode=False), NOW, 900)
    with pytest.raises(INTEGRITY_ERRORS):
        run(store.insert_session(orphan))
    assert run(store.prune_sessions(NOW + 10_000)) == 1


# durability -------------------------------------------------------------------------------


def test_data_survives_close_and_reopen(url: str) -> None:
    async def write() -> tuple[Account, ApiKey, str, Meter, Scope]:
        store = await open_store(url)
        try:
            account = keys.new_account(NOW)
            key, secret = keys.new_api_key(account.id, livemode=False, now=NOW)
            await store.create_account(account, key)
            scope = Scope(account.id, livemode=False)
            m = meter(scope, "durable")
            await store.insert_meter(m)
            await store.claim_idempotency_key(scope, "k", "fp", NOW)
            await store.complete_idempotency_key(scope, "k", 200, b"stored")
            return account, key, secret, m, scope
        finally:
            await store.close()

    account, key, secret, m, scope = run(write())

    async def read() -> None:
        store = await open_store(url)
        try:
            assert await store.first_account() == account
            assert await store.find_api_key(keys.hash_secret(secret)) == key
            assert await store.get_meter(scope, m.id) == m
            assert ids(await store.list_meters(scope, PageRequest(), None)) == [m.id]
            replay = await store.claim_idempotency_key(scope, "k", "fp", NOW + 1)
            assert replay is not None and (replay.status, replay.body) == (200, b"stored")
        finally:
            await store.close()

    run(read())


# database URLs (no database needed) -------------------------------------------------------


@pytest.mark.parametrize(
    ("database_url", "path"),
    [
        ("sqlite:///meterd.db", "meterd.db"),
        ("sqlite:///data/meterd.db", "data/meterd.db"),
        ("sqlite:////abs/x.db", "/abs/x.db"),
        ("sqlite:///:memory:", ":memory:"),
    ],
)
def test_sqlite_path(database_url: str, path: str) -> None:
    assert sqlite_path(database_url) == path


@pytest.mark.parametrize("database_url", ["sqlite://host/x.db", "sqlite:///", "postgresql:///x"])
def test_sqlite_path_rejects_other_urls(database_url: str) -> None:
    with pytest.raises(UnsupportedDatabase, match="SQLite URL"):
        sqlite_path(database_url)


@pytest.mark.parametrize("database_url", ["mysql://localhost/meterd", "meterd.db", "file:///x.db"])
def test_open_store_rejects_unknown_schemes(database_url: str) -> None:
    with pytest.raises(UnsupportedDatabase, match="unknown database URL scheme"):
        run(open_store(database_url))


# SQLite only: the file and its connection settings ----------------------------------------


def test_sqlite_wal_and_foreign_keys(sqlite_store: SQLiteStore, sqlite_db: Path) -> None:
    conn = sqlite_store._conn
    assert conn is not None
    assert conn.execute("PRAGMA journal_mode").fetchone()[0].lower() == "wal"
    assert conn.execute("PRAGMA foreign_keys").fetchone()[0] == 1
    with sqlite3.connect(sqlite_db) as other:  # WAL is a property of the file, not the connection
        assert other.execute("PRAGMA journal_mode").fetchone()[0].lower() == "wal"

    orphan = meter(Scope("acct_doesnotexist", livemode=False), "orphan")
    with pytest.raises(sqlite3.IntegrityError, match="FOREIGN KEY"):
        run(sqlite_store.insert_meter(orphan))


def test_sqlite_migrations_are_recorded_in_the_file(
    sqlite_store: SQLiteStore, sqlite_db: Path
) -> None:
    with sqlite3.connect(sqlite_db) as conn:
        tables = {row[0] for row in conn.execute("SELECT name FROM sqlite_master")}
        recorded = conn.execute("SELECT version, name FROM schema_migrations").fetchall()
    assert {"accounts", "api_keys", "meters", "idempotency_keys"} <= tables
    assert recorded == [(m.version, m.name) for m in migrations.load("sqlite")]
    assert sqlite_store.schema_version() == recorded[-1][0]


def test_open_store_creates_the_sqlite_file(tmp_path: Path) -> None:
    async def main() -> int:
        store = await open_store(f"sqlite:///{tmp_path}/opened.db")
        try:
            assert isinstance(store, SQLiteStore)
            assert store.path == f"{tmp_path}/opened.db"
            assert await store.has_accounts() is False
            return store.schema_version()
        finally:
            await store.close()

    assert run(main()) >= 1
    assert (tmp_path / "opened.db").exists()


# identifiers age out --------------------------------------------------------------------------


def test_pruned_identifiers_can_be_used_again_and_recent_ones_cannot(
    store: Store, scope: Scope
) -> None:
    """Identifiers are unique for 24 hours: after a prune, an old one counts again (counted
    and uncounted alike); a recent one is still a duplicate. Also after a restart (reopen)."""
    now = int(time.time())
    run(store.insert_meter(meter(scope, "calls", now=now - 3 * DAY)))

    def ingest_at(created: int, identifiers: list[str], event_name: str = "calls") -> list[Any]:
        batch = [
            EventSubmission(
                scope=scope,
                event_name=event_name,
                identifier=identifier,
                payload={"stripe_customer_id": "c", "value": "1"},
                timestamp=created,
                created=created,
                origin="v1",
            )
            for identifier in identifiers
        ]
        return run(store.transact(partial(ingest, batch=batch)))

    ingest_at(now - 2 * DAY, ["old"])
    ingest_at(now - 2 * DAY, ["old-uncounted"], event_name="no-such-meter")
    ingest_at(now - 60, ["recent"])
    assert run(store.prune_event_identifiers(now - DAY)) >= 2
    assert ingest_at(now, ["old", "old-uncounted", "recent"]) == [
        Accepted(),
        Accepted(),
        Duplicate(),
    ]
    assert ingest_at(now, ["old"]) == [Duplicate()], "the new record of 'old' is recent"


DAY = 86400


# appending events -----------------------------------------------------------------------------


AWKWARD = ['q"uote', "back\\slash", "caf\u00e9 \u2603", "tab\there", "x" * 100, "'", "[1,2]"]


@pytest.mark.parametrize("count", [1, 1023, 1024, 2500])
def test_a_batch_of_any_size_is_stored_row_for_row(store: Store, scope: Scope, count: int) -> None:
    """SQLite appends blocks of 1,024, 256, 64 and 16 rows as bound parameters and the rest as
    JSON text (1,023 takes every size, 2,500 two 1,024s): every size, and strings JSON must
    escape, come back exactly, with rollups that add up."""
    run(store.insert_meter(meter(scope, "calls")))
    now = int(time.time())
    batch = [
        EventSubmission(
            scope=scope,
            event_name="calls",
            identifier=f"{AWKWARD[n % len(AWKWARD)]}-{n}",
            payload={"stripe_customer_id": AWKWARD[n % 3], "value": str(n % 7)},
            timestamp=now - n % 120,
            created=now,
            origin="stream",
        )
        for n in range(count)
    ]
    outcomes = run(store.transact(partial(ingest, batch=batch)))
    assert outcomes == [Accepted()] * count
    stored = run(store.transact(lambda tx: tx.all_events(0, count + 1)))
    assert [(e.identifier, e.customer, e.ts, e.value, e.created) for e in stored] == [
        (
            b.identifier,
            b.payload["stripe_customer_id"],
            b.timestamp,
            (int(b.payload["value"]) or 0) * 10**12,
            now,
        )
        for b in batch
    ]
    assert [e.seq for e in stored] == list(range(stored[0].seq, stored[0].seq + count))
    rollups = run(store.transact(lambda tx: tx.all_rollups()))
    for size in (60, 3600, 86400):
        rows = [r for key, r in rollups.items() if key.size == size]
        assert sum(r.count for r in rows) == count, size
        assert sum(r.total for r in rows) == sum(n % 7 for n in range(count)) * 10**12, size
    again = run(store.transact(partial(ingest, batch=batch[:3])))
    assert again == [Duplicate()] * min(count, 3), "the stored rows are the identifiers' records"

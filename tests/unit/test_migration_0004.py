"""Migration 0004 on a database written by the events issue's schema (0001-0003).

Raw values move from canonical decimal text to scaled integers, only meters that track their
latest event keep a recount bucket, identifiers move to the log (and are found again through
the in-memory index), and rollups are re-keyed time first with count/sum rows' latest zeroed.
"""

from __future__ import annotations

import asyncio
import sqlite3
import time
from pathlib import Path

from meterd.ingest.writes import rebuild_rollups
from meterd.metering import values
from meterd.scope import Scope
from meterd.storage import migrations
from meterd.storage.base import IdentifierRecord
from meterd.storage.sqlite import SQLiteStore

ACCOUNT = "acct_migration"
SCOPE = Scope(ACCOUNT, False)
NOW = int(time.time())
TS = NOW - 3600 - NOW % 60

# (seq, meter_seq, value text, cancelled); meter 1 sums, 2 is `last`, 3 counts per hour.
EVENTS = [
    (1, 1, "2.5", False),
    (2, 1, "1234567.000000000001", False),  # 7 digits before the point: kept as text
    (3, 1, "0.000000000001", False),
    (4, 1, "999999", False),
    (5, 1, "12345678", True),  # cancelled
    (6, 1, "123456789012345678", False),  # past 62 bits once scaled
    (7, 2, "7", False),
    (8, 2, "3.25", False),
    (9, 3, None, False),
]


def old_database(path: Path) -> None:
    """Migrations 0001-0003 as they were, and rows in their format."""
    conn = sqlite3.connect(path)
    conn.execute(
        "CREATE TABLE schema_migrations "
        "(version INTEGER PRIMARY KEY, name TEXT NOT NULL, applied BIGINT NOT NULL)"
    )
    for migration in migrations.load("sqlite"):
        if migration.version > 3:
            continue
        for statement in migration.statements:
            conn.execute(statement)
        conn.execute(
            "INSERT INTO schema_migrations VALUES (?, ?, ?)",
            (migration.version, migration.name, NOW),
        )
    conn.execute("INSERT INTO accounts VALUES (?, ?)", (ACCOUNT, NOW))
    for seq, formula, window in ((1, "sum", None), (2, "last", None), (3, "count", "hour")):
        conn.execute(
            "INSERT INTO meters (seq, id, account_id, livemode, display_name, event_name, "
            "formula, customer_key, value_key, event_time_window, status, created, updated) "
            "VALUES (?, ?, ?, 0, 'm', ?, ?, 'stripe_customer_id', 'value', ?, 'active', ?, ?)",
            (seq, f"mtr_test_{seq}", ACCOUNT, f"event{seq}", formula, window, NOW, NOW),
        )
    for seq, meter_seq, value, cancelled in EVENTS:
        bucket = TS - TS % (3600 if meter_seq == 3 else 60)
        conn.execute(
            "INSERT INTO meter_events (seq, meter_seq, customer, ts, bucket, value, identifier, "
            "created, cancelled) VALUES (?, ?, 'cus_1', ?, ?, ?, ?, ?, ?)",
            (seq, meter_seq, TS, bucket, value, f"id-{seq}", NOW - 60, cancelled),
        )
        conn.execute(
            "INSERT INTO event_identifiers VALUES (?, 0, ?, ?, ?, NULL)",
            (ACCOUNT, f"id-{seq}", NOW - 60, seq),
        )
    conn.execute(
        "INSERT INTO event_identifiers VALUES (?, 0, 'id-uncounted', ?, NULL, 'nothing')",
        (ACCOUNT, NOW - 30),
    )
    conn.execute(
        "INSERT INTO meter_rollups VALUES (1, 'cus_1', 60, ?, 5, 1, ?, 6, 42)", (TS - TS % 60, TS)
    )
    conn.execute(
        "INSERT INTO meter_rollups VALUES (2, 'cus_1', 60, ?, 2, 1, ?, 8, 42)", (TS - TS % 60, TS)
    )
    conn.commit()
    conn.close()


def test_migration_0004_keeps_every_event_identifier_and_rollup(tmp_path: Path) -> None:
    path = tmp_path / "old.db"
    old_database(path)

    async def body() -> None:
        store = await SQLiteStore.open(str(path))
        try:
            assert store.schema_version() >= 4

            def check(tx: object) -> None:
                conn = tx.conn  # type: ignore[attr-defined]
                rows = conn.execute(
                    "SELECT seq, value, recount_bucket, cancelled FROM meter_events ORDER BY seq"
                ).fetchall()
                for (seq, meter_seq, text, cancelled), row in zip(EVENTS, rows, strict=True):
                    assert row[0] == seq
                    expected = None if text is None else values.parse_value(text)
                    assert (None if row[1] is None else int(row[1])) == expected
                    tracks = meter_seq in (2, 3)
                    bucket = TS - TS % (3600 if meter_seq == 3 else 60)
                    assert row[2] == (bucket if tracks else None)
                    assert bool(row[3]) == cancelled
                rollups = conn.execute(
                    "SELECT meter_seq, event_count, latest_ts, latest_seq, latest_value "
                    "FROM meter_rollups ORDER BY meter_seq"
                ).fetchall()
                assert rollups == [(1, 5, 0, 0, 0), (2, 2, TS, 8, 42)]
                for seq, *_ in EVENTS:
                    assert tx.identifier(SCOPE, f"id-{seq}") == IdentifierRecord(  # type: ignore[attr-defined]
                        NOW - 60, seq, None
                    )
                assert tx.identifier(SCOPE, "id-uncounted") == IdentifierRecord(  # type: ignore[attr-defined]
                    NOW - 30, None, "nothing"
                )
                assert tx.identifier(SCOPE, "id-never") is None  # type: ignore[attr-defined]

            await store.transact(check)
            await store.transact(rebuild_rollups)

            def totals(tx: object) -> dict[tuple[int, int], int]:
                rows = tx.conn.execute(  # type: ignore[attr-defined]
                    "SELECT meter_seq, size, total FROM meter_rollups WHERE size >= 60"
                ).fetchall()
                return {(row[0], row[1]): int(row[2]) for row in rows}

            summed = await store.transact(totals)
            counted = [values.parse_value(t) for _, m, t, c in EVENTS if m == 1 and not c and t]
            assert summed[(1, 60)] == summed[(1, 86400)] == sum(counted)
        finally:
            await store.close()

    asyncio.run(body())

"""The writer's side of ingest alone: batches through ``ingest`` on a store, no HTTP.

Run: ``.venv/bin/python bench/ingest_writer.py [--events 200000] [--batch 3200] [--busy]
[--postgres URL]`` (SQLite by default; ``--postgres``: a fresh schema of that database).
Prints events/s and the time per event of each SQL statement. ``--busy`` runs a Python thread
that never sleeps beside it, as the event loop is when it parses requests: then every
statement the writer runs costs a GIL hand-over, which is what the switch interval (``meterd
serve`` sets 20 µs) and the number of statements per batch decide. ``--switch S`` sets it.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import sys
import tempfile
import threading
import time
from collections import Counter
from collections.abc import Iterator
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
from bench.databases import bench_database
from meterd import keys
from meterd.ingest.writes import assess_batch, ingest, lookup_meters
from meterd.metering.events import EventSubmission
from meterd.metering.meters import new_meter
from meterd.scope import Scope
from meterd.storage import open_store
from meterd.storage.base import EventTransaction


class TimedConnection:
    """Wraps the store's connection and adds up the time of each statement."""

    def __init__(self, conn: Any, spent: Counter[str]) -> None:
        self.conn = conn
        self.spent = spent

    def execute(self, sql: str, *args: Any) -> Any:
        began = time.perf_counter()
        try:
            return self.conn.execute(sql, *args)
        finally:
            self.spent[sql[:90]] += time.perf_counter() - began

    @contextlib.contextmanager
    def copy(self, sql: str) -> Iterator[Any]:
        began = time.perf_counter()
        try:
            with self.conn.copy(sql) as copy:
                yield copy
        finally:
            self.spent[sql[:90]] += time.perf_counter() - began

    def __getattr__(self, name: str) -> Any:
        return getattr(self.conn, name)


async def run(url: str, events: int, batch_size: int) -> None:
    store = await open_store(url)
    now = int(time.time())
    account = keys.new_account(now)
    key, _ = keys.new_api_key(account.id, livemode=False, now=now)
    await store.create_account(account, key)
    scope = Scope(account.id, False)
    meter = new_meter(
        scope,
        display_name="bench",
        event_name="bench",
        formula="sum",
        customer_key=None,
        value_key=None,
        event_time_window=None,
        now=now,
    )
    await store.insert_meter(meter)
    batches = [
        [
            EventSubmission(
                scope=scope,
                event_name="bench",
                identifier=f"id-{first + n}",
                payload={"stripe_customer_id": f"cus_{(first + n) % 1000}", "value": "1"},
                timestamp=now,
                created=now,
                origin="stream",
            )
            for n in range(batch_size)
        ]
        for first in range(0, events, batch_size)
    ]
    spent: Counter[str] = Counter()

    def work(tx: EventTransaction, batch: list[EventSubmission]) -> object:
        assessed = assess_batch(batch, lookup_meters(tx, batch))
        tx.conn = TimedConnection(tx.conn, spent)  # type: ignore[attr-defined]
        return ingest(tx, batch, assessed)

    began = time.perf_counter()
    for batch in batches:
        await store.transact(lambda tx, b=batch: work(tx, b))  # type: ignore[misc]
    took = time.perf_counter() - began
    await store.close()
    stored = sum(len(b) for b in batches)
    print(f"{stored:,} events in batches of {batch_size:,}: {stored / took:,.0f} events/s")
    for statement, seconds in spent.most_common(6):
        print(f"  {seconds / stored * 1e6:6.2f} us/event  {statement}")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--events", type=int, default=200_000)
    parser.add_argument("--batch", type=int, default=3_200)
    parser.add_argument("--busy", action="store_true", help="a busy Python thread beside it")
    parser.add_argument("--switch", type=float, help="sys.setswitchinterval, in seconds")
    parser.add_argument("--postgres", help="a postgresql:// URL: run in a fresh schema there")
    args = parser.parse_args()
    if args.switch:
        sys.setswitchinterval(args.switch)
    stop = threading.Event()

    def spin() -> None:
        count = 0
        while not stop.is_set():
            count += 1

    if args.busy:
        threading.Thread(target=spin, daemon=True).start()
    with (
        tempfile.TemporaryDirectory() as folder,
        bench_database(args.postgres, folder, "ingest") as url,
    ):
        asyncio.run(run(url, args.events, args.batch))
    stop.set()


if __name__ == "__main__":
    main()

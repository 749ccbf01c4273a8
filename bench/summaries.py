"""Summary latency against meter size: a 30-day, day-grouped summary for one customer.

Run: ``make bench-summaries`` or ``.venv/bin/python bench/summaries.py --events 1000000 10000000``.
Events are loaded straight through the ingest path (no HTTP, to keep loading fast) into a
SQLite file, or with ``--postgres URL`` a fresh schema of that PostgreSQL database, spread over
100 customers and the last 30 days; then a real ``meterd serve`` answers sequential summary
requests on one keep-alive connection and the latency is measured. The meter grows in steps
(1M, then 10M), so the ratio shows whether cost follows the number of events.
"""

from __future__ import annotations

import argparse
import asyncio
import random
import statistics
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
from bench.databases import bench_database
from bench.loadgen import Connection
from meterd import keys
from meterd.ingest.writes import ingest
from meterd.metering import meters
from meterd.metering.events import EventSubmission
from meterd.scope import Scope
from meterd.storage import Store, open_store
from tests.conftest import start_server, stop_server

CUSTOMERS = 100
DAY = 86400
BATCH = 5000


async def load(store: Store, scope: Scope, first: int, count: int, now: int) -> None:
    rng = random.Random(first)
    span = 30 * DAY
    for start in range(first, first + count, BATCH):
        batch = [
            EventSubmission(
                scope=scope,
                event_name="api_call",
                identifier=f"e{n}",
                payload={
                    "stripe_customer_id": f"cus_{n % CUSTOMERS}",
                    "value": str(rng.randint(1, 100)),
                },
                timestamp=now - rng.randrange(span),
                created=now,
                origin="v1",
            )
            for n in range(start, min(start + BATCH, first + count))
        ]
        await store.transact(lambda tx, b=batch: ingest(tx, b))  # type: ignore[misc]


async def measure(
    base_url: str, secret: str, meter_id: str, now: int, requests: int
) -> list[float]:
    port = int(base_url.rsplit(":", 1)[1])
    end = now - now % DAY + DAY
    start = end - 30 * DAY
    path = (
        f"/v1/billing/meters/{meter_id}/event_summaries?customer=cus_7&start_time={start}"
        f"&end_time={end}&value_grouping_window=day&limit=30"
    )
    auth = {"Authorization": f"Bearer {secret}"}
    connection = await Connection.open("127.0.0.1", port)
    latencies = []
    try:
        for _ in range(requests):
            started = time.perf_counter()
            status, body = await connection.request("GET", path, auth)
            latencies.append(time.perf_counter() - started)
            assert status == 200, body
    finally:
        await connection.close()
    return latencies


async def main(steps: list[int], requests: int, postgres: str | None) -> None:
    with (
        tempfile.TemporaryDirectory() as folder,
        bench_database(postgres, folder, "bench") as url,
    ):
        store = await open_store(url)
        now = int(time.time())
        account = keys.new_account(now)
        key, secret = keys.new_api_key(account.id, livemode=False, now=now)
        await store.create_account(account, key)
        scope = Scope(account.id, False)
        meter = meters.new_meter(
            scope,
            display_name="API calls",
            event_name="api_call",
            formula="sum",
            customer_key=None,
            value_key=None,
            event_time_window=None,
            now=now,
        )
        await store.insert_meter(meter)
        await store.close()
        loaded = 0
        p99s: list[float] = []
        for target in steps:
            store = await open_store(url)
            began = time.perf_counter()
            await load(store, scope, loaded, target - loaded, now)
            took = time.perf_counter() - began
            await store.close()
            print(
                f"loaded {target - loaded:,} events in {took:.0f} s "
                f"({(target - loaded) / took:,.0f}/s)"
            )
            loaded = target
            server = start_server(url)
            try:
                await measure(server.base_url, secret, meter.id, now, 50)  # warm the cache
                lat = await measure(server.base_url, secret, meter.id, now, requests)
            finally:
                stop_server(server)
            q = statistics.quantiles(lat, n=100)
            p99s.append(q[98])
            print(
                f"{loaded:>12,} events in the meter: 30-day summary by day, one customer: "
                f"p50 {q[49] * 1000:.2f} ms  p99 {q[98] * 1000:.2f} ms"
            )
        if len(p99s) > 1:
            print(f"p99 ratio, largest / smallest meter: {p99s[-1] / p99s[0]:.2f}")


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--events", type=int, nargs="+", default=[1_000_000, 10_000_000])
    parser.add_argument("--requests", type=int, default=1000)
    parser.add_argument("--postgres", help="a postgresql:// URL: run in a fresh schema there")
    args = parser.parse_args()
    asyncio.run(main(sorted(args.events), args.requests, args.postgres))

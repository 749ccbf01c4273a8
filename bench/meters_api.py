"""Throughput and latency of the v1 meters API on a real ``meterd serve`` (SQLite).

Run: ``make bench`` or ``.venv/bin/python bench/meters_api.py --seconds 10 --connections 32``.
The load generator is this process (raw asyncio streams, bench/loadgen.py); the server is its own
process on the same machine, so both share the CPU.
"""

from __future__ import annotations

import argparse
import asyncio
import itertools
import json
import statistics
import sys
import tempfile
import time
from collections.abc import Awaitable, Callable
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
from bench.loadgen import Connection
from tests.conftest import start_server, stop_server

Request = Callable[[Connection, int], Awaitable[tuple[int, bytes]]]


async def drive(
    port: int, request: Request, seconds: float, connections: int
) -> tuple[int, list[float]]:
    latencies: list[float] = []
    counter = itertools.count()
    deadline = time.perf_counter() + seconds

    async def worker() -> None:
        connection = await Connection.open("127.0.0.1", port)
        try:
            while time.perf_counter() < deadline:
                started = time.perf_counter()
                status, body = await request(connection, next(counter))
                if status != 200:
                    raise RuntimeError(f"{status}: {body!r}")
                latencies.append(time.perf_counter() - started)
        finally:
            await connection.close()

    await asyncio.gather(*(worker() for _ in range(connections)))
    return len(latencies), latencies


def report(name: str, count: int, latencies: list[float], seconds: float) -> None:
    quantiles = statistics.quantiles(latencies, n=100)
    print(
        f"{name:<22} {count / seconds:>9,.0f} req/s   "
        f"p50 {quantiles[49] * 1000:6.2f} ms   p99 {quantiles[98] * 1000:6.2f} ms"
    )


async def main(seconds: float, connections: int) -> None:
    with tempfile.TemporaryDirectory() as folder:
        server = start_server(f"sqlite:///{folder}/bench.db")
        try:
            port = int(server.base_url.rsplit(":", 1)[1])
            auth = {"Authorization": f"Bearer {server.secret_key}"}
            form = {**auth, "Content-Type": "application/x-www-form-urlencoded"}

            async def create(connection: Connection, n: int) -> tuple[int, bytes]:
                body = f"display_name=m&event_name=e{n}&default_aggregation[formula]=sum"
                return await connection.request("POST", "/v1/billing/meters", form, body.encode())

            count, lat = await drive(port, create, seconds, connections)
            report("create meter", count, lat, seconds)

            async def retrieve(connection: Connection, n: int) -> tuple[int, bytes]:
                return await connection.request("GET", "/v1/billing/meters/" + meter_id, auth)

            probe = await Connection.open("127.0.0.1", port)
            _, listed = await probe.request("GET", "/v1/billing/meters?limit=1", auth)
            await probe.close()
            meter_id = json.loads(listed)["data"][0]["id"]
            count, lat = await drive(port, retrieve, seconds, connections)
            report("retrieve meter", count, lat, seconds)

            async def list_page(connection: Connection, n: int) -> tuple[int, bytes]:
                path = "/v1/billing/meters?limit=10&status=active"
                return await connection.request("GET", path, auth)

            count, lat = await drive(port, list_page, seconds, connections)
            report("list 10 meters", count, lat, seconds)
        finally:
            stop_server(server)


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--seconds", type=float, default=5.0)
    parser.add_argument("--connections", type=int, default=32)
    args = parser.parse_args()
    print(f"meters API on SQLite, {args.connections} connections, {args.seconds:.0f} s each")
    asyncio.run(main(args.seconds, args.connections))

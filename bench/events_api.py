"""``POST /v1/billing/meter_events``, one event per request, durable, on a real ``meterd serve``.

Run: ``make bench-events`` or
``.venv/bin/python bench/events_api.py --seconds 10 --connections 64``.
The load generator is this process (raw asyncio streams, bench/loadgen.py) and shares the machine
with the server. Every request carries a unique identifier; afterwards the summaries must add up
to exactly the number of 2xx answers (nothing lost, nothing counted twice).
"""

from __future__ import annotations

import argparse
import asyncio
import json
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
from bench.loadgen import Connection
from bench.meters_api import drive, report
from tests.conftest import start_server, stop_server

CUSTOMERS = 100


async def main(seconds: float, connections: int) -> None:
    with tempfile.TemporaryDirectory() as folder:
        server = start_server(f"sqlite:///{folder}/bench.db")
        try:
            port = int(server.base_url.rsplit(":", 1)[1])
            auth = {"Authorization": f"Bearer {server.secret_key}"}
            form = {**auth, "Content-Type": "application/x-www-form-urlencoded"}
            probe = await Connection.open("127.0.0.1", port)
            status, created = await probe.request(
                "POST",
                "/v1/billing/meters",
                form,
                b"display_name=API+calls&event_name=api_call&default_aggregation[formula]=sum",
            )
            assert status == 200, created
            meter_id = json.loads(created)["id"]
            await probe.close()
            started = int(time.time())

            async def send(connection: Connection, n: int) -> tuple[int, bytes]:
                body = (
                    f"event_name=api_call&identifier=bench-{n}"
                    f"&payload[stripe_customer_id]=cus_{n % CUSTOMERS}&payload[value]=1"
                )
                return await connection.request(
                    "POST", "/v1/billing/meter_events", form, body.encode()
                )

            count, latencies = await drive(port, send, seconds, connections)
            report("v1 meter event", count, latencies, seconds)

            probe = await Connection.open("127.0.0.1", port)
            total = 0
            start = started - started % 3600
            end = int(time.time()) // 3600 * 3600 + 7200
            for customer in range(CUSTOMERS):
                path = (
                    f"/v1/billing/meters/{meter_id}/event_summaries?customer=cus_{customer}"
                    f"&start_time={start}&end_time={end}"
                )
                status, body = await probe.request("GET", path, auth)
                assert status == 200, body
                total += json.loads(body)["data"][0]["aggregated_value"]
            await probe.close()
            verdict = "exact" if total == count else "MISMATCH"
            print(f"summaries add up to {total:,} for {count:,} acknowledged events: {verdict}")
            if total != count:
                raise SystemExit(1)
        finally:
            stop_server(server)


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--seconds", type=float, default=10.0)
    parser.add_argument("--connections", type=int, default=64)
    args = parser.parse_args()
    print(f"v1 meter events on SQLite, {args.connections} connections, {args.seconds:.0f} s")
    asyncio.run(main(args.seconds, args.connections))

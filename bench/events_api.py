"""``POST /v1/billing/meter_events``, one event per request, durable, on a real ``meterd serve``.

Run: ``make bench-events`` or
``.venv/bin/python bench/events_api.py --seconds 10 --connections 64 [--wrk]``.
The load generator shares the machine with the server: this process (raw asyncio streams,
bench/loadgen.py), or with ``--wrk`` the wrk tool (C, with bench/meter_events.lua), which
leaves more of the CPU to the server. Every request carries a unique identifier; afterwards the
summaries must add up to exactly the number of 2xx answers (nothing lost, nothing counted
twice).
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import re
import subprocess
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
from bench.loadgen import Connection
from bench.meters_api import drive, report
from tests.conftest import start_server, stop_server

CUSTOMERS = 100


def run_wrk(port: int, secret: str, seconds: float, connections: int, keys: bool) -> int:
    """Drive the server with wrk; print its figures and return how many requests got 2xx."""
    script = Path(__file__).with_name("meter_events.lua")
    result = subprocess.run(
        [
            *("wrk", "-t2", f"-c{connections}", f"-d{seconds:.0f}s", "--latency"),
            *("-s", str(script), f"http://127.0.0.1:{port}"),
        ],
        env={
            **os.environ,
            "METERD_BENCH_KEY": secret,
            "METERD_BENCH_IDEMPOTENCY": "1" if keys else "0",
        },
        capture_output=True,
        text=True,
        check=True,
    )
    total = int(re.search(r"(\d+) requests in", result.stdout).group(1))  # type: ignore[union-attr]
    failed = re.search(r"Non-2xx or 3xx responses: (\d+)", result.stdout)
    errors = re.search(r"Socket errors: .*timeout (\d+)", result.stdout)
    latency = dict(re.findall(r"\s+(50|99)%\s+(\S+)", result.stdout))
    ok = total - (int(failed.group(1)) if failed else 0)
    print(
        f"{'v1 meter event (wrk)':<22} {ok / seconds:>9,.0f} req/s   "
        f"p50 {latency.get('50')}   p99 {latency.get('99')}"
        + (f"   timeouts {errors.group(1)}" if errors else "")
    )
    return ok


async def main(seconds: float, connections: int, use_wrk: bool, keys: bool) -> None:
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
                headers = {**form, "Idempotency-Key": f"key-{n}"} if keys else form
                return await connection.request(
                    "POST", "/v1/billing/meter_events", headers, body.encode()
                )

            if use_wrk:
                count = run_wrk(port, server.secret_key, seconds, connections, keys)
            else:
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
            # wrk stops without reading the answers still in flight: those events may be
            # stored though not counted as acknowledged, at most one per connection.
            slack = connections if use_wrk else 0
            exact = count <= total <= count + slack
            verdict = "exact" if exact else "MISMATCH"
            print(f"summaries add up to {total:,} for {count:,} acknowledged events: {verdict}")
            if not exact:
                raise SystemExit(1)
        finally:
            stop_server(server)


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--seconds", type=float, default=10.0)
    parser.add_argument("--connections", type=int, default=64)
    parser.add_argument("--wrk", action="store_true", help="use wrk as the load generator")
    parser.add_argument(
        "--idempotency-keys",
        action="store_true",
        help="send an Idempotency-Key with every request, as the Stripe SDKs do",
    )
    args = parser.parse_args()
    keyed = ", each with an Idempotency-Key" if args.idempotency_keys else ""
    print(f"v1 meter events on SQLite, {args.connections} connections, {args.seconds:.0f} s{keyed}")
    asyncio.run(main(args.seconds, args.connections, args.wrk, args.idempotency_keys))

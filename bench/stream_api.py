"""``POST /v2/billing/meter_event_stream``, 100 events per request, on a real ``meterd serve``.

Run: ``make bench-stream`` or
``.venv/bin/python bench/stream_api.py --seconds 20 --connections 32 64 [--preload N]``.
The server runs on a fresh temporary SQLite database (or ``--database URL``). Each run opens a
meter event session (``POST /v2/billing/meter_event_session``) and sends bodies of 100 events
with its token on N keep-alive connections, every identifier unique in the whole bench, the
events spread over 1,000 customers with value 1. The load generator shares the machine with the
server, so it is as light as it can be: wrk (C, bench/meter_event_stream.lua) when it is on
PATH, else this process (raw asyncio streams, bench/loadgen.py, not httpx, whose async pool
spends milliseconds per request at 32+ connections). Either way a body is one join of
precomputed pieces around the request number, so every identifier is unique.

Printed per run: events/s and requests/s (200 answers only), p50/p99 latency, the server's
largest RSS (VmRSS every 0.2 s, its writer process included), answers other than 200 by
status, and whether the summaries add up. Then ratios between the runs.

Exactness: every run has its own meter (its own event name), so its summaries hold only its
own events, whatever the time between runs. After the run, every one of the 1,000 customers'
summaries over the minute-aligned range covering the run is read and they are added up: with
value 1 the total is the number of events stored, which must equal 100 x the 200 answers
(nothing lost, nothing counted twice). 1,000 GETs take a second or two, and reading them all
leaves no customer unchecked. wrk stops with a request in flight on each connection and never
reads those answers, so with wrk the total may exceed the acknowledged events by up to 100 per
request still in flight at the end (counted exactly by the Lua script), and the report says
how many of them were stored.

``--preload N``: then the same runs on a database holding N events of history. On a second
fresh database (or on ``--database``, after its runs), the server stops; N events are loaded
straight through meterd's ingest code (the real tables, no HTTP) in batches of 10,000, received
two days ago so their identifiers are outside the 24-hour dedup window, and the identifiers
older than 24 hours are pruned, as the server would; then the server starts again. A fresh
database makes the history the only difference from the first runs, and puts its identifiers
first in arrival order (pruning may go by arrival order: history loaded behind the first runs'
identifiers could stay in the dedup set).
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import itertools
import json
import os
import random
import re
import secrets
import shutil
import statistics
import subprocess
import sys
import tempfile
import threading
import time
from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path

from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeRemainingColumn

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
from bench.databases import bench_database
from bench.loadgen import Connection
from meterd.ingest.writes import ingest
from meterd.metering.events import EventSubmission
from meterd.scope import Scope
from meterd.storage import open_store
from tests.conftest import RunningServer, run_meterd, start_server, stop_server

STREAM = "/v2/billing/meter_event_stream"
EVENTS = 100
CUSTOMERS = 1000
PERIOD = CUSTOMERS // EVENTS
"""Event i of request n goes to customer (n * EVENTS + i) % CUSTOMERS: PERIOD body templates."""
PRELOAD_BATCH = 10_000
DAY = 86400


@dataclass
class Load:
    """What the load generator saw: 200 answers, the others by status, latency."""

    ok: int
    seconds: float
    p50: float
    p99: float
    statuses: Counter[int] = field(default_factory=Counter)
    in_flight: int = 0
    errors: str = ""


@dataclass
class Run:
    label: str
    connections: int
    load: Load
    rss_kib: int
    stored: int

    @property
    def events_per_second(self) -> float:
        return self.load.ok * EVENTS / self.load.seconds

    @property
    def exact(self) -> bool:
        acknowledged = self.load.ok * EVENTS
        return acknowledged <= self.stored <= acknowledged + self.load.in_flight * EVENTS


class Server:
    """``meterd serve`` on a database, its output drained (a full pipe would stop it)."""

    workers = 1

    def __init__(self, url: str) -> None:
        extra = ("--workers", str(self.workers)) if self.workers > 1 else ()
        self.running: RunningServer = start_server(url, *extra)
        self.port = int(self.running.base_url.rsplit(":", 1)[1])
        self.pid = self.running.process.pid
        self.output: list[str] = []
        self._drain = threading.Thread(target=self._read, daemon=True)
        self._drain.start()

    def _read(self) -> None:
        stdout = self.running.process.stdout
        assert stdout is not None
        for line in stdout:
            self.output.append(line.rstrip())

    def stop(self) -> None:
        if self.running.process.returncode is not None:
            return
        stop_server(self.running)
        self._drain.join(timeout=5)
        if self.output:
            print("the server said:", *self.output[-20:], sep="\n  ")


class RssSampler:
    """The largest VmRSS of a process and its children (``--workers``, or a SQLite server's
    writer process), summed, read from /proc every 0.2 s on a thread."""

    def __init__(self, pid: int) -> None:
        self.pid = pid
        self.max_kib = 0
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._sample, daemon=True)

    def _sample(self) -> None:
        while True:
            try:
                total = sum(_rss_kib(pid) for pid in _process_tree(self.pid))
            except OSError:
                return
            self.max_kib = max(self.max_kib, total)
            if self._stop.wait(0.2):
                return

    def __enter__(self) -> RssSampler:
        self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._stop.set()
        self._thread.join()


def _process_tree(pid: int) -> list[int]:
    pids = [pid]
    for task in Path(f"/proc/{pid}/task").iterdir():
        for child in (task / "children").read_text().split():
            pids += _process_tree(int(child))
    return pids


def _rss_kib(pid: int) -> int:
    found = re.search(r"VmRSS:\s+(\d+) kB", Path(f"/proc/{pid}/status").read_text())
    return int(found.group(1)) if found else 0


def templates(event_name: str, run_id: str) -> list[list[bytes]]:
    """Body pieces: ``str(n).encode().join(templates[n % PERIOD])`` is request n's body."""
    opening = f'{{"event_name":"{event_name}","identifier":"{run_id}-'
    result = []
    for t in range(PERIOD):
        parts = ['{"events":[' + opening]
        for i in range(EVENTS):
            customer = (t * EVENTS + i) % CUSTOMERS
            tail = f'-{i}","payload":{{"stripe_customer_id":"cus_{customer}","value":"1"}}}}'
            parts.append(tail + ("," + opening if i < EVENTS - 1 else "]}"))
        result.append([part.encode() for part in parts])
    return result


async def drive(
    port: int, token: str, bodies: list[list[bytes]], seconds: float, connections: int
) -> Load:
    """This process as the load generator: each connection sends its next body on an answer."""
    headers = {"Authorization": f"Bearer {token}", "Content-Type": "application/json"}
    latencies: list[float] = []
    statuses: Counter[int] = Counter()
    counter = itertools.count()
    began = time.perf_counter()
    deadline = began + seconds

    async def worker() -> None:
        connection = await Connection.open("127.0.0.1", port)
        try:
            while time.perf_counter() < deadline:
                n = next(counter)
                body = str(n).encode().join(bodies[n % PERIOD])
                started = time.perf_counter()
                status, _ = await connection.request("POST", STREAM, headers, body)
                latencies.append(time.perf_counter() - started)
                statuses[status] += 1
        finally:
            await connection.close()

    await asyncio.gather(*(worker() for _ in range(connections)))
    elapsed = time.perf_counter() - began
    ok = statuses.pop(200, 0)
    quantiles = statistics.quantiles(latencies, n=100) if len(latencies) > 1 else [0.0] * 99
    return Load(ok, elapsed, quantiles[49], quantiles[98], statuses)


def run_wrk(
    port: int, token: str, event_name: str, run_id: str, seconds: float, connections: int
) -> Load:
    """wrk as the load generator; its Lua script counts the answers by status."""
    script = Path(__file__).with_name("meter_event_stream.lua")
    result = subprocess.run(
        [
            *("wrk", "-t2", f"-c{connections}", f"-d{seconds:.0f}s", "--latency"),
            # wrk leaves answers slower than --timeout (2 s) out of its latency figures.
            *("--timeout", "60s", "-s", str(script), f"http://127.0.0.1:{port}{STREAM}"),
        ],
        env={
            **os.environ,
            "METERD_BENCH_TOKEN": token,
            "METERD_BENCH_EVENT": event_name,
            "METERD_BENCH_RUN": run_id,
        },
        capture_output=True,
        text=True,
        check=True,
    )
    found = re.search(r"^meterd-stream (.*)$", result.stdout, re.MULTILINE)
    if found is None:
        raise RuntimeError(f"no result line from wrk:\n{result.stdout}\n{result.stderr}")
    fields = dict(item.split("=", 1) for item in found.group(1).split())
    statuses: Counter[int] = Counter()
    for item in filter(None, fields["statuses"].split(",")):
        status, count = item.split(":")
        statuses[int(status)] += int(count)
    ok = int(fields["ok"])
    # request() ran once more than requests were sent: wrk checks the script with one call.
    in_flight = max(0, int(fields["sent"]) - 1 - ok - sum(statuses.values()))
    errors = ", ".join(e for e in fields["errors"].split(",") if not e.endswith(":0"))
    return Load(
        ok,
        int(fields["duration_us"]) / 1e6,
        int(fields["p50_us"]) / 1e6,
        int(fields["p99_us"]) / 1e6,
        statuses,
        in_flight,
        errors,
    )


async def call(
    port: int, method: str, path: str, headers: dict[str, str], body: bytes = b""
) -> dict[str, object]:
    connection = await Connection.open("127.0.0.1", port)
    try:
        status, answer = await connection.request(method, path, headers, body)
    finally:
        await connection.close()
    if status != 200:
        raise RuntimeError(f"{method} {path}: {status} {answer!r}")
    return json.loads(answer)  # type: ignore[no-any-return]


async def create_meter(port: int, secret: str, event_name: str) -> str:
    form = {
        "Authorization": f"Bearer {secret}",
        "Content-Type": "application/x-www-form-urlencoded",
    }
    body = f"display_name=Stream&event_name={event_name}&default_aggregation[formula]=sum"
    meter = await call(port, "POST", "/v1/billing/meters", form, body.encode())
    return str(meter["id"])


async def open_session(port: int, secret: str) -> str:
    headers = {"Authorization": f"Bearer {secret}", "Content-Type": "application/json"}
    session = await call(port, "POST", "/v2/billing/meter_event_session", headers, b"{}")
    return str(session["authentication_token"])


async def stored_events(
    port: int, secret: str, meter_id: str, start: int, end: int, customers: int = CUSTOMERS
) -> int:
    """The customers' summaries over [start, end), added up: the events stored (value 1)."""
    auth = {"Authorization": f"Bearer {secret}"}
    connection = await Connection.open("127.0.0.1", port)
    total = 0
    try:
        for customer in range(customers):
            path = (
                f"/v1/billing/meters/{meter_id}/event_summaries?customer=cus_{customer}"
                f"&start_time={start}&end_time={end}"
            )
            status, body = await connection.request("GET", path, auth)
            if status != 200:
                raise RuntimeError(f"GET {path}: {status} {body!r}")
            total += json.loads(body)["data"][0]["aggregated_value"]
    finally:
        await connection.close()
    return total


async def measure(
    server: Server,
    secret: str,
    label: str,
    run_id: str,
    seconds: float,
    connections: int,
    use_wrk: bool,
) -> Run:
    event_name = f"stream_{run_id}"
    meter_id = await create_meter(server.port, secret, event_name)
    token = await open_session(server.port, secret)
    started = int(time.time())
    with RssSampler(server.pid) as rss:
        if use_wrk:
            load = run_wrk(server.port, token, event_name, run_id, seconds, connections)
        else:
            load = await drive(
                server.port, token, templates(event_name, run_id), seconds, connections
            )
        if load.in_flight:  # let the requests wrk left behind finish before counting
            await asyncio.sleep(max(1.0, 2 * load.p99))
    start, end = started - started % 60, int(time.time()) // 60 * 60 + 60
    stored = await stored_events(server.port, secret, meter_id, start, end)
    run = Run(label, connections, load, rss.max_kib, stored)
    print_run(run)
    return run


def print_run(run: Run) -> None:
    load = run.load
    others = ", ".join(f"{count:,} x {status}" for status, count in sorted(load.statuses.items()))
    print(
        f"{run.label}, {run.connections} connections: {run.events_per_second:>9,.0f} events/s  "
        f"{load.ok / load.seconds:>7,.1f} req/s  p50 {load.p50 * 1000:7.1f} ms  "
        f"p99 {load.p99 * 1000:7.1f} ms  max RSS {run.rss_kib / 1024:6.1f} MiB"
    )
    acknowledged = load.ok * EVENTS
    print(f"  {load.ok:,} answers 200 ({acknowledged:,} events) in {load.seconds:.1f} s", end="")
    print(f"; other answers: {others or 'none'}", end="")
    print(f"; socket errors: {load.errors}" if load.errors else "")
    if load.in_flight:
        print(
            f"  {load.in_flight} requests in flight at the end (wrk never read their answers): "
            f"{run.stored - acknowledged:,} of their {load.in_flight * EVENTS:,} events stored"
        )
    verdict = "exact: nothing lost, nothing counted twice" if run.exact else "MISMATCH"
    print(f"  summaries of all {CUSTOMERS:,} customers add up to {run.stored:,}: {verdict}")


async def preload(url: str, count: int, event_name: str, tag: str, created: int) -> None:
    """``count`` events received two days ago, through meterd's ingest, in the real tables."""
    store = await open_store(url)
    try:
        account = await store.first_account()
        assert account is not None, "the server created no account"
        scope = Scope(account.id, livemode=False)
        rng = random.Random(0)
        began = time.perf_counter()
        columns = [
            TextColumn("preload"),
            BarColumn(),
            MofNCompleteColumn(),
            TextColumn("{task.fields[rate]}"),
            TimeRemainingColumn(),
        ]
        with Progress(*columns) as progress:
            task = progress.add_task("preload", total=count, rate="")
            for first in range(0, count, PRELOAD_BATCH):
                batch = [
                    EventSubmission(
                        scope=scope,
                        event_name=event_name,
                        identifier=f"{tag}-history-{n}",
                        payload={"stripe_customer_id": f"cus_{n % CUSTOMERS}", "value": "1"},
                        timestamp=created - rng.randrange(300),
                        created=created,
                        origin="stream",
                    )
                    for n in range(first, min(first + PRELOAD_BATCH, count))
                ]
                await store.transact(lambda tx, b=batch: ingest(tx, b))  # type: ignore[misc]
                done = first + len(batch)
                rate = f"{done / (time.perf_counter() - began):,.0f} events/s"
                progress.update(task, completed=done, rate=rate)
        took = time.perf_counter() - began
        pruned = await store.prune_event_identifiers(int(time.time()) - DAY)
    finally:
        await store.close()
    print(
        f"preloaded {count:,} events (received 2 days ago) in {took:.1f} s: "
        f"{count / took:,.0f} events/s; pruned {pruned:,} identifiers older than 24 hours"
    )
    if pruned < count:
        print(f"  note: {count - pruned:,} preloaded identifiers were not pruned")


def print_ratios(runs: list[Run]) -> None:
    def times(new: float, old: float) -> str:
        return f"x{new / old:.2f}" if old else "n/a"

    def ratio(new: Run, old: Run) -> str:
        return (
            f"events/s {times(new.events_per_second, old.events_per_second)}  "
            f"p50 {times(new.load.p50, old.load.p50)}  p99 {times(new.load.p99, old.load.p99)}  "
            f"max RSS {times(new.rss_kib, old.rss_kib)}"
        )

    labels = list(dict.fromkeys(run.label for run in runs))
    lines = []
    for label in labels:
        same = [run for run in runs if run.label == label]
        for run in same[1:]:
            lines.append(
                f"  {label}: {run.connections} / {same[0].connections} connections: "
                f"{ratio(run, same[0])}"
            )
    for label in labels[1:]:
        for run in runs:
            if run.label != label:
                continue
            base = next(
                r for r in runs if r.label == labels[0] and r.connections == run.connections
            )
            lines.append(
                f"  {label} / {labels[0]}, {run.connections} connections: {ratio(run, base)}"
            )
    if lines:
        print("ratios:", *lines, sep="\n")


def new_secret(url: str) -> str:
    """A new test key of the database's first account (the server prints one only once)."""
    return run_meterd("keys", "create", "--mode", "test", "--database", url).stdout.split()[-1]


async def main(
    database: str | None,
    folder: str,
    seconds: float,
    connections: list[int],
    use_wrk: bool,
    preload_events: int,
) -> None:
    tag = secrets.token_hex(3)
    url = database or f"sqlite:///{folder}/stream.db"
    server = Server(url)
    label = "empty database" if server.running.secret_key else "database"
    secret = server.running.secret_key or new_secret(url)
    runs: list[Run] = []
    try:
        for phase in range(2 if preload_events else 1):
            if phase:
                if database is None:
                    # A fresh database again, so the history is all that differs (and its
                    # identifiers come first in arrival order, the order pruning may go by).
                    server.stop()
                    url = f"sqlite:///{folder}/stream-preloaded.db"
                    server = Server(url)
                    secret = server.running.secret_key
                history = f"stream_{tag}_history"
                meter_id = await create_meter(server.port, secret, history)
                server.stop()
                created = int(time.time()) - 2 * DAY
                await preload(url, preload_events, history, tag, created)
                server = Server(url)
                # A spot check that the server sees the history: customer cus_0's events.
                start = created - created % 3600 - 3600
                found = await stored_events(server.port, secret, meter_id, start, start + 7200, 1)
                expected = len(range(0, preload_events, CUSTOMERS))
                if found != expected:
                    raise RuntimeError(f"history of cus_0: {found:,} events, not {expected:,}")
                label = f"{preload_events:,} preloaded"
            for n in connections:
                run_id = f"{tag}p{phase}c{n}"
                runs.append(await measure(server, secret, label, run_id, seconds, n, use_wrk))
    finally:
        server.stop()
    print_ratios(runs)
    if not all(run.exact for run in runs):
        raise SystemExit(1)


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--seconds", type=float, default=20.0)
    parser.add_argument("--connections", type=int, nargs="+", default=[32, 64])
    generator = parser.add_mutually_exclusive_group()
    generator.add_argument("--wrk", action="store_true", help="use wrk (the default on PATH)")
    generator.add_argument("--python", action="store_true", help="use this process, not wrk")
    parser.add_argument(
        "--preload", type=int, default=0, metavar="N", help="then again with N events of history"
    )
    parser.add_argument(
        "--database",
        help="a sqlite:/// or postgresql:// URL (default: fresh temporary SQLite files)",
    )
    parser.add_argument(
        "--fresh-schema",
        action="store_true",
        help="with a postgresql:// --database: run in a new schema, dropped afterwards",
    )
    parser.add_argument(
        "--workers", type=int, default=1, help="meterd serve --workers N (PostgreSQL)"
    )
    args = parser.parse_args()
    Server.workers = args.workers
    wrk = not args.python and (args.wrk or shutil.which("wrk") is not None)
    if wrk and shutil.which("wrk") is None:
        parser.error("wrk is not on PATH")
    backend = "PostgreSQL" if (args.database or "").startswith("postgres") else "SQLite"
    processes = f", {args.workers} server processes" if args.workers > 1 else ""
    print(
        f"v2 meter event stream on {backend}{processes}, {EVENTS} events per request, "
        f"{' and '.join(map(str, args.connections))} connections, {args.seconds:.0f} s each, "
        f"load from {'wrk' if wrk else 'Python asyncio'}"
    )
    with contextlib.ExitStack() as stack:
        folder = stack.enter_context(tempfile.TemporaryDirectory())
        database = args.database
        if args.fresh_schema:
            database = stack.enter_context(bench_database(args.database, folder, "stream"))
        asyncio.run(main(database, folder, args.seconds, args.connections, wrk, args.preload))

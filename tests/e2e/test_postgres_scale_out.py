"""Scale-out on PostgreSQL: several ``meterd serve`` processes sharing one database.

Two separate servers on one fresh schema (and, at the end, one ``meterd serve --workers 2``
process group) take the same account's traffic at once. Whatever process an event, a duplicate,
an Idempotency-Key or a cancellation reaches, the database decides: every identifier counts
once, every key runs once, every cancellation is exact. Expected totals are computed from what
the test sent, never read back from the servers.
"""

from __future__ import annotations

import concurrent.futures
import contextlib
import os
import random
import signal
import subprocess
import sys
import threading
import time
from collections import defaultdict
from collections.abc import Iterator, Sequence
from dataclasses import dataclass, field
from decimal import Decimal
from pathlib import Path
from typing import Any

import pytest
import stripe

from tests.conftest import (
    POSTGRES_SKIP_REASON,
    POSTGRES_URL,
    RunningServer,
    free_port,
    fresh_database,
    sdk_client,
    start_server,
    stop_server,
)
from tests.e2e.support import new_meter, total, unique

pytestmark = pytest.mark.skipif(not POSTGRES_URL, reason=POSTGRES_SKIP_REASON)

THREADS = 8
V1_DUPLICATE = "An event already exists with identifier"


# --- servers ------------------------------------------------------------------------------------


@dataclass
class Cluster:
    """Servers on one database, all used with the one account the first server created."""

    servers: list[RunningServer]
    key: str
    clients: list[stripe.StripeClient] = field(init=False)
    tokens: list[str] = field(init=False)

    def __post_init__(self) -> None:
        self.clients = [sdk_client(s.base_url, self.key) for s in self.servers]
        # One session per server; every token is used on every server (sessions are rows).
        self.tokens = [
            c.v2.billing.meter_event_session.create().authentication_token for c in self.clients
        ]

    def stream(self, server: int, token: int) -> stripe.StripeClient:
        return stream_client(self.servers[server].base_url, self.tokens[token])


def stream_client(base_url: str, token: str) -> stripe.StripeClient:
    return stripe.StripeClient(
        token,
        base_addresses={"api": base_url, "meter_events": base_url},
        max_network_retries=0,
    )


@pytest.fixture(scope="module")
def cluster(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Cluster]:
    """Two ``meterd serve`` processes on one fresh schema: the first creates the account and
    prints its key; the second finds the account there and prints none."""
    with fresh_database("postgresql", tmp_path_factory.mktemp("scale_out")) as url:
        first = start_server(url)
        try:
            assert first.secret_key.startswith("sk_test_")
            second = start_server(url)
            try:
                assert second.secret_key == "", "the second process made another account"
                assert second.process.poll() is None and first.process.poll() is None
                yield Cluster([first, second], first.secret_key)
            finally:
                stop_server(second)
        finally:
            stop_server(first)


# --- traffic ------------------------------------------------------------------------------------


@dataclass(frozen=True)
class Item:
    """One identifier, always sent with the same meter, customer and value."""

    id: str
    event_name: str
    customer: str
    value: int

    def payload(self) -> dict[str, str]:
        return {"stripe_customer_id": self.customer, "value": str(self.value)}

    def params(self) -> dict[str, Any]:
        return {"event_name": self.event_name, "payload": self.payload(), "identifier": self.id}


@dataclass
class Send:
    """One request: a v1 or v2 event (one item) or a stream batch (several), to one server."""

    kind: str  # "v1", "v2" or "stream"
    server: int
    items: list[Item]
    token: int = 0
    barrier: threading.Barrier | None = None
    outcome: str = ""


def deliver(cluster: Cluster, send: Send) -> Send:
    """Send it (after meeting its racing partner, if it has one); record ``ok`` or
    ``duplicate``; anything else fails the test."""
    if send.barrier is not None:
        with contextlib.suppress(threading.BrokenBarrierError):
            send.barrier.wait(timeout=10)
    client = cluster.clients[send.server]
    try:
        if send.kind == "stream":
            events = [{"event_name": i.event_name, "payload": i.payload(), "identifier": i.id}
                      for i in send.items]  # fmt: skip
            stream = cluster.stream(send.server, send.token)
            stream.v2.billing.meter_event_stream.create(params={"events": events})  # type: ignore[typeddict-item]
        elif send.kind == "v1":
            [item] = send.items
            created = client.v1.billing.meter_events.create(item.params())  # type: ignore[arg-type]
            assert created.identifier == item.id
            assert created.payload.to_dict() == item.payload()
        else:
            [item] = send.items
            made = client.v2.billing.meter_events.create(item.params())  # type: ignore[arg-type]
            assert made.identifier == item.id
        send.outcome = "ok"
    except stripe.StripeError as error:
        body: Any = error.json_body or {}
        problem = body.get("error", {})
        assert error.http_status == 400, f"{send.kind} to server {send.server}: {body}"
        if send.kind == "v1":
            assert problem.get("message", "").startswith(V1_DUPLICATE), problem
            assert problem.get("code") == "resource_already_exists", problem
        else:
            assert problem.get("code") == "duplicate_meter_event", problem
        send.outcome = "duplicate"
    return send


def run_all(cluster: Cluster, sends: Sequence[Send]) -> list[Send]:
    """Send everything on :data:`THREADS` threads, in order: the two halves of a racing pair
    are adjacent, so two threads take them together and meet at their barrier."""
    with concurrent.futures.ThreadPoolExecutor(THREADS) as pool:
        return list(pool.map(lambda s: deliver(cluster, s), sends, timeout=60))


def make_items(event_names: Sequence[str], customers: Sequence[str], count: int) -> list[Item]:
    """``count`` identifiers spread evenly over every (meter, customer), random values."""
    rng = random.Random(count)
    return [
        Item(
            unique("id"),
            event_names[n % len(event_names)],
            customers[(n // len(event_names)) % len(customers)],
            rng.randint(1, 50),
        )
        for n in range(count)
    ]


def racing_pairs(items: Sequence[Item], servers: int, rng: random.Random) -> list[Send]:
    """Every item in two sends at once, to two different servers (when there are two).

    Units cycle v1, v2, stream (batches of 5). A v1 or v2 event's twin is sometimes of the
    other API or inside a stream batch; a stream batch's twin has its items reversed, one of
    them twice, so that the batch also holds a duplicate of itself."""
    sends: list[Send] = []
    rest = list(items)
    turn = 0
    while rest:
        kind = ("v1", "v2", "stream")[turn % 3]
        size = 5 if kind == "stream" else 1
        unit, rest = rest[:size], rest[size:]
        first = turn % servers
        other = (first + 1) % servers
        barrier = threading.Barrier(2)
        if kind == "stream":
            twin = Send("stream", other, [*reversed(unit), unit[0]], token=first)
        else:
            twin_kind = (kind, "v1" if kind == "v2" else "v2", "stream")[rng.randrange(3)]
            twin = Send(twin_kind, other, list(unit), token=other)
        twin.barrier = barrier
        sends += [Send(kind, first, list(unit), token=other, barrier=barrier), twin]
        turn += 1
    return sends


def resends(items: Sequence[Item], servers: int, rng: random.Random) -> list[Send]:
    """Every item once more, by a random API to a random server, shuffled; stream batches mix
    meters and customers."""
    shuffled = list(items)
    rng.shuffle(shuffled)
    sends: list[Send] = []
    while shuffled:
        kind = rng.choice(["v1", "v2", "stream"])
        size = rng.randint(2, 10) if kind == "stream" else 1
        unit, shuffled = shuffled[:size], shuffled[size:]
        sends.append(Send(kind, rng.randrange(servers), unit, token=rng.randrange(servers)))
    return sends


def expected_totals(items: Sequence[Item]) -> dict[tuple[str, str], tuple[int, int]]:
    """(event name, customer) -> (sum of values, number of identifiers), from what was sent."""
    sums: dict[tuple[str, str], int] = defaultdict(int)
    counts: dict[tuple[str, str], int] = defaultdict(int)
    for item in {i.id: i for i in items}.values():
        sums[(item.event_name, item.customer)] += item.value
        counts[(item.event_name, item.customer)] += 1
    return {key: (sums[key], counts[key]) for key in sums}


def check_outcomes(phase_one: Sequence[Send], phase_two: Sequence[Send]) -> None:
    """Racing twins of v1/v2 events: exactly one of the two counted. Resends after the race:
    every single event is a duplicate, whichever server and API it reaches."""
    singles: dict[str, list[str]] = defaultdict(list)
    streamed: set[str] = set()
    for send in phase_one:
        assert send.outcome in ("ok", "duplicate")
        for item in send.items:
            if send.kind == "stream":
                streamed.add(item.id)
                assert send.outcome == "ok"
            else:
                singles[item.id].append(send.outcome)
    for identifier, outcomes in singles.items():
        if identifier in streamed:
            assert outcomes.count("ok") <= 1, (identifier, outcomes)
        else:
            assert sorted(outcomes) == ["duplicate", "ok"], (identifier, outcomes)
    for send in phase_two:
        expected = "ok" if send.kind == "stream" else "duplicate"
        assert send.outcome == expected, (send.kind, send.server, [i.id for i in send.items])


def check_totals(
    clients: Sequence[stripe.StripeClient],
    meters: dict[str, tuple[str, str]],
    customers: Sequence[str],
    items: Sequence[Item],
) -> None:
    """Each meter's summary for each customer, through every server, is the sum (or count) of
    the distinct identifiers sent to it."""
    expected = expected_totals(items)
    for event_name, (meter_id, formula) in meters.items():
        for customer in customers:
            value_sum, count = expected[(event_name, customer)]
            want = Decimal(value_sum if formula == "sum" else count)
            for number, client in enumerate(clients):
                got = total(client, meter_id, customer)
                assert got == want, (formula, customer, f"server {number}", got, want)


def traffic(cluster: Cluster, item_count: int, seed: int) -> None:
    """Two meters (sum, count), four customers, ``item_count`` identifiers: every one raced
    on two servers, then resent once more; then the totals."""
    creator = cluster.clients[0]
    meters = {}
    for formula in ("sum", "count"):
        meter = new_meter(creator, formula)
        meters[meter.event_name] = (meter.id, formula)
    customers = [unique("cus") for _ in range(4)]
    items = make_items(list(meters), customers, item_count)
    rng = random.Random(seed)
    servers = len(cluster.servers)
    phase_one = run_all(cluster, racing_pairs(items, servers, rng))
    phase_two = run_all(cluster, resends(items, servers, rng))
    check_outcomes(phase_one, phase_two)
    check_totals(cluster.clients, meters, customers, items)


# --- two servers ----------------------------------------------------------------------------------


def test_both_servers_serve_one_account_and_see_each_others_meters(cluster: Cluster) -> None:
    a, b = cluster.clients
    meter = new_meter(a)
    assert b.v1.billing.meters.retrieve(meter.id).event_name == meter.event_name
    other = new_meter(b)
    assert a.v1.billing.meters.retrieve(other.id).event_name == other.event_name
    assert meter.id != other.id


def test_racing_duplicates_on_two_servers_count_once(cluster: Cluster) -> None:
    traffic(cluster, item_count=300, seed=1)


# --- Idempotency-Key ------------------------------------------------------------------------------


@dataclass
class Answer:
    status: int
    meter_id: str = ""
    replayed: bool = False
    error: dict[str, Any] = field(default_factory=dict)


def create_meter(
    client: stripe.StripeClient, params: dict[str, Any], key: str, barrier: threading.Barrier
) -> Answer:
    with contextlib.suppress(threading.BrokenBarrierError):
        barrier.wait(timeout=10)
    try:
        meter = client.v1.billing.meters.create(params, options={"idempotency_key": key})  # type: ignore[arg-type]
    except stripe.StripeError as error:
        body: Any = error.json_body or {}
        return Answer(error.http_status or 0, error=body.get("error", {}))
    assert meter.last_response is not None
    replayed = meter.last_response.headers.get("Idempotent-Replayed") == "true"
    return Answer(200, meter.id, replayed)


def meter_params(event_name: str) -> dict[str, Any]:
    return {
        "display_name": "Raced",
        "event_name": event_name,
        "default_aggregation": {"formula": "sum"},
    }


def race(
    cluster: Cluster, rounds: list[tuple[str, dict[str, Any], dict[str, Any]]]
) -> list[tuple[Answer, Answer]]:
    """Each round: one key, its two params POSTed at once, to server 0 and to server 1."""
    a, b = cluster.clients
    with concurrent.futures.ThreadPoolExecutor(THREADS) as pool:
        futures = []
        for key, first, second in rounds:
            barrier = threading.Barrier(2)
            futures.append(
                (
                    pool.submit(create_meter, a, first, key, barrier),
                    pool.submit(create_meter, b, second, key, barrier),
                )
            )
        return [(x.result(timeout=60), y.result(timeout=60)) for x, y in futures]


def listed_meters(client: stripe.StripeClient) -> dict[str, list[str]]:
    """Every meter of the account, by event name."""
    found: dict[str, list[str]] = defaultdict(list)
    for meter in client.v1.billing.meters.list({"limit": 100}).auto_paging_iter():
        found[meter.event_name].append(meter.id)
    return found


def test_one_idempotency_key_raced_on_two_servers_creates_one_meter(cluster: Cluster) -> None:
    rounds = []
    for _ in range(40):
        params = meter_params(unique("ev"))
        rounds.append((unique("idem"), params, params))
    answers = race(cluster, rounds)
    listed = [listed_meters(client) for client in cluster.clients]
    assert listed[0] == listed[1]
    for (_, params, _), pair in zip(rounds, answers, strict=True):
        won = [answer for answer in pair if answer.status == 200]
        lost = [answer for answer in pair if answer.status != 200]
        assert won, pair
        assert len({answer.meter_id for answer in won}) == 1, pair
        # Exactly one request ran the handler; any other 200 is its replay.
        assert [answer.replayed for answer in won].count(False) == 1, pair
        for answer in lost:
            assert answer.status == 400, pair
            assert answer.error["type"] == "idempotency_error", pair
            assert "in-progress" in answer.error["message"], pair
            assert answer.error.get("code") == "idempotency_key_in_use", pair
        assert listed[0][params["event_name"]] == [won[0].meter_id]


def test_one_idempotency_key_with_two_params_raced_on_two_servers_runs_one(
    cluster: Cluster,
) -> None:
    rounds = [
        (unique("idem"), meter_params(unique("ev")), meter_params(unique("ev"))) for _ in range(16)
    ]
    answers = race(cluster, rounds)
    listed = listed_meters(cluster.clients[1])
    for (key, first, second), pair in zip(rounds, answers, strict=True):
        [won] = [(n, answer) for n, answer in enumerate(pair) if answer.status == 200]
        [lost] = [answer for answer in pair if answer.status != 200]
        number, winner = won
        assert not winner.replayed
        assert lost.status == 400 and lost.error["type"] == "idempotency_error", pair
        assert key in lost.error["message"] and "same parameters" in lost.error["message"]
        made, refused = (first, second) if number == 0 else (second, first)
        assert listed[made["event_name"]] == [winner.meter_id]
        assert refused["event_name"] not in listed


def test_one_idempotency_key_on_an_event_raced_on_two_servers_counts_once(
    cluster: Cluster,
) -> None:
    """v1 events without an identifier: the server makes one up, so only the key keeps the
    second request from counting again; the replay carries the first one's identifier."""
    meter = new_meter(cluster.clients[0])
    customer = unique("cus")
    values = list(range(1, 21))

    def post(server: int, key: str, value: int, barrier: threading.Barrier) -> tuple[str, bool]:
        with contextlib.suppress(threading.BrokenBarrierError):
            barrier.wait(timeout=10)
        created = cluster.clients[server].v1.billing.meter_events.create(
            {
                "event_name": meter.event_name,
                "payload": {"stripe_customer_id": customer, "value": str(value)},
            },
            options={"idempotency_key": key},
        )
        assert created.last_response is not None
        replayed = created.last_response.headers.get("Idempotent-Replayed") == "true"
        return created.last_response.body, replayed

    with concurrent.futures.ThreadPoolExecutor(THREADS) as pool:
        pairs = []
        for value in values:
            key, barrier = unique("idem"), threading.Barrier(2)
            pairs.append([pool.submit(post, server, key, value, barrier) for server in (0, 1)])
        results = [[f.result(timeout=60) for f in pair] for pair in pairs]
    for (first_body, first_replayed), (second_body, second_replayed) in results:
        assert first_body == second_body
        assert sorted([first_replayed, second_replayed]) == [False, True]
    for client in cluster.clients:
        assert total(client, meter.id, customer) == sum(values)


# --- cancellations --------------------------------------------------------------------------------


def test_events_sent_to_one_server_are_cancelled_through_the_other(cluster: Cluster) -> None:
    """Events go to one server (v1, or a stream batch), and their cancellations to the other
    right after, on many threads at once; some are cancelled on both servers at once; a
    cancelled identifier stays taken on both."""
    meters = {}
    for formula in ("sum", "count"):
        meter = new_meter(cluster.clients[0], formula)
        meters[meter.event_name] = (meter.id, formula)
    customers = [unique("cus") for _ in range(2)]
    items = make_items(list(meters), customers, 96)
    rng = random.Random(4)
    cancelled = set(rng.sample([i.id for i in items], 48))
    twice = set(rng.sample(sorted(cancelled), 12))

    def cancel(server: int, item: Item) -> None:
        adjustment = cluster.clients[server].v1.billing.meter_event_adjustments.create(
            {"event_name": item.event_name, "type": "cancel", "cancel": {"identifier": item.id}}
        )
        assert adjustment.status == "complete"
        assert adjustment.cancel is not None and adjustment.cancel.identifier == item.id

    def send_then_cancel(number: int, unit: list[Item]) -> None:
        sender = number % 2
        if len(unit) == 1:
            assert deliver(cluster, Send("v1", sender, unit)).outcome == "ok"
        else:
            assert deliver(cluster, Send("stream", sender, unit, token=1 - sender)).outcome == "ok"
        for item in unit:
            if item.id in twice:
                with concurrent.futures.ThreadPoolExecutor(2) as both:
                    for done in [both.submit(cancel, server, item) for server in (0, 1)]:
                        done.result(timeout=30)
            elif item.id in cancelled:
                cancel(1 - sender, item)

    units: list[list[Item]] = []
    rest = list(items)
    while rest:
        size = 1 if len(units) % 2 == 0 else 4
        units.append(rest[:size])
        rest = rest[size:]
    with concurrent.futures.ThreadPoolExecutor(THREADS) as pool:
        for done in [pool.submit(send_then_cancel, n, unit) for n, unit in enumerate(units)]:
            done.result(timeout=60)

    kept = [item for item in items if item.id not in cancelled]
    check_totals(cluster.clients, meters, customers, kept)
    resent = [Send("v1", n % 2, [i]) for n, i in enumerate(items) if i.id in cancelled]
    assert {s.outcome for s in run_all(cluster, resent)} == {"duplicate"}
    check_totals(cluster.clients, meters, customers, kept)


# --- meterd serve --workers -----------------------------------------------------------------------


def worker_processes(pid: int) -> list[int]:
    """The server processes uvicorn spawned under ``pid`` (not its resource tracker)."""
    children: list[int] = []
    for task in Path(f"/proc/{pid}/task").iterdir():
        children += [int(c) for c in (task / "children").read_text().split()]
    return [child for child in children if "spawn_main" in command_line(child)]


def command_line(pid: int) -> str:
    try:
        return Path(f"/proc/{pid}/cmdline").read_bytes().replace(b"\0", b" ").decode()
    except (FileNotFoundError, ProcessLookupError):
        return ""


def cpu_ticks(pid: int) -> int:
    """User plus system CPU time the process has used, in clock ticks."""
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return int(fields[11]) + int(fields[12])


def test_one_process_group_with_two_workers_counts_exactly(
    tmp_path_factory: pytest.TempPathFactory,
) -> None:
    with fresh_database("postgresql", tmp_path_factory.mktemp("workers")) as url:
        server = start_server(url, "--workers", "2")
        workers: list[int] = []
        try:
            assert server.secret_key.startswith("sk_test_")
            workers = worker_processes(server.process.pid)
            assert len(workers) == 2, [command_line(pid) for pid in workers]
            # Both "servers" of this cluster are the one port: each thread's client keeps its
            # own connections, which the workers accept in turn.
            group = Cluster([server, server], server.secret_key)
            before = [cpu_ticks(pid) for pid in workers]
            traffic(group, item_count=120, seed=5)
            used = [cpu_ticks(pid) - ticks for pid, ticks in zip(workers, before, strict=True)]
            assert min(used) >= 3, f"a worker took no part in the traffic: {used} ticks"
            assert server.process.poll() is None
            assert worker_processes(server.process.pid) == workers
        finally:
            stop_server(server)
            deadline = time.monotonic() + 10
            while time.monotonic() < deadline and any(command_line(pid) for pid in workers):
                time.sleep(0.1)
            left = [pid for pid in workers if "spawn_main" in command_line(pid)]
            for pid in left:
                os.kill(pid, signal.SIGKILL)
        assert not left, "workers outlived their stopped server"


def test_workers_above_one_with_sqlite_exit_2_naming_postgresql(tmp_path: Path) -> None:
    database = tmp_path / "meterd.db"
    command = [sys.executable, "-m", "meterd", "serve", "--port", str(free_port())]
    result = subprocess.run(
        [*command, "--workers", "2", "--database", f"sqlite:///{database}"],
        capture_output=True,
        text=True,
        timeout=30,
        env={**os.environ, "COLUMNS": "200"},
    )
    assert result.returncode == 2, (result.stdout, result.stderr)
    assert "PostgreSQL" in result.stdout + result.stderr
    assert "listening on" not in result.stdout

"""Crash safety: ``kill -9`` the server under concurrent event traffic, restart it, retry.

Threads send v1 meter events, v2 meter events and meter event stream batches, each event with a
unique identifier and a distinct value, through SDK clients that never retry by themselves and
time out after a few seconds. At random moments the server gets SIGKILL and is restarted on the
same database. A request that got no answer (or a 5xx) is retried after the restart with the
same identifiers and values, as a client would, until an answer says the event is stored: a 2xx,
or the duplicate-identifier error of v1 / v2, which means an earlier attempt was committed
before the crash although its answer never arrived.

At the end, after one more SIGKILL and restart, every (meter, customer) total must equal exactly
the sum of the values of the events acknowledged: nothing acknowledged was lost, and no retry of
an event already stored was counted again. Values are distinct, so a loss cannot hide behind a
double count. The stream's session token, stored in the database, must keep working across
every restart.

These tests kill processes and take several seconds per backend: run them alone with
``-m crash``.
"""

from __future__ import annotations

import contextlib
import itertools
import os
import random
import threading
import time
from collections import Counter, defaultdict
from collections.abc import Iterator
from dataclasses import dataclass, field
from decimal import Decimal
from pathlib import Path
from typing import Any

import pytest
import stripe

from tests.conftest import RunningServer, database_rows, fresh_database, start_server
from tests.e2e.support import new_meter, total

pytestmark = pytest.mark.crash

CYCLES = int(os.environ.get("METERD_CRASH_CYCLES", "6"))
"""SIGKILLs under traffic per backend (one more comes before the final check); raise it for a
soak run that hunts narrower windows."""
KILL_DELAY = (0.3, 1.5)
"""Seconds of traffic before each SIGKILL, drawn at random."""
WORKERS_PER_CHANNEL = 3
STREAM_BATCH = 20
METERS = 2
CUSTOMERS = ("cus_crash_a", "cus_crash_b", "cus_crash_c")
HTTP_TIMEOUT_SECONDS = 5
RETRY_PAUSE_SECONDS = 0.05
DRAIN_ATTEMPTS = 20

V1_DUPLICATE = "resource_already_exists"
V2_DUPLICATE = "duplicate_meter_event"


# --- what is sent, and what came back --------------------------------------------------------


@dataclass(frozen=True)
class Event:
    identifier: str
    value: str
    meter: int
    customer: str


@dataclass
class Unit:
    """One request's worth of events: one for v1 and v2, a batch for the stream."""

    channel: str
    events: list[Event]
    attempts: int = 0
    failed_in: int = 0
    """The server generation whose request failed; retried once a later one is up."""


@dataclass
class Ledger:
    """Every identifier's fate, shared by the sending threads."""

    lock: threading.Lock = field(default_factory=threading.Lock)
    sent: dict[str, Event] = field(default_factory=dict)
    acknowledged: dict[str, Event] = field(default_factory=dict)
    channel_of: dict[str, str] = field(default_factory=dict)
    counts: Counter[str] = field(default_factory=Counter)
    unexpected: list[str] = field(default_factory=list)
    pending: list[Unit] = field(default_factory=list)
    """Units the threads still owed an answer when they stopped."""

    def count(self, name: str, amount: int = 1) -> None:
        with self.lock:
            self.counts[name] += amount

    def sending(self, unit: Unit) -> None:
        with self.lock:
            for event in unit.events:
                assert event.identifier not in self.sent
                self.sent[event.identifier] = event
                self.channel_of[event.identifier] = unit.channel
            self.counts[f"{unit.channel} events sent"] += len(unit.events)

    def stored(self, unit: Unit) -> None:
        with self.lock:
            for event in unit.events:
                assert event.identifier not in self.acknowledged, "acknowledged twice"
                self.acknowledged[event.identifier] = event

    def strange(self, message: str) -> None:
        with self.lock:
            if len(self.unexpected) < 50:
                self.unexpected.append(message)


class Values:
    """Distinct decimal values below 1: a running number (unique) and random digits after it,
    so that sums stay small and no loss and double count can cancel out."""

    def __init__(self, rng: random.Random) -> None:
        self._numbers = itertools.count(1)
        self._rng = rng
        self._lock = threading.Lock()

    def next(self) -> str:
        with self._lock:
            number = next(self._numbers)
            digits = self._rng.randrange(1000)
        assert number < 1_000_000
        return f"0.{number:06d}{digits:03d}"


@dataclass
class Target:
    """The server currently up; ``generation`` grows with every restart."""

    server: RunningServer
    generation: int = 1
    lock: threading.Lock = field(default_factory=threading.Lock)

    def now(self) -> tuple[int, RunningServer]:
        with self.lock:
            return self.generation, self.server

    def replace(self, server: RunningServer) -> None:
        with self.lock:
            self.server = server
            self.generation += 1


# --- clients and answers ---------------------------------------------------------------------


def short_client(base_url: str, key: str, http: stripe.RequestsClient) -> stripe.StripeClient:
    """No retries by the SDK, and a short timeout: a crash must show as a failed request."""
    return stripe.StripeClient(
        key,
        base_addresses={"api": base_url, "meter_events": base_url},
        max_network_retries=0,
        http_client=http,
    )


def new_http() -> stripe.RequestsClient:
    return stripe.RequestsClient(timeout=HTTP_TIMEOUT_SECONDS)


def error_code(exc: stripe.StripeError) -> str | None:
    body: Any = exc.json_body
    if isinstance(body, dict) and isinstance(body.get("error"), dict):
        code = body["error"].get("code")
        return str(code) if code is not None else None
    return None


def post(
    client: stripe.StripeClient,
    channel: str,
    unit: Unit,
    event_names: list[str],
) -> None:
    """Send ``unit`` on ``channel``; raises what the SDK raises."""
    if channel == "stream":
        events = [
            {
                "event_name": event_names[e.meter],
                "identifier": e.identifier,
                "payload": {"stripe_customer_id": e.customer, "value": e.value},
            }
            for e in unit.events
        ]
        # The stream answers ``{}``, which the SDK returns as None; an error raises.
        client.v2.billing.meter_event_stream.create(params={"events": events})  # type: ignore[typeddict-item]
        return
    [e] = unit.events
    params: Any = {
        "event_name": event_names[e.meter],
        "identifier": e.identifier,
        "payload": {"stripe_customer_id": e.customer, "value": e.value},
    }
    if channel == "v1":
        created: Any = client.v1.billing.meter_events.create(params)
    else:
        created = client.v2.billing.meter_events.create(params)
    assert created.identifier == e.identifier


def attempt(client: stripe.StripeClient, unit: Unit, event_names: list[str], ledger: Ledger) -> str:
    """Send ``unit`` once: "stored", "unanswered" (retry once the server restarted), "busy"
    (5xx or 429 from a live server: retry after a pause) or "unexpected"."""
    retry = unit.attempts > 0
    unit.attempts += 1
    if retry:
        ledger.count(f"{unit.channel} retries")
        ledger.count("events retried", len(unit.events))
    try:
        post(client, unit.channel, unit, event_names)
    except stripe.APIConnectionError:
        ledger.count("unanswered (connection error or timeout)")
        return "unanswered"
    except stripe.StripeError as exc:
        status = exc.http_status or 0
        code = error_code(exc)
        if status >= 500 or status == 429:
            ledger.count(f"answered {status}")
            return "busy"
        duplicate = {"v1": V1_DUPLICATE, "v2": V2_DUPLICATE}.get(unit.channel)
        if status == 400 and code == duplicate and retry:
            ledger.count(f"{unit.channel} retries found already stored")
            ledger.stored(unit)
            return "stored"
        ledger.strange(
            f"{unit.channel} attempt {unit.attempts} of {unit.events[0].identifier}: "
            f"{status} {code} {exc.user_message}"
        )
        return "unexpected"
    if retry:
        ledger.count(f"{unit.channel} retries stored now")
    ledger.stored(unit)
    return "stored"


# --- the sending threads ---------------------------------------------------------------------


@dataclass
class Traffic:
    target: Target
    secret_key: str
    token: str
    event_names: list[str]
    ledger: Ledger
    values: Values
    stop: threading.Event = field(default_factory=threading.Event)

    def __post_init__(self) -> None:
        self._serial = itertools.count(1)

    def client_for(self, channel: str, server: RunningServer, http: Any) -> stripe.StripeClient:
        key = self.token if channel == "stream" else self.secret_key
        return short_client(server.base_url, key, http)

    def new_unit(self, channel: str, rng: random.Random, prefix: str) -> Unit:
        size = STREAM_BATCH if channel == "stream" else 1
        events = [
            Event(
                identifier=f"{prefix}_{next(self._serial)}",
                value=self.values.next(),
                meter=rng.randrange(METERS),
                customer=rng.choice(CUSTOMERS),
            )
            for _ in range(size)
        ]
        unit = Unit(channel, events)
        self.ledger.sending(unit)
        return unit

    def run(self, channel: str, number: int, seed: int) -> None:
        """Send new units until told to stop; a unit that failed is retried first, once the
        server has restarted (or after a short pause, when a live server answered 5xx/429)."""
        rng = random.Random(seed)
        http = new_http()
        prefix = f"crash_{channel}{number}_{seed}"
        clients: dict[int, stripe.StripeClient] = {}
        owed: Unit | None = None
        try:
            while not self.stop.is_set():
                generation, server = self.target.now()
                if owed is not None and owed.failed_in == generation:
                    time.sleep(RETRY_PAUSE_SECONDS)
                    continue
                if generation not in clients:
                    clients = {generation: self.client_for(channel, server, http)}
                unit = owed if owed is not None else self.new_unit(channel, rng, prefix)
                outcome = attempt(clients[generation], unit, self.event_names, self.ledger)
                if outcome == "stored":
                    if channel == "stream" and generation > 1:
                        self.ledger.count("stream batches stored after a restart")
                    owed = None
                    continue
                owed = unit
                owed.failed_in = generation
                if outcome == "busy":  # a live server answered: retry after a pause
                    owed.failed_in = 0
                    time.sleep(RETRY_PAUSE_SECONDS)
        except BaseException as exc:  # pragma: no cover - reported by the test
            self.ledger.strange(f"{channel} thread {number} crashed: {exc!r}")
            raise
        finally:
            if owed is not None:
                with self.ledger.lock:
                    self.ledger.pending.append(owed)


# --- servers ---------------------------------------------------------------------------------


class Servers:
    """Every server started on the database, each with a thread draining its output (so a
    chatty server never blocks on a full pipe), all killed at the end whatever happens."""

    def __init__(self, url: str) -> None:
        self.url = url
        self.started: list[RunningServer] = []
        self.output: list[str] = []

    def start(self) -> RunningServer:
        server = start_server(self.url)
        self.started.append(server)
        generation = len(self.started)
        threading.Thread(target=self._drain, args=(server, generation), daemon=True).start()
        return server

    def _drain(self, server: RunningServer, generation: int) -> None:
        assert server.process.stdout is not None
        with contextlib.suppress(ValueError, OSError), server.process.stdout as output:
            for line in output:
                if len(self.output) < 200:
                    self.output.append(f"[server {generation}] {line.rstrip()}")

    @staticmethod
    def kill(server: RunningServer) -> None:
        if server.process.poll() is None:
            server.process.kill()
        server.process.wait(timeout=15)

    def kill_all(self) -> None:
        for server in self.started:
            with contextlib.suppress(Exception):
                self.kill(server)


@contextlib.contextmanager
def servers_on(backend: str, directory: Path) -> Iterator[Servers]:
    with fresh_database(backend, directory) as url:
        servers = Servers(url)
        try:
            yield servers
        finally:
            servers.kill_all()
            assert all(s.process.poll() is not None for s in servers.started)


# --- the test --------------------------------------------------------------------------------


def drain(traffic: Traffic, server: RunningServer) -> None:
    """Retry what the threads still owed, on the server now up, until it is stored."""
    clients = {
        channel: traffic.client_for(channel, server, new_http())
        for channel in ("v1", "v2", "stream")
    }
    for unit in traffic.ledger.pending:
        for _ in range(DRAIN_ATTEMPTS):
            if attempt(clients[unit.channel], unit, traffic.event_names, traffic.ledger) == (
                "stored"
            ):
                break
            time.sleep(RETRY_PAUSE_SECONDS)
        else:
            traffic.ledger.strange(f"{unit.channel} unit never stored: {unit.events[0]}")


def resend_after_restart(traffic: Traffic, server: RunningServer, rng: random.Random) -> int:
    """Send acknowledged events again, each on a channel drawn at random: every v1 or v2 answer
    must be the duplicate error (whichever channel stored the event first) and every stream
    batch must be taken (``{}``: the session token opened before all the crashes still works);
    the caller checks that none counted again."""
    ledger = traffic.ledger
    sample = rng.sample(sorted(ledger.acknowledged), min(150, len(ledger.acknowledged)))
    clients = {
        channel: traffic.client_for(channel, server, new_http())
        for channel in ("v1", "v2", "stream")
    }
    for identifier in sample[:100]:
        channel = rng.choice(("v1", "v2"))
        unit = Unit(channel, [ledger.acknowledged[identifier]], attempts=1)
        sent_first = f"{identifier} (acknowledged on {ledger.channel_of[identifier]})"
        try:
            post(clients[channel], channel, unit, traffic.event_names)
        except stripe.InvalidRequestError as refused:
            assert refused.http_status == 400
            assert error_code(refused) == {"v1": V1_DUPLICATE, "v2": V2_DUPLICATE}[channel], (
                f"{sent_first} sent again on {channel}: {refused.user_message}"
            )
        else:
            pytest.fail(f"{sent_first} was stored again on {channel} after the restart")
    rest = [ledger.acknowledged[identifier] for identifier in sample[100:]]
    for start in range(0, len(rest), STREAM_BATCH):
        batch = Unit("stream", rest[start : start + STREAM_BATCH])
        try:
            post(clients["stream"], "stream", batch, traffic.event_names)
        except stripe.StripeError as refused:
            pytest.fail(f"the first session's token after {ledger.counts['restarts']} restarts: "
                        f"{refused.http_status} {refused.user_message}")  # fmt: skip
    return len(sample)


def raw_event_check(url: str, ledger: Ledger) -> dict[str, list[Any]]:
    """The raw events straight from the database, against the ledger: what is missing, stored
    more than once, or stored without ever being acknowledged (all empty when all is well)."""
    rows = database_rows(url, "SELECT identifier, count(*) FROM meter_events GROUP BY identifier")
    found = {identifier: int(n) for identifier, n in rows}
    return {
        "acknowledged but missing": [i for i in ledger.acknowledged if i not in found],
        "stored more than once": [(i, n) for i, n in found.items() if n > 1],
        "stored but never acknowledged": [i for i in found if i not in ledger.acknowledged],
    }


def report(backend: str, seed: int, servers: Servers, ledger: Ledger, seconds: float) -> str:
    n = ledger.counts
    return (
        f"\n[{backend}] seed {seed}, {seconds:.1f} s: survived {len(servers.started) - 1} "
        f"SIGKILLs ({CYCLES} under traffic, 1 before the check)\n"
        f"  events sent and acknowledged: {len(ledger.acknowledged)} (v1 {n['v1 events sent']}, "
        f"v2 {n['v2 events sent']}, stream {n['stream events sent']} in batches of "
        f"{STREAM_BATCH})\n"
        f"  requests unanswered {n['unanswered (connection error or timeout)']}, answered "
        f"5xx/429 {sum(count for kind, count in n.items() if kind.startswith('answered'))}\n"
        f"  retried requests: v1 {n['v1 retries']}, v2 {n['v2 retries']}, stream "
        f"{n['stream retries']} ({n['events retried']} events); v1/v2 retries that found the "
        f"event stored before the crash: "
        f"{n['v1 retries found already stored'] + n['v2 retries found already stored']}, "
        f"stored by the retry: {n['v1 retries stored now'] + n['v2 retries stored now']}\n"
        f"  stream batches taken after a restart with the first session's token: "
        f"{n['stream batches stored after a restart']}"
    )


def test_sigkill_under_load_loses_nothing_and_counts_nothing_twice(
    backend: str, tmp_path: Path
) -> None:
    seed = random.randrange(1_000_000)
    rng = random.Random(seed)
    started = time.monotonic()
    with servers_on(backend, tmp_path) as servers:
        first = servers.start()
        assert first.secret_key, "meterd serve printed no key on an empty database"
        admin = short_client(first.base_url, first.secret_key, new_http())
        meters = [new_meter(admin) for _ in range(METERS)]
        session = admin.v2.billing.meter_event_session.create()
        traffic = Traffic(
            target=Target(first),
            secret_key=first.secret_key,
            token=session.authentication_token,
            event_names=[meter.event_name for meter in meters],
            ledger=Ledger(),
            values=Values(rng),
        )
        threads = [
            threading.Thread(
                target=traffic.run,
                args=(channel, number, rng.randrange(1_000_000)),
                name=f"crash-{channel}-{number}",
                daemon=True,
            )
            for channel in ("v1", "v2", "stream")
            for number in range(WORKERS_PER_CHANNEL)
        ]
        try:
            for thread in threads:
                thread.start()
            server = first
            for _ in range(CYCLES):
                time.sleep(rng.uniform(*KILL_DELAY))
                servers.kill(server)
                server = servers.start()
                assert not server.secret_key, "a restart must not create another account"
                traffic.target.replace(server)
                traffic.ledger.count("restarts")
            time.sleep(rng.uniform(*KILL_DELAY))  # the last restart's retries, under traffic
        finally:
            traffic.stop.set()
            for thread in threads:
                thread.join(timeout=2 * HTTP_TIMEOUT_SECONDS + 5)
        assert not any(thread.is_alive() for thread in threads)
        drain(traffic, server)

        servers.kill(server)
        server = servers.start()
        ledger = traffic.ledger
        ledger.count("restarts")
        assert not ledger.unexpected, "\n".join([*ledger.unexpected, *servers.output[-20:]])
        never = sorted(ledger.sent.keys() - ledger.acknowledged.keys())
        assert not never, f"{len(never)} events never stored, e.g. {never[:5]}"

        check = short_client(server.base_url, first.secret_key, new_http())
        expected: dict[tuple[int, str], Decimal] = defaultdict(Decimal)
        for event in ledger.acknowledged.values():
            expected[event.meter, event.customer] += Decimal(event.value)

        def summed() -> dict[tuple[int, str], Decimal]:
            return {
                (m, customer): total(check, meters[m].id, customer)
                for m in range(METERS)
                for customer in CUSTOMERS
            }

        print(report(backend, seed, servers, ledger, time.monotonic() - started))
        raw = raw_event_check(servers.url, ledger)
        summary = {kind: (len(items), items[:5]) for kind, items in raw.items()}
        assert summed() == expected, f"summaries differ from the acknowledged events: {summary}"
        assert not any(raw.values()), summary
        assert ledger.counts["stream batches stored after a restart"] > 0

        assert len(ledger.acknowledged) > 150, "too little traffic to resend a sample"
        resent = resend_after_restart(traffic, server, rng)
        assert summed() == expected, "acknowledged events sent again after the restart counted"
        print(f"  acknowledged events resent after the last restart: {resent}, none counted")

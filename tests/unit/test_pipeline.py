"""The group-commit ingest pipeline on a real SQLite store: batching, per-request outcomes,
back-pressure (429), failed commits, and draining on stop."""

from __future__ import annotations

import asyncio
from collections.abc import Callable, Coroutine
from pathlib import Path
from typing import Any, TypeVar

import msgspec
import pytest

from meterd import keys
from meterd.errors import RateLimitError
from meterd.ingest.pipeline import IngestPipeline
from meterd.ingest.writes import Accepted, Duplicate, Outcome, Rejected
from meterd.metering.events import EventSubmission, Origin
from meterd.metering.meters import Meter, new_meter
from meterd.scope import Scope
from meterd.storage.base import EventTransaction, RawEvent
from meterd.storage.sqlite import SQLiteStore

T = TypeVar("T")

NOW = 1_767_225_600
TIMEOUT = 5.0


class Env:
    def __init__(self, store: SQLiteStore, scope: Scope, meter: Meter) -> None:
        self.store = store
        self.scope = scope
        self.meter = meter

    def event(
        self,
        identifier: str,
        *,
        value: str | None = "1",
        customer: str | None = "cus_1",
        origin: Origin = "v1",
    ) -> EventSubmission:
        payload = {}
        if customer is not None:
            payload["stripe_customer_id"] = customer
        if value is not None:
            payload["value"] = value
        return EventSubmission(
            scope=self.scope,
            event_name="tokens",
            identifier=identifier,
            payload=payload,
            timestamp=NOW - 30,
            created=NOW,
            origin=origin,
        )

    async def stored(self) -> list[RawEvent]:
        return await self.store.transact(lambda tx: tx.all_events(0, 10_000))

    async def stored_identifiers(self) -> list[str]:
        return [e.identifier for e in await self.stored()]


async def open_env(path: Path) -> Env:
    store = await SQLiteStore.open(str(path))
    account = keys.new_account(NOW)
    key, _secret = keys.new_api_key(account.id, livemode=False, now=NOW)
    await store.create_account(account, key)
    scope = Scope(account.id, livemode=False)
    meter = new_meter(
        scope,
        display_name="Tokens",
        event_name="tokens",
        formula="sum",
        customer_key=None,
        value_key=None,
        event_time_window=None,
        now=NOW - 3600,
    )
    await store.insert_meter(meter)
    return Env(store, scope, meter)


@pytest.fixture
def db(tmp_path: Path) -> Path:
    return tmp_path / "meterd.db"


def run_with_env(db: Path, body: Callable[[Env], Coroutine[Any, Any, T]]) -> T:
    async def main() -> T:
        env = await open_env(db)
        try:
            return await body(env)
        finally:
            await env.store.close()

    return asyncio.run(main())


class ControlledStore:
    """The real store behind a gate; chosen calls fail after their work ran (rolled back)."""

    def __init__(self, inner: SQLiteStore, fail_calls: tuple[int, ...] = ()) -> None:
        self.inner = inner
        self.gate = asyncio.Event()
        self.entered = asyncio.Event()
        self.calls = 0
        self.fail_calls = fail_calls

    async def transact(self, work: Callable[[EventTransaction], T]) -> T:
        self.calls += 1
        call = self.calls
        self.entered.set()
        await self.gate.wait()
        if call not in self.fail_calls:
            return await self.inner.transact(work)

        def fail(tx: EventTransaction) -> T:
            work(tx)  # the writes happen, then the transaction rolls back
            raise OSError("disk I/O error")

        return await self.inner.transact(fail)

    async def transact_each(
        self,
        take: Callable[[], Any],
        work: Callable[[EventTransaction, Any], T],
        done: Callable[[Any, T | None, BaseException | None], None],
    ) -> None:
        """The store's loop, with each batch's transaction going through the gate above."""
        while (unit := take()) is not None:
            try:
                result = await self.transact(lambda tx, unit=unit: work(tx, unit))
            except Exception as exc:
                done(unit, None, exc)
                continue
            done(unit, result, None)

    def __getattr__(self, name: str) -> Any:
        return getattr(self.inner, name)


async def settle() -> None:
    """Let freshly created tasks run up to their first real wait: a request looks its meters
    up on the store's thread before it queues, so give that a moment too."""
    for _ in range(3):
        await asyncio.sleep(0)
    await asyncio.sleep(0.1)


def kinds(outcomes: list[Outcome]) -> list[str]:
    named = []
    for outcome in outcomes:
        if isinstance(outcome, Accepted):
            named.append("accepted" if outcome.problem is None else outcome.problem.code)
        elif isinstance(outcome, Duplicate):
            named.append("duplicate")
        else:
            assert isinstance(outcome, Rejected)
            named.append("rejected:" + outcome.problem.v2_code)
    return named


# group commit -------------------------------------------------------------------------------


def test_concurrent_submits_are_committed_in_fewer_transactions(db: Path) -> None:
    async def body(env: Env) -> None:
        store = ControlledStore(env.store)
        store.gate.set()
        pipeline = IngestPipeline(store)  # type: ignore[arg-type]
        await pipeline.start()
        requests = [[env.event(f"r{i}-a"), env.event(f"r{i}-b")] for i in range(50)]
        results = await asyncio.wait_for(
            asyncio.gather(*(pipeline.submit(r) for r in requests)), TIMEOUT
        )
        await pipeline.stop()
        assert all(kinds(r) == ["accepted", "accepted"] for r in results)
        assert pipeline.events_committed == 100
        assert store.calls == pipeline.batches_committed < 50
        assert len(await env.stored()) == 100

    run_with_env(db, body)


def test_requests_arriving_during_a_commit_share_the_next_one(db: Path) -> None:
    async def body(env: Env) -> None:
        store = ControlledStore(env.store)
        pipeline = IngestPipeline(store)  # type: ignore[arg-type]
        await pipeline.start()
        first = asyncio.create_task(pipeline.submit([env.event("first")]))
        await asyncio.wait_for(store.entered.wait(), TIMEOUT)  # its commit is in flight
        waiting = [asyncio.create_task(pipeline.submit([env.event(f"w{i}")])) for i in range(20)]
        await settle()
        assert pipeline.queued_events == 20
        store.gate.set()
        await asyncio.wait_for(asyncio.gather(first, *waiting), TIMEOUT)
        await pipeline.stop()
        assert pipeline.batches_committed == store.calls == 2
        assert pipeline.events_committed == 21

    run_with_env(db, body)


def test_each_request_gets_its_own_outcomes_in_order(db: Path) -> None:
    async def body(env: Env) -> None:
        pipeline = IngestPipeline(env.store)
        requests: list[list[EventSubmission]] = []
        expected: list[list[str]] = []
        for i in range(12):
            request = [env.event(f"r{i}")]
            want = ["accepted"]
            if i % 2:
                request.append(env.event(f"r{i}-nocust", customer=None))
                want.append("meter_event_no_customer_defined")
            if i % 3 == 0:
                request.append(env.event(f"r{i}"))  # its own identifier again
                want.append("duplicate")
            if i:
                request.append(env.event(f"r{i - 1}"))  # the previous request's identifier
                want.append("duplicate")
            if i % 4 == 1:
                request.append(env.event(f"r{i}-bad", value="-3", origin="v2"))
                want.append("rejected:payload_invalid_value")
            requests.append(request)
            expected.append(want)
        tasks = [asyncio.create_task(pipeline.submit(r)) for r in requests]
        await settle()
        assert pipeline.queued_events == sum(map(len, requests))
        await pipeline.start()  # everything queued goes into one batch
        results = await asyncio.wait_for(asyncio.gather(*tasks), TIMEOUT)
        await pipeline.stop()
        assert pipeline.batches_committed == 1
        assert [kinds(r) for r in results] == expected
        assert sorted(await env.stored_identifiers()) == sorted(f"r{i}" for i in range(12))

    run_with_env(db, body)


def test_a_cancelled_request_does_not_disturb_its_batch(db: Path) -> None:
    async def body(env: Env) -> None:
        pipeline = IngestPipeline(env.store)
        gone = asyncio.create_task(pipeline.submit([env.event("gone")]))
        kept = asyncio.create_task(pipeline.submit([env.event("kept")]))
        await settle()
        gone.cancel()  # the client hung up; its events were already queued
        await pipeline.start()
        assert kinds(await asyncio.wait_for(kept, TIMEOUT)) == ["accepted"]
        await pipeline.stop()
        assert gone.cancelled()
        assert "kept" in await env.stored_identifiers()

    run_with_env(db, body)


def test_the_requests_after_a_cancelled_one_get_their_own_outcomes(db: Path) -> None:
    """A hung-up request's outcomes are skipped, not handed to the next request in the batch."""

    async def body(env: Env) -> None:
        pipeline = IngestPipeline(env.store)
        gone = asyncio.create_task(pipeline.submit([env.event("first")]))
        kept = asyncio.create_task(pipeline.submit([env.event("first"), env.event("second")]))
        await settle()
        gone.cancel()
        await pipeline.start()
        assert kinds(await asyncio.wait_for(kept, TIMEOUT)) == ["duplicate", "accepted"]
        await pipeline.stop()

    run_with_env(db, body)


def test_each_event_of_a_shared_batch_is_deduplicated_by_its_own_arrival(db: Path) -> None:
    """Requests received at different moments can share a batch; the 24 h identifier window
    is still measured from each event's own arrival, not from the first event's."""

    async def body(env: Env) -> None:
        pipeline = IngestPipeline(env.store)
        await pipeline.start()
        old = msgspec.structs.replace(env.event("x"), created=NOW, timestamp=NOW - 30)
        assert kinds(await asyncio.wait_for(pipeline.submit([old]), TIMEOUT)) == ["accepted"]
        await pipeline.stop()

        later = IngestPipeline(env.store)
        day = NOW + 24 * 3600
        first = msgspec.structs.replace(env.event("y"), created=day - 1, timestamp=day - 60)
        again = msgspec.structs.replace(env.event("x"), created=day, timestamp=day - 60)
        tasks = [
            asyncio.create_task(later.submit([first])),  # received 1 s before x expired
            asyncio.create_task(later.submit([again])),  # received when x is 24 h old
        ]
        await settle()
        await later.start()
        results = await asyncio.wait_for(asyncio.gather(*tasks), TIMEOUT)
        await later.stop()
        assert later.batches_committed == 1
        # "x" was received exactly 24 h before: no longer taken (as when sent on its own).
        assert [kinds(r) for r in results] == [["accepted"], ["accepted"]]

    run_with_env(db, body)


def test_an_identifier_is_free_again_after_24_hours_when_sent_alone(db: Path) -> None:
    """The reference for the test above: the same two events in separate batches."""

    async def body(env: Env) -> None:
        pipeline = IngestPipeline(env.store)
        await pipeline.start()
        day = NOW + 24 * 3600
        old = msgspec.structs.replace(env.event("x"), created=NOW, timestamp=NOW - 30)
        first = msgspec.structs.replace(env.event("y"), created=day - 1, timestamp=day - 60)
        again = msgspec.structs.replace(env.event("x"), created=day, timestamp=day - 60)
        for event in (old, first, again):
            assert kinds(await asyncio.wait_for(pipeline.submit([event]), TIMEOUT)) == ["accepted"]
        await pipeline.stop()
        assert pipeline.batches_committed == 3

    run_with_env(db, body)


# back-pressure ------------------------------------------------------------------------------


def test_a_full_queue_answers_429_with_retry_after(db: Path) -> None:
    async def body(env: Env) -> None:
        pipeline = IngestPipeline(env.store, max_queued_events=5)
        three = asyncio.create_task(pipeline.submit([env.event(f"a{i}") for i in range(3)]))
        two = asyncio.create_task(pipeline.submit([env.event(f"b{i}") for i in range(2)]))
        await settle()
        assert pipeline.queued_events == 5  # exactly at the limit: both were queued

        with pytest.raises(RateLimitError) as raised:
            await pipeline.submit([env.event("c0")])
        error = raised.value
        assert error.http_status == 429
        assert error.headers.get("Retry-After") == "1"
        assert error.v1_body()["error"]["code"] == "rate_limit"
        assert error.v2_body()["error"]["type"] == "rate_limit"
        assert pipeline.queued_events == 5, "a refused request leaves nothing behind"

        await pipeline.start()
        await asyncio.wait_for(asyncio.gather(three, two), TIMEOUT)
        assert pipeline.queued_events == 0
        assert kinds(await asyncio.wait_for(pipeline.submit([env.event("c0")]), TIMEOUT)) == [
            "accepted"
        ]
        await pipeline.stop()
        assert "c0" in await env.stored_identifiers()

    run_with_env(db, body)


# failures -----------------------------------------------------------------------------------


def test_a_failed_commit_fails_exactly_the_requests_in_it(db: Path) -> None:
    async def body(env: Env) -> None:
        store = ControlledStore(env.store, fail_calls=(1,))
        store.gate.set()
        pipeline = IngestPipeline(store, max_batch_events=3)  # type: ignore[arg-type]
        a = asyncio.create_task(pipeline.submit([env.event("a")]))
        b = asyncio.create_task(pipeline.submit([env.event("b1"), env.event("b2")]))
        c = asyncio.create_task(pipeline.submit([env.event("c1"), env.event("c2")]))
        await settle()
        await pipeline.start()  # batches: [a, b] (3 events), then [c]
        results = await asyncio.wait_for(asyncio.gather(a, b, c, return_exceptions=True), TIMEOUT)
        assert isinstance(results[0], OSError) and isinstance(results[1], OSError)
        assert results[0] is results[1]
        assert not isinstance(results[2], BaseException)
        assert kinds(results[2]) == ["accepted", "accepted"]
        assert pipeline.batches_committed == 1 and pipeline.events_committed == 2
        assert sorted(await env.stored_identifiers()) == ["c1", "c2"]

        # Nothing of the failed batch was kept, not even its identifiers: a retry is accepted.
        retry = await asyncio.wait_for(
            pipeline.submit([env.event("a"), env.event("b1"), env.event("b2")]), TIMEOUT
        )
        assert kinds(retry) == ["accepted"] * 3
        await pipeline.stop()
        assert sorted(await env.stored_identifiers()) == ["a", "b1", "b2", "c1", "c2"]

    run_with_env(db, body)


# stopping -----------------------------------------------------------------------------------


def test_stop_drains_what_was_queued(db: Path) -> None:
    async def body(env: Env) -> None:
        pipeline = IngestPipeline(env.store)
        await pipeline.meters.lookup([env.event("warm")])  # then requests queue at once
        await pipeline.start()
        await settle()
        tasks = [asyncio.create_task(pipeline.submit([env.event(f"q{i}")])) for i in range(10)]
        for _ in range(3):
            await asyncio.sleep(0)  # no real wait: the writer's loop must not run yet
        assert pipeline.queued_events == 10 and pipeline.batches_committed == 0
        await asyncio.wait_for(pipeline.stop(), TIMEOUT)
        results = await asyncio.wait_for(asyncio.gather(*tasks), TIMEOUT)
        assert all(kinds(r) == ["accepted"] for r in results)
        assert pipeline.events_committed == 10
        assert sorted(await env.stored_identifiers()) == sorted(f"q{i}" for i in range(10))

    run_with_env(db, body)


def test_stop_during_a_commit_still_answers_that_commits_requests(db: Path) -> None:
    """stop() while a batch is being written: that batch and everything queued still finish.

    Every request must get an answer; one that is never answered hangs its client forever.
    """

    async def body(env: Env) -> None:
        store = ControlledStore(env.store)
        pipeline = IngestPipeline(store)  # type: ignore[arg-type]
        await pipeline.start()
        in_flight = asyncio.create_task(pipeline.submit([env.event("in-flight")]))
        await asyncio.wait_for(store.entered.wait(), TIMEOUT)
        queued = [asyncio.create_task(pipeline.submit([env.event(f"q{i}")])) for i in range(3)]
        await settle()
        stopping = asyncio.create_task(pipeline.stop())
        await settle()
        store.gate.set()
        await asyncio.wait_for(stopping, TIMEOUT)
        done, pending = await asyncio.wait([in_flight, *queued], timeout=2)
        for task in pending:
            task.cancel()
        assert not pending, f"{len(pending)} request(s) never answered after stop()"
        assert all(kinds(t.result()) == ["accepted"] for t in done)
        assert sorted(await env.stored_identifiers()) == ["in-flight", "q0", "q1", "q2"]

    run_with_env(db, body)

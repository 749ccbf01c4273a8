"""The writer process (:mod:`meterd.ingest.writer_process`) on a real SQLite file: the child
stores, deduplicates and cancels; a lazy stream batch crosses as its body; a dead child fails
requests instead of leaving them waiting; and the child never outlives the server."""

from __future__ import annotations

import ast
import asyncio
import inspect
import pickle
import signal
import subprocess
import sys
import textwrap
import time
from collections.abc import Awaitable, Callable
from functools import partial
from pathlib import Path

import msgspec
import pytest

from meterd.api.meter_event_stream import body_submissions, stream_params
from meterd.ingest.pipeline import LazyEvents
from meterd.ingest.writer_process import (
    STORE_WRITES,
    ProcessPipeline,
    WriterStopped,
    WritesInChild,
)
from meterd.ingest.writes import CancelRefused, assess_batch, assess_streamed
from meterd.metering.events import EventSubmission
from meterd.metering.meters import new_meter
from meterd.storage import sql_store, sqlite
from meterd.storage.base import AlreadyExists
from tests.conftest import process_alive
from tests.unit.test_pipeline import NOW, Env, kinds, open_env

TIMEOUT = 30.0


@pytest.fixture
def db(tmp_path: Path) -> Path:
    return tmp_path / "meterd.db"


async def started(env: Env, path: Path) -> ProcessPipeline:
    pipeline = ProcessPipeline(env.store, str(path))
    await asyncio.wait_for(pipeline.start(), TIMEOUT)
    return pipeline


def run(path: Path, body: Callable[[Env], Awaitable[None]]) -> None:
    async def main() -> None:
        env = await open_env(path)
        try:
            await asyncio.wait_for(body(env), TIMEOUT)
        finally:
            await env.store.close()

    asyncio.run(main())


def test_the_child_stores_and_deduplicates_and_stops_cleanly(db: Path) -> None:
    async def body(env: Env) -> None:
        pipeline = await started(env, db)
        process = pipeline._process
        assert process is not None
        first = [env.event("a", value="2"), env.event("b", value="3")]
        assert kinds(await pipeline.submit(first)) == ["accepted", "accepted"]
        again = [env.event("b", value="3"), env.event("c", value="4")]
        assert kinds(await pipeline.submit(again)) == ["duplicate", "accepted"]
        assert sorted(await env.stored_identifiers()) == ["a", "b", "c"]
        assert pipeline.events_committed == 4
        await pipeline.stop()
        assert process.returncode == 0

    run(db, body)


def test_a_lazy_stream_batch_crosses_as_its_body_and_is_built_only_when_needed(db: Path) -> None:
    """A new batch is stored from its rows alone; sent again, the child needs the events to
    find the repeats, and builds them from the body."""

    async def body(env: Env) -> None:
        pipeline = await started(env, db)
        events = [
            {"event_name": "tokens", "identifier": f"s{i}", "payload": {"value": str(i)}}
            for i in range(1, 4)
        ]
        for event in events:
            event["payload"]["stripe_customer_id"] = "cus_1"  # type: ignore[index]
        raw = msgspec.json.encode({"events": events})
        meters = await pipeline.meters.lookup_keys([(env.scope, "tokens")])

        async def send() -> list[str]:
            params = stream_params(raw)
            assessed = assess_streamed(env.scope, params.events, NOW, meters)
            assert assessed is not None
            lazy = LazyEvents(3, partial(body_submissions, env.scope, raw, NOW))
            outcomes = await pipeline.submit_assessed(lazy, assessed)
            assert lazy._events is None, "the server built the events itself"
            return kinds(outcomes)

        assert await send() == ["accepted"] * 3
        assert await send() == ["duplicate"] * 3
        stored = await env.stored()
        assert sorted((e.identifier, e.value) for e in stored) == [
            ("s1", 1 * 10**12),
            ("s2", 2 * 10**12),
            ("s3", 3 * 10**12),
        ]
        await pipeline.stop()

    run(db, body)


def test_cancellations_run_in_the_child_and_refusals_come_back_as_such(db: Path) -> None:
    async def body(env: Env) -> None:
        pipeline = await started(env, db)
        await pipeline.submit([env.event("x")])
        await pipeline.cancel(env.scope, "tokens", "x", NOW + 1)
        with pytest.raises(CancelRefused):
            await pipeline.cancel(env.scope, "tokens", "never-sent", NOW + 1)
        with pytest.raises(CancelRefused, match="not 'other'"):
            await pipeline.cancel(env.scope, "other", "x", NOW + 1)
        [stored] = await env.stored()
        cancelled = await env.store.transact(lambda tx: tx.event(stored.seq))
        assert cancelled is not None and cancelled.cancelled
        await pipeline.stop()

    run(db, body)


def test_hashes_are_not_sent_the_child_computes_its_own(db: Path) -> None:
    """Python salts string hashes per process: a hash from the server would miss the child's
    index, and a repeat would count twice."""

    async def body(env: Env) -> None:
        batch = [env.event("h1"), env.event("h2", customer=None)]
        meters = await env.store.find_meter_by_event_name(env.scope, "tokens")
        assessed = assess_batch(batch, {(env.scope, "tokens"): meters})
        crossed = pickle.loads(pickle.dumps(assessed))
        assert crossed.hashes == []
        assert crossed.verdicts == assessed.verdicts

    run(db, body)


def test_a_dead_child_fails_its_requests_instead_of_leaving_them_waiting(db: Path) -> None:
    async def body(env: Env) -> None:
        pipeline = await started(env, db)
        process = pipeline._process
        assert process is not None
        process.kill()
        await asyncio.to_thread(process.wait)
        deadline = time.monotonic() + 5
        while pipeline._channel is not None and time.monotonic() < deadline:
            await asyncio.sleep(0.01)
        with pytest.raises(WriterStopped):
            await pipeline.submit([env.event("late")])
        await pipeline.stop()
        assert "late" not in await env.stored_identifiers()

    run(db, body)


def test_the_child_dies_with_the_server_even_by_sigkill(db: Path, tmp_path: Path) -> None:
    """A child left committing after its server died would be missing from the next child's
    identifier index (see the module's docstring)."""
    script = tmp_path / "server.py"
    script.write_text(
        textwrap.dedent(
            f"""
            import asyncio, sys, time
            sys.path.insert(0, {str(Path(__file__).parents[2])!r})
            from tests.unit.test_pipeline import open_env
            from meterd.ingest.writer_process import ProcessPipeline

            async def main():
                env = await open_env({str(db)!r})
                pipeline = ProcessPipeline(env.store, {str(db)!r})
                await pipeline.start()
                print(pipeline._process.pid, flush=True)
                await asyncio.sleep(60)

            asyncio.run(main())
            """
        )
    )
    server = subprocess.Popen([sys.executable, str(script)], stdout=subprocess.PIPE, text=True)
    try:
        assert server.stdout is not None
        child = int(server.stdout.readline())
        assert process_alive(child)
        server.send_signal(signal.SIGKILL)
        server.wait(timeout=10)
        deadline = time.monotonic() + 10
        while time.monotonic() < deadline:
            if not process_alive(child):
                return
            time.sleep(0.02)
        pytest.fail(f"the writer process {child} outlived its server")
    finally:
        server.kill()
        server.wait()


def test_a_dead_child_is_replaced_and_its_index_rebuilt(db: Path) -> None:
    """The new child starts only once the old one is gone, and finds what it stored."""

    async def body(env: Env) -> None:
        now = int(time.time())  # the new child indexes the identifiers of the last 24 hours

        def event(identifier: str) -> EventSubmission:
            return msgspec.structs.replace(env.event(identifier), created=now, timestamp=now - 30)

        pipeline = await started(env, db)
        await pipeline.submit([event("before")])
        old = pipeline._process
        assert old is not None
        old.kill()
        deadline = time.monotonic() + TIMEOUT
        while (pipeline._process is old or pipeline._channel is None) and (
            time.monotonic() < deadline
        ):
            await asyncio.sleep(0.02)
        assert pipeline._process is not old and old.returncode is not None
        outcomes = await pipeline.submit([event("before"), event("after")])
        assert kinds(outcomes) == ["duplicate", "accepted"]
        await pipeline.stop()

    run(db, body)


def test_every_store_method_that_writes_is_sent_to_the_child() -> None:
    """A write left in the server would wait for SQLite's lock against the child's back-to-back
    commits, and fail after the busy timeout under load (see ``WritesInChild``). Any method of
    the SQLite store whose code opens a write transaction must be routed, or be one the
    pipeline itself sends (events, cancellations, identifier pruning)."""

    pipeline_only = {"transact", "transact_each", "prune_event_identifiers"}
    not_writes = {"_read", "_write", "_migrate", "_connect", "_tx"}
    writing = set()
    for module in (sql_store, sqlite):
        tree = ast.parse(inspect.getsource(module))
        for node in ast.walk(tree):
            if not isinstance(node, ast.AsyncFunctionDef | ast.FunctionDef):
                continue
            calls = {
                call.func.attr
                for call in ast.walk(node)
                if isinstance(call, ast.Call)
                and isinstance(call.func, ast.Attribute)
                and isinstance(call.func.value, ast.Name)
                and call.func.value.id == "self"
            }
            if calls & {"_write", "_tx"} and node.name not in not_writes:
                writing.add(node.name)
    assert "insert_meter" in writing and "read_rollups" in writing  # the scan finds them
    assert writing - pipeline_only - {"run"} <= STORE_WRITES


def test_the_servers_store_writes_run_in_the_child_and_its_errors_keep_their_type(
    db: Path,
) -> None:

    async def body(env: Env) -> None:
        pipeline = await started(env, db)
        store = WritesInChild(env.store, pipeline)
        meter = new_meter(
            env.scope,
            display_name="Other",
            event_name="other",
            formula="count",
            customer_key=None,
            value_key=None,
            event_time_window=None,
            now=NOW,
        )
        await store.insert_meter(meter)
        assert await store.get_meter(env.scope, meter.id) == meter  # read here, written there
        with pytest.raises(AlreadyExists):
            await store.insert_meter(meter)
        assert store.insert_meter.func.__self__ is pipeline  # type: ignore[attr-defined]
        await pipeline.stop()

    run(db, body)

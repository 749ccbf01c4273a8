"""meterd's own fsync of SQLite's write-ahead log (``meterd.storage.wal_sync``): the writer's
connection runs ``synchronous=NORMAL``, every write is synced before it returns, a group
commit's requests are answered only after a sync that started once their commit was done,
and a failed sync stops every later write."""

from __future__ import annotations

import asyncio
import errno
import os
import sqlite3
import threading
from collections.abc import Callable, Coroutine
from pathlib import Path
from typing import Any, TypeVar

import pytest

from meterd.ingest.pipeline import IngestPipeline
from meterd.ingest.writes import Accepted
from meterd.storage.base import EventTransaction
from meterd.storage.sqlite import SQLiteStore
from meterd.storage.wal_sync import SyncFailed, WalSync
from tests.unit.test_pipeline import open_env

T = TypeVar("T")


class SyncLog:
    """``os.fdatasync`` that numbers the syncs it starts and records the ones that ended."""

    def __init__(self, fail: bool = False) -> None:
        self.real = os.fdatasync
        self.fail = fail
        self.started = 0
        self.ended: list[int] = []
        self.lock = threading.Lock()

    def __call__(self, fd: int) -> None:
        with self.lock:
            number = self.started
            self.started += 1
        if self.fail:
            raise OSError(errno.EIO, "Input/output error")
        self.real(fd)
        with self.lock:
            self.ended.append(number)


@pytest.fixture
def syncs(monkeypatch: pytest.MonkeyPatch) -> SyncLog:
    log = SyncLog()
    monkeypatch.setattr(os, "fdatasync", log)
    return log


def run(coro: Coroutine[Any, Any, T]) -> T:
    return asyncio.run(coro)


def test_a_file_store_syncs_the_log_itself_and_a_memory_store_leaves_it_to_sqlite(
    tmp_path: Path,
) -> None:
    async def main() -> None:
        on_file = await SQLiteStore.open(str(tmp_path / "m.db"))
        in_memory = await SQLiteStore.open(":memory:")
        try:
            assert await on_file._run(_pragma, on_file, "synchronous") == 1  # NORMAL
            assert isinstance(on_file.wal, WalSync)
            assert await in_memory._run(_pragma, in_memory, "synchronous") == 2  # FULL
            assert in_memory.wal is None
        finally:
            await on_file.close()
            await in_memory.close()

    run(main())


def _pragma(store: SQLiteStore, name: str) -> int:
    assert store._conn is not None
    return int(store._conn.execute(f"PRAGMA {name}").fetchone()[0])


def test_every_write_is_synced_before_it_returns(tmp_path: Path, syncs: SyncLog) -> None:
    async def main() -> None:
        store = (await open_env(tmp_path / "m.db")).store
        try:
            before = len(syncs.ended)
            await store.transact(lambda tx: tx.next_event_seq())
            assert len(syncs.ended) == before + 1
        finally:
            await store.close()

    run(main())


def test_a_group_commit_is_answered_only_after_a_sync_that_began_after_it(
    tmp_path: Path, syncs: SyncLog
) -> None:
    """Each commit notes the number of the next sync to start; its requests' answers must find
    a sync of at least that number ended."""

    async def main() -> None:
        env = await open_env(tmp_path / "m.db")
        store = env.store
        pipeline = IngestPipeline(store, linger_seconds=0)
        marks: list[int] = []
        checked: list[bool] = []
        committed = store._committed

        def noting(tx: EventTransaction) -> None:
            committed(tx)
            marks.append(syncs.started)

        store._committed = noting  # type: ignore[method-assign]

        def on_commit(count: int, outcomes: object) -> None:
            mark = marks[len(checked)]
            checked.append(any(number >= mark for number in syncs.ended))

        pipeline.on_commit = on_commit
        await pipeline.start()
        try:
            answers = await asyncio.gather(
                *(pipeline.submit([env.event(f"e{r}-{i}") for i in range(50)]) for r in range(40))
            )
        finally:
            await pipeline.stop()
            await store.close()
        assert all(outcome == Accepted() for answer in answers for outcome in answer)
        assert checked and all(checked)

    run(main())


def test_a_failed_sync_fails_its_requests_and_every_later_write(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    async def main() -> None:
        env = await open_env(tmp_path / "m.db")
        store = env.store
        assert store.wal is not None
        told: list[SyncFailed] = []
        store.wal.on_failure = told.append
        monkeypatch.setattr(os, "fdatasync", SyncLog(fail=True))
        pipeline = IngestPipeline(store, linger_seconds=0)
        await pipeline.start()
        try:
            with pytest.raises(SyncFailed):
                await pipeline.submit([env.event("lost")])
            with pytest.raises(SyncFailed):
                await pipeline.submit([env.event("after")])
            with pytest.raises(SyncFailed):
                await store.transact(lambda tx: tx.next_event_seq())
        finally:
            await pipeline.stop()
            await store.close()
        assert len(told) == 1 and told[0].errno == errno.EIO

    run(main())


def test_stop_answers_every_request_before_the_store_closes(tmp_path: Path) -> None:
    async def main() -> None:
        env = await open_env(tmp_path / "m.db")
        store = env.store
        pipeline = IngestPipeline(store, linger_seconds=0)
        await pipeline.start()
        requests = [
            asyncio.create_task(pipeline.submit([env.event(f"s{r}-{i}") for i in range(20)]))
            for r in range(30)
        ]
        while pipeline.queued_events + pipeline.events_committed < 600:  # all queued
            await asyncio.sleep(0.001)
        await pipeline.stop()
        await store.close()
        answers = await asyncio.wait_for(asyncio.gather(*requests), 5)
        assert [len(answer) for answer in answers] == [20] * 30

    run(main())


def test_the_log_is_opened_again_when_its_file_is_replaced(tmp_path: Path) -> None:
    database = tmp_path / "m.db"
    sqlite3.connect(database).close()
    wal = WalSync(str(database))
    log = Path(wal.path)
    log.write_bytes(b"first")
    wal.sync()
    first = wal._inode
    log.unlink()
    log.write_bytes(b"second")
    wal.sync()
    assert wal._inode != first
    wal.close()


def test_answers_are_called_once_each_in_order(tmp_path: Path) -> None:
    database = tmp_path / "m.db"
    Path(str(database) + "-wal").write_bytes(b"log")
    wal = WalSync(str(database))
    seen: list[tuple[int, SyncFailed | None]] = []

    def answer(number: int) -> Callable[[SyncFailed | None], None]:
        return lambda failure: seen.append((number, failure))

    for number in range(100):
        wal.after_sync(answer(number))
    assert wal.drain()
    assert seen == [(number, None) for number in range(100)]
    assert not wal.drain()
    wal.close()


def test_no_log_means_nothing_to_sync(tmp_path: Path) -> None:
    wal = WalSync(str(tmp_path / "m.db"))
    wal.sync()
    assert wal.failure is None
    wal.close()

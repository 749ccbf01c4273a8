"""The event writer in a process of its own, for a SQLite database.

In one process, the event loop (HTTP, decoding, the event rules) and the writer's thread
(binding rows, the identifier index) take turns holding one GIL, and on the stream bench the
event loop waited for it while the writer bound rows (py-spy ``--gil``). With
:class:`ProcessPipeline`, ``meterd serve`` starts a child process that owns the event writes:
the group-commit pipeline, the in-memory identifier index, cancellations and the pruning of
identifiers. The server still assesses each request's events in its event loop and sends the
assessment over a socket pair; the child commits it and answers with the outcomes. Each
process then has a GIL of its own.

The server's other writes (meters, plans, sessions, keys, the fold before a summary) are
made by the child too (:class:`WritesInChild`), so one process writes the file; the server
reads through its own connection.

The child must never outlive the server: a server restarted while an old child still
commits would rebuild its identifier index without that child's last events, and count
their retries twice. So the child asks the kernel to kill it when its parent dies
(``PR_SET_PDEATHSIG``), and stops at once, committing nothing more, when the socket closes.
"""

from __future__ import annotations

import asyncio
import contextlib
import ctypes
import itertools
import logging
import os
import pickle
import signal
import socket
import struct
import subprocess
import sys
from collections.abc import Callable, Sequence
from functools import partial
from typing import Any

from meterd import garbage_collector
from meterd.ingest.pipeline import DEFAULT_MAX_QUEUED_EVENTS, IngestPipeline
from meterd.ingest.writes import ACCEPTED, Assessment, Outcome, identifier_hashes
from meterd.metering.events import EventSubmission
from meterd.scope import Scope
from meterd.storage import Store

log = logging.getLogger("meterd.ingest")

_HEADER = struct.Struct("!I")
_COMMITTED = 0
"""The message id of the child's commit notices (requests are numbered from 1)."""
START_SECONDS = 600.0
"""How long the server waits for the child to open the database (its identifier index is
rebuilt from the last 24 hours of events first: 28.6 s for 6.4 M of them, on the bench VM)."""

RESTART_PAUSE_SECONDS = 0.5
"""Between a child's death and its replacement, so that a child that dies at once is not
restarted in a tight loop."""


class WriterFailed(RuntimeError):
    """The writer process could not do what it was asked (a 500 for the request)."""


class WriterStopped(WriterFailed):
    """The writer process is gone; the request's events may or may not have been stored."""


class Channel(asyncio.Protocol):
    """Length-prefixed pickles, both ways, over one end of a socket pair."""

    def __init__(self, received: Callable[[Any], None], lost: Callable[[], None]) -> None:
        self._received = received
        self._lost = lost
        self._buffer = bytearray()
        self.transport: asyncio.WriteTransport | None = None

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self.transport = transport  # type: ignore[assignment]

    def data_received(self, data: bytes) -> None:
        buffer = self._buffer
        buffer += data
        start = 0
        while len(buffer) - start >= _HEADER.size:
            (size,) = _HEADER.unpack_from(buffer, start)
            end = start + _HEADER.size + size
            if len(buffer) < end:
                break
            message = pickle.loads(bytes(buffer[start + _HEADER.size : end]))
            start = end
            self._received(message)
        del buffer[:start]

    def send(self, message: Any) -> None:
        if self.transport is None or self.transport.is_closing():
            raise WriterStopped("the event writer process is not running")
        data = pickle.dumps(message, protocol=pickle.HIGHEST_PROTOCOL)
        self.transport.writelines((_HEADER.pack(len(data)), data))

    def connection_lost(self, exc: Exception | None) -> None:
        self.transport = None
        self._lost()


class ProcessPipeline(IngestPipeline):
    """:class:`IngestPipeline` whose writer is a child process (see the module's docstring).

    Requests still assess their own events here and get 429 from :meth:`check_room`; what
    they wait for is the child's answer, which comes once their events are durable.
    """

    def __init__(
        self, store: Store, path: str, max_queued_events: int = DEFAULT_MAX_QUEUED_EVENTS
    ) -> None:
        super().__init__(store, max_queued_events=max_queued_events)
        self.path = path
        self._process: subprocess.Popen[bytes] | None = None
        self._channel: Channel | None = None
        self._waiting: dict[int, asyncio.Future[Any]] = {}
        self._numbers = itertools.count(1)
        self._restarting: asyncio.Task[None] | None = None
        self._ready = False
        """The first child started: from then on a lost child is replaced (a child that
        cannot start at all fails the server's start instead)."""

    async def start(self) -> None:
        await self._spawn()

    async def _spawn(self) -> None:
        ours, theirs = socket.socketpair()
        with theirs:
            self._process = subprocess.Popen(
                [
                    sys.executable,
                    "-m",
                    "meterd.ingest.writer_process",
                    str(theirs.fileno()),
                    self.path,
                    str(self.max_queued_events),
                    str(os.getpid()),
                ],
                pass_fds=[theirs.fileno()],
            )
        channel = Channel(self._received, self._lost)
        await asyncio.get_running_loop().create_connection(lambda: channel, sock=ours)
        self._channel = channel
        await asyncio.wait_for(self._call("ready"), START_SECONDS)
        self._ready = True

    async def stop(self) -> None:
        """The child commits what it has queued, closes the database and exits."""
        process = self._process
        if process is None:
            return
        self._process = None
        if self._restarting is not None:
            self._restarting.cancel()
        with contextlib.suppress(WriterStopped):
            await self._call("stop")
        await asyncio.to_thread(process.wait)

    async def submit_assessed(
        self, events: Sequence[EventSubmission], assessed: Assessment
    ) -> list[Outcome]:
        count = len(events)
        self.check_room(count)
        self.queued_events += count
        try:
            outcomes: list[Outcome] = await self._call("batch", events, assessed)
        finally:
            self.queued_events -= count
        return outcomes

    async def cancel(self, scope: Scope, event_name: str, identifier: str, now: int) -> None:
        await self._call("cancel", scope, event_name, identifier, now)

    async def prune_event_identifiers(self, before: int) -> int:
        pruned: int = await self._call("prune", before)
        return pruned

    async def store_write(self, name: str, *args: Any) -> Any:
        """``Store.<name>(*args)``, run by the child's store (see :class:`WritesInChild`)."""
        return await self._call("store", name, args)

    async def _call(self, kind: str, *args: Any) -> Any:
        channel = self._channel
        if channel is None:
            raise WriterStopped("the event writer process is not running")
        number = next(self._numbers)
        future: asyncio.Future[Any] = asyncio.get_running_loop().create_future()
        channel.send((number, kind, *args))
        self._waiting[number] = future
        try:
            return await future
        finally:
            self._waiting.pop(number, None)

    def _received(self, message: tuple[Any, ...]) -> None:
        number = message[0]
        if number == _COMMITTED:
            self._committed(message[1], message[2])
            return
        future = self._waiting.get(number)
        if future is None or future.done():
            return
        if message[1]:
            future.set_result(message[2])
        else:
            future.set_exception(_error(message[2]))

    def _committed(self, count: int, outcomes: list[Outcome] | bool | None) -> None:
        if outcomes is None:
            log.error("the writer process failed to commit %d events", count)
        else:
            self.batches_committed += 1
            self.events_committed += count
        if self.on_commit is not None:
            if outcomes is True:
                outcomes = [ACCEPTED] * count
            self.on_commit(count, outcomes or None)

    def _lost(self) -> None:
        self._channel = None
        for future in self._waiting.values():
            if not future.done():
                future.set_exception(WriterStopped("the event writer process stopped"))
        restarting = self._restarting is not None and not self._restarting.done()
        if self._process is not None and self._ready and not restarting:
            self._restarting = asyncio.get_running_loop().create_task(self._restart())

    async def _restart(self) -> None:
        """A new child, once the old one is gone: only then may the new one rebuild its index
        (see the module's docstring). Requests get 500 meanwhile; events they sent may have
        been stored, so their retries are deduplicated like any other."""
        while self._process is not None and self._channel is None:
            process = self._process
            code = await asyncio.to_thread(process.wait)
            log.error("the event writer process exited (%s); starting a new one", code)
            await asyncio.sleep(RESTART_PAUSE_SECONDS)
            try:
                await self._spawn()
            except Exception:
                log.exception("the event writer process did not start")


def _error(sent: Any) -> BaseException:
    """The child's exception itself when it crossed (:func:`_sendable`), else a 500."""
    if isinstance(sent, BaseException):
        return sent
    return WriterFailed(f"the event writer process failed: {sent}")


def _sendable(error: BaseException) -> BaseException | str:
    """``error`` if it pickles both ways (the server's code catches the store's own
    exceptions by type), else its repr."""
    try:
        crossed = pickle.loads(pickle.dumps(error))
    except Exception:
        return repr(error)
    return error if type(crossed) is type(error) else repr(error)


STORE_WRITES = frozenset(
    {
        "create_account",
        "add_api_key",
        "revoke_api_key",
        "insert_meter",
        "save_meter",
        "insert_product",
        "save_product",
        "delete_product",
        "insert_plan",
        "save_plan",
        "delete_plan",
        "read_rollups",
        "maintain",
        "insert_session",
        "prune_sessions",
        "claim_idempotency_key",
        "complete_idempotency_key",
        "release_idempotency_key",
        "prune_idempotency_keys",
        "release_unfinished_idempotency_keys",
    }
)
"""The :class:`Store` methods that may open a write transaction (``read_rollups`` folds
waiting rollups first). :class:`WritesInChild` sends them to the writer process."""


class WritesInChild:
    """The server's store, with every write made by the writer process.

    Two processes writing one SQLite file take turns at its lock, and SQLite's busy handler
    polls with sleeps of up to 100 ms: under the stream's load the child commits back to back,
    the server's write almost never found the lock free, and waited out the 5 s busy timeout
    (a p99 of 5 s on the bench, and a meter created meanwhile would fail). In the child, the
    write takes its turn between batches on the one writer thread. Reads stay here: WAL lets
    them run beside the writer.
    """

    def __init__(self, store: Store, pipeline: ProcessPipeline) -> None:
        self._store = store
        self._pipeline = pipeline

    def __getattr__(self, name: str) -> Any:
        if name in STORE_WRITES:
            return partial(self._pipeline.store_write, name)
        return getattr(self._store, name)


# The child ------------------------------------------------------------------------------


def main() -> None:
    """``python -m meterd.ingest.writer_process FD PATH MAX_QUEUED PARENT_PID``."""
    fd, path, max_queued, parent = sys.argv[1:5]
    _die_with(int(parent))
    # Ctrl-C and a service manager's SIGTERM reach the whole group: the server stops the
    # child itself, after its last requests (see ProcessPipeline.stop).
    signal.signal(signal.SIGINT, signal.SIG_IGN)
    signal.signal(signal.SIGTERM, signal.SIG_IGN)
    logging.basicConfig(level=logging.INFO, format="meterd writer: %(levelname)s %(message)s")
    from meterd.config import GIL_SWITCH_SECONDS

    sys.setswitchinterval(GIL_SWITCH_SECONDS)
    import uvloop

    uvloop.run(_serve(socket.socket(fileno=int(fd)), path, int(max_queued)))


def _die_with(parent: int) -> None:
    """Be killed when the server dies, even by SIGKILL (Linux; elsewhere the socket's end
    stops the child at once, see :func:`_serve`)."""
    if sys.platform.startswith("linux"):
        libc = ctypes.CDLL(None, use_errno=True)
        libc.prctl(1, signal.SIGKILL, 0, 0, 0)  # PR_SET_PDEATHSIG
    if os.getppid() != parent:
        os._exit(1)


async def _serve(sock: socket.socket, path: str, max_queued: int) -> None:
    from meterd.storage.sqlite import SQLiteStore

    loop = asyncio.get_running_loop()
    store = await SQLiteStore.open(path)
    if store.wal is not None:
        store.wal.on_failure = _exit_on_sync_failure
    pipeline = IngestPipeline(store, max_queued_events=max_queued)
    await pipeline.start()
    stopped = loop.create_future()
    tasks: set[asyncio.Task[Any]] = set()

    def answer(number: int, task: asyncio.Task[Any]) -> None:
        tasks.discard(task)
        if task.cancelled():
            return
        error = task.exception()
        try:
            if error is None:
                channel.send((number, True, task.result()))
            else:
                channel.send((number, False, _sendable(error)))
        except WriterStopped:
            pass

    def run(number: int, work: Any) -> None:
        task = loop.create_task(work)
        tasks.add(task)
        task.add_done_callback(lambda done: answer(number, done))

    def received(message: tuple[Any, ...]) -> None:
        number, kind, *args = message
        try:
            dispatch(number, kind, args)
        except Exception as error:
            log.exception("%s request failed", kind)
            channel.send((number, False, _sendable(error)))

    def dispatch(number: int, kind: str, args: list[Any]) -> None:
        if kind == "batch":
            events, assessed = args
            assessed.hashes = identifier_hashes(events, assessed.verdicts)
            run(number, pipeline.submit_assessed(events, assessed))
        elif kind == "cancel":
            run(number, pipeline.cancel(*args))
        elif kind == "prune":
            run(number, pipeline.prune_event_identifiers(*args))
        elif kind == "store":
            name, call_args = args
            if name not in STORE_WRITES:
                raise ValueError(f"not a store write: {name}")
            run(number, getattr(store, name)(*call_args))
        elif kind == "ready":
            channel.send((number, True, None))
        elif kind == "stop":
            run(number, _stop(pipeline, store))
            stopped.set_result(None)

    def lost() -> None:
        if not stopped.done():
            # The server went away without asking: answer no one, commit nothing more.
            os._exit(0)

    def committed(count: int, outcomes: list[Outcome] | None) -> None:
        plain = outcomes is not None and outcomes.count(ACCEPTED) == len(outcomes)
        notice = (_COMMITTED, count, True if plain else outcomes)
        loop.call_soon_threadsafe(_notify, channel, notice)

    channel = Channel(received, lost)
    pipeline.on_commit = committed
    garbage_collector.settle()
    await loop.create_connection(lambda: channel, sock=sock)
    await stopped
    while tasks:
        await asyncio.gather(*tasks, return_exceptions=True)
    if channel.transport is not None:
        channel.transport.close()


def _exit_on_sync_failure(error: OSError) -> None:
    """After a failed fsync this process writes nothing more (see :mod:`wal_sync`): it exits,
    its waiting requests get 500, and the server starts a new writer, which opens the file
    again."""
    os._exit(1)


async def _stop(pipeline: IngestPipeline, store: Store) -> None:
    await pipeline.stop()
    await store.close()


def _notify(channel: Channel, notice: tuple[Any, ...]) -> None:
    with contextlib.suppress(WriterStopped):
        channel.send(notice)


if __name__ == "__main__":
    main()

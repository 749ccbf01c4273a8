"""Group commit: many requests' events are written in one transaction, with one fsync.

Requests hand their validated events to :meth:`IngestPipeline.submit` and wait. The store's
writer takes everything queued so far, writes it in one transaction, and only then answers each
request, so nothing is acknowledged before it is durable and a failed commit fails exactly the
requests that were in it. While one commit runs, the next batch gathers. The queue is bounded:
when it is full, new requests get 429 instead of growing memory.
"""

from __future__ import annotations

import asyncio
import logging
import threading
import time
from collections import deque
from collections.abc import Callable, Iterable, Iterator, Sequence

from meterd.errors import RateLimitError
from meterd.ingest.writes import (
    Assessment,
    MeterLookup,
    Outcome,
    assess_batch,
    cancel,
    ingest,
)
from meterd.metering.events import EventSubmission
from meterd.metering.meters import Meter
from meterd.scope import Scope
from meterd.storage import Store
from meterd.storage.base import EventTransaction

log = logging.getLogger("meterd.ingest")

DEFAULT_MAX_QUEUED_EVENTS = 100_000
DEFAULT_MAX_BATCH_EVENTS = 10_000
DEFAULT_LINGER_SECONDS = 0.001
"""How long a small batch waits for company before it commits (measured: 1 ms beat none)."""
LINGER_BELOW_EVENTS = 256


METER_CACHE_SECONDS = 1.0
"""How long a looked-up meter is trusted: meter changes made through this process are seen at
once (see :meth:`IngestPipeline.forget_meters`), changes made by another process within this."""


class _Pending:
    __slots__ = ("assessed", "events", "future")

    def __init__(
        self,
        events: Sequence[EventSubmission],
        assessed: Assessment,
        future: asyncio.Future[list[Outcome]],
    ):
        self.events = events
        self.assessed = assessed
        self.future = future


class LazyEvents(Sequence[EventSubmission]):
    """Events built only if the writer looks at them: a plain batch of the stream's is stored
    from its assessment alone, so neither its requests' submissions nor their join are made."""

    __slots__ = ("_build", "_events", "_length")

    def __init__(self, length: int, build: Callable[[], list[EventSubmission]]) -> None:
        self._length = length
        self._build = build
        self._events: list[EventSubmission] | None = None

    def __reduce__(self) -> tuple[object, ...]:
        """Pickled as its length and recipe (the writer process builds the events itself)."""
        return (LazyEvents, (self._length, self._build))

    def _built(self) -> list[EventSubmission]:
        if self._events is None:
            self._events = self._build()
        return self._events

    def __len__(self) -> int:
        return self._length

    def __getitem__(self, index: int) -> EventSubmission:  # type: ignore[override]
        return self._built()[index]

    def __iter__(self) -> Iterator[EventSubmission]:
        return iter(self._built())


class MeterCache:
    """Meters by (scope, event name), so that requests can assess their events themselves."""

    def __init__(self, store: Store, seconds: float = METER_CACHE_SECONDS) -> None:
        self.store = store
        self.seconds = seconds
        self._found: dict[tuple[Scope, str], tuple[float, tuple[Meter, int] | None]] = {}
        self._generation = 0

    async def lookup(self, events: Sequence[EventSubmission]) -> MeterLookup:
        return await self.lookup_keys({(event.scope, event.event_name) for event in events})

    def cached(self, keys: Iterable[tuple[Scope, str]]) -> MeterLookup | None:
        """The meters of ``keys`` if every one is cached and fresh, without a coroutine."""
        now = time.monotonic()
        found = {}
        for key in keys:
            cached = self._found.get(key)
            if cached is None or cached[0] <= now:
                return None
            found[key] = cached[1]
        return found

    async def lookup_keys(self, keys: Iterable[tuple[Scope, str]]) -> MeterLookup:
        now = time.monotonic()
        found: dict[tuple[Scope, str], tuple[Meter, int] | None] = {}
        for key in keys:
            cached = self._found.get(key)
            if cached is None or cached[0] <= now:
                generation = self._generation
                meter = await self.store.find_meter_by_event_name(*key)
                cached = (now + self.seconds, meter)
                if generation == self._generation:
                    if len(self._found) > 100_000:
                        self._found.clear()
                    self._found[key] = cached
            found[key] = cached[1]
        return found

    def forget(self) -> None:
        """A lookup still under way keeps its answer for its own request but does not cache it."""
        self._generation += 1
        self._found.clear()


class IngestPipeline:
    def __init__(
        self,
        store: Store,
        max_queued_events: int = DEFAULT_MAX_QUEUED_EVENTS,
        max_batch_events: int = DEFAULT_MAX_BATCH_EVENTS,
        linger_seconds: float = DEFAULT_LINGER_SECONDS,
    ) -> None:
        self.store = store
        self.meters = MeterCache(store)
        self.max_queued_events = max_queued_events
        self.max_batch_events = max_batch_events
        self.queued_events = 0
        self.linger_seconds = linger_seconds
        self.batches_committed = 0
        self.events_committed = 0
        self._queue: deque[_Pending] = deque()
        self._wakeup = asyncio.Event()
        self._task: asyncio.Task[None] | None = None
        self._stopping = False
        self._lock = threading.Lock()
        """``queued_events`` changes on the event loop (submit) and the writer's thread (take)."""
        self._loop: asyncio.AbstractEventLoop | None = None
        self.on_commit: Callable[[int, list[Outcome] | None], None] | None = None
        """Told, on the writer's thread, each batch's size and outcomes (None: it failed)."""

    async def start(self) -> None:
        self._task = asyncio.create_task(self._run(), name="meterd-ingest")

    async def stop(self) -> None:
        """Finish the commit under way and everything queued, then stop.

        The loop is asked to stop rather than cancelled: a cancelled commit would leave its
        requests waiting forever while the store's thread might still commit their events.
        """
        if self._task is None:
            return
        self._stopping = True
        self._wakeup.set()
        await self._task
        self._task = None

    async def cancel(self, scope: Scope, event_name: str, identifier: str, now: int) -> None:
        """Cancel one event (an adjustment) in a transaction of the writer's, which owns the
        identifier index the event is found by."""
        await self.store.transact(lambda tx: cancel(tx, scope, event_name, identifier, now))

    async def prune_event_identifiers(self, before: int) -> int:
        """Forget identifiers received at or before ``before`` (the writer's index too)."""
        return await self.store.prune_event_identifiers(before)

    def forget_meters(self) -> None:
        """Meters changed: assess the next events against the stored meters."""
        self.meters.forget()

    async def submit(self, events: Sequence[EventSubmission]) -> list[Outcome]:
        """Queue ``events`` (one request's worth) and wait until they are durably stored.

        The request assesses its own events first, in the event loop, while the writer may be
        busy with the previous commit: the writer's turn is what every request waits for.
        """
        self.check_room(len(events))
        assessed = assess_batch(events, await self.meters.lookup(events))
        return await self.submit_assessed(events, assessed)

    def check_room(self, count: int) -> None:
        """429 if ``count`` more events would not fit in the queue."""
        if self.queued_events + count > self.max_queued_events:
            raise RateLimitError(
                f"Too many meter events are waiting to be stored ({self.queued_events} queued, "
                f"at most {self.max_queued_events}); retry after a short pause.",
                headers={"Retry-After": "1"},
            )

    async def submit_assessed(
        self, events: Sequence[EventSubmission], assessed: Assessment
    ) -> list[Outcome]:
        """:meth:`submit` for a caller that assessed its events itself (the stream does, without
        building them unless the writer needs them: ``events`` may be a lazy sequence)."""
        self.check_room(len(events))
        future: asyncio.Future[list[Outcome]] = asyncio.get_running_loop().create_future()
        with self._lock:
            self._queue.append(_Pending(events, assessed, future))
            self.queued_events += len(events)
        self._wakeup.set()
        return await future

    def _take(self) -> list[_Pending] | None:
        """The next batch, on the writer's thread; None when nothing is queued."""
        if not self._queue:
            return None
        lingering = self.linger_seconds > 0 and not self._stopping
        if lingering and self.queued_events < LINGER_BELOW_EVENTS:
            time.sleep(self.linger_seconds)
        taken: list[_Pending] = []
        size = 0
        with self._lock:
            while self._queue and (
                not taken or size + len(self._queue[0].events) <= self.max_batch_events
            ):
                pending = self._queue.popleft()
                taken.append(pending)
                size += len(pending.events)
            self.queued_events -= size
        return taken

    @staticmethod
    def _write(tx: EventTransaction, taken: list[_Pending]) -> list[Outcome]:
        assessed = Assessment.join([pending.assessed for pending in taken])
        batch = LazyEvents(
            sum(len(pending.events) for pending in taken),
            lambda: [event for pending in taken for event in pending.events],
        )
        return ingest(tx, batch, assessed)

    def _written(
        self, taken: list[_Pending], outcomes: list[Outcome] | None, error: BaseException | None
    ) -> None:
        """On the writer's thread, right after the commit (or its failure)."""
        count = sum(len(pending.events) for pending in taken)
        if error is not None:
            log.error("commit of %d events failed", count, exc_info=error)
        else:
            self.batches_committed += 1
            self.events_committed += count
        if self.on_commit is not None:
            self.on_commit(count, None if error is not None else outcomes)
        assert self._loop is not None
        self._loop.call_soon_threadsafe(self._answer, taken, outcomes, error)

    @staticmethod
    def _answer(
        taken: list[_Pending], outcomes: list[Outcome] | None, error: BaseException | None
    ) -> None:
        start = 0
        for pending in taken:
            end = start + len(pending.events)
            if pending.future.done():  # its request went away; the next one's outcomes follow
                start = end
                continue
            if error is not None or outcomes is None:
                pending.future.set_exception(error or RuntimeError("no outcome"))
            else:
                pending.future.set_result(outcomes[start:end])
            start = end

    async def _run(self) -> None:
        """Hand the writer every batch until the queue is empty, then wait for more.

        The writer takes the next batch itself as soon as one commits, instead of waiting for
        this loop to be scheduled again between other requests' work.
        """
        self._loop = asyncio.get_running_loop()
        while True:
            await self._wakeup.wait()
            self._wakeup.clear()
            if self._queue:
                await self.store.transact_each(self._take, self._write, self._written)
            if self._stopping and not self._queue:
                return

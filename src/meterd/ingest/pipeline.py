"""Group commit: many requests' events are written in one transaction, with one fsync.

Requests hand their validated events to :meth:`IngestPipeline.submit` and wait. A single task
takes everything queued so far, writes it in one transaction, and only then answers each
request, so nothing is acknowledged before it is durable and a failed commit fails exactly the
requests that were in it. While one commit runs, the next batch gathers. The queue is bounded:
when it is full, new requests get 429 instead of growing memory.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections import deque
from collections.abc import Sequence

from meterd.errors import RateLimitError
from meterd.ingest.writes import Assessment, MeterLookup, Outcome, assess_batch, ingest
from meterd.metering.events import EventSubmission
from meterd.metering.meters import Meter
from meterd.scope import Scope
from meterd.storage import Store

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


class MeterCache:
    """Meters by (scope, event name), so that requests can assess their events themselves."""

    def __init__(self, store: Store, seconds: float = METER_CACHE_SECONDS) -> None:
        self.store = store
        self.seconds = seconds
        self._found: dict[tuple[Scope, str], tuple[float, tuple[Meter, int] | None]] = {}
        self._generation = 0

    async def lookup(self, events: Sequence[EventSubmission]) -> MeterLookup:
        now = time.monotonic()
        found: dict[tuple[Scope, str], tuple[Meter, int] | None] = {}
        for event in events:
            key = (event.scope, event.event_name)
            if key in found:
                continue
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

    def forget_meters(self) -> None:
        """Meters changed: assess the next events against the stored meters."""
        self.meters.forget()

    async def submit(self, events: Sequence[EventSubmission]) -> list[Outcome]:
        """Queue ``events`` (one request's worth) and wait until they are durably stored.

        The request assesses its own events first, in the event loop, while the writer may be
        busy with the previous commit: the writer's turn is what every request waits for.
        """
        if self.queued_events + len(events) > self.max_queued_events:
            raise RateLimitError(
                f"Too many meter events are waiting to be stored ({self.queued_events} queued, "
                f"at most {self.max_queued_events}); retry after a short pause.",
                headers={"Retry-After": "1"},
            )
        assessed = assess_batch(events, await self.meters.lookup(events))
        future: asyncio.Future[list[Outcome]] = asyncio.get_running_loop().create_future()
        self._queue.append(_Pending(events, assessed, future))
        self.queued_events += len(events)
        self._wakeup.set()
        return await future

    def _take(self) -> list[_Pending]:
        taken: list[_Pending] = []
        size = 0
        while self._queue and (
            not taken or size + len(self._queue[0].events) <= self.max_batch_events
        ):
            pending = self._queue.popleft()
            taken.append(pending)
            size += len(pending.events)
        self.queued_events -= size
        return taken

    async def _run(self) -> None:
        while True:
            await self._wakeup.wait()
            self._wakeup.clear()
            while self._queue:
                lingering = self.linger_seconds > 0 and not self._stopping
                if lingering and self.queued_events < LINGER_BELOW_EVENTS:
                    await asyncio.sleep(self.linger_seconds)
                await self._commit(self._take())
            if self._stopping:
                return

    async def _commit(self, taken: list[_Pending]) -> None:
        batch = [event for pending in taken for event in pending.events]
        assessed = Assessment.join([pending.assessed for pending in taken])
        try:
            outcomes = await self.store.transact(lambda tx: ingest(tx, batch, assessed))
        except Exception as exc:
            log.exception("commit of %d events failed", len(batch))
            for pending in taken:
                if not pending.future.done():
                    pending.future.set_exception(exc)
            return
        self.batches_committed += 1
        self.events_committed += len(batch)
        start = 0
        for pending in taken:
            end = start + len(pending.events)
            if not pending.future.done():
                pending.future.set_result(outcomes[start:end])
            start = end

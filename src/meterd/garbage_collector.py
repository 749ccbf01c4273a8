"""The cyclic garbage collector's settings for meterd's long-running processes (the server and
its writer process): both allocate many short-lived objects per event."""

from __future__ import annotations

import gc

YOUNG_COLLECTION_THRESHOLD = 50_000
"""Allocations (less deallocations) between two collections of the youngest generation; the
interpreter's default is 700. Above the objects a busy server keeps alive at once, so that
short-lived objects die before a collection sees them (see :func:`settle`)."""


def settle() -> None:
    """Keep what start-up built out of the cyclic GC's way.

    Ingest allocates several objects an event and they live until their batch commits, so they
    outlive the youngest generation and pile into the oldest; each full collection then also
    walked the hundreds of thousands of objects imported at start-up. Measured on the stream
    bench: 22 % of the event loop's time was ``gc_collect_main`` (py-spy --native), 53,000
    events/s with the collector as is, 68,000 with start-up objects frozen.

    The youngest generation is then collected after :data:`YOUNG_COLLECTION_THRESHOLD`
    allocations instead of 700. A stream request allocates a thousand or so container objects
    and frees most of them when it answers, but with 64 requests in flight about ten thousand
    are alive at any time, so at 700 a collection came every few requests, walked all of them
    (0.2 ms each, many of them cache misses) and promoted them. Measured with ``gc.callbacks``
    on the stream bench at 64 connections: 0.74 µs an event of the event loop's CPU went to
    collections at 700, 0.1 at 10,000, nothing measurable at 20,000 or 50,000.
    """
    gc.collect()
    gc.freeze()
    _, older, oldest = gc.get_threshold()
    gc.set_threshold(YOUNG_COLLECTION_THRESHOLD, older, oldest)

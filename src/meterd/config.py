"""Settings, from the command line and ``METERD_*`` environment variables."""

from __future__ import annotations

from typing import Literal

import msgspec

from meterd.api.rate_limits import Limit
from meterd.metering import sessions

DEFAULT_DATABASE_URL = "sqlite:///meterd.db"
DEFAULT_HOST = "127.0.0.1"
DEFAULT_PORT = 8420
DEFAULT_MAX_BODY_BYTES = 1024 * 1024
DEFAULT_MAX_QUEUED_EVENTS = 100_000
DEFAULT_SESSION_LIFETIME_SECONDS = sessions.DEFAULT_LIFETIME_SECONDS

GIL_SWITCH_SECONDS = 0.00002
"""How long a thread may wait for the GIL before it asks for it (Python's default: 5 ms).

The store's writer thread gives the GIL up for every SQL statement and for every numpy call
on a batch's identifiers (some 60 a batch), and needs it back after; while the event loop is
busy parsing requests, each of those waits costs up to the switch interval, and the writer's
turn is what every stream request waits for. Measured on the stream bench (fresh server per
arm, 8 windows of 8 s each, arms alternating): at 64 connections 129,000 events/s at 0.5 ms,
140,000 at 0.2 ms, 146,000 at 0.1 ms, 153,000-160,000 at 50 µs, 174,000 at 20 µs and
168,000-175,000 at 10 and 5 µs; at 32 connections 116,000 at 0.5 ms and 132,000 at 20 µs.
The v1 events and meters API benches did not change beyond their run-to-run spread."""


EventWriter = Literal["process", "thread"]


class Settings(msgspec.Struct, frozen=True, kw_only=True):
    database_url: str = DEFAULT_DATABASE_URL
    max_body_bytes: int = DEFAULT_MAX_BODY_BYTES
    max_queued_events: int = DEFAULT_MAX_QUEUED_EVENTS
    """Events waiting for the group commit before new requests get 429 (bounded memory)."""
    session_lifetime_seconds: int = DEFAULT_SESSION_LIFETIME_SECONDS
    """How long a meter event session's token works (Stripe: 15 minutes)."""
    rate_limits: dict[str, Limit] = {}
    """Token buckets per account, mode and endpoint family (:mod:`meterd.api.rate_limits`);
    none by default."""
    log_requests: bool = False
    """One JSON line per request on stderr (:mod:`meterd.observability`)."""
    event_writer: EventWriter = "process"
    """Where a SQLite file's events are written: a child process (the default; the event loop
    and the writer then have a GIL each, :mod:`meterd.ingest.writer_process`) or a thread of
    the server's. PostgreSQL, and a store handed to the app, always use a thread."""

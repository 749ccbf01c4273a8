"""Settings, from the command line and ``METERD_*`` environment variables."""

from __future__ import annotations

import msgspec

from meterd.api.rate_limits import Limit
from meterd.metering import sessions

DEFAULT_DATABASE_URL = "sqlite:///meterd.db"
DEFAULT_HOST = "127.0.0.1"
DEFAULT_PORT = 8420
DEFAULT_MAX_BODY_BYTES = 1024 * 1024
DEFAULT_MAX_QUEUED_EVENTS = 100_000
DEFAULT_SESSION_LIFETIME_SECONDS = sessions.DEFAULT_LIFETIME_SECONDS

GIL_SWITCH_SECONDS = 0.0005
"""How long a thread may wait for the GIL before it asks for it (Python's default: 5 ms).

The store's writer thread gives the GIL up for every SQL statement and needs it back after;
while the event loop is busy parsing requests, each of those waits cost up to the switch
interval. Measured in the stream issue: with a busy second thread, ingest went from 12,500 to
about 45,000 events/s at 0.5 ms; through the real server, the stream gained 10-20%."""


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

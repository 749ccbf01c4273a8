"""Rate limits per account and mode: a token bucket for each endpoint family, off by default.

Families: ``events`` (meter events v1/v2, adjustments, the stream; the stream counts one token
per request, not per event), ``reads`` (every GET), ``writes`` (every other POST or DELETE).
Configured as ``family=rate[/burst]`` (requests per second; the burst defaults to the rate),
e.g. ``--rate-limit events=1000 --rate-limit reads=100/200`` or
``METERD_RATE_LIMITS="events=1000,reads=100/200"``. A request over its limit gets 429 with
code ``rate_limit`` in the v1 envelope (``rate_limit`` type in v2) and ``Retry-After``.
"""

from __future__ import annotations

import math
import time
from collections.abc import Mapping
from typing import Literal

import msgspec

from meterd.errors import RateLimitError
from meterd.scope import Scope

Family = Literal["events", "reads", "writes"]
FAMILIES: tuple[Family, ...] = ("events", "reads", "writes")
EVENT_PATHS = (
    "/v1/billing/meter_events",
    "/v2/billing/meter_events",
    "/v1/billing/meter_event_adjustments",
    "/v2/billing/meter_event_adjustments",
    "/v2/billing/meter_event_stream",
)
MAX_BUCKETS = 100_000
"""Buckets kept at most; full (idle) ones are dropped first, so memory stays bounded."""


class Limit(msgspec.Struct, frozen=True):
    rate: float
    """Requests per second, refilled continuously."""
    burst: float


def parse_limits(specs: list[str]) -> dict[Family, Limit]:
    """``["events=1000", "reads=100/200"]`` -> limits by family; ValueError names the mistake."""
    limits: dict[Family, Limit] = {}
    for spec in (part.strip() for text in specs for part in text.split(",")):
        if not spec:
            continue
        family, _, value = spec.partition("=")
        if family not in FAMILIES:
            raise ValueError(
                f"unknown rate limit family {family!r} in {spec!r} (use {', '.join(FAMILIES)})"
            )
        rate_text, _, burst_text = value.partition("/")
        try:
            rate = float(rate_text)
            burst = float(burst_text) if burst_text else rate
        except ValueError:
            raise ValueError(f"{spec!r} is not family=rate[/burst]") from None
        if not (rate > 0 and burst >= 1 and math.isfinite(rate) and math.isfinite(burst)):
            raise ValueError(f"{spec!r}: the rate must be above 0 and the burst at least 1")
        limits[family] = Limit(rate, burst)
    return limits


def family_of(method: str, path: str) -> Family:
    if method == "GET":
        return "reads"
    if path in EVENT_PATHS:
        return "events"
    return "writes"


class RateLimiter:
    """Token buckets by (account, mode, family)."""

    def __init__(self, limits: Mapping[str, Limit]) -> None:
        self.limits = dict(limits)
        self._buckets: dict[tuple[Scope, Family], tuple[float, float]] = {}
        """(tokens, when they were counted) per bucket."""

    def check(self, scope: Scope, family: Family, now: float | None = None) -> None:
        """Take a token, or raise 429 saying when one will be there."""
        limit = self.limits.get(family)
        if limit is None:
            return
        now = time.monotonic() if now is None else now
        key = (scope, family)
        tokens, then = self._buckets.get(key, (limit.burst, now))
        tokens = min(limit.burst, tokens + (now - then) * limit.rate)
        if tokens < 1:
            self._buckets[key] = (tokens, now)
            wait = max(1, math.ceil((1 - tokens) / limit.rate))
            raise RateLimitError(
                f"Too many requests hit the API too quickly: this account's {family} are "
                f"limited to {limit.rate:g} per second (bursts of {limit.burst:g}). Retry "
                f"after {wait} s.",
                headers={"Retry-After": str(wait)},
            )
        self._buckets[key] = (tokens - 1, now)
        if len(self._buckets) > MAX_BUCKETS:
            self._forget_idle(now)

    def _forget_idle(self, now: float) -> None:
        for key, (tokens, then) in list(self._buckets.items()):
            limit = self.limits[key[1]]
            if tokens + (now - then) * limit.rate >= limit.burst:
                del self._buckets[key]
        if len(self._buckets) > MAX_BUCKETS:
            self._buckets.clear()

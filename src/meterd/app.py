"""The ASGI application: routes, the headers every response carries, and envelope fallbacks."""

from __future__ import annotations

import asyncio
import contextlib
import logging
import os
import sys
import time
from collections.abc import AsyncIterator
from typing import cast

import msgspec
from starlette.applications import Starlette
from starlette.exceptions import HTTPException
from starlette.requests import Request
from starlette.responses import Response
from starlette.routing import Route
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from meterd import garbage_collector, ids
from meterd.api import (
    adjustments,
    core_events,
    meter_event_stream,
    meter_events,
    meters_v1,
    plans,
    products,
    summaries,
)
from meterd.api.rate_limits import RateLimiter
from meterd.api.responses import error_response, json_response, version_of_path
from meterd.config import GIL_SWITCH_SECONDS, Settings
from meterd.errors import InvalidRequestError, StripeError, unexpected_error
from meterd.ingest.pipeline import IngestPipeline
from meterd.ingest.writer_process import ProcessPipeline, WritesInChild
from meterd.metering.events import IDENTIFIER_TTL_SECONDS
from meterd.observability import Metrics, ObserveRequests, enable_request_log, metrics_endpoint
from meterd.storage import Store, open_store
from meterd.storage.open import sqlite_path

log = logging.getLogger("meterd")

PRUNE_EVERY_SECONDS = 3600.0
EXPIRED_SESSIONS_KEPT_SECONDS = 24 * 3600
"""An expired token keeps answering "session expired" (not "unknown token") for a day."""


class StripeHeaders:
    """Adds ``Request-Id`` to every response and echoes the caller's ``Stripe-Version``."""

    def __init__(self, app: ASGIApp) -> None:
        self.app = app

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        version = next((v for k, v in scope["headers"] if k == b"stripe-version"), None)
        request_id = ids.request_id().encode()
        scope["meterd.request_id"] = request_id

        async def send_with_headers(message: Message) -> None:
            if message["type"] == "http.response.start":
                headers = list(message.get("headers", []))
                headers.append((b"request-id", request_id))
                if version is not None:
                    headers.append((b"stripe-version", version))
                message["headers"] = headers
            await send(message)

        await self.app(scope, receive, send_with_headers)


async def _http_error(request: Request, exc: Exception) -> Response:
    assert isinstance(exc, HTTPException)
    path = request.url.path
    error: StripeError
    if exc.status_code == 405:
        allowed = (exc.headers or {}).get("Allow", "")
        error = InvalidRequestError(
            f"Method not allowed: {request.method} {path}. Allowed: {allowed}.",
            status=405,
            headers={"Allow": allowed},
        )
    elif exc.status_code == 404:
        error = InvalidRequestError(
            f"Unrecognized request URL ({request.method}: {path}). Please see "
            "https://stripe.com/docs or the meterd README for the endpoints it implements.",
            status=404,
        )
    else:
        error = InvalidRequestError(str(exc.detail), status=exc.status_code)
    return error_response(error, version_of_path(path))


async def _unexpected_error(request: Request, exc: Exception) -> Response:
    log.exception("unhandled error on %s %s", request.method, request.url.path, exc_info=exc)
    return error_response(unexpected_error(), version_of_path(request.url.path))


HEALTH_TIMEOUT_SECONDS = 2.0


async def health(request: Request) -> Response:
    """200 when the database answers within 2 s, else 503 (for load balancers; no key needed)."""
    store: Store = request.app.state.store
    try:
        await asyncio.wait_for(store.has_accounts(), HEALTH_TIMEOUT_SECONDS)
    except Exception as exc:
        log.warning("health check failed: %r", exc)
        return json_response({"status": "unavailable", "database": "unreachable"}, status=503)
    return json_response({"status": "ok", "database": "ok"})


async def _prune_forever(store: Store, pipeline: IngestPipeline) -> None:
    """Idempotency keys, event identifiers and expired sessions are kept for 24 hours; the
    store does its own upkeep too (PostgreSQL adds the coming months' event partitions)."""
    while True:
        now = int(time.time())
        await store.prune_idempotency_keys(now)
        await pipeline.prune_event_identifiers(now - IDENTIFIER_TTL_SECONDS)
        await store.prune_sessions(now - EXPIRED_SESSIONS_KEPT_SECONDS)
        await store.maintain(now)
        await asyncio.sleep(PRUNE_EVERY_SECONDS)


def _writer_process_path(settings: Settings) -> str | None:
    """The SQLite file whose events a child process writes, or None for a thread of ours."""
    if settings.event_writer != "process" or not settings.database_url.startswith("sqlite:"):
        return None
    path = sqlite_path(settings.database_url)
    return None if path == ":memory:" else path


def create_app(settings: Settings, store: Store | None = None) -> ASGIApp:
    """The meterd app; it opens (and closes) the store itself unless one is given.

    The header middleware wraps the whole Starlette app so that even a 500 answered by
    Starlette's outermost error middleware carries a ``Request-Id``.
    """

    metrics = Metrics()

    @contextlib.asynccontextmanager
    async def lifespan(app: Starlette) -> AsyncIterator[None]:
        owned = store is None
        writer_path = _writer_process_path(settings) if owned else None
        opened = (
            store
            if store is not None
            else await open_store(settings.database_url, index_identifiers=writer_path is None)
        )
        await opened.release_unfinished_idempotency_keys()
        app.state.store = opened
        pipeline = (
            IngestPipeline(opened, max_queued_events=settings.max_queued_events)
            if writer_path is None
            else ProcessPipeline(opened, writer_path, max_queued_events=settings.max_queued_events)
        )
        pipeline.on_commit = metrics.committed
        metrics.watch_queue(lambda: pipeline.queued_events)
        await pipeline.start()
        app.state.pipeline = pipeline
        if isinstance(pipeline, ProcessPipeline):
            app.state.store = cast(Store, WritesInChild(opened, pipeline))
        pruner = asyncio.create_task(_prune_forever(app.state.store, pipeline))
        garbage_collector.settle()
        try:
            yield
        finally:
            pruner.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await pruner
            await pipeline.stop()
            if owned:
                await opened.close()

    app = Starlette(
        # The event routes come first: they take most of the traffic, and routes match in order.
        routes=[
            *meter_event_stream.routes,
            *meter_events.routes,
            *adjustments.routes,
            *meters_v1.routes,
            *summaries.routes,
            *core_events.routes,
            *plans.routes,
            *products.routes,
            Route("/metrics", metrics_endpoint, methods=["GET"]),
            Route("/healthz", health, methods=["GET"]),
        ],
        exception_handlers={HTTPException: _http_error, Exception: _unexpected_error},
        lifespan=lifespan,
    )
    app.state.settings = settings
    app.state.metrics = metrics
    app.state.rate_limiter = RateLimiter(settings.rate_limits) if settings.rate_limits else None
    if settings.log_requests:
        enable_request_log()
    fast = meter_event_stream.StreamFastPath(app)
    return StripeHeaders(ObserveRequests(fast, metrics, settings.log_requests))


WORKER_SETTINGS_VARIABLE = "METERD_WORKER_SETTINGS"
"""How ``meterd serve --workers N`` hands its settings to the processes uvicorn starts."""


def worker_app() -> ASGIApp:
    """The app of one of ``meterd serve --workers N``'s processes (a uvicorn factory)."""
    sys.setswitchinterval(GIL_SWITCH_SECONDS)
    settings = msgspec.json.decode(os.environ[WORKER_SETTINGS_VARIABLE], type=Settings)
    return create_app(settings)

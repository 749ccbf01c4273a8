"""The high-throughput path: the v2 meter event session and meter event stream endpoints.

A session hands out a token that lives 15 minutes; the stream takes up to 100 events per request
with that token, validates only their shape, and answers ``{}`` once they are durably stored.
Semantic problems become error reports, as for v1 (API-NOTES Part A); a repeated identifier is
dropped silently, since retrying a batch is exactly what identifiers are for.
"""

from __future__ import annotations

import hmac
import logging
import time
from datetime import datetime
from functools import partial
from operator import attrgetter
from typing import Annotated, Any

import msgspec
from msgspec import UNSET, Meta, UnsetType
from starlette.applications import Starlette
from starlette.datastructures import State
from starlette.requests import Request
from starlette.responses import Response
from starlette.routing import BaseRoute
from starlette.types import Receive, Send
from starlette.types import Scope as AsgiScope

from meterd.api.auth import secret_from_header
from meterd.api.endpoint import (
    ApiCall,
    admit_asgi,
    check_json_text,
    json_object,
    receive_body,
    resource,
    v2_unrecorded,
)
from meterd.api.meter_events import EventName, Identifier, Payload, new_identifier
from meterd.api.params import parse_params
from meterd.api.responses import error_response
from meterd.config import Settings
from meterd.errors import (
    AuthenticationError,
    InvalidRequestError,
    StripeError,
    TemporarySessionExpired,
    unexpected_error,
)
from meterd.ingest.pipeline import IngestPipeline, LazyEvents
from meterd.ingest.writes import assess_batch, assess_streamed
from meterd.keys import hash_secret
from meterd.metering.error_reports import rfc3339
from meterd.metering.events import EventSubmission
from meterd.metering.sessions import MeterEventSession, new_session
from meterd.scope import Scope
from meterd.storage import Store

log = logging.getLogger("meterd")

MAX_EVENTS_PER_REQUEST = 100
STREAM_PATH = "/v2/billing/meter_event_stream"


class StreamEvent(msgspec.Struct, forbid_unknown_fields=True, kw_only=True, gc=False):
    event_name: EventName
    payload: Payload
    identifier: Identifier | UnsetType = UNSET
    timestamp: datetime | UnsetType = UNSET


class StreamParams(msgspec.Struct, forbid_unknown_fields=True, kw_only=True, gc=False):
    events: Annotated[list[StreamEvent], Meta(min_length=1, max_length=MAX_EVENTS_PER_REQUEST)]


_decode_stream = msgspec.json.Decoder(StreamParams).decode
_event_name = attrgetter("event_name")
_EMPTY_BODY = b"{}"


async def create_session(call: ApiCall) -> dict[str, Any]:
    """A new session; an Idempotency-Key is ignored, so that the token is never stored (a
    retry just opens another session, which costs nothing)."""
    call.parse(NoParams)
    settings: Settings = call.request.app.state.settings
    session, token = new_session(call.scope, call.now, settings.session_lifetime_seconds)
    await call.store.insert_session(session)
    return {
        "id": session.id,
        "object": "v2.billing.meter_event_session",
        "authentication_token": token,
        "created": rfc3339(session.created),
        "expires_at": rfc3339(session.expires_at),
        "livemode": session.livemode,
    }


class NoParams(msgspec.Struct, forbid_unknown_fields=True):
    pass


_sessions: dict[str, MeterEventSession] = {}
"""Sessions already looked up, by token hash. A session cannot be revoked, only expire, so a
cached one is as good as the stored one until ``expires_at``."""


async def session_scope(authorization: str | None, store: Store) -> Scope:
    """The scope of the session whose token the request carries; 401 if none or expired."""
    token = secret_from_header(authorization, "v2")
    digest = hash_secret(token)
    session = _sessions.get(digest)
    if session is None:
        session = await store.find_session(digest)
        if session is None or not hmac.compare_digest(session.token_hash, digest):
            raise AuthenticationError(
                "Invalid authentication token provided: create a meter event session with "
                "POST /v2/billing/meter_event_session and send its authentication_token."
            )
        if len(_sessions) > 10_000:
            _sessions.clear()
        _sessions[digest] = session
    if session.expires_at <= time.time():
        _sessions.pop(digest, None)
        raise TemporarySessionExpired(
            "The meter event session has expired: create a new one with "
            "POST /v2/billing/meter_event_session."
        )
    return session.scope


def stream_params(body: bytes) -> StreamParams:
    """Typed events, decoded straight from the body; errors explained as the v2 API does."""
    check_json_text(body)
    try:
        return _decode_stream(body)
    except (msgspec.ValidationError, msgspec.DecodeError, RecursionError, UnicodeDecodeError):
        pass
    try:
        return parse_params(json_object(body), StreamParams, from_form=False)
    except InvalidRequestError as error:
        # v2 errors have no ``param``: the message names the event and field instead.
        if error.param and error.param not in error.message:
            error.message = f"{error.message} (at {error.param})"
            error.args = (error.message,)
        raise


def submissions(scope: Scope, params: StreamParams, now: int) -> list[EventSubmission]:
    events = []
    for index, event in enumerate(params.events):
        timestamp = now
        if event.timestamp is not UNSET:
            if event.timestamp.tzinfo is None:
                raise InvalidRequestError(
                    f"Invalid events[{index}][timestamp]: must be an RFC 3339 date-time with a "
                    "time zone offset."
                )
            timestamp = int(event.timestamp.timestamp() // 1)
        events.append(
            EventSubmission(
                scope=scope,
                event_name=event.event_name,
                identifier=event.identifier or new_identifier(),
                payload=event.payload,
                timestamp=timestamp,
                created=now,
                origin="stream",
            )
        )
    return events


def body_submissions(scope: Scope, body: bytes, now: int) -> list[EventSubmission]:
    """:func:`submissions` of a body already decoded once: a lazy batch's recipe is its body,
    which costs nothing to keep or to hand to the writer process (decoded events would)."""
    return submissions(scope, stream_params(body), now)


async def stream(request: Request) -> Response:
    """The stream through Starlette, for an app without :class:`StreamFastPath` in front (which
    takes every POST before it gets here); the route also gives other methods their 405."""
    try:
        answer = await store_batch(request.scope, request.receive, request.app.state)
    except StripeError as error:
        return error_response(error, "v2")
    return Response(answer or b"", media_type="application/json")


async def store_batch(asgi_scope: AsgiScope, receive: Receive, state: State) -> bytes | None:
    """Store a batch of events: the body to answer once they are durable, or None when the
    client went away before sending its whole body."""
    settings: Settings = state.settings
    authorization = content_length = None
    for name, value in asgi_scope["headers"]:
        if name == b"authorization":
            authorization = value.decode("latin-1")
        elif name == b"content-length":
            content_length = value
    scope = await session_scope(authorization, state.store)
    admit_asgi(asgi_scope, state, scope)
    body = await receive_body(receive, content_length, settings.max_body_bytes)
    if body is None:
        return None
    params = stream_params(body)
    now = int(time.time())
    pipeline: IngestPipeline = state.pipeline
    pipeline.check_room(len(params.events))
    keys = [(scope, name) for name in set(map(_event_name, params.events))]
    meters = pipeline.meters.cached(keys) or await pipeline.meters.lookup_keys(keys)
    assessed = assess_streamed(scope, params.events, now, meters)
    if assessed is None:
        events = submissions(scope, params, now)
        assessed = assess_batch(events, meters)
        await pipeline.submit_assessed(events, assessed)
    else:
        # assess_streamed answered, so building the submissions cannot fail, and gives the
        # very events it assessed.
        lazy = LazyEvents(len(params.events), partial(body_submissions, scope, body, now))
        await pipeline.submit_assessed(lazy, assessed)
    return _EMPTY_BODY


class StreamFastPath:
    """``POST /v2/billing/meter_event_stream`` straight on ASGI, every other request to ``app``.

    The stream is the high-volume path, and the event loop's time is what bounds it: Starlette's
    middleware, routing and Request objects took a quarter of it per batch of 100 events
    (py-spy, bench/stream_api.py). The answers are the same: errors are rendered by the same
    envelope code, unexpected exceptions become the same 500.
    """

    def __init__(self, app: Starlette) -> None:
        self.app = app
        self.route = next(r for r in app.routes if getattr(r, "path", None) == STREAM_PATH)

    async def __call__(self, scope: AsgiScope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http" or scope["path"] != STREAM_PATH or scope["method"] != "POST":
            await self.app(scope, receive, send)
            return
        scope["route"] = self.route
        try:
            answer = await store_batch(scope, receive, self.app.state)
        except StripeError as error:
            await error_response(error, "v2")(scope, receive, send)
            return
        except Exception as exc:
            log.exception("unhandled error on POST %s", STREAM_PATH, exc_info=exc)
            await error_response(unexpected_error(), "v2")(scope, receive, send)
            return
        if answer is None:
            return
        await send(
            {
                "type": "http.response.start",
                "status": 200,
                "headers": [
                    (b"content-length", str(len(answer)).encode()),
                    (b"content-type", b"application/json"),
                ],
            }
        )
        await send({"type": "http.response.body", "body": answer})


routes: list[BaseRoute] = [
    resource(STREAM_PATH, POST=stream),
    resource("/v2/billing/meter_event_session", POST=v2_unrecorded(create_session)),
]

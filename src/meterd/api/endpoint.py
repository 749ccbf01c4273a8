"""What every API call goes through: auth, params, idempotency, and the error envelope.

A resource module writes handlers ``async def handler(call: ApiCall) -> dict`` and wraps them
with :func:`v1` or :func:`v2`; the wrapper owns everything that is the same for all of them.
"""

from __future__ import annotations

import time
from collections.abc import Awaitable, Callable
from typing import Any, TypeVar

import msgspec
from starlette.datastructures import State
from starlette.requests import ClientDisconnect, Request
from starlette.responses import Response
from starlette.routing import Route
from starlette.types import Receive
from starlette.types import Scope as AsgiScope

from meterd.api import idempotency
from meterd.api.auth import authenticate
from meterd.api.forms import decode_form
from meterd.api.params import parse_params
from meterd.api.rate_limits import RateLimiter, family_of
from meterd.api.responses import ApiVersion, error_response, json_response
from meterd.config import Settings
from meterd.errors import InvalidRequestError, NotFoundError, StripeError
from meterd.ingest.pipeline import IngestPipeline
from meterd.scope import Scope
from meterd.storage import Store

T = TypeVar("T")

Handler = Callable[["ApiCall"], Awaitable[dict[str, Any]]]
EventHandler = Callable[["ApiCall"], Awaitable[Response]]
Endpoint = Callable[[Request], Awaitable[Response]]


class ApiCall:
    """One authenticated request with its decoded params."""

    def __init__(
        self, request: Request, store: Store, scope: Scope, params: Any, version: ApiVersion
    ) -> None:
        self.request = request
        self.store = store
        self.scope = scope
        self.params = params
        self.version = version
        self.now = int(time.time())

    def path_param(self, name: str) -> str:
        """An id from the path; one with a NUL byte names nothing (no id can hold one)."""
        value = str(self.request.path_params[name])
        if "\x00" in value:
            raise NotFoundError(f"No such object: {value[:40]!r}", param=name)
        return value

    def parse(self, into: type[T]) -> T:
        """Typed params; query strings (any version) and v1 bodies carry form-encoded text."""
        from_form = self.version == "v1" or self.request.method == "GET"
        return parse_params(self.params, into, from_form=from_form)

    @property
    def pipeline(self) -> IngestPipeline:
        pipeline: IngestPipeline = self.request.app.state.pipeline
        return pipeline


def resource(path: str, **handlers: Endpoint) -> Route:
    """One route per path, dispatching by method, so a 405 lists every allowed method."""

    async def dispatch(request: Request) -> Response:
        return await handlers[request.method](request)

    return Route(path, dispatch, methods=list(handlers))


def v1(handler: Handler) -> Endpoint:
    return _endpoint(handler, "v1")


def v2(handler: Handler) -> Endpoint:
    return _endpoint(handler, "v2")


def event_write(handler: EventHandler, version: ApiVersion) -> Endpoint:
    """For endpoints that write events: the handler keeps the Idempotency-Key itself.

    It hands the key to the ingest pipeline, which checks and stores it in the same
    transaction as the events (see :mod:`meterd.ingest.writes`), instead of two more.
    """

    async def endpoint(request: Request) -> Response:
        try:
            return await handler(await _call(request, version))
        except StripeError as error:
            return error_response(error, version)

    endpoint.__name__ = handler.__name__
    endpoint.__doc__ = handler.__doc__
    return endpoint


def v2_unrecorded(handler: Handler) -> Endpoint:
    """A v2 endpoint whose answers are never stored under an Idempotency-Key (the key is
    ignored): for answers that hold a secret, such as a meter event session's token."""

    async def answer(call: ApiCall) -> Response:
        return json_response(await handler(call))

    answer.__name__ = handler.__name__
    return event_write(answer, "v2")


def _endpoint(handler: Handler, version: ApiVersion) -> Endpoint:
    async def endpoint(request: Request) -> Response:
        try:
            call = await _call(request, version)
            key = request.headers.get("idempotency-key")
            if key is not None and request.method in ("POST", "DELETE"):
                return await idempotency.run_once(call, key, handler)
            return json_response(await handler(call))
        except StripeError as error:
            return error_response(error, version)

    endpoint.__name__ = handler.__name__
    endpoint.__doc__ = handler.__doc__
    return endpoint


def admit(request: Request, scope: Scope) -> None:
    """Who is asking, for the request log; and their rate limit, if one is set."""
    admit_asgi(request.scope, request.app.state, scope)


def admit_asgi(asgi_scope: AsgiScope, state: State, scope: Scope) -> None:
    """:func:`admit` for an endpoint that works on the ASGI scope itself."""
    asgi_scope["meterd.scope"] = scope
    limiter: RateLimiter | None = getattr(state, "rate_limiter", None)
    if limiter is not None:
        limiter.check(scope, family_of(asgi_scope["method"], asgi_scope["path"]))


async def _call(request: Request, version: ApiVersion) -> ApiCall:
    store: Store = request.app.state.store
    settings: Settings = request.app.state.settings
    scope = await authenticate(request, store, version)
    admit(request, scope)
    params = await read_params(request, version, settings.max_body_bytes)
    return ApiCall(request, store, scope, params, version)


async def read_params(request: Request, version: ApiVersion, max_body_bytes: int) -> Any:
    """The query string for reads, the body for writes: bracket form on v1, JSON on v2."""
    if request.method == "GET" or (request.method == "DELETE" and version == "v1"):
        return decode_form(request.url.query)
    body = await read_body(request, max_body_bytes)
    if version == "v1":
        return decode_form(body)
    if not body.strip():
        return {}
    return json_object(body)


async def read_body(request: Request, max_body_bytes: int) -> bytes:
    """The request body, refused with 413 as soon as it passes ``max_body_bytes``."""
    declared = request.headers.get("content-length", "").encode("latin-1")
    body = await receive_body(request.receive, declared, max_body_bytes)
    if body is None:
        raise ClientDisconnect()
    return body


async def receive_body(
    receive: Receive, content_length: bytes | None, max_body_bytes: int
) -> bytes | None:
    """The body straight from ASGI messages, refused with 413 as soon as it passes
    ``max_body_bytes``; None if the client went away."""
    declared = content_length or b""
    if declared.isdigit() and int(declared) > max_body_bytes:
        raise _too_large(max_body_bytes)
    chunks: list[bytes] = []
    size = 0
    while True:
        message = await receive()
        if message["type"] != "http.request":
            return None
        chunk = message.get("body", b"")
        chunks.append(chunk)
        size += len(chunk)
        if size > max_body_bytes:
            raise _too_large(max_body_bytes)
        if not message.get("more_body", False):
            return chunk if len(chunks) == 1 else b"".join(chunks)


def json_object(body: bytes) -> dict[str, Any]:
    """A v2 body decoded without a type; 400 unless it is a JSON object."""
    check_json_text(body)
    try:
        decoded = msgspec.json.decode(body)
    except msgspec.DecodeError as exc:
        raise InvalidRequestError(f"Invalid JSON body: {exc}.") from None
    except RecursionError:
        raise InvalidRequestError("Invalid JSON body: nested too deeply.") from None
    except UnicodeDecodeError:
        raise InvalidRequestError("Invalid JSON body: a string is not valid UTF-8.") from None
    if not isinstance(decoded, dict):
        raise InvalidRequestError("Invalid JSON body: the request body must be a JSON object.")
    return decoded


def check_json_text(body: bytes) -> None:
    """NUL characters are refused in v2 bodies as in v1 forms (PostgreSQL's text cannot hold
    them, and no identifier or name needs one)."""
    if b"\\u0000" in body or b"\x00" in body:
        raise InvalidRequestError("Invalid JSON body: strings may not contain NUL characters.")


def _too_large(limit: int) -> InvalidRequestError:
    return InvalidRequestError(
        f"Request body too large: at most {limit} bytes are accepted.", status=413
    )

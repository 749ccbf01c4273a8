"""Idempotency-Key: a retry with the same params replays the first answer, for 24 hours.

The claim is stored in the database before the handler runs, so two processes (or two
concurrent requests) with one key never both execute: the second waits for the first and
replays its answer, or gets an ``idempotency_error`` if the first is still running after
:data:`WAIT_SECONDS`. Only successful answers are kept; a request that failed validation (any
error) releases its claim, as Stripe does for requests that never began executing.
"""

from __future__ import annotations

import asyncio
import hashlib
import time
from collections.abc import Awaitable, Callable
from typing import TYPE_CHECKING, Any

import msgspec
from starlette.responses import Response

from meterd.api.responses import encoded_response
from meterd.errors import IdempotencyError, InvalidRequestError

if TYPE_CHECKING:
    from meterd.api.endpoint import ApiCall

MAX_KEY_LENGTH = 255
WAIT_SECONDS = 10.0
POLL_SECONDS = 0.05


def fingerprint(method: str, path: str, params: Any) -> str:
    """A digest of what the request asks for; retries must match it exactly."""
    canonical = msgspec.json.encode([method, path, params], order="sorted")
    return hashlib.sha256(canonical).hexdigest()


def check_key(key: str) -> None:
    if not key or len(key) > MAX_KEY_LENGTH:
        raise InvalidRequestError(
            f"Invalid Idempotency-Key: it must be 1 to {MAX_KEY_LENGTH} characters long.",
            param="Idempotency-Key",
        )


def reused(key: str) -> IdempotencyError:
    return IdempotencyError(
        "Keys for idempotent requests can only be used with the same parameters they "
        f"were first used with. Try using a key other than '{key}' if you meant to "
        "execute a different request."
    )


def in_use() -> IdempotencyError:
    return IdempotencyError(
        "There is currently another in-progress request using this idempotency key. "
        "Try again later.",
        code="idempotency_key_in_use",
    )


def replay(status: int, body: bytes) -> Response:
    return encoded_response(body, status, {"Idempotent-Replayed": "true"})


async def run_once(
    call: ApiCall, key: str, handler: Callable[[ApiCall], Awaitable[dict[str, Any]]]
) -> Response:
    """The general path: claim the key in its own transaction, run, store the answer.

    Event writes keep their keys inside the group commit instead (``ingest.writes``).
    """
    check_key(key)
    store, scope = call.store, call.scope
    digest = fingerprint(call.request.method, call.request.url.path, call.params)
    deadline = time.monotonic() + WAIT_SECONDS
    while (prior := await store.claim_idempotency_key(scope, key, digest, call.now)) is not None:
        if prior.fingerprint != digest:
            raise reused(key)
        if prior.status is not None and prior.body is not None:
            return replay(prior.status, prior.body)
        if time.monotonic() >= deadline:
            raise in_use()
        await asyncio.sleep(POLL_SECONDS)
    try:
        body = await handler(call)
    except BaseException:
        await asyncio.shield(store.release_idempotency_key(scope, key))
        raise
    encoded = msgspec.json.encode(body)
    await store.complete_idempotency_key(scope, key, 200, encoded)
    return encoded_response(encoded, 200)

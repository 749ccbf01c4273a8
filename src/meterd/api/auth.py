"""Secret-key authentication: Bearer everywhere, Basic (key as username) on v1 too."""

from __future__ import annotations

import base64
import binascii
import hmac

from starlette.requests import Request

from meterd.api.responses import ApiVersion
from meterd.errors import AuthenticationError
from meterd.keys import ApiKey, hash_secret, masked
from meterd.scope import Scope
from meterd.storage import Store

NO_KEY = (
    "You did not provide an API key. You need to provide your API key in the Authorization "
    "header, using Bearer auth (e.g. 'Authorization: Bearer YOUR_SECRET_KEY')."
)


def secret_from_header(header: str | None, version: ApiVersion) -> str:
    """The secret the Authorization header carries; raises 401 when there is none."""
    if not header:
        raise AuthenticationError(NO_KEY)
    scheme, _, credentials = header.strip().partition(" ")
    credentials = credentials.strip()
    if scheme.lower() == "bearer":
        secret = credentials
    elif scheme.lower() == "basic" and version == "v1":
        try:
            decoded = base64.b64decode(credentials, validate=True).decode("utf-8")
        except (binascii.Error, UnicodeDecodeError):
            raise AuthenticationError(
                "Invalid Basic authorization header: it must be base64 of 'key:'."
            ) from None
        secret = decoded.partition(":")[0]
    else:
        expected = "Bearer" if version == "v2" else "Bearer or Basic"
        raise AuthenticationError(
            f"Invalid authorization header: use {expected} auth with your secret key."
        )
    if not secret:
        raise AuthenticationError(NO_KEY)
    return secret


async def _find_key(store: Store, digest: str) -> ApiKey | None:
    """Every request asks the database, so a revoked key is refused at once. SQLite's store
    answers it on a reader connection of its own, not behind the writer's commits."""
    return await store.find_api_key(digest)


async def authenticate(request: Request, store: Store, version: ApiVersion) -> Scope:
    secret = secret_from_header(request.headers.get("authorization"), version)
    digest = hash_secret(secret)
    key = await _find_key(store, digest)
    if (
        key is None
        or key.revoked_at is not None
        or not hmac.compare_digest(key.secret_hash, digest)
    ):
        raise AuthenticationError(f"Invalid API Key provided: {masked(secret)}")
    return Scope(key.account_id, key.livemode)

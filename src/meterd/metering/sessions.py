"""Meter event sessions: the short-lived tokens the v2 stream authenticates with.

A session is bound to the account and mode of the key that created it. Its token is random and
only its hash is stored, like API keys; it stops working at ``expires_at`` (15 minutes, as
Stripe's, unless configured otherwise).
"""

from __future__ import annotations

import msgspec

from meterd import ids
from meterd.keys import hash_secret
from meterd.scope import Scope

DEFAULT_LIFETIME_SECONDS = 15 * 60
TOKEN_PREFIX = "mets_"


class MeterEventSession(msgspec.Struct, frozen=True, kw_only=True):
    id: str
    account_id: str
    livemode: bool
    token_hash: str
    created: int
    expires_at: int

    @property
    def scope(self) -> Scope:
        return Scope(self.account_id, self.livemode)


def new_session(scope: Scope, now: int, lifetime: int) -> tuple[MeterEventSession, str]:
    """A session record and the token it stands for (the token itself is never stored)."""
    token = TOKEN_PREFIX + ids.random_base62(48)
    session = MeterEventSession(
        id=ids.object_id("mes", scope.livemode),
        account_id=scope.account_id,
        livemode=scope.livemode,
        token_hash=hash_secret(token),
        created=now,
        expires_at=now + lifetime,
    )
    return session, token

"""Who is asking: every object belongs to one (account, mode) scope."""

from __future__ import annotations

import msgspec


class Scope(msgspec.Struct, frozen=True):
    account_id: str
    livemode: bool

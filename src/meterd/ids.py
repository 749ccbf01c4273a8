"""Random identifiers in Stripe's look: a prefix, then base62 (never sequential)."""

from __future__ import annotations

import secrets
import string

_ALPHABET = string.digits + string.ascii_letters


def random_base62(length: int) -> str:
    return "".join(secrets.choice(_ALPHABET) for _ in range(length))


def object_id(prefix: str, livemode: bool, length: int = 32) -> str:
    """``mtr_test_...`` in test mode and ``mtr_...`` in live mode, as Stripe's examples show."""
    mode = "" if livemode else "test_"
    return f"{prefix}_{mode}{random_base62(length)}"


def request_id() -> str:
    return "req_" + random_base62(14)

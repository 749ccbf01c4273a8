"""Random identifiers in Stripe's look: a prefix, then base62 (never sequential)."""

from __future__ import annotations

import os
import random
import string

_ALPHABET = string.digits + string.ascii_letters


def random_base62(length: int) -> str:
    """``length`` base62 characters from the OS's CSPRNG, drawn in one read.

    One ``os.urandom`` call and a base conversion instead of a ``secrets.choice`` per character
    (which cost several percent of a request when every response carries a new Request-Id).
    The number drawn has 64 more bits than needed, so the modulo bias is negligible.
    """
    number = int.from_bytes(os.urandom((length * 6 + 64) // 8 + 1), "big")
    chars = []
    for _ in range(length):
        number, digit = divmod(number, 62)
        chars.append(_ALPHABET[digit])
    return "".join(chars)


def base62(number: int) -> str:
    """A non-negative integer in base62 (shortest form)."""
    digits = []
    while number:
        number, rest = divmod(number, 62)
        digits.append(_ALPHABET[rest])
    return "".join(reversed(digits)) or "0"


def from_base62(text: str) -> int:
    """The inverse of :func:`base62`; raises ``ValueError`` on a character outside it."""
    number = 0
    for char in text:
        digit = _ALPHABET.find(char)
        if digit < 0:
            raise ValueError(text)
        number = number * 62 + digit
    return number


def object_id(prefix: str, livemode: bool, length: int = 32) -> str:
    """``mtr_test_...`` in test mode and ``mtr_...`` in live mode, as Stripe's examples show."""
    mode = "" if livemode else "test_"
    return f"{prefix}_{mode}{random_base62(length)}"


def request_id() -> str:
    """Request-Ids tell requests apart and guard nothing, so they come from Python's PRNG
    (seeded by the OS) instead of a system call per answer, a byte to a character."""
    return "req_" + random.randbytes(14).translate(_BYTE_TO_BASE62).decode()


_BYTE_TO_BASE62 = bytes(ord(_ALPHABET[byte % 62]) for byte in range(256))
"""Bytes 0-247 map evenly (four times over the alphabet), 248-255 onto its first eight
characters: those come up 5 times in 256 instead of 4, harmless in an id that guards nothing."""

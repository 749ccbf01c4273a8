"""Stripe's metadata rules: at most 50 keys, keys up to 40 characters, values up to 500.

On create, a key sent with an empty value is not stored. On update, an empty value removes its
key, other keys are merged into what is stored, and ``metadata=""`` removes every key.
"""

from __future__ import annotations

from meterd.errors import InvalidRequestError

MAX_KEYS = 50
MAX_KEY_LENGTH = 40
MAX_VALUE_LENGTH = 500

MetadataParam = dict[str, str] | str
"""What a request may send: a hash of strings, or ``""`` to clear every key."""


def created(sent: MetadataParam | None) -> dict[str, str]:
    return updated({}, sent)


def updated(stored: dict[str, str], sent: MetadataParam | None) -> dict[str, str]:
    if sent is None:
        return stored
    if isinstance(sent, str):
        if sent:
            raise InvalidRequestError(
                "Invalid metadata: metadata must be a hash, or an empty string to unset it.",
                param="metadata",
            )
        return {}
    merged = dict(stored)
    for key, value in sent.items():
        if len(key) > MAX_KEY_LENGTH:
            raise InvalidRequestError(
                f"Invalid metadata: keys can be at most {MAX_KEY_LENGTH} characters long "
                f"(got '{key[:MAX_KEY_LENGTH]}...').",
                param="metadata",
            )
        if len(value) > MAX_VALUE_LENGTH:
            raise InvalidRequestError(
                f"Invalid metadata[{key}]: values can be at most {MAX_VALUE_LENGTH} characters "
                "long.",
                param=f"metadata[{key}]",
            )
        if value:
            merged[key] = value
        else:
            merged.pop(key, None)
    if len(merged) > MAX_KEYS:
        raise InvalidRequestError(
            f"Invalid metadata: metadata can have at most {MAX_KEYS} keys.", param="metadata"
        )
    return merged

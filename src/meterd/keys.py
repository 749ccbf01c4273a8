"""Accounts and their secret API keys. Keys are shown once and stored only as hashes."""

from __future__ import annotations

import hashlib

import msgspec

from meterd import ids


class Account(msgspec.Struct, kw_only=True):
    id: str
    created: int


class ApiKey(msgspec.Struct, kw_only=True):
    id: str
    account_id: str
    livemode: bool
    secret_hash: str
    last4: str
    created: int
    revoked_at: int | None = None


def new_account(now: int) -> Account:
    return Account(id="acct_" + ids.random_base62(16), created=now)


def hash_secret(secret: str) -> str:
    """Secrets are 286 random bits, so one SHA-256 is enough (no password stretching needed)."""
    return hashlib.sha256(secret.encode()).hexdigest()


def new_api_key(account_id: str, livemode: bool, now: int) -> tuple[ApiKey, str]:
    """A fresh key record and the secret it stands for (the secret is never stored)."""
    secret = ("sk_live_" if livemode else "sk_test_") + ids.random_base62(48)
    key = ApiKey(
        id="key_" + ids.random_base62(16),
        account_id=account_id,
        livemode=livemode,
        secret_hash=hash_secret(secret),
        last4=secret[-4:],
        created=now,
    )
    return key, secret


def masked(secret: str) -> str:
    """How a key appears in messages: its prefix and last four characters only."""
    prefix = secret[:8] if secret.startswith(("sk_test_", "sk_live_")) else ""
    return f"{prefix}{'*' * 24}{secret[-4:]}"

"""The one storage interface the API and domain code talk to.

Every method is one transaction, so callers never see a half-written change. Implementations
translate their database's errors into the exceptions below.
"""

from __future__ import annotations

from typing import Generic, Protocol, TypeVar

import msgspec

from meterd.keys import Account, ApiKey
from meterd.metering.meters import Meter, MeterStatus
from meterd.scope import Scope

T = TypeVar("T")

IDEMPOTENCY_TTL_SECONDS = 24 * 3600


class AlreadyExists(Exception):
    """A uniqueness rule was hit; ``field`` names the clashing attribute."""

    def __init__(self, field: str) -> None:
        super().__init__(field)
        self.field = field


class CursorNotFound(Exception):
    """A ``starting_after``/``ending_before`` id names no object in this scope."""

    def __init__(self, param: str, object_id: str) -> None:
        super().__init__(object_id)
        self.param = param
        self.object_id = object_id


class PageRequest(msgspec.Struct, frozen=True):
    limit: int = 10
    starting_after: str | None = None
    ending_before: str | None = None


class Page(msgspec.Struct, Generic[T]):
    items: list[T]
    has_more: bool


class IdempotentResponse(msgspec.Struct, kw_only=True):
    """A stored request under an Idempotency-Key: in progress until ``status`` is set."""

    fingerprint: str
    created: int
    status: int | None = None
    body: bytes | None = None


class Store(Protocol):
    async def close(self) -> None: ...

    # accounts and keys
    async def create_account(self, account: Account, key: ApiKey) -> None: ...
    async def has_accounts(self) -> bool: ...
    async def add_api_key(self, key: ApiKey) -> None: ...
    async def find_api_key(self, secret_hash: str) -> ApiKey | None: ...
    async def list_api_keys(self) -> list[ApiKey]: ...
    async def first_account(self) -> Account | None: ...

    # meters
    async def insert_meter(self, meter: Meter) -> None:
        """Raises ``AlreadyExists("event_name")`` when the scope has a meter with that name."""

    async def get_meter(self, scope: Scope, meter_id: str) -> Meter | None: ...
    async def save_meter(self, meter: Meter) -> None: ...
    async def list_meters(
        self, scope: Scope, page: PageRequest, status: MeterStatus | None
    ) -> Page[Meter]:
        """Newest first; raises ``CursorNotFound`` for an unknown cursor."""

    # idempotency
    async def claim_idempotency_key(
        self, scope: Scope, key: str, fingerprint: str, now: int
    ) -> IdempotentResponse | None:
        """Claim ``key`` for a new request (returns None), or return the request that has it.

        Records older than 24 h count as absent and are replaced.
        """

    async def complete_idempotency_key(
        self, scope: Scope, key: str, status: int, body: bytes
    ) -> None: ...
    async def release_idempotency_key(self, scope: Scope, key: str) -> None: ...
    async def prune_idempotency_keys(self, now: int) -> int: ...
    async def release_unfinished_idempotency_keys(self) -> int:
        """At start-up: forget claims of requests that never answered (their process died)."""

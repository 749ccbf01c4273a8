"""The one storage interface the API and domain code talk to.

Every method is one transaction, so callers never see a half-written change. Implementations
translate their database's errors into the exceptions below.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from typing import Generic, NamedTuple, Protocol, TypeVar

import msgspec

from meterd.billing.plans import Plan
from meterd.billing.products import Product
from meterd.keys import Account, ApiKey
from meterd.metering.error_reports import ErrorReport
from meterd.metering.meters import Meter, MeterStatus
from meterd.metering.rollups import Rollup, RollupKey, StoredEvent
from meterd.metering.sessions import MeterEventSession
from meterd.scope import Scope

T = TypeVar("T")
W = TypeVar("W")

IDEMPOTENCY_TTL_SECONDS = 24 * 3600


class AlreadyExists(Exception):
    """A uniqueness rule was hit; ``field`` names the clashing attribute."""

    def __init__(self, field: str) -> None:
        super().__init__(field)
        self.field = field


class StillReferenced(Exception):
    """An object cannot be deleted while others refer to it (a product that plans use)."""


class ReferenceMissing(Exception):
    """An object refers to one that does not exist (any more); ``field`` names the reference."""

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


class CreatedBounds(msgspec.Struct, frozen=True):
    """A list's ``created`` filter as inclusive bounds, in unix seconds."""

    low: int | None = None
    high: int | None = None


class PlanFilter(msgspec.Struct, frozen=True, kw_only=True):
    active: bool | None = None
    product: str | None = None
    created: CreatedBounds = CreatedBounds()


class ProductFilter(msgspec.Struct, frozen=True, kw_only=True):
    active: bool | None = None
    ids: tuple[str, ...] | None = None
    created: CreatedBounds = CreatedBounds()


class IdempotentResponse(msgspec.Struct, kw_only=True):
    """A stored request under an Idempotency-Key: in progress until ``status`` is set."""

    fingerprint: str
    created: int
    status: int | None = None
    body: bytes | None = None


class RawEvent(NamedTuple):
    """One row of the append-only event table; ``value`` is scaled by 10^12 (None for count).

    ``recount_bucket`` is the rollup leaf of an event whose meter tracks the latest event
    (:func:`meterd.metering.rollups.tracks_latest`), None otherwise.
    """

    seq: int
    meter_seq: int
    customer: str
    ts: int
    value: int | None
    identifier: str
    created: int
    recount_bucket: int | None
    cancelled: bool = False


def identifier_hash(account_id: str, livemode: bool, identifier: str) -> int:
    """What a store's in-memory identifier index is keyed by. Python's own hash: the index
    lives in one process and is rebuilt at start-up, so a per-process hash is enough."""
    return hash((account_id, livemode, identifier))


NewEvent = tuple[int, str, int, int | None, str, int, int | None, str, bool]
"""A counted event to append, as a plain tuple (one is built per event, so no class):
(meter_seq, customer, ts, scaled value or None, identifier, created, recount_bucket,
account_id, livemode). The last two say whose identifier it is."""


class IdentifierRecord(NamedTuple):
    """An identifier seen in the last 24 h; ``event_seq`` is None when the event never counted."""

    received: int
    event_seq: int | None
    uncounted_event_name: str | None = None


class ReportFilter(msgspec.Struct, frozen=True, kw_only=True):
    """``GET /v2/core/events`` filters: the related meter, event types, creation bounds."""

    object_id: str | None = None
    types: tuple[str, ...] = ()
    created_after: int | None = None
    created_before: int | None = None
    """Inclusive bounds, in unix seconds."""


class Reservation(NamedTuple):
    scope: Scope
    identifier: str
    received: int
    event_seq: int | None
    uncounted_event_name: str | None = None


class EventTransaction(Protocol):
    """What the ingest layer may do inside one write transaction, on the store's writer.

    The methods are synchronous: the whole unit of work runs on the writer in one go and
    commits once (see :meth:`Store.transact`).
    """

    def meter_by_event_name(self, scope: Scope, event_name: str) -> tuple[Meter, int] | None:
        """The meter (and its compact integer key) that owns ``event_name`` in ``scope``."""

    def meter_by_seq(self, meter_seq: int) -> Meter: ...
    def received_identifiers(
        self, scope: Scope, identifiers: Sequence[str], since: int
    ) -> dict[str, int]:
        """When each of ``identifiers`` received after ``since`` in ``scope`` arrived."""

    def identifier(self, scope: Scope, identifier: str) -> IdentifierRecord | None: ...
    def reserve_identifiers(self, rows: Sequence[Reservation]) -> None:
        """Record identifiers; a later record of the same identifier supersedes older ones."""

    def next_event_seq(self) -> int: ...
    def append_events(
        self, first_seq: int, events: Sequence[NewEvent], hashes: Sequence[int] | None = None
    ) -> None:
        """Append counted events with sequence numbers from ``first_seq`` on, and record their
        identifiers (as :meth:`reserve_identifiers` would); ``hashes`` are their
        :func:`meterd.ingest.writes.identifier_hash` values, when the caller has them."""

    def may_have_seen(self, hashes: Sequence[int]) -> bool:
        """False only if none of these identifier hashes was received in the last 24 hours,
        and none repeats in ``hashes`` (a cheap check that lets a batch skip per-event dedup)."""

    def add_event_rollups(self, first_seq: int, end_seq: int, total: int) -> None:
        """Fold the raw events ``first_seq <= seq < end_seq`` into their rollups, in the database.

        Only for meters without an event_time_window, and events whose values sum below 2^62
        (the caller checks; ``total`` bounds their sum); the rows' latest event is kept for
        meters that track it. Every read of rollups sees them, though a store may bring the
        rows up to date later in the writer's own time (SQLite does).
        """

    def event(self, seq: int) -> RawEvent: ...
    def cancel_event(self, seq: int) -> None: ...
    def bucket_events(self, meter_seq: int, customer: str, bucket: int) -> list[StoredEvent]:
        """The uncancelled raw events of one rollup leaf, in arrival order (meters that track
        the latest event only: the others' events have no ``recount_bucket``)."""

    def merge_rollups(self, deltas: dict[RollupKey, Rollup], windowed: set[int]) -> None:
        """Merge each delta into its stored row (:func:`meterd.metering.rollups.merge`).

        ``windowed`` names the meters (by compact key) whose rows keep only the newest event.
        """

    def rollup_range(
        self, meter_seq: int, customer: str, size: int, first: int, end: int
    ) -> list[Rollup]: ...
    def put_rollups(self, rows: dict[RollupKey, Rollup | None]) -> None:
        """Upsert each row; ``None`` deletes it."""

    def idempotency_record(self, scope: Scope, key: str) -> IdempotentResponse | None: ...
    def put_idempotency_records(
        self, rows: Sequence[tuple[Scope, str, IdempotentResponse]]
    ) -> None:
        """Store finished answers under their keys (replacing expired records)."""

    def error_report(
        self, scope: Scope, type: str, event_name: str, window_start: int
    ) -> ErrorReport | None: ...
    def put_error_report(self, report: ErrorReport) -> None: ...
    def truncate_rollups(self) -> None: ...
    def all_rollups(self) -> dict[RollupKey, Rollup]: ...
    def all_events(self, after_seq: int, limit: int) -> list[RawEvent]: ...
    def meter_seqs(self) -> dict[int, Meter]: ...


class Store(Protocol):
    async def close(self) -> None: ...

    # accounts and keys
    async def create_account(self, account: Account, key: ApiKey) -> None: ...
    async def has_accounts(self) -> bool: ...
    async def add_api_key(self, key: ApiKey) -> None: ...
    async def find_api_key(self, secret_hash: str) -> ApiKey | None: ...
    async def list_api_keys(self) -> list[ApiKey]: ...
    async def revoke_api_key(
        self, key_id: str, now: int, replacement: ApiKey | None = None
    ) -> bool:
        """Revoke a key that is not revoked yet (False: unknown or already revoked), and add
        ``replacement`` in the same transaction (a rotation)."""

    async def first_account(self) -> Account | None: ...

    # meters
    async def insert_meter(self, meter: Meter) -> None:
        """Raises ``AlreadyExists("event_name")`` when the scope has a meter with that name."""

    async def get_meter(self, scope: Scope, meter_id: str) -> Meter | None: ...
    async def find_meter_by_event_name(
        self, scope: Scope, event_name: str
    ) -> tuple[Meter, int] | None:
        """The meter that owns ``event_name`` and its compact key (see EventTransaction)."""

    async def save_meter(self, meter: Meter) -> None: ...
    async def list_meters(
        self, scope: Scope, page: PageRequest, status: MeterStatus | None
    ) -> Page[Meter]:
        """Newest first; raises ``CursorNotFound`` for an unknown cursor."""

    # products and plans
    async def insert_product(self, product: Product) -> None:
        """Raises ``AlreadyExists("id")`` when the scope has a product with that id."""

    async def get_product(self, scope: Scope, product_id: str) -> Product | None: ...
    async def get_products(self, scope: Scope, product_ids: Sequence[str]) -> dict[str, Product]:
        """The products of ``product_ids`` that exist, by id (to expand a page of plans)."""

    async def save_product(self, product: Product) -> None: ...
    async def delete_product(self, scope: Scope, product_id: str) -> bool:
        """False when there is no such product; raises ``StillReferenced`` while plans use it."""

    async def list_products(
        self, scope: Scope, page: PageRequest, where: ProductFilter
    ) -> Page[Product]:
        """Newest first; raises ``CursorNotFound`` for an unknown cursor."""

    async def insert_plan(self, plan: Plan, new_product: Product | None = None) -> None:
        """Store ``plan`` (and the product created with it, in the same transaction).

        Raises ``AlreadyExists("id")`` for a plan id, or ``AlreadyExists("product")`` for the
        new product's id, already used in the scope, and ``ReferenceMissing("product")`` when
        its product is gone; nothing is stored then.
        """

    async def get_plan(self, scope: Scope, plan_id: str) -> Plan | None: ...
    async def save_plan(self, plan: Plan) -> None: ...
    async def delete_plan(self, scope: Scope, plan_id: str) -> bool:
        """False when there is no such plan."""

    async def list_plans(self, scope: Scope, page: PageRequest, where: PlanFilter) -> Page[Plan]:
        """Newest first; raises ``CursorNotFound`` for an unknown cursor."""

    # events, rollups and error reports
    async def transact(self, work: Callable[[EventTransaction], T]) -> T:
        """Run ``work`` in one write transaction on the writer; commit once, or roll back."""

    async def transact_each(
        self,
        take: Callable[[], W | None],
        work: Callable[[EventTransaction, W], T],
        done: Callable[[W, T | None, BaseException | None], None],
    ) -> None:
        """On the writer, one transaction for each unit ``take`` hands out, until it hands out
        None; ``done`` hears each result (or the failure, rolled back) from the writer's thread
        as soon as it committed. The group commit's loop: the writer goes from one batch to the
        next without waiting for the event loop in between."""

    async def read_rollups(
        self, meter: Meter, customer: str, spans: Sequence[tuple[int, int, int]]
    ) -> list[tuple[int, int, Rollup]]:
        """(size, bucket, row) for every row of each (size, first bucket, end) span."""

    async def list_error_reports(
        self, scope: Scope, limit: int, after: str | None, where: ReportFilter
    ) -> Page[ErrorReport]:
        """Newest first; raises ``CursorNotFound("page", ...)`` for an unknown ``after``."""

    async def get_error_report(self, scope: Scope, report_id: str) -> ErrorReport | None: ...
    async def prune_event_identifiers(self, before: int) -> int: ...
    async def maintain(self, now: int) -> None:
        """Periodic upkeep beside pruning (PostgreSQL: the coming months' event partitions)."""

    # meter event sessions
    async def insert_session(self, session: MeterEventSession) -> None: ...
    async def find_session(self, token_hash: str) -> MeterEventSession | None: ...
    async def prune_sessions(self, expired_before: int) -> int: ...

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

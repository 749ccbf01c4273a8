"""Units of work that run inside one store transaction: ingest a batch, cancel an event.

The rules come from :mod:`meterd.metering`; this module only applies them against storage
and keeps raw events, the identifier set, rollups and error reports in step.
"""

from __future__ import annotations

import itertools
from collections import defaultdict

import msgspec

from meterd import ids
from meterd.metering import error_reports, rollups, values
from meterd.metering.error_reports import ErrorReport
from meterd.metering.events import (
    CANCEL_WINDOW_SECONDS,
    IDENTIFIER_TTL_SECONDS,
    Counted,
    EventSubmission,
    Problem,
    assess,
)
from meterd.metering.meters import Meter
from meterd.metering.rollups import Rollup, RollupKey, StoredEvent
from meterd.scope import Scope
from meterd.storage.base import (
    IDEMPOTENCY_TTL_SECONDS,
    EventTransaction,
    IdempotentResponse,
    RawEvent,
    Reservation,
)


class Accepted(msgspec.Struct, frozen=True):
    """Stored; ``problem`` says why it will not count (reported as an error report)."""

    problem: Problem | None = None


class Duplicate(msgspec.Struct, frozen=True):
    """Its identifier was already used in the last 24 hours; nothing was stored."""


class Rejected(msgspec.Struct, frozen=True):
    """A v2 event that breaks a rule: answered synchronously, nothing stored."""

    problem: Problem


class Replayed(msgspec.Struct, frozen=True):
    """The Idempotency-Key already has an answer: send it again, store nothing."""

    status: int
    body: bytes


class KeyReused(msgspec.Struct, frozen=True):
    """The Idempotency-Key was first used with other parameters."""


class KeyInUse(msgspec.Struct, frozen=True):
    """Another request holding the Idempotency-Key has not answered yet."""


Outcome = Accepted | Duplicate | Rejected | Replayed | KeyReused | KeyInUse


class CancelRefused(Exception):
    """No event with that identifier can be cancelled (unknown, or received over 24 h ago)."""


def ingest(tx: EventTransaction, batch: list[EventSubmission]) -> list[Outcome]:
    """Store a batch of events and the answers kept under their Idempotency-Keys, in one go.

    A key seen in the last 24 hours replays its answer (or is refused if the parameters
    differ); a key used twice in one batch runs once, and the second request gets the first
    one's answer. Successful answers are stored in the same transaction as the events.
    """
    outcomes: list[Outcome | None] = [None] * len(batch)
    first: dict[tuple[Scope, str], int] = {}
    followers: dict[int, int] = {}
    for index, event in enumerate(batch):
        write = event.idempotency
        if write is None:
            continue
        key = (event.scope, write.key)
        if key in first:
            leading = batch[first[key]].idempotency
            assert leading is not None
            if leading.fingerprint != write.fingerprint:
                outcomes[index] = KeyReused()
            else:
                followers[index] = first[key]
            continue
        record = tx.idempotency_record(event.scope, write.key)
        if record is not None and record.created > event.created - IDEMPOTENCY_TTL_SECONDS:
            if record.fingerprint != write.fingerprint:
                outcomes[index] = KeyReused()
            elif record.status is None or record.body is None:
                outcomes[index] = KeyInUse()
            else:
                outcomes[index] = Replayed(record.status, record.body)
            continue
        first[key] = index
    if not first and not any(outcomes):
        return _ingest(tx, batch)
    run = [i for i, o in enumerate(outcomes) if o is None and i not in followers]
    for index, outcome in zip(run, _ingest(tx, [batch[i] for i in run]), strict=True):
        outcomes[index] = outcome
    for index, leader in followers.items():
        done = outcomes[leader]
        write = batch[leader].idempotency
        assert write is not None
        outcomes[index] = Replayed(200, write.body) if isinstance(done, Accepted) else done
    answered: list[tuple[Scope, str, IdempotentResponse]] = []
    for (scope, name), index in first.items():
        write = batch[index].idempotency
        if isinstance(outcomes[index], Accepted) and write is not None:
            record = IdempotentResponse(
                fingerprint=write.fingerprint,
                created=batch[index].created,
                status=200,
                body=write.body,
            )
            answered.append((scope, name, record))
    tx.put_idempotency_records(answered)
    return [outcome for outcome in outcomes if outcome is not None]


def _ingest(tx: EventTransaction, batch: list[EventSubmission]) -> list[Outcome]:
    """Store a batch of events: dedup, raw rows, rollups and error reports, in one go."""
    if not batch:
        return []
    meters: dict[tuple[Scope, str], tuple[Meter, int] | None] = {}
    verdicts: list[Counted | Problem] = []
    for event in batch:
        key = (event.scope, event.event_name)
        if key not in meters:
            meters[key] = tx.meter_by_event_name(event.scope, event.event_name)
        found = meters[key]
        verdicts.append(assess(event, found[0] if found else None, event.created))

    outcomes: list[Outcome | None] = [None] * len(batch)
    candidates: dict[Scope, list[str]] = defaultdict(list)
    for index, (event, verdict) in enumerate(zip(batch, verdicts, strict=True)):
        if isinstance(verdict, Problem) and event.origin == "v2":
            outcomes[index] = Rejected(verdict)
        else:
            candidates[event.scope].append(event.identifier)
    oldest = min(event.created for event in batch) - IDENTIFIER_TTL_SECONDS
    taken: dict[Scope, dict[str, int]] = {
        scope: tx.received_identifiers(scope, names, oldest) for scope, names in candidates.items()
    }

    seq = tx.next_event_seq()
    raw: list[RawEvent] = []
    reservations: list[Reservation] = []
    counted: dict[int, tuple[Meter, list[StoredEvent]]] = {}
    reports: dict[tuple[Scope, str, str, int], ErrorReport] = {}
    for index, (event, verdict) in enumerate(zip(batch, verdicts, strict=True)):
        if outcomes[index] is not None:
            continue
        seen = taken[event.scope]
        received = seen.get(event.identifier)
        if received is not None and received > event.created - IDENTIFIER_TTL_SECONDS:
            outcomes[index] = Duplicate()
            continue
        seen[event.identifier] = event.created
        if isinstance(verdict, Problem):
            outcomes[index] = Accepted(verdict)
            reservations.append(
                Reservation(event.scope, event.identifier, event.created, None, event.event_name)
            )
            found = meters[(event.scope, event.event_name)]
            _report(tx, reports, event, found[0] if found else None, verdict)
            continue
        found = meters[(event.scope, event.event_name)]
        assert found is not None
        meter, meter_seq = found
        leaf = rollups.sizes(meter)[0]
        raw.append(
            RawEvent(
                seq,
                meter_seq,
                verdict.customer,
                event.timestamp,
                rollups.floor_to(event.timestamp, leaf),
                None if verdict.value is None else values.canonical(verdict.value),
                event.identifier,
                event.created,
            )
        )
        stored = StoredEvent(seq, verdict.customer, event.timestamp, verdict.value or 0)
        counted.setdefault(meter_seq, (meter, []))[1].append(stored)
        reservations.append(Reservation(event.scope, event.identifier, event.created, seq))
        outcomes[index] = Accepted()
        seq += 1

    tx.append_events(raw)
    tx.reserve_identifiers(reservations)
    deltas: dict[RollupKey, Rollup] = {}
    for meter_seq, (meter, events) in counted.items():
        rollups.fold(deltas, meter, meter_seq, events)
    if deltas:
        windowed = {key for key, (meter, _) in counted.items() if rollups.is_windowed(meter)}
        tx.merge_rollups(deltas, windowed)
    for report in reports.values():
        tx.put_error_report(report)
    return [outcome for outcome in outcomes if outcome is not None]


def _report(
    tx: EventTransaction,
    reports: dict[tuple[Scope, str, str, int], ErrorReport],
    event: EventSubmission,
    meter: Meter | None,
    problem: Problem,
) -> None:
    kind = error_reports.report_type(meter)
    window = error_reports.window_of(event.created)
    key = (event.scope, kind, event.event_name, window)
    report = reports.get(key)
    if report is None:
        report = tx.error_report(event.scope, kind, event.event_name, window)
    if report is None:
        report = ErrorReport(
            id=ids.object_id("evt", event.scope.livemode),
            account_id=event.scope.account_id,
            livemode=event.scope.livemode,
            type=kind,
            event_name=event.event_name,
            meter_id=meter.id if meter else None,
            window_start=window,
            created=event.created,
        )
    report.add(problem.code, problem.message, event.identifier)
    reports[key] = report


def cancel(tx: EventTransaction, scope: Scope, event_name: str, identifier: str, now: int) -> None:
    """Cancel one event by identifier; cancelling it again changes nothing."""
    record = tx.identifier(scope, identifier)
    if record is None or record.received <= now - CANCEL_WINDOW_SECONDS:
        raise CancelRefused(
            f"No meter event with identifier '{identifier}' was received in the last 24 hours."
        )
    event = None if record.event_seq is None else tx.event(record.event_seq)
    meter = None if event is None else tx.meter_by_seq(event.meter_seq)
    sent_as = record.uncounted_event_name if meter is None else meter.event_name
    if sent_as != event_name:
        raise CancelRefused(
            f"The meter event with identifier '{identifier}' has event name "
            f"'{sent_as}', not '{event_name}'."
        )
    if event is None or meter is None or event.cancelled:
        return
    tx.cancel_event(event.seq)
    recount_bucket(tx, meter, event.meter_seq, event.customer, event.bucket)


def recount_bucket(
    tx: EventTransaction, meter: Meter, meter_seq: int, customer: str, bucket: int
) -> None:
    """Rebuild one leaf row from raw events, then each coarser row from the rows under it."""
    windowed = rollups.is_windowed(meter)
    sizes = rollups.sizes(meter)
    leaf = rollups.recount(tx.bucket_events(meter_seq, customer, bucket), windowed)
    tx.put_rollups({RollupKey(meter_seq, customer, sizes[0], bucket): leaf})
    for finer, size in itertools.pairwise(sizes):
        start = rollups.floor_to(bucket, size)
        rows = tx.rollup_range(meter_seq, customer, finer, start, start + size)
        tx.put_rollups({RollupKey(meter_seq, customer, size, start): rollups.combine(rows)})


def rebuild_rollups(tx: EventTransaction, chunk: int = 50_000) -> int:
    """Recompute every rollup from raw events (the source of truth); returns events read."""
    meters = tx.meter_seqs()
    tx.truncate_rollups()
    after, read = 0, 0
    while True:
        events = tx.all_events(after, chunk)
        if not events:
            return read
        grouped: dict[int, list[StoredEvent]] = defaultdict(list)
        for event in events:
            if not event.cancelled:
                value = 0 if event.value is None else values.parse_value(event.value)
                grouped[event.meter_seq].append(
                    StoredEvent(event.seq, event.customer, event.ts, value)
                )
        deltas: dict[RollupKey, Rollup] = {}
        for meter_seq, stored in grouped.items():
            rollups.fold(deltas, meters[meter_seq], meter_seq, stored)
        windowed = {key for key, meter in meters.items() if rollups.is_windowed(meter)}
        tx.merge_rollups(deltas, windowed)
        read += len(events)
        after = events[-1].seq


class RollupsChecked(Exception):
    """Raised by :func:`check_rollups` so that its transaction rolls back; carries the result."""

    def __init__(self, events: int, rows: int, differing: list[RollupKey]) -> None:
        super().__init__(f"{len(differing)} differing rollup rows")
        self.events = events
        self.rows = rows
        self.differing = differing


def check_rollups(tx: EventTransaction) -> None:
    """Rebuild, compare with the incremental rows, and always roll back (raises the result)."""
    before = tx.all_rollups()
    events = rebuild_rollups(tx)
    after = tx.all_rollups()
    differing = sorted(
        key for key in before.keys() | after.keys() if before.get(key) != after.get(key)
    )
    raise RollupsChecked(events, len(after), differing)

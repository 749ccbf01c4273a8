"""An in-memory index from identifier hashes to rows of the append-only identifier log.

Meter event identifiers must be unique per account for 24 hours. A SQLite B-tree over random
identifiers slows ingest down as it grows (each random insert dirties its own page), so the
SQLite store appends identifiers to a log table and finds them again through this index,
rebuilt from the log at start-up. The caller hashes (account, mode, identifier) to a signed
64-bit int and checks every hit against the log, so the index only promises to return every
row held under a matching hash; telling colliding identifiers apart is the caller's job.

The index is an LSM held in numpy arrays: 16 bytes per entry for keys and rows, 1 to 2 for
the filter, 1/8 for the fences, and room for runs to grow into (untouched until a merge uses it).

- each ``add`` becomes one sorted *run* (keys ascending, rows alongside). While the newest run
  is at least half the size of the one before it, the two are merged (up to
  ``MAX_RUN_KEYS``), so run sizes fall geometrically: O(log n) runs below the cap, plus at most
  two per ``MAX_RUN_KEYS`` entries, each entry rewritten O(log n) times. A merge writes into the
  older run's buffers (allocated with room to double) block by block from the end, so it needs
  no temporary copy of the index, and mostly reuses memory the process already touched.
- a binary search (``numpy.searchsorted``) waits on memory at every step: over a run of 10M
  entries it costs 1-3 microseconds per query, far too slow for 10,000 queries per batch.
  Nearly every query is a miss, so one Bloom filter over all runs (a 64-bit word per key, four
  bits set in it) turns those away with one vectorised gather.
- the 0.5-3% of queries the filter lets through are found in each run through its fences
  (every 64th key, small enough to stay in cache): each query is then compared with 64
  adjacent keys at once, reads that do not wait for one another.
- keys are the caller's hashes *mixed* by a bijection, so that equal hashes stay equal while
  any set of distinct hashes, however clustered, spreads evenly over the filter.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import NamedTuple

import numpy as np
import numpy.typing as npt

Keys = npt.NDArray[np.uint64]
Ints = npt.NDArray[np.int64]
Positions = npt.NDArray[np.intp]

MERGE_RATIO = 2
"""Merge the newest run into the one before it while ``MERGE_RATIO * newer >= older``."""

MAX_RUN_KEYS = 1 << 20
"""Runs stop merging at this size. A merge costs time in proportion to its output, and it
runs on the writer between two batches, while every request waits: unbounded, merging into
one run of 5 million identifiers took 313 ms. Past the cap, runs only add a few small array
operations to each batch's lookups (for the keys the filter lets through)."""

BLOCK = 1 << 16
"""Entries merged, compacted or filtered per step: few enough to stay in cache."""

FENCE = 64
"""A run keeps a copy of every ``FENCE``-th key (1/8 byte per entry) to find keys by."""

FILTER_BITS_PER_ENTRY = 16
"""Filter bits per entry when the filter is (re)built: about 0.5% false positives."""

FILTER_MIN_BITS_PER_ENTRY = 8
"""The filter is rebuilt once it has taken in an entry per this many bits (about 3.5% false
positives). Dropped entries count: their bits stay set until the rebuild."""

_MIN_FILTER_WORDS = 64

_FMIX_1 = np.uint64(0xFF51AFD7ED558CCD)
_FMIX_2 = np.uint64(0xC4CEB9FE1A85EC53)

# Two of a key's four filter bits per 12 bits x of the key: bits x & 63 and x >> 6.
_TWO_BITS: Keys = np.left_shift(np.uint64(1), np.arange(1 << 12, dtype=np.uint64) & np.uint64(63))
_TWO_BITS |= np.left_shift(np.uint64(1), np.arange(1 << 12, dtype=np.uint64) >> np.uint64(6))


class _Run(NamedTuple):
    """One sorted run; its arrays are views of the two buffers."""

    key_buffer: Keys
    """``keys`` is its first ``len(keys)`` items; the rest is room for merges."""
    row_buffer: Ints
    keys: Keys
    """Ascending; equal keys in the order they were added."""
    rows: Ints
    min_row: int
    max_row: int
    fences: Keys
    """Every ``FENCE``-th key, from the first."""
    windows: Keys
    """``windows[i]`` is ``keys[i : i + FENCE]`` (all the keys, in a shorter run): a view."""


class IdentifierIndex:
    """Signed 64-bit hash -> log rows, for hits that the caller then checks against the log.

    Not thread-safe: callers serialise access.
    """

    def __init__(self) -> None:
        self._runs: list[_Run] = []
        self._size = 0
        self._filter: Keys = np.zeros(0, dtype=np.uint64)
        self._filter_load = 0  # entries whose bits were set since it was built, dropped or not

    def __len__(self) -> int:
        return self._size

    @property
    def nbytes(self) -> int:
        """Bytes held by the arrays: 16 per entry for keys and rows, the fences, the filter, and
        the room runs keep to grow into (virtual memory until a merge writes to it)."""
        held = sum(
            run.key_buffer.nbytes + run.row_buffer.nbytes + run.fences.nbytes for run in self._runs
        )
        return held + self._filter.nbytes

    def add(self, hashes: Sequence[int], rows: Sequence[int]) -> None:
        """Hold ``rows[i]`` under ``hashes[i]``; both signed 64-bit ints, of the same length.

        Rows come from the log, so they increase from one call to the next; nothing depends on
        it but how many runs ``drop_below`` has to scan. A ``range`` of rows costs no loop.
        """
        if len(hashes) != len(rows):
            raise ValueError(f"{len(hashes)} hashes but {len(rows)} rows")
        if not len(hashes):
            return
        keys, order = _sorted(_mix(_int64s(hashes)))
        run_rows = _int64s(rows)[order]
        min_row, max_row = int(run_rows.min()), int(run_rows.max())
        runs = self._runs
        runs.append(_run(keys, run_rows, len(keys), min_row, max_row))
        self._size += len(keys)
        while (
            len(runs) > 1
            and MERGE_RATIO * len(runs[-1].keys) >= len(runs[-2].keys)
            and len(runs[-1].keys) + len(runs[-2].keys) <= MAX_RUN_KEYS
        ):
            newer = runs.pop()
            runs[-1] = _merge(runs[-1], newer)
        if self._filter_load + len(keys) > len(self._filter) * 64 // FILTER_MIN_BITS_PER_ENTRY:
            self._rebuild_filter()
        else:
            _set_bits(self._filter, keys)
            self._filter_load += len(keys)

    def lookup(self, hashes: Sequence[int]) -> dict[int, list[int]]:
        """Position in ``hashes`` -> every row held under that hash, ascending; misses are absent.

        Only the queries that pass the filter (hits, and 0.5-3% of misses) reach Python code.
        """
        if not self._size or not len(hashes):
            return {}
        keys = _mix(_int64s(hashes))
        maybe = np.flatnonzero(_maybe_present(self._filter, keys))
        if not len(maybe):
            return {}
        wanted = keys[maybe]
        found: dict[int, list[int]] = {}
        for run in self._runs:
            which, positions = _matches(run, wanted)
            for i, row in zip(maybe[which].tolist(), run.rows[positions].tolist(), strict=True):
                found.setdefault(i, []).append(row)
        for rows in found.values():
            rows.sort()
        return found

    def drop_below(self, row: int) -> int:
        """Forget every entry whose row is below ``row``; return how many were forgotten.

        Costs a pass over each run holding such a row; dropping nothing costs nothing.
        """
        before = self._size
        kept: list[_Run] = []
        for run in self._runs:
            if run.min_row >= row:
                kept.append(run)
            elif run.max_row >= row:
                kept.append(_compact(run, row))
        self._runs = kept
        self._size = sum(len(run.keys) for run in kept)
        if self._size < before and 2 * _filter_words(self._size) <= len(self._filter):
            self._rebuild_filter()
        return before - self._size

    def _rebuild_filter(self) -> None:
        words = np.zeros(_filter_words(self._size), dtype=np.uint64)
        for run in self._runs:
            for start in range(0, len(run.keys), BLOCK):
                _set_bits(words, run.keys[start : start + BLOCK])
        self._filter, self._filter_load = words, self._size


def _int64s(values: Sequence[int]) -> Ints:
    if isinstance(values, range):
        return np.arange(values.start, values.stop, values.step, dtype=np.int64)
    return np.fromiter(values, dtype=np.int64, count=len(values))


def _mix(hashes: Ints) -> Keys:
    """MurmurHash3's 64-bit finaliser: a bijection, so no two hashes ever share a key.

    The caller's hashes need not be evenly spread (small ints hash to themselves); the filter
    needs evenly spread bits, and gets them from this.
    """
    x = hashes.view(np.uint64)
    x = x ^ (x >> np.uint64(33))
    x *= _FMIX_1
    x ^= x >> np.uint64(33)
    x *= _FMIX_2
    x ^= x >> np.uint64(33)
    return x


def _sorted(keys: Keys) -> tuple[Keys, Positions]:
    """The keys ascending, and the stable order that sorts them.

    ``argsort`` is slower than ``sort``, so the sort runs on each key with its low bits replaced
    by its position: positions break ties, keeping the sort stable. Keys that differ only in
    the replaced bits (about never, for 10,000 of them: they would share their top 50 bits)
    come out unsorted, and are sorted again with ``argsort``.
    """
    low = np.uint64((1 << max(1, (len(keys) - 1).bit_length())) - 1)
    packed = (keys & ~low) | np.arange(len(keys), dtype=np.uint64)
    packed.sort()
    order = (packed & low).astype(np.intp)
    ordered = keys[order]
    if np.any(ordered[1:] < ordered[:-1]):
        order = np.argsort(keys, kind="stable")
        ordered = keys[order]
    return ordered, order


def _bucket(keys: Keys, buckets: int) -> Ints:
    """``floor(key * buckets / 2**64)``, from the key's top 32 bits: rises with the key."""
    return (((keys >> np.uint64(32)) * np.uint64(buckets)) >> np.uint64(32)).view(np.int64)


def _run(key_buffer: Keys, row_buffer: Ints, size: int, min_row: int, max_row: int) -> _Run:
    """The run held in the first ``size`` items of the buffers."""
    keys = key_buffer[:size]
    windows = np.lib.stride_tricks.sliding_window_view(keys, min(FENCE, size))
    fences = keys[::FENCE].copy()
    return _Run(key_buffer, row_buffer, keys, row_buffer[:size], min_row, max_row, fences, windows)


def _merge(older: _Run, newer: _Run) -> _Run:
    """Both runs as one, in the older run's buffers if they have room (else in new buffers
    with room to double). Equal keys keep the older run's entries first.

    Blocks are taken from the high end of either run, so that everything left unmerged sorts
    before them; each block is merged (``argsort(kind="stable")`` finds its two sorted halves)
    and written to the end of the space left, which never reaches the older run's unread keys.
    """
    a_keys, a_rows, b_keys, b_rows = older.keys, older.rows, newer.keys, newer.rows
    size = len(a_keys) + len(b_keys)
    key_buffer, row_buffer = older.key_buffer, older.row_buffer
    if len(key_buffer) < size:
        key_buffer = np.empty(2 * size, dtype=np.uint64)
        row_buffer = np.empty(2 * size, dtype=np.int64)
    a_end, b_end = len(a_keys), len(b_keys)
    while b_end:
        b_start = max(0, b_end - BLOCK)
        a_start = int(np.searchsorted(a_keys[:a_end], b_keys[b_start], side="right"))
        if a_end - a_start > BLOCK:
            a_start = a_end - BLOCK
            b_start = int(np.searchsorted(b_keys[:b_end], a_keys[a_start], side="left"))
        keys = np.concatenate((a_keys[a_start:a_end], b_keys[b_start:b_end]))
        order = np.argsort(keys, kind="stable")
        out = slice(a_start + b_start, a_end + b_end)
        np.take(keys, order, out=key_buffer[out], mode="clip")
        rows = np.concatenate((a_rows[a_start:a_end], b_rows[b_start:b_end]))
        np.take(rows, order, out=row_buffer[out], mode="clip")
        a_end, b_end = a_start, b_start
    if key_buffer is not older.key_buffer:
        key_buffer[:a_end] = a_keys[:a_end]
        row_buffer[:a_end] = a_rows[:a_end]
    min_row, max_row = min(older.min_row, newer.min_row), max(older.max_row, newer.max_row)
    return _run(key_buffer, row_buffer, size, min_row, max_row)


def _compact(run: _Run, row: int) -> _Run:
    """The run without its entries below ``row``, moved down in place block by block."""
    size = 0
    min_row = run.max_row
    for start in range(0, len(run.keys), BLOCK):
        rows = run.rows[start : start + BLOCK]
        keep = rows >= row
        kept_rows = rows[keep]
        end = size + len(kept_rows)
        run.key_buffer[size:end] = run.keys[start : start + BLOCK][keep]
        run.row_buffer[size:end] = kept_rows
        if end > size:
            min_row = min(min_row, int(kept_rows.min()))
        size = end
    return _run(run.key_buffer, run.row_buffer, size, min_row, run.max_row)


def _matches(run: _Run, wanted: Keys) -> tuple[Positions, Positions]:
    """``(i, position)`` for every key of the run equal to ``wanted[i]``, positions ascending.

    A search of the fences (small enough to stay in cache) narrows each wanted key down to
    ``FENCE`` adjacent keys, which are compared with it all at once: a few cache lines read side
    by side, where a binary search of the run would make ~20 reads that each wait for the last.
    """
    width = run.windows.shape[1]
    fence = np.searchsorted(run.fences, wanted, side="left")
    # fences[j - 1] < key <= fences[j], so its first copy is in keys[(j - 1) * F + 1 : j * F + 1].
    first = fence * FENCE - (FENCE - 1)
    np.maximum(first, 0, out=first)
    np.minimum(first, len(run.keys) - width, out=first)
    equal = run.windows[first] == wanted[:, None]
    hits = np.flatnonzero(equal.any(axis=1))
    if not len(hits):
        return hits, hits
    hit, column = np.nonzero(equal[hits])
    which, positions = hits[hit], first[hits[hit]] + column
    # Copies running past the window (many rows under one hash) are found by binary search.
    longer = hits[equal[hits, -1] & (first[hits] + width < len(run.keys))]
    if not len(longer):
        return which, positions
    after = first[longer] + width
    counts = np.searchsorted(run.keys, wanted[longer], side="right") - after
    more = np.repeat(longer, counts)
    more_positions = np.repeat(after - np.cumsum(counts) + counts, counts) + np.arange(len(more))
    return np.concatenate((which, more)), np.concatenate((positions, more_positions))


def _filter_words(entries: int) -> int:
    return max(_MIN_FILTER_WORDS, -(-entries * FILTER_BITS_PER_ENTRY // 64))


def _word_and_mask(words: Keys, keys: Keys) -> tuple[Ints, Keys]:
    """Each key's filter word (from its top bits, so rising with the key) and its four bits
    (from its low 24 bits)."""
    low = keys & np.uint64(0xFFF)
    mask = _TWO_BITS[low]
    np.right_shift(keys, np.uint64(12), out=low)
    low &= np.uint64(0xFFF)
    mask |= _TWO_BITS[low]
    return _bucket(keys, len(words)), mask


def _set_bits(words: Keys, sorted_keys: Keys) -> None:
    """Set the keys' bits: one OR per word touched, the keys being sorted by word."""
    index, mask = _word_and_mask(words, sorted_keys)
    first = np.ones(len(index), dtype=np.bool_)
    np.not_equal(index[1:], index[:-1], out=first[1:])
    starts = np.flatnonzero(first)
    words[index[starts]] |= np.bitwise_or.reduceat(mask, starts)


def _maybe_present(words: Keys, keys: Keys) -> npt.NDArray[np.bool_]:
    index, mask = _word_and_mask(words, keys)
    maybe: npt.NDArray[np.bool_] = (words[index] & mask) == mask
    return maybe

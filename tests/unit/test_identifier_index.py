"""The identifier index returns exactly the rows held under each hash, like a dict of lists."""

from __future__ import annotations

import random
from collections import defaultdict
from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any
from unittest import mock

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from meterd.storage import identifier_index
from meterd.storage.identifier_index import IdentifierIndex

INT64_MIN, INT64_MAX = -(2**63), 2**63 - 1
EXTREMES = [INT64_MIN, INT64_MIN + 1, -1, 0, 1, INT64_MAX - 1, INT64_MAX]


@contextmanager
def small_blocks(block: int, fence: int) -> Iterator[None]:
    """Merge, compact and fence in tiny steps, so that small tests cross every boundary."""
    with (
        mock.patch.object(identifier_index, "BLOCK", block),
        mock.patch.object(identifier_index, "FENCE", fence),
    ):
        yield


class Model:
    """The index and a dict of lists fed the same calls; rows increase as the log gives them."""

    def __init__(self) -> None:
        self.index = IdentifierIndex()
        self.rows: defaultdict[int, list[int]] = defaultdict(list)
        self.next_row = 0

    def add(self, hashes: list[int], gap: int = 0) -> list[int]:
        rows = list(range(self.next_row + gap, self.next_row + gap + len(hashes)))
        self.next_row += gap + len(hashes)
        self.index.add(hashes, rows)
        for hash_, row in zip(hashes, rows, strict=True):
            self.rows[hash_].append(row)
        self.check_len()
        return rows

    def lookup(self, hashes: list[int]) -> None:
        expected = {i: sorted(self.rows[h]) for i, h in enumerate(hashes) if self.rows.get(h)}
        assert self.index.lookup(hashes) == expected

    def drop_below(self, row: int) -> None:
        dropped = 0
        for hash_ in list(self.rows):
            kept = [r for r in self.rows[hash_] if r >= row]
            dropped += len(self.rows[hash_]) - len(kept)
            if kept:
                self.rows[hash_] = kept
            else:
                del self.rows[hash_]
        assert self.index.drop_below(row) == dropped
        self.check_len()

    def check_len(self) -> None:
        assert len(self.index) == sum(len(rows) for rows in self.rows.values())
        assert self.index.nbytes >= 16 * len(self.index)

    def lookup_everything(self) -> None:
        self.lookup([*self.rows, *EXTREMES, 12345])


def random_hashes(n: int, seed: int) -> list[int]:
    rng = random.Random(seed)
    return [rng.randrange(INT64_MIN, INT64_MAX + 1) for _ in range(n)]


def test_an_empty_index_holds_nothing() -> None:
    index = IdentifierIndex()
    assert len(index) == 0
    assert index.nbytes == 0
    assert index.lookup([0, 1, INT64_MIN]) == {}
    assert index.lookup([]) == {}
    assert index.drop_below(10**9) == 0


def test_empty_inputs_change_nothing() -> None:
    model = Model()
    model.add([])
    assert model.index.nbytes == 0
    model.add([5, 6])
    model.add([])
    model.lookup([])
    model.lookup_everything()


def test_hashes_and_rows_must_pair_up() -> None:
    with pytest.raises(ValueError, match="2 hashes but 1 rows"):
        IdentifierIndex().add([1, 2], [1])


def test_hashes_outside_int64_are_refused() -> None:
    index = IdentifierIndex()
    with pytest.raises(OverflowError):
        index.add([2**63], [1])
    assert index.lookup([-(2**63) - 1]) == {}  # an empty index answers without looking
    index.add([5], [1])
    with pytest.raises(OverflowError):
        index.lookup([-(2**63) - 1])


def test_a_hit_returns_its_row_and_a_miss_is_absent() -> None:
    index = IdentifierIndex()
    index.add([10, 20, 30], [7, 8, 9])
    assert index.lookup([20, 40, 10, 20]) == {0: [8], 2: [7], 3: [8]}


def test_several_rows_under_one_hash_come_back_ascending() -> None:
    model = Model()
    model.add([42, 7, 42, 42])
    model.add([42, 8])
    model.add([42])
    assert model.index.lookup([42]) == {0: [0, 2, 3, 4, 6]}
    model.lookup_everything()


def test_rows_come_back_ascending_whatever_order_they_were_added_in() -> None:
    index = IdentifierIndex()
    index.add([5, 5, 6], [30, 10, 20])
    index.add([5], [1])
    assert index.lookup([5, 6]) == {0: [1, 10, 30], 1: [20]}


def test_more_copies_of_one_hash_than_a_fence_covers() -> None:
    model = Model()
    model.add(random_hashes(100, seed=1) + [99] * 200 + random_hashes(100, seed=2))
    model.add([99] * 150)
    model.lookup_everything()
    assert len(model.index.lookup([99])[0]) == 350


def test_negative_hashes_and_int64_extremes() -> None:
    model = Model()
    model.add(EXTREMES)
    model.add([-5, -(2**40), *EXTREMES])
    model.lookup_everything()
    assert model.index.lookup([INT64_MIN, INT64_MAX]) == {0: [0, 9], 1: [6, 15]}


@pytest.mark.parametrize(("block", "fence"), [(1 << 16, 64), (7, 3), (1, 1)])
def test_every_entry_is_found_across_runs_fences_and_blocks(block: int, fence: int) -> None:
    """Batch sizes around the fence and block sizes put entries on every kind of boundary:
    first and last of a run, of a fence window, of a merge block."""
    model = Model()
    with small_blocks(block, fence):
        for seed, size in enumerate([1, 63, 64, 65, 3, 127, 128, 129, 1000, 2, 4000]):
            model.add(random_hashes(size, seed))
            model.lookup(random_hashes(size, seed))
        model.lookup_everything()
        model.lookup(random_hashes(500, seed=99))


def test_clustered_hashes_are_found() -> None:
    """Small consecutive ints (as ``hash()`` gives for ints) still spread over the filter."""
    model = Model()
    for start in range(0, 5000, 1000):
        model.add(list(range(start, start + 1000)))
    model.lookup(list(range(-100, 5100)))


def test_a_range_of_rows_is_taken_like_a_list() -> None:
    index = IdentifierIndex()
    index.add([3, 1, 2], range(100, 103))
    index.add([3], range(7, 8))
    assert index.lookup([1, 2, 3]) == {0: [101], 1: [102], 2: [7, 100]}


def test_drop_below_forgets_older_rows_only() -> None:
    model = Model()
    first = model.add(random_hashes(300, seed=1))
    second = model.add([*random_hashes(300, seed=2), 5, 5])
    model.add([5, 6, 5])
    model.drop_below(first[150])
    model.lookup_everything()
    model.drop_below(second[0])
    model.lookup_everything()
    model.drop_below(second[-1])
    assert model.index.lookup([5]) == {0: [second[-1], model.next_row - 3, model.next_row - 1]}
    model.lookup_everything()


def test_drop_below_with_nothing_to_drop_returns_zero() -> None:
    model = Model()
    rows = model.add(random_hashes(100, seed=3))
    model.drop_below(rows[0])
    model.drop_below(-1)
    assert len(model.index) == 100


def test_dropping_everything_then_adding_again() -> None:
    model = Model()
    model.add(random_hashes(5000, seed=4))
    model.drop_below(model.next_row)
    assert len(model.index) == 0
    assert model.index.lookup(random_hashes(5000, seed=4)) == {}
    model.add(random_hashes(10, seed=4))
    model.lookup_everything()


def test_a_sliding_window_keeps_the_newest_rows() -> None:
    """Adds and drops as the store makes them: runs shrink, empty out, and merge again."""
    model = Model()
    with small_blocks(64, 8):
        for seed in range(60):
            model.add([*random_hashes(97, seed), seed % 7])
            if seed % 5 == 4:
                model.drop_below(model.next_row - 800)
                model.lookup_everything()


def test_sorting_falls_back_when_keys_differ_only_in_their_low_bits() -> None:
    """``_sorted`` packs positions into the low bits; keys that differ only there are
    re-sorted with ``argsort``, stably."""
    keys = np.array([5, 3, 4, 3], dtype=np.uint64)
    ordered, order = identifier_index._sorted(keys)
    assert ordered.tolist() == [3, 3, 4, 5]
    assert order.tolist() == [1, 3, 2, 0]
    spread = np.array([9 << 40, 1 << 40, 9 << 40, 5 << 40], dtype=np.uint64)
    ordered, order = identifier_index._sorted(spread)
    assert order.tolist() == [1, 3, 0, 2]


POOL = [INT64_MIN, -7, 0, 3, 2**32, INT64_MAX]
hashes_ = st.lists(st.one_of(st.sampled_from(POOL), st.integers(INT64_MIN, INT64_MAX)), max_size=40)
operations = st.lists(
    st.one_of(
        st.tuples(st.just("add"), hashes_, st.integers(0, 3)),
        st.tuples(st.just("lookup"), hashes_),
        st.tuples(st.just("drop_below"), st.floats(0, 1.05)),
    ),
    max_size=25,
)


@pytest.mark.parametrize(("block", "fence"), [(1 << 16, 64), (3, 2), (1, 1)])
@settings(max_examples=150, deadline=None)
@given(ops=operations)
def test_the_index_agrees_with_a_dict_of_lists(
    block: int, fence: int, ops: list[tuple[object, ...]]
) -> None:
    model = Model()
    with small_blocks(block, fence):
        for op in ops:
            match op:
                case ("add", list() as hashes, int() as gap):
                    model.add(hashes, gap)
                case ("lookup", list() as hashes):
                    model.lookup(hashes)
                case ("drop_below", float() as fraction):
                    model.drop_below(round(model.next_row * fraction))
            model.lookup([*POOL, *model.rows])


def test_runs_stop_merging_at_the_cap_and_everything_is_still_found() -> None:
    """A merge costs time in proportion to its output, paid between two batches: runs stop
    merging at ``MAX_RUN_KEYS``, so no merge grows with the number of identifiers held."""
    model = Model()
    merged: list[int] = []
    real_merge = identifier_index._merge

    def counting_merge(older: Any, newer: Any) -> Any:
        merged.append(len(older.keys) + len(newer.keys))
        return real_merge(older, newer)

    with (
        mock.patch.object(identifier_index, "MAX_RUN_KEYS", 1000),
        mock.patch.object(identifier_index, "_merge", counting_merge),
    ):
        for seed in range(60):
            model.add(random_hashes(97, seed))
            model.lookup(random_hashes(50, seed))
        sizes = [len(run.keys) for run in model.index._runs]
        model.lookup_everything()
        model.lookup(random_hashes(500, seed=99))
        model.drop_below(3000)
        model.lookup_everything()
    assert merged and max(merged) <= 1000
    assert max(sizes) <= 1000 and len(sizes) <= 2 * 5820 // 1000 + 8, sizes

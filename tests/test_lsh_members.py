"""Tests of :meth:`lessons_lib.lsh.BucketTables.members`: the (query, item) pairs of each query's buckets, by hand,
against a bucket-by-bucket loop and the brute-force collision counts, planted bugs, bad input."""

from __future__ import annotations

import pytest
import torch

from lessons_lib import lsh


def loop_members(t: lsh.BucketTables, codes: torch.Tensor) -> tuple[list[int], list[int]]:
    """Reference: walk every query's L buckets in table order."""
    q, items = [], []
    for b, row in enumerate(codes.tolist()):
        for table, code in enumerate(row):
            found = t.bucket(table, code).tolist()
            q += [b] * len(found)
            items += found
    return q, items


def test_members_hand_made():
    codes = torch.tensor([[0, 3], [1, 3], [0, 2], [3, 3]])  # 4 items, L = 2 tables, K = 2 bits
    t = lsh.BucketTables(K=2, L=2).build(codes)
    q, items = t.members(torch.tensor([[0, 3], [2, 0], [1, 2]]))
    assert q.tolist() == [0, 0, 0, 0, 0, 2, 2]  # query 1 meets nothing
    assert items.tolist() == [0, 2, 0, 1, 3, 1, 2]  # table 0's bucket, then table 1's
    assert q.dtype == items.dtype == torch.int64


@pytest.mark.parametrize("seed", [0, 1, 2])
def test_members_equal_the_loop_and_the_bruteforce_counts(seed):
    g = torch.Generator().manual_seed(seed)
    K, L, n, B = 4, 9, 57, 13
    item_codes = torch.randint(0, 2**K, (n, L), generator=g, dtype=torch.int32)
    codes = torch.randint(0, 2**K, (B, L), generator=g, dtype=torch.int32)
    t = lsh.BucketTables(K, L).build(item_codes)
    q, items = t.members(codes)
    assert (q.tolist(), items.tolist()) == loop_members(t, codes)
    counts = torch.bincount(q * n + items, minlength=B * n).view(B, n)
    assert torch.equal(counts, lsh.collision_counts_bruteforce(codes, item_codes))
    assert torch.equal(counts, t.query_counts(codes))


def test_planted_bug_merged_duplicates_are_caught():
    class Merged(lsh.BucketTables):
        def members(self, codes):
            q, items = super().members(codes)
            key = torch.unique(q * self.n_items + items)  # the bug: an item met in m buckets counts once
            return key // self.n_items, key % self.n_items

    g = torch.Generator().manual_seed(4)
    item_codes = torch.randint(0, 4, (40, 5), generator=g)
    codes = torch.randint(0, 4, (6, 5), generator=g)
    q, items = Merged(2, 5).build(item_codes).members(codes)
    counts = torch.bincount(q * 40 + items, minlength=6 * 40).view(6, 40)
    assert not torch.equal(counts, lsh.collision_counts_bruteforce(codes, item_codes))


def test_members_of_empty_tables_and_bad_shapes():
    t = lsh.BucketTables(3, 2)
    q, items = t.members(torch.zeros(4, 2, dtype=torch.int32))  # nothing built yet: no pairs
    assert q.numel() == items.numel() == 0
    with pytest.raises(ValueError, match="L=2"):
        t.members(torch.zeros(4, 3, dtype=torch.int32))
    with pytest.raises(ValueError, match="L=2"):
        t.members(torch.zeros(4, dtype=torch.int32))

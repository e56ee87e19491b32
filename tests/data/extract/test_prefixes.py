"""Prefix lengths: reproducible per document, independent of the rest of the corpus."""

from __future__ import annotations

import pytest

from nla_lightning.data.extract.prefixes import prefix_lengths
from nla_lightning.errors import NLAConfigError


def test_deterministic_sorted_distinct_in_range():
    lengths = prefix_lengths("doc-1", 100, 5, seed=3, min_tokens=8, max_tokens=40)
    assert lengths == prefix_lengths("doc-1", 100, 5, seed=3, min_tokens=8, max_tokens=40)
    assert lengths == sorted(set(lengths)) and len(lengths) == 5
    assert all(8 <= n <= 40 for n in lengths)


def test_depends_on_doc_and_seed_only():
    # Computing other documents first (a different corpus or shard) changes nothing.
    for other in ("a", "b", "c"):
        prefix_lengths(other, 50, 4, seed=0, min_tokens=2, max_tokens=50)
    first = prefix_lengths("doc-9", 60, 4, seed=0, min_tokens=2, max_tokens=60)
    again = prefix_lengths("doc-9", 60, 4, seed=0, min_tokens=2, max_tokens=60)
    assert first == again
    others = {tuple(prefix_lengths(f"doc-{i}", 60, 4, 0, 2, 60)) for i in range(10)}
    assert len(others) > 1  # different documents get different cuts
    assert prefix_lengths("doc-9", 60, 4, seed=1, min_tokens=2, max_tokens=60) != first


def test_short_documents_and_small_ranges():
    assert prefix_lengths("d", 7, 4, 0, min_tokens=8, max_tokens=20) == []
    assert prefix_lengths("d", 9, 4, 0, min_tokens=8, max_tokens=20) == [8, 9]
    assert prefix_lengths("d", 100, 4, 0, min_tokens=8, max_tokens=8) == [8]


def test_invalid_settings():
    with pytest.raises(NLAConfigError, match="min_tokens <= max_tokens"):
        prefix_lengths("d", 10, 4, 0, min_tokens=9, max_tokens=8)


def test_special_positions_are_never_prefix_ends():
    # Lengths 1 and 5 end at special tokens (a BOS, a chat marker written in the text).
    lengths = prefix_lengths("d", 10, 10, 0, min_tokens=1, max_tokens=10, skip=[1, 5])
    assert lengths == [2, 3, 4, 6, 7, 8, 9, 10]
    for i in range(20):
        drawn = prefix_lengths(f"doc-{i}", 30, 4, 0, min_tokens=1, max_tokens=30, skip=[1, 5])
        assert len(drawn) == 4 and not {1, 5} & set(drawn)
    assert prefix_lengths("d", 1, 4, 0, min_tokens=1, max_tokens=8, skip=[1]) == []


def test_skipping_below_min_tokens_draws_the_same_prefixes():
    # A BOS (length 1) is below min_tokens: documents keep the prefixes they had without it.
    for i in range(20):
        plain = prefix_lengths(f"doc-{i}", 60, 4, 0, min_tokens=4, max_tokens=40)
        assert prefix_lengths(f"doc-{i}", 60, 4, 0, 4, 40, skip=[1]) == plain

"""Document-level splits: every row of a document lands in the same part."""

from __future__ import annotations

import hashlib
from collections.abc import Iterable, Mapping

from nla_lightning.errors import NLAConfigError


def split_of(doc_id: int | str, fractions: Mapping[str, float], seed: int) -> str:
    """The part a document belongs to, from a hash of (seed, doc_id): stable and shardable."""
    total = sum(fractions.values())
    if total <= 0 or any(f < 0 for f in fractions.values()):
        raise NLAConfigError(f"split fractions must be >= 0 with a positive sum, got {fractions}")
    digest = hashlib.sha256(f"{seed}:{doc_id}".encode()).digest()
    u = int.from_bytes(digest[:8], "big") / 2**64 * total
    for name, fraction in fractions.items():
        if u < fraction:
            return name
        u -= fraction
    return next(reversed(list(fractions)))


def check_every_split_filled(
    doc_ids: Iterable[int | str], fractions: Mapping[str, float], seed: int
) -> dict[str, int]:
    """Documents per split (by `split_of`), refusing a corpus that leaves a split with a
    positive fraction empty; run on the document ids alone, before any model loads."""
    counts = dict.fromkeys((name for name, f in fractions.items() if f > 0), 0)
    for doc_id in doc_ids:
        part = split_of(doc_id, fractions, seed)
        if part in counts:
            counts[part] += 1
    empty = [name for name, n in counts.items() if n == 0]
    if empty:
        total = sum(counts.values())
        smallest = min(fractions[name] for name in empty)
        raise NLAConfigError(
            f"the {total} documents split as {counts} (data.fractions, by document): the "
            f"{' and '.join(empty)} split{'s' if len(empty) > 1 else ''} would be empty. Give "
            f"more documents (about {max(round(3 / smallest), total + 1)} for a "
            f"{smallest:g} fraction) or move data.fractions away from 0 for fewer splits"
        )
    return counts

"""Document-level splits: every row of a document lands in the same part."""

from __future__ import annotations

import hashlib
from collections.abc import Mapping

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

"""Random truncation points of one document, reproducible from (seed, doc_id) alone."""

from __future__ import annotations

import random
from collections.abc import Collection

from nla_lightning.errors import NLAConfigError


def prefix_lengths(
    doc_id: str,
    n_tokens: int,
    n_prefixes: int,
    seed: int,
    min_tokens: int,
    max_tokens: int,
    skip: Collection[int] = (),
) -> list[int]:
    """Distinct sorted prefix lengths in [min_tokens, min(n_tokens, max_tokens)], none in
    `skip` (lengths whose last token is a special token such as BOS: never an activation
    position). Lengths count every token of the tokenised document, its BOS included."""
    if min_tokens < 1 or max_tokens < min_tokens or n_prefixes < 1:
        raise NLAConfigError(
            f"need 1 <= min_tokens <= max_tokens and n_prefixes >= 1, got min_tokens="
            f"{min_tokens}, max_tokens={max_tokens}, n_prefixes={n_prefixes}"
        )
    high = min(n_tokens, max_tokens)
    if high < min_tokens:
        return []
    # Seeding per document (not one stream for the corpus) makes every document's prefixes
    # independent of the others, so runs can be sharded or resumed anywhere.
    rng = random.Random(f"{seed}:{doc_id}")
    choices: range | list[int] = range(min_tokens, high + 1)
    if skip:
        # random.sample only indexes the population, so a list of the same numbers draws what
        # the range does: skipping lengths below min_tokens (a BOS at 1) changes no prefix.
        skipped = set(skip)
        choices = [n for n in choices if n not in skipped]
    return sorted(rng.sample(choices, min(n_prefixes, len(choices))))

"""The data every explanation renderer reads, as plain rounded values."""

from __future__ import annotations

import math
from dataclasses import dataclass, field

from nla_lightning.inference.nla import TokenExplanation


@dataclass
class Document:
    """A text's explanations plus what the page shows around them."""

    text: str
    results: list[TokenExplanation]
    base_model: str = ""
    layer: int | None = None
    # Every token of the text (explained or not), so HTML can show the whole text.
    tokens: list[str] = field(default_factory=list)


def clean(value: object, places: int = 4) -> object:
    """Floats rounded, non-finite floats as None (strict JSON has no NaN), containers walked."""
    if isinstance(value, float):
        return round(value, places) if math.isfinite(value) else None
    if isinstance(value, dict):
        return {str(k): clean(v, places) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [clean(v, places) for v in value]
    return value


def best_score(result: TokenExplanation) -> float | None:
    """The highest score of a token's samples (None if it has none)."""
    return max(result.scores) if result.scores else None


def token_dicts(results: list[TokenExplanation]) -> list[dict[str, object]]:
    """One plain dict per explained token, samples in sampling order."""
    rows = []
    for r in results:
        cosines = r.cosines or [None] * len(r.scores)
        samples = [
            {"explanation": e, "score": s, "cosine": c}
            for e, s, c in zip(r.explanations, r.scores, cosines, strict=True)
        ]
        rows.append(
            {
                "index": r.index,
                "token": r.token,
                "best": r.best,
                "best_score": best_score(r),
                "samples": samples,
            }
        )
    return clean(rows)  # type: ignore[return-value]

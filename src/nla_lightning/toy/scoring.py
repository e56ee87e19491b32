"""Attribute recall, precision and confabulation of explanations against toy-world ground truth."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field

from nla_lightning.toy.summaries import attributes_named
from nla_lightning.toy.world import ATTRIBUTES, Snippet


@dataclass
class AttributeCounts:
    """Counts for one attribute (or all of them) summed over explanations."""

    present: int = 0  # snippets that have the attribute
    recalled: int = 0  # ... whose explanation names its true value
    named: int = 0  # values the explanations name for it
    correct: int = 0  # ... that are the snippet's value
    confabulated: int = 0  # ... for a snippet that does not have the attribute at all

    def add(self, other: AttributeCounts) -> None:
        for name in self.__dataclass_fields__:
            setattr(self, name, getattr(self, name) + getattr(other, name))

    def scores(self) -> dict[str, float | None]:
        # None, not 0, when nothing was there to score: "no data" must not read as "all wrong".
        def ratio(a: int, b: int) -> float | None:
            return a / b if b else None

        return {
            "recall": ratio(self.recalled, self.present),
            "precision": ratio(self.correct, self.named),
            "confabulation": ratio(self.confabulated, self.named),
        }


@dataclass
class AttributeScores:
    overall: AttributeCounts = field(default_factory=AttributeCounts)
    per_attribute: dict[str, AttributeCounts] = field(
        default_factory=lambda: {name: AttributeCounts() for name in ATTRIBUTES}
    )

    def as_dict(self) -> dict[str, object]:
        return {
            **self.overall.scores(),
            "per_attribute": {name: counts.scores() for name, counts in self.per_attribute.items()},
        }


def count_attributes(explanation: str | None, snippet: Snippet) -> dict[str, AttributeCounts]:
    """Per-attribute counts for one explanation; a missing explanation names nothing."""
    named = attributes_named(explanation or "")
    truth = snippet.attributes
    counts = {}
    for name in ATTRIBUTES:
        values = named.get(name, set())
        has = name in truth
        counts[name] = AttributeCounts(
            present=int(has),
            recalled=int(has and truth[name] in values),
            named=len(values),
            correct=int(has and truth[name] in values),
            confabulated=0 if has else len(values),
        )
    return counts


def score_attributes(
    explanations: Sequence[str | None], snippets: Sequence[Snippet]
) -> dict[str, object]:
    """Micro-averaged recall (true values named / attributes present), precision (named values
    that are true / values named) and confabulation rate (values named for attributes the snippet
    does not have / values named), overall and per attribute."""
    if len(explanations) != len(snippets):
        raise ValueError(
            f"{len(explanations)} explanations for {len(snippets)} snippets: pass one each"
        )
    scores = AttributeScores()
    for explanation, snippet in zip(explanations, snippets, strict=True):
        for name, counts in count_attributes(explanation, snippet).items():
            scores.per_attribute[name].add(counts)
            scores.overall.add(counts)
    result = scores.as_dict()
    result["explanations_scored"] = len(snippets)
    return result

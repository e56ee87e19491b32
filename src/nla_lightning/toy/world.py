"""Synthetic toy-world corpus with ground-truth attributes per sentence and per snippet."""

from __future__ import annotations

import json
import random
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any

ATTRIBUTES: tuple[str, ...] = ("who", "colour", "object", "where", "action")

NAMES: tuple[str, ...] = (
    "anna",
    "tom",
    "maria",
    "leo",
    "sara",
    "ben",
    "nina",
    "omar",
    "lucy",
    "jack",
    "emma",
    "ravi",
    "mia",
    "paul",
    "zoe",
    "ivan",
    "kate",
    "sam",
    "lily",
    "hugo",
)
COLOURS: tuple[str, ...] = (
    "red",
    "blue",
    "green",
    "yellow",
    "purple",
    "pink",
    "brown",
    "black",
    "white",
    "grey",
    "silver",
    "golden",
    "violet",
    "beige",
    "teal",
    "crimson",
)
# Consonant-initial nouns so that "a {object}" always reads naturally.
OBJECTS: tuple[str, ...] = (
    "ball",
    "cup",
    "box",
    "book",
    "chair",
    "lamp",
    "kite",
    "hat",
    "bag",
    "bottle",
    "clock",
    "vase",
    "drum",
    "spoon",
    "plate",
    "basket",
    "candle",
    "pillow",
    "bucket",
    "rope",
)
PLACES: tuple[str, ...] = (
    "park",
    "kitchen",
    "garden",
    "library",
    "school",
    "station",
    "market",
    "forest",
    "beach",
    "river",
    "office",
    "garage",
    "museum",
    "bakery",
    "harbour",
    "attic",
    "cellar",
    "hallway",
    "bridge",
    "farm",
)
# Past tense equals past participle so both active and passive shapes work.
ACTIONS: tuple[str, ...] = (
    "painted",
    "carried",
    "kicked",
    "pushed",
    "cleaned",
    "dropped",
    "moved",
    "lifted",
    "washed",
    "opened",
    "pulled",
    "filled",
    "fixed",
    "touched",
    "watched",
    "dragged",
    "wrapped",
    "polished",
    "stacked",
    "rolled",
)

VALUES: dict[str, tuple[str, ...]] = {
    "who": NAMES,
    "colour": COLOURS,
    "object": OBJECTS,
    "where": PLACES,
    "action": ACTIONS,
}

# A document describes ONE scene (a value per attribute) in several sentences of keywords; every
# keyword names an attribute chosen at random, so any value seen so far may come next. A model
# that predicts the next word well must therefore keep the whole scene seen so far in its
# residual stream at every position, which is what the NLA is asked to read back.
END_OF_SENTENCE = "."
SENTENCE_WORDS = (3, 6)  # keywords per sentence, before the full stop

FUNCTION_WORDS: tuple[str, ...] = (END_OF_SENTENCE,)


@dataclass(frozen=True)
class Sentence:
    """One sentence: its words, the attribute values it names and which attribute each word
    realises (None for the full stop)."""

    words: tuple[str, ...]
    attributes: dict[str, str]
    roles: tuple[str | None, ...]


@dataclass(frozen=True)
class Document:
    """A numbered sequence of sentences."""

    doc_id: int
    sentences: tuple[Sentence, ...]

    @property
    def words(self) -> tuple[str, ...]:
        """All words of the document in order."""
        return tuple(w for s in self.sentences for w in s.words)

    @property
    def text(self) -> str:
        """Words joined by single spaces."""
        return " ".join(self.words)


@dataclass(frozen=True)
class Snippet:
    """A document prefix cut after `n_words` words, with its ground truth."""

    doc_id: int
    text: str
    n_words: int
    current: dict[str, str]
    earlier: tuple[dict[str, str], ...] = field(default_factory=tuple)
    final_word: str = ""
    # What must follow: "attribute:<name>", "word:<function word>" or "end".
    next_kind: str = "end"

    @property
    def attributes(self) -> dict[str, str]:
        """Every attribute the text has revealed so far, with its latest value: the current
        sentence's where it has named the attribute, else the most recent earlier sentence's."""
        known: dict[str, str] = {}
        for sentence in (*self.earlier, self.current):
            known.update(sentence)
        return known

    @property
    def ground_truth(self) -> dict[str, Any]:
        """JSON-serialisable ground truth (everything except the text)."""
        return {
            "doc_id": self.doc_id,
            "n_words": self.n_words,
            "current": dict(self.current),
            "earlier": [dict(e) for e in self.earlier],
            "final_word": self.final_word,
            "next_kind": self.next_kind,
        }

    def to_json(self) -> str:
        """Serialise the whole snippet (text included) to a JSON string."""
        return json.dumps({"text": self.text, **self.ground_truth}, sort_keys=True)

    @classmethod
    def from_ground_truth(cls, text: str, ground_truth: dict[str, Any] | str) -> Snippet:
        """Rebuild a snippet from its text and a ground-truth dict (or its JSON string)."""
        gt = json.loads(ground_truth) if isinstance(ground_truth, str) else ground_truth
        return cls(
            doc_id=int(gt["doc_id"]),
            text=text,
            n_words=int(gt["n_words"]),
            current=dict(gt["current"]),
            earlier=tuple(dict(e) for e in gt["earlier"]),
            final_word=str(gt["final_word"]),
            next_kind=str(gt.get("next_kind", "end")),
        )

    @classmethod
    def from_json(cls, payload: str) -> Snippet:
        """Inverse of `to_json`."""
        data = json.loads(payload)
        return cls.from_ground_truth(data["text"], data)


def make_sentence(roles: Sequence[str], scene: dict[str, str]) -> Sentence:
    """The keywords of `scene` for each attribute in `roles`, then a full stop."""
    words = [scene[name] for name in roles]
    return Sentence(
        words=(*words, END_OF_SENTENCE),
        attributes={name: scene[name] for name in roles},
        roles=(*roles, None),
    )


def random_scene(rng: random.Random) -> dict[str, str]:
    """Independent uniform draws, so no attribute predicts another."""
    return {name: rng.choice(VALUES[name]) for name in ATTRIBUTES}


def _random_sentence(rng: random.Random, scene: dict[str, str]) -> Sentence:
    roles = [rng.choice(ATTRIBUTES) for _ in range(rng.randint(*SENTENCE_WORDS))]
    return make_sentence(roles, scene)


def generate_document(
    doc_id: int, seed: int, min_sentences: int = 3, max_sentences: int = 6
) -> Document:
    """Generate one document; depends only on (seed, doc_id) so corpora can be sharded."""
    if not 1 <= min_sentences <= max_sentences:
        raise ValueError(
            f"need 1 <= min_sentences <= max_sentences, got {min_sentences}, {max_sentences}"
        )
    rng = random.Random(f"{seed}:doc:{doc_id}")
    n = rng.randint(min_sentences, max_sentences)
    scene = random_scene(rng)
    return Document(doc_id=doc_id, sentences=tuple(_random_sentence(rng, scene) for _ in range(n)))


def generate_documents(
    n_docs: int, seed: int, min_sentences: int = 3, max_sentences: int = 6
) -> list[Document]:
    """Generate documents 0..n_docs-1; a prefix of a larger corpus equals a smaller corpus."""
    return [generate_document(i, seed, min_sentences, max_sentences) for i in range(n_docs)]


def snippet_at(doc: Document, n_words: int) -> Snippet:
    """Cut `doc` after its first `n_words` words and compute the ground truth."""
    words = doc.words
    if not 1 <= n_words <= len(words):
        raise ValueError(f"n_words={n_words} outside 1..{len(words)} for doc {doc.doc_id}")
    earlier: list[dict[str, str]] = []
    current: dict[str, str] = {}
    start = 0
    for sentence in doc.sentences:
        end = start + len(sentence.words)
        if n_words <= end:
            seen = n_words - start
            current = {
                role: word
                for word, role in zip(sentence.words[:seen], sentence.roles[:seen], strict=True)
                if role is not None
            }
            break
        earlier.append(dict(sentence.attributes))
        start = end
    roles = [role for sentence in doc.sentences for role in sentence.roles]
    if n_words == len(words):
        next_kind = "end"
    elif roles[n_words] is not None:
        next_kind = f"attribute:{roles[n_words]}"
    else:
        next_kind = f"word:{words[n_words]}"
    return Snippet(
        doc_id=doc.doc_id,
        text=" ".join(words[:n_words]),
        n_words=n_words,
        current=current,
        earlier=tuple(earlier),
        final_word=words[n_words - 1],
        next_kind=next_kind,
    )


def make_snippets(doc: Document, n_snippets: int, seed: int, min_words: int = 3) -> list[Snippet]:
    """Up to `n_snippets` distinct prefixes of `doc`, sorted by length, keyed by (seed, doc_id)."""
    n_total = len(doc.words)
    if n_total < min_words:
        raise ValueError(
            f"document {doc.doc_id} has {n_total} words, fewer than min_words={min_words}"
        )
    rng = random.Random(f"{seed}:{doc.doc_id}")
    candidates = range(min_words, n_total + 1)
    # Clip rather than fail: short documents simply yield fewer snippets.
    cuts = sorted(rng.sample(candidates, min(n_snippets, len(candidates))))
    return [snippet_at(doc, c) for c in cuts]


def vocabulary() -> list[str]:
    """Every word the world can produce, sorted and unique (punctuation included)."""
    words = set(FUNCTION_WORDS)
    for values in VALUES.values():
        words.update(values)
    return sorted(words)

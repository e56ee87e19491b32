"""Template explanations of snippets: deliberately partial warm-start text, plus a parser."""

from __future__ import annotations

import random
import re

from nla_lightning.toy.world import ATTRIBUTES, Snippet

FINAL_WORD_KEY = "final_word"
# Said of an attribute the text has not revealed yet: a claim of absence, not a value.
UNKNOWN = "unknown"
NEXT_KEY = "next"

# Noun used in "the <noun> is <value> ." for each attribute.
ATTRIBUTE_NOUNS: dict[str, str] = {
    "who": "person",
    "colour": "colour",
    "object": "object",
    "where": "place",
    "action": "action",
}
_NOUN_TO_ATTRIBUTE = {noun: name for name, noun in ATTRIBUTE_NOUNS.items()}
# Article placed before the value so phrases read like English.
_ARTICLES: dict[str, str] = {"object": "a", "where": "the"}
# Punctuation is named in words so the phrase's own "." stays unambiguous.
_PUNCTUATION_NAMES: dict[str, tuple[str, ...]] = {".": ("a", "full", "stop"), ",": ("a", "comma")}
_FINAL_PREFIX = ("the", "text", "ends", "with")
_NEXT_PREFIX = ("next", "comes")

_TOKEN_RE = re.compile(r"[^\s.,]+|[.,]")


def explanation_vocabulary() -> list[str]:
    """Words used by explanation templates besides attribute values (sorted, unique)."""
    words = {"the", "is", ",", ".", "word", "nothing", UNKNOWN, *_FINAL_PREFIX}
    words.update(_NEXT_PREFIX)
    words.update(ATTRIBUTE_NOUNS.values())
    words.update(_ARTICLES.values())
    for phrase in _PUNCTUATION_NAMES.values():
        words.update(phrase)
    return sorted(words)


def attribute_phrase(name: str, value: str) -> str:
    article = _ARTICLES.get(name) if value != UNKNOWN else None
    shown = f"{article} {value}" if article else value
    return f"the {ATTRIBUTE_NOUNS[name]} is {shown} ."


def _word_in_words(word: str) -> str:
    named = _PUNCTUATION_NAMES.get(word)
    return " ".join(named) if named else f"the word {word}"


def _final_word_phrase(word: str) -> str:
    return f"{' '.join(_FINAL_PREFIX)} {_word_in_words(word)} ."


def _next_phrase(next_kind: str) -> str:
    """What must follow the text: an attribute slot, a given word, or nothing."""
    kind, _, value = next_kind.partition(":")
    if kind == "attribute":
        tail = f"a {ATTRIBUTE_NOUNS[value]}"
    elif kind == "word":
        tail = _word_in_words(value)
    else:
        tail = "nothing"
    return f"{' '.join(_NEXT_PREFIX)} {tail} ."


def write_explanation(
    snippet: Snippet,
    rng: random.Random,
    p_final_word: float = 0.3,
    p_attribute: float = 0.3,
    p_next: float = 0.0,
    p_unknown: float = 0.0,
) -> str:
    """Partial explanation: in a fixed order, each revealed attribute with probability
    `p_attribute` (at least one) and each unrevealed one as "unknown" with probability
    `p_unknown`; sometimes the final word, sometimes what follows.

    Independent choices per attribute keep the warm start partial (one or two attributes on
    average) while every longer description stays a reachable sample for RL to reinforce."""
    known = snippet.attributes
    present = [name for name in ATTRIBUTES if name in known]
    named = {name for name in present if rng.random() < p_attribute}
    if present and not named:
        named = {rng.choice(present)}
    phrases = []
    for name in ATTRIBUTES:
        if name in named:
            phrases.append(attribute_phrase(name, known[name]))
        elif name not in known and rng.random() < p_unknown:
            phrases.append(attribute_phrase(name, UNKNOWN))
    if rng.random() < p_final_word or not phrases:
        phrases.append(_final_word_phrase(snippet.final_word))
    if rng.random() < p_next:
        phrases.append(_next_phrase(snippet.next_kind))
    return " ".join(phrases)


def write_complete_explanation(snippet: Snippet) -> str:
    """Upper-bound explanation: every attribute (its value, or unknown), the final word and
    what follows."""
    known = snippet.attributes
    phrases = [attribute_phrase(name, known.get(name, UNKNOWN)) for name in ATTRIBUTES]
    phrases.append(_final_word_phrase(snippet.final_word))
    phrases.append(_next_phrase(snippet.next_kind))
    return " ".join(phrases)


def _split_phrases(explanation: str) -> list[list[str]]:
    phrases: list[list[str]] = [[]]
    for token in _TOKEN_RE.findall(explanation.lower()):
        if token == ".":
            phrases.append([])
        else:
            phrases[-1].append(token)
    return [p for p in phrases if p]


def attributes_named(explanation: str) -> dict[str, set[str]]:
    """Values an explanation names, per attribute (plus `final_word` and `next`).

    Only exact template phrases count; free text is ignored, so a malformed generation simply
    names nothing.
    """
    named: dict[str, set[str]] = {}
    for tokens in _split_phrases(explanation):
        value: str | None = None
        key: str | None = None
        if len(tokens) >= 4 and tokens[0] == "the" and tokens[2] == "is":
            key = _NOUN_TO_ATTRIBUTE.get(tokens[1])
            rest = tokens[3:]
            if key is not None and len(rest) == 2 and rest[0] in ("a", "the"):
                rest = rest[1:]
            value = rest[0] if key is not None and len(rest) == 1 else None
            if value == UNKNOWN:
                # "not revealed yet" names no value: nothing to score as right or wrong.
                key = value = None
        elif tuple(tokens[:4]) == _FINAL_PREFIX:
            key = FINAL_WORD_KEY
            rest = tuple(tokens[4:])
            if len(rest) == 3 and rest[:2] == ("the", "word"):
                value = rest[2]
            else:
                value = next((p for p, n in _PUNCTUATION_NAMES.items() if n == rest), None)
        elif tuple(tokens[:2]) == _NEXT_PREFIX:
            key, value = NEXT_KEY, _parse_next(tuple(tokens[2:]))
        if key is not None and value is not None:
            named.setdefault(key, set()).add(value)
    return named


def _parse_next(rest: tuple[str, ...]) -> str | None:
    if rest == ("nothing",):
        return "end"
    if len(rest) == 2 and rest[0] == "a" and rest[1] in _NOUN_TO_ATTRIBUTE:
        return f"attribute:{_NOUN_TO_ATTRIBUTE[rest[1]]}"
    if len(rest) == 3 and rest[:2] == ("the", "word"):
        return f"word:{rest[2]}"
    punctuation = next((p for p, n in _PUNCTUATION_NAMES.items() if n == rest), None)
    return f"word:{punctuation}" if punctuation else None


def snippet_attribute_values(snippet: Snippet) -> dict[str, set[str]]:
    """Ground truth in the shape `attributes_named` returns: revealed attributes, final word and
    what follows."""
    values = {name: {value} for name, value in snippet.attributes.items()}
    values[FINAL_WORD_KEY] = {snippet.final_word}
    values[NEXT_KEY] = {snippet.next_kind}
    return values

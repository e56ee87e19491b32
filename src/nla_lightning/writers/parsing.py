"""Strict extraction of the feature list from a writer's raw answer, cleaned the release's way:
list markers (bullets, numbers, letters, roman numerals) and `**bold**` wrappers stripped,
features joined by a blank line."""

from __future__ import annotations

import re

OPEN_TAG = "<analysis>"
CLOSE_TAG = "</analysis>"
PARSE_STATUSES: tuple[str, ...] = ("written", "no_tags", "too_few_features", "empty")
# The sentence rule for writers too small to keep the format (e.g. a 135M model): an answer
# whose <analysis> block never closes gives its first sentences as the features.
SENTENCE_RULE_MAX = 3
SENTENCE_MIN_WORDS = 4
_ABBREVIATION = re.compile(r"(?:\b(?:e\.g|i\.e|etc|vs|cf|approx)|\b[A-Za-z])\.$")
_SENTENCE = re.compile(r"(?<=[.!?])\s+(?=[A-Z\"'`(])")
FEATURE_SEPARATOR = "\n\n"

# Bullets need no space after them; the other markers do, so "2024 was ..." keeps its year and
# "I think" or "a.m." keep their letters.
_BULLET = re.compile(r"^[-*•+–]+(?!\*)\s*")
_ENUMERATOR = r"(?:\d{1,3}|[a-zA-Z]|[ivxlc]{1,6}|[IVXLC]{1,6})"
_MARKER = re.compile(rf"^(?:\({_ENUMERATOR}\)|{_ENUMERATOR}[.)])(?=\s|$)\s*")
_BOLD = re.compile(r"\*\*(.+?)\*\*")
# "Sentence 1:", "Feature two -": labels a small writer copies from its instruction.
_LABEL = re.compile(r"^(?:sentence|feature)\s*(?:\d{1,2}|one|two|three)\s*[:.)-]\s*", re.IGNORECASE)


def _is_item(line: str) -> bool:
    """Whether a line opens a list item (so a new feature)."""
    stripped = line.strip()
    return bool(_MARKER.match(stripped) or (_BULLET.match(stripped) and stripped[:2] != "**"))


def clean_feature(line: str) -> str:
    """Strip list markers ("-", "*", "•", "1.", "2)", "(3)", "a.", "(b)", "iv.") and `**bold**`
    wrappers from one line."""
    text = _BOLD.sub(r"\1", line.strip()).strip()
    # Two passes so "- 1. foo" and "1. - foo" both come out clean.
    for _ in range(2):
        text = _LABEL.sub("", _MARKER.sub("", _BULLET.sub("", text))).strip()
    return text


def split_features(body: str) -> list[str]:
    """The features of an <analysis> body: each list item or paragraph is one; a feature's
    wrapped lines are joined by spaces."""
    features: list[str] = []
    current: list[str] = []

    def flush() -> None:
        text = " ".join(part for part in current if part)
        if text:
            features.append(text)
        current.clear()

    for line in body.splitlines():
        if not line.strip():
            flush()
            continue
        if _is_item(line):
            flush()
        current.append(clean_feature(line))
    flush()
    return features


def first_sentences(text: str, limit: int = SENTENCE_RULE_MAX) -> list[str]:
    """The first `limit` complete sentences of `text` with at least SENTENCE_MIN_WORDS words
    each. The block never closed, so the answer ran out of tokens: its last piece is taken to
    be cut off and is never a feature (even when it happens to end in a full stop, as in "such
    as (e."); "e.g." and the like do not end a sentence."""
    joined = " ".join(clean_feature(line) for line in text.splitlines()).strip()
    parts: list[str] = []
    for piece in _SENTENCE.split(joined):
        if parts and _ABBREVIATION.search(parts[-1]):
            parts[-1] = f"{parts[-1]} {piece}"
        else:
            parts.append(piece)
    complete = [clean_feature(p) for p in parts[:-1] if p.strip().endswith((".", "!", "?"))]
    return [p for p in complete if len(p.split()) >= SENTENCE_MIN_WORDS][:limit]


def parse_summary(
    answer: str, min_features: int = 2, sentence_rule: bool = False
) -> tuple[str | None, str]:
    """Return (summary, status) from the last closed <analysis>...</analysis> block; with
    `sentence_rule`, an opened block that never closes gives its first complete sentences."""
    if not answer or not answer.strip():
        return None, "empty"
    end = answer.rfind(CLOSE_TAG)
    start = answer.rfind(OPEN_TAG, 0, end) if end >= 0 else -1
    if start < 0 and sentence_rule and OPEN_TAG in answer:
        features = first_sentences(answer[answer.rfind(OPEN_TAG) + len(OPEN_TAG) :])
        if len(features) < min_features:
            return None, "too_few_features"
        return FEATURE_SEPARATOR.join(features), "written"
    if start < 0:
        return None, "no_tags"
    features = split_features(answer[start + len(OPEN_TAG) : end])
    if not features:
        return None, "empty"
    if len(features) < min_features:
        return None, "too_few_features"
    return FEATURE_SEPARATOR.join(features), "written"


def ending_feature(text: str, n_words: int) -> str:
    """A feature written by rule, not by the writer: the text's last `n_words` words, quoted.
    The release's last feature is about the final token; a writer too small to name it
    reliably gets this one added (whitespace inside the quote collapsed to single spaces)."""
    if n_words < 1:
        raise ValueError(f"n_words must be >= 1, got {n_words}")
    words = text.split()
    if not words:
        raise ValueError("cannot write an ending feature for an empty text")
    return f'The text ends with "{" ".join(words[-n_words:])}".'

"""Strict extraction of the feature list from a writer's raw answer."""

from __future__ import annotations

import re

OPEN_TAG = "<analysis>"
CLOSE_TAG = "</analysis>"
PARSE_STATUSES: tuple[str, ...] = ("written", "no_tags", "too_few_features", "empty")

# Bullets need no space after them; numbers do, so "2024 was ..." keeps its year.
_BULLET = re.compile(r"^[-*•+–]+\s*")
_NUMBER = re.compile(r"^(?:\(\d{1,3}\)|\d{1,3}[.)])(?=\s|$)\s*")


def clean_feature(line: str) -> str:
    """Strip list markers ("-", "*", "•", "1.", "2)", "(3)") and whitespace from one line."""
    text = line.strip()
    # Two passes so "- 1. foo" and "1. - foo" both come out clean.
    for _ in range(2):
        text = _NUMBER.sub("", _BULLET.sub("", text)).strip()
    return text


def parse_summary(answer: str, min_features: int = 2) -> tuple[str | None, str]:
    """Return (summary, status) from the last closed <analysis>...</analysis> block."""
    if not answer or not answer.strip():
        return None, "empty"
    end = answer.rfind(CLOSE_TAG)
    start = answer.rfind(OPEN_TAG, 0, end) if end >= 0 else -1
    if start < 0:
        return None, "no_tags"
    body = answer[start + len(OPEN_TAG) : end]
    features = [f for f in (clean_feature(line) for line in body.splitlines()) if f]
    if not features:
        return None, "empty"
    if len(features) < min_features:
        return None, "too_few_features"
    return "\n".join(features), "written"

"""parse_summary: strict last-block extraction, list-marker clean-up, statuses."""

from __future__ import annotations

import pytest

from nla_lightning.writers import parse_summary
from nla_lightning.writers.parsing import clean_feature


def test_written_joins_features_with_newlines():
    answer = "thinking...\n<analysis>\n- alpha feature\n- beta feature\n</analysis> bye"
    assert parse_summary(answer) == ("alpha feature\nbeta feature", "written")


@pytest.mark.parametrize(
    ("line", "clean"),
    [
        ("- dash", "dash"),
        ("* star", "star"),
        ("• bullet", "bullet"),
        ("1. numbered", "numbered"),
        ("2) paren", "paren"),
        ("(3) both parens", "both parens"),
        ("   -   padded  ", "padded"),
        ("- 1. nested marker", "nested marker"),
        ("2024 was a year", "2024 was a year"),
        ("-dash without space", "dash without space"),
    ],
)
def test_list_markers_are_stripped(line, clean):
    assert clean_feature(line) == clean


def test_marker_cleanup_inside_parse():
    answer = "<analysis>\n1. first one\n\n  2) second one\n(3) third one\n</analysis>"
    assert parse_summary(answer) == ("first one\nsecond one\nthird one", "written")


def test_last_closed_block_wins():
    answer = "<analysis>\n- old a\n- old b\n</analysis>\n<analysis>\n- new a\n- new b\n</analysis>"
    assert parse_summary(answer)[0] == "new a\nnew b"


def test_trailing_unclosed_block_is_ignored():
    answer = "<analysis>\n- a one\n- b two\n</analysis>\n<analysis>\n- unfinished"
    assert parse_summary(answer) == ("a one\nb two", "written")


@pytest.mark.parametrize(
    ("answer", "status"),
    [
        ("- a\n- b", "no_tags"),
        ("<analysis>\n- a\n- b\n", "no_tags"),
        ("- a\n- b\n</analysis>", "no_tags"),
        ("<analysis>\n- only one\n</analysis>", "too_few_features"),
        ("<analysis>\n-\n*  \n</analysis>", "empty"),
        ("   ", "empty"),
        ("", "empty"),
    ],
)
def test_rejections(answer, status):
    assert parse_summary(answer) == (None, status)


def test_min_features_is_configurable():
    answer = "<analysis>\n- a\n- b\n</analysis>"
    assert parse_summary(answer, min_features=3) == (None, "too_few_features")
    assert parse_summary("<analysis>- solo</analysis>", min_features=1) == ("solo", "written")

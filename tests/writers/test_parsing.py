"""parse_summary: strict last-block extraction, the release's clean-up (list markers, letters,
roman numerals, **bold**), features joined by a blank line, statuses. Expected values are
written from the release's description (method.md, "The official recipe")."""

from __future__ import annotations

import pytest

from nla_lightning.writers import parse_summary
from nla_lightning.writers.parsing import clean_feature


def test_written_joins_features_with_a_blank_line():
    answer = "thinking...\n<analysis>\n- alpha feature\n- beta feature\n</analysis> bye"
    assert parse_summary(answer) == ("alpha feature\n\nbeta feature", "written")


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
        ("a. lettered", "lettered"),
        ("B) upper letter", "upper letter"),
        ("(c) parenthesised letter", "parenthesised letter"),
        ("iv. roman", "roman"),
        ("(ii) roman in parens", "roman in parens"),
        ("III) upper roman", "upper roman"),
        ("**Topic:** a war story", "Topic: a war story"),
        ("**the whole feature in bold**", "the whole feature in bold"),
        ("- **Syntax**: an open clause", "Syntax: an open clause"),
        ("I think it is a poem", "I think it is a poem"),
        ("a.m. is when it starts", "a.m. is when it starts"),
        ("Sentence 1: the topic is loops", "the topic is loops"),
        ("Feature two - the last word", "the last word"),
        ("Sentences like this stay", "Sentences like this stay"),
    ],
)
def test_list_markers_are_stripped(line, clean):
    assert clean_feature(line) == clean


def test_marker_cleanup_inside_parse():
    answer = "<analysis>\n1. first one\n\n  2) second one\n(3) third one\n</analysis>"
    assert parse_summary(answer) == ("first one\n\nsecond one\n\nthird one", "written")


def test_last_closed_block_wins():
    answer = "<analysis>\n- old a\n- old b\n</analysis>\n<analysis>\n- new a\n- new b\n</analysis>"
    assert parse_summary(answer)[0] == "new a\n\nnew b"


def test_trailing_unclosed_block_is_ignored():
    answer = "<analysis>\n- a one\n- b two\n</analysis>\n<analysis>\n- unfinished"
    assert parse_summary(answer) == ("a one\n\nb two", "written")


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


def test_paragraphs_are_features_and_wrapped_lines_join():
    """The release's style: features as paragraphs, a feature may wrap over lines."""
    answer = (
        "<analysis>\nThe text is a recipe\nfor bread.\n\n"
        "**Final token:** the word 'knead', so an object must follow.\n</analysis>"
    )
    assert parse_summary(answer) == (
        "The text is a recipe for bread.\n\nFinal token: the word 'knead', so an object must "
        "follow.",
        "written",
    )


def test_a_single_paragraph_is_one_feature():
    answer = "<analysis>\nOne long feature\nwrapped over\nthree lines.\n</analysis>"
    assert parse_summary(answer) == (None, "too_few_features")


def test_the_sentence_rule_takes_the_first_complete_sentences_of_an_unclosed_block():
    """For writers too small to close the block: its first complete sentences, never the
    fragment the token budget cut off, never without the opening tag."""
    answer = (
        "<analysis>\nSentence 1: The text defines a Python function. "
        "It adds two numbers and prints them. Ok. "
        "The last token is a closing bracket, so a newline follows. And then the model kept"
    )
    assert parse_summary(answer) == (None, "no_tags")  # strict by default
    summary, status = parse_summary(answer, sentence_rule=True)
    assert status == "written"
    assert summary == (
        "The text defines a Python function.\n\nIt adds two numbers and prints them.\n\n"
        "The last token is a closing bracket, so a newline follows."
    )
    one = "<analysis>\nThe text defines a Python function. And then it"
    assert parse_summary(one, sentence_rule=True) == (None, "too_few_features")
    # A cut that ends in a full stop is still a cut; an abbreviation does not end a sentence.
    cut = (
        "<analysis>\nIt lists rules for names, e.g. Spam and Eggs in modules. "
        "It ends inside a list of examples. It applies to classes (e."
    )
    assert parse_summary(cut, sentence_rule=True)[0] == (
        "It lists rules for names, e.g. Spam and Eggs in modules.\n\n"
        "It ends inside a list of examples."
    )
    assert parse_summary("No tags. At all here.", sentence_rule=True) == (None, "no_tags")
    # A closed block is parsed as always, the rule or not.
    closed = "<analysis>\n- a one\n- b two\n</analysis>"
    assert parse_summary(closed, sentence_rule=True) == ("a one\n\nb two", "written")

"""Attribute recall, precision and confabulation on hand-made snippets."""

import pytest

from nla_lightning.toy.scoring import score_attributes
from nla_lightning.toy.summaries import write_complete_explanation
from nla_lightning.toy.world import Document, make_sentence, make_snippets, snippet_at

SCENE = dict(who="anna", colour="red", object="ball", where="park", action="painted")


def _document() -> Document:
    # "anna painted anna . red ball park painted ."
    return Document(
        doc_id=1,
        sentences=(
            make_sentence(["who", "action", "who"], SCENE),
            make_sentence(["colour", "object", "where", "action"], SCENE),
        ),
    )


def test_attributes_of_a_snippet_accumulate_over_sentences():
    doc = _document()
    assert snippet_at(doc, 2).attributes == {"who": "anna", "action": "painted"}
    # Into the second sentence: everything the first one revealed is still known.
    assert snippet_at(doc, 7).attributes == {
        **snippet_at(doc, 3).attributes,
        "colour": "red",
        "object": "ball",
        "where": "park",
    }


def test_scores_count_hits_misses_and_confabulations():
    snippet = snippet_at(_document(), 2)  # knows who and action only
    explanations = [
        "the person is anna . the action is painted .",  # both right
        "the person is tom . the colour is blue .",  # wrong who, confabulated colour
        None,  # no explanation: names nothing
    ]
    scores = score_attributes(explanations, [snippet] * 3)
    assert scores["recall"] == pytest.approx(2 / 6)
    assert scores["precision"] == pytest.approx(2 / 4)
    assert scores["confabulation"] == pytest.approx(1 / 4)
    per = scores["per_attribute"]
    assert per["who"] == {"recall": 1 / 3, "precision": 1 / 2, "confabulation": 0.0}
    assert per["colour"]["recall"] is None  # no snippet has a colour yet
    assert per["colour"]["confabulation"] == 1.0
    assert scores["explanations_scored"] == 3


def test_complete_explanations_score_perfectly_and_empty_ones_recall_nothing():
    snippets = make_snippets(_document(), 6, seed=0)
    complete = [write_complete_explanation(s) for s in snippets]
    perfect = score_attributes(complete, snippets)
    assert perfect == {**perfect, "recall": 1.0, "precision": 1.0, "confabulation": 0.0}
    empty = score_attributes([""] * len(snippets), snippets)
    assert empty["recall"] == 0.0 and empty["precision"] is None


def test_mismatched_lengths_are_refused():
    with pytest.raises(ValueError, match="one each"):
        score_attributes(["x"], [])

"""Tests for the partial template explanations and their parser."""

import random

from nla_lightning.toy.summaries import (
    FINAL_WORD_KEY,
    attributes_named,
    explanation_vocabulary,
    snippet_attribute_values,
    write_complete_explanation,
    write_explanation,
)
from nla_lightning.toy.world import ATTRIBUTES, generate_documents, make_snippets, vocabulary


def _snippets(n: int = 500):
    out = []
    for doc in generate_documents(n, seed=11):
        out.extend(make_snippets(doc, 1, seed=11))
    return out[:n]


def test_explanations_are_partial():
    rng = random.Random(0)
    snippets = _snippets()
    counts, finals = [], 0
    for s in snippets:
        named = attributes_named(write_explanation(s, rng, p_final_word=0.3))
        if s.attributes:
            counts.append(sum(len(named.get(a, ())) for a in ATTRIBUTES))
        finals += FINAL_WORD_KEY in named
        truth = snippet_attribute_values(s)
        # Everything named is true.
        for key, values in named.items():
            assert values <= truth[key]
    mean = sum(counts) / len(counts)
    assert 1.0 <= mean <= 2.2
    assert 0.2 <= finals / len(snippets) <= 0.4


def test_complete_explanation_round_trip():
    for s in _snippets(200):
        assert attributes_named(write_complete_explanation(s)) == snippet_attribute_values(s)


def test_parser_handles_punctuation_and_garbage():
    assert attributes_named("the text ends with a full stop .") == {FINAL_WORD_KEY: {"."}}
    assert attributes_named("the text ends with a comma.") == {FINAL_WORD_KEY: {","}}
    assert attributes_named("the place is the park. the object is a ball") == {
        "where": {"park"},
        "object": {"ball"},
    }
    assert attributes_named("the the is is . red blue") == {}
    assert attributes_named("") == {}


def test_explanation_words_in_vocabulary():
    vocab = set(vocabulary()) | set(explanation_vocabulary())
    rng = random.Random(1)
    for s in _snippets(300):
        for text in (write_explanation(s, rng, p_next=0.5), write_complete_explanation(s)):
            assert set(text.split()) <= vocab


def test_next_phrase_round_trips_for_every_kind():
    from nla_lightning.toy.summaries import NEXT_KEY, write_complete_explanation
    from nla_lightning.toy.world import generate_documents, snippet_at

    kinds = set()
    for doc in generate_documents(30, seed=3):
        for n in range(1, len(doc.words) + 1):
            s = snippet_at(doc, n)
            assert attributes_named(write_complete_explanation(s))[NEXT_KEY] == {s.next_kind}
            kinds.add(s.next_kind.split(":")[0])
    assert kinds == {"attribute", "word", "end"}


def test_next_kind_is_the_role_of_the_following_word():
    from nla_lightning.toy.world import Document, make_sentence, snippet_at

    scene = {"who": "anna", "colour": "red", "object": "ball", "where": "park", "action": "kicked"}
    doc = Document(0, (make_sentence(["who", "action", "colour"], scene),))
    assert snippet_at(doc, 1).next_kind == "attribute:action"
    assert snippet_at(doc, 3).next_kind == "word:."
    assert snippet_at(doc, len(doc.words)).next_kind == "end"


def test_unknown_attributes_are_said_but_name_no_value():
    from nla_lightning.toy.summaries import UNKNOWN, attribute_phrase
    from nla_lightning.toy.world import snippet_at

    doc = generate_documents(1, seed=0)[0]
    early = snippet_at(doc, 1)  # one keyword: four attributes not revealed yet
    missing = [a for a in ATTRIBUTES if a not in early.attributes]
    text = write_explanation(
        early, random.Random(0), p_final_word=1.0, p_attribute=1.0, p_unknown=1.0
    )
    for name in missing:
        assert attribute_phrase(name, UNKNOWN) in text
    assert attributes_named(text).keys() == {*early.attributes, FINAL_WORD_KEY} - {"next"}
    assert attributes_named("the place is unknown . the person is anna .") == {"who": {"anna"}}
    # Without p_unknown, nothing is said about what is not revealed.
    assert "unknown" not in write_explanation(early, random.Random(0), p_attribute=1.0)

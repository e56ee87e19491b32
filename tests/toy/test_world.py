"""Tests for the toy-world corpus and snippet ground truth."""

import pytest

from nla_lightning.toy.world import (
    ATTRIBUTES,
    SHAPES,
    Document,
    Snippet,
    generate_documents,
    make_sentence,
    make_snippets,
    snippet_at,
    vocabulary,
)


def _hand_document() -> Document:
    first = make_sentence(
        SHAPES[0], dict(who="anna", colour="red", object="ball", where="park", action="painted")
    )
    second = make_sentence(
        SHAPES[1], dict(who="tom", colour="blue", object="cup", where="kitchen", action="carried")
    )
    return Document(doc_id=7, sentences=(first, second))


def test_generate_documents_deterministic_and_prefix_stable():
    a = generate_documents(10, seed=3)
    assert a == generate_documents(10, seed=3)
    assert generate_documents(20, seed=3)[:10] == a
    assert [d.doc_id for d in a] == list(range(10))
    assert a != generate_documents(10, seed=4)
    for doc in a:
        assert 2 <= len(doc.sentences) <= 4
        for s in doc.sentences:
            assert set(s.attributes) == set(ATTRIBUTES)
            assert s.words[-1] == "."
            assert {r: w for w, r in zip(s.words, s.roles, strict=True) if r} == s.attributes


def test_every_shape_realises_each_attribute_once_and_early():
    for shape in SHAPES:
        s = make_sentence(
            shape, dict(who="anna", colour="red", object="ball", where="park", action="painted")
        )
        assert sorted(r for r in s.roles if r) == sorted(ATTRIBUTES)
        # A 3-word prefix of a document always names at least one attribute.
        assert any(s.roles[:3])
    assert len(SHAPES) >= 8


def test_document_text():
    doc = _hand_document()
    assert doc.text.startswith("anna painted the red ball in the park . in the kitchen ,")
    assert doc.text.endswith("was carried by tom .")


def test_snippet_ground_truth_hand_document():
    doc = _hand_document()
    # "anna painted the red" -> only who, action, colour realised so far.
    s = snippet_at(doc, 4)
    assert s.text == "anna painted the red"
    assert s.current == {"who": "anna", "action": "painted", "colour": "red"}
    assert s.earlier == ()
    assert s.final_word == "red"
    # Cut right after the full stop: the first sentence is still current.
    s = snippet_at(doc, 9)
    assert s.final_word == "." and s.current == doc.sentences[0].attributes
    # "... . in the" -> nothing realised yet in the second sentence.
    s = snippet_at(doc, 11)
    assert s.current == {} and s.earlier == (doc.sentences[0].attributes,)
    assert s.final_word == "the"
    s = snippet_at(doc, 12)
    assert s.current == {"where": "kitchen"} and s.final_word == "kitchen"


def test_make_snippets_reproducible_sorted_distinct():
    doc = generate_documents(5, seed=0)[4]
    a = make_snippets(doc, 4, seed=1)
    assert a == make_snippets(doc, 4, seed=1)
    cuts = [s.n_words for s in a]
    assert cuts == sorted(set(cuts)) and len(cuts) == 4
    assert all(c >= 3 for c in cuts)
    assert all(doc.text.startswith(s.text) for s in a)
    assert len(make_snippets(doc, 10_000, seed=1)) == len(doc.words) - 2


def test_short_document_raises():
    doc = Document(
        doc_id=0, sentences=(make_sentence("{who} {action} .", dict(who="anna", action="painted")),)
    )
    with pytest.raises(ValueError, match="min_words"):
        make_snippets(doc, 2, seed=0, min_words=4)


def test_snippet_json_round_trip():
    for doc in generate_documents(5, seed=2):
        for s in make_snippets(doc, 3, seed=2):
            assert Snippet.from_json(s.to_json()) == s
            assert Snippet.from_ground_truth(s.text, s.to_json()) == s
            assert Snippet.from_ground_truth(s.text, s.ground_truth) == s


def test_vocabulary_covers_corpus():
    vocab = set(vocabulary())
    assert {".", ","} <= vocab
    assert vocabulary() == sorted(vocab)
    for doc in generate_documents(50, seed=0):
        assert set(doc.words) <= vocab

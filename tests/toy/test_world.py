"""Tests for the toy-world corpus and snippet ground truth."""

import pytest

from nla_lightning.toy.world import (
    ATTRIBUTES,
    SENTENCE_WORDS,
    Document,
    Snippet,
    generate_documents,
    make_sentence,
    make_snippets,
    snippet_at,
    vocabulary,
)

SCENE = dict(who="anna", colour="red", object="ball", where="park", action="painted")


def _hand_document() -> Document:
    # "anna red anna . park ball painted red ."
    first = make_sentence(["who", "colour", "who"], SCENE)
    second = make_sentence(["where", "object", "action", "colour"], SCENE)
    return Document(doc_id=7, sentences=(first, second))


def test_generate_documents_deterministic_and_prefix_stable():
    a = generate_documents(10, seed=3)
    assert a == generate_documents(10, seed=3)
    assert generate_documents(20, seed=3)[:10] == a
    assert [d.doc_id for d in a] == list(range(10))
    assert a != generate_documents(10, seed=4)
    for doc in a:
        assert 3 <= len(doc.sentences) <= 6
        for s in doc.sentences:
            assert SENTENCE_WORDS[0] <= len(s.words) - 1 <= SENTENCE_WORDS[1]
            assert s.words[-1] == "."
            assert {r: w for w, r in zip(s.words, s.roles, strict=True) if r} == s.attributes


def test_a_document_keeps_one_scene_and_any_attribute_may_come_next():
    docs = generate_documents(300, seed=1)
    for doc in docs:
        scene: dict[str, str] = {}
        for s in doc.sentences:
            for name, value in s.attributes.items():
                assert scene.setdefault(name, value) == value
    # Roles are drawn independently, so every attribute starts and follows every other.
    pairs = {
        (a, b)
        for doc in docs
        for s in doc.sentences
        for a, b in zip(s.roles[:-2], s.roles[1:-1], strict=True)
    }
    assert pairs == {(a, b) for a in ATTRIBUTES for b in ATTRIBUTES}


def test_document_text():
    assert _hand_document().text == "anna red anna . park ball painted red ."


def test_snippet_ground_truth_hand_document():
    doc = _hand_document()
    s = snippet_at(doc, 2)
    assert s.text == "anna red"
    assert s.current == {"who": "anna", "colour": "red"} == s.attributes
    assert s.earlier == ()
    assert (s.final_word, s.next_kind) == ("red", "attribute:who")
    # Cut right after the full stop: the first sentence is still current.
    s = snippet_at(doc, 4)
    assert s.final_word == "." and s.current == doc.sentences[0].attributes
    assert s.next_kind == "attribute:where"
    # Into the second sentence: what the first revealed is still known.
    s = snippet_at(doc, 6)
    assert s.current == {"where": "park", "object": "ball"}
    assert s.earlier == (doc.sentences[0].attributes,)
    assert s.attributes == {"who": "anna", "colour": "red", "where": "park", "object": "ball"}
    assert snippet_at(doc, 8).next_kind == "word:."
    assert snippet_at(doc, 9).next_kind == "end"


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
    doc = Document(doc_id=0, sentences=(make_sentence(["who", "action"], SCENE),))
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
    assert "." in vocab
    assert vocabulary() == sorted(vocab)
    for doc in generate_documents(50, seed=0):
        assert set(doc.words) <= vocab

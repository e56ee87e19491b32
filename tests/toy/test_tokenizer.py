"""Tests for the offline word-level toy tokenizer."""

import random

from transformers import AutoTokenizer

from nla_lightning.toy.summaries import write_complete_explanation, write_explanation
from nla_lightning.toy.tokenizer import (
    ADDED_TOKENS,
    INJECTION_CHAR,
    SPECIAL_TOKENS,
    build_toy_tokenizer,
)
from nla_lightning.toy.world import generate_documents, make_snippets

PROMPT = "Explain the activation: <concept>㊗</concept> in <explanation> tags, please!"
MESSAGES = [
    {"role": "system", "content": "You are helpful."},
    {"role": "user", "content": PROMPT},
]


def _ids(tok, text):
    return tok(text, add_special_tokens=False)["input_ids"]


def test_special_and_added_tokens_are_single_ids():
    tok = build_toy_tokenizer([PROMPT])
    for t in (*SPECIAL_TOKENS, *ADDED_TOKENS):
        assert len(_ids(tok, t)) == 1, t
        assert len(_ids(tok, f"x{t}y")) == 3 or t in SPECIAL_TOKENS
    assert len(_ids(tok, f"<concept>{INJECTION_CHAR}</concept>")) == 3
    assert len(_ids(tok, f"{INJECTION_CHAR}{INJECTION_CHAR}.")) == 3
    assert tok.pad_token_id == 0 and tok.unk_token_id == 1 and tok.eos_token == "<|im_end|>"
    # Added tags survive skipping special tokens.
    ids = _ids(tok, "<explanation> the colour is red . </explanation><|im_end|>")
    assert tok.decode(ids, skip_special_tokens=True) == (
        "<explanation> the colour is red . </explanation>"
    )


def test_chat_template_and_prompt_words_known():
    tok = build_toy_tokenizer([m["content"] for m in MESSAGES])
    text = tok.apply_chat_template(MESSAGES, add_generation_prompt=True, tokenize=False)
    assert text.endswith("<|im_start|>assistant\n")
    assert "<|im_start|>user\n" + PROMPT + "<|im_end|>\n" in text
    assert tok.unk_token_id not in _ids(tok, text)


def test_no_unk_on_corpus_and_explanations():
    tok = build_toy_tokenizer()
    rng = random.Random(0)
    for doc in generate_documents(100, seed=0):
        ids = _ids(tok, doc.text)
        assert tok.unk_token_id not in ids
        assert tok.decode(ids) == doc.text
        for s in make_snippets(doc, 2, seed=0):
            for e in (write_explanation(s, rng), write_complete_explanation(s)):
                assert tok.unk_token_id not in _ids(tok, e)
    assert tok.unk_token_id in _ids(tok, "zebra")


def test_deterministic_and_save_load_round_trip(tmp_path):
    tok = build_toy_tokenizer([PROMPT])
    assert tok.get_vocab() == build_toy_tokenizer([PROMPT]).get_vocab()
    tok.save_pretrained(tmp_path)
    loaded = AutoTokenizer.from_pretrained(tmp_path)
    assert loaded.chat_template == tok.chat_template
    text = tok.apply_chat_template(MESSAGES, add_generation_prompt=True, tokenize=False)
    assert loaded.apply_chat_template(MESSAGES, add_generation_prompt=True, tokenize=False) == text
    doc = generate_documents(1, seed=5)[0].text
    for t in (text, doc, PROMPT):
        assert _ids(loaded, t) == _ids(tok, t)
    assert loaded.decode(_ids(loaded, doc)) == doc
    assert (loaded.pad_token_id, loaded.eos_token_id) == (tok.pad_token_id, tok.eos_token_id)
    assert loaded.padding_side == "right"

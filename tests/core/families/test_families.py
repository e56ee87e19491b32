"""families.py on real (tiny) models and the toy tokenizer: text configs, embedding scale,
end-of-turn token, chat prompt ids, document encoding."""

from __future__ import annotations

import copy
import math

import pytest
import torch
from torch import nn
from torch.utils.hooks import RemovableHandle

from nla_lightning.core.families import (
    chat_prompt_ids,
    embedding_output_scale,
    encode_document,
    end_of_turn_id,
    stop_token_ids,
    text_config,
)
from nla_lightning.core.models import load_causal_lm, load_config
from nla_lightning.errors import NLAConfigError
from tests.core.families.conftest import TINY_TEXT

INJECTION_SCALE = 150.0


def test_text_config_of_plain_and_multimodal_configs(target_dir, tiny_gemma3_dir):
    plain = load_config(str(target_dir))
    assert text_config(plain) is plain
    multimodal = load_config(str(tiny_gemma3_dir))
    assert multimodal.model_type == "gemma3"
    assert getattr(multimodal, "hidden_size", None) is None  # only under text_config
    text = text_config(multimodal)
    assert text.model_type == "gemma3_text"
    assert (text.hidden_size, text.num_hidden_layers) == (64, 4)
    assert len(text.layer_types) == 4


def _inject(model: nn.Module, position: int, vector: torch.Tensor) -> RemovableHandle:
    """What the AV's injector does: replace one row of the embedding MODULE's output, divided
    by `embedding_output_scale` so that it ends at the vector's norm after all scaling."""
    scale = embedding_output_scale(model)

    def hook(_module, _args, output):
        output = output.clone()
        output[:, position] = vector.to(output.dtype) / scale
        return output

    return model.get_input_embeddings().register_forward_hook(hook)


def _decoder_input(model: nn.Module, ids: torch.Tensor) -> torch.Tensor:
    with torch.no_grad():
        return model(ids, output_hidden_states=True).hidden_states[0]


def test_unscaled_family_has_scale_one(target):
    assert embedding_output_scale(target) == 1.0
    ids = torch.tensor([[5, 6, 7, 8]])
    vector = torch.randn(64)
    vector = vector * (INJECTION_SCALE / vector.norm())
    handle = _inject(target, 2, vector)
    try:
        row = _decoder_input(target, ids)[0, 2]
    finally:
        handle.remove()
    torch.testing.assert_close(row, vector)


class _ScaleAfterEmbedding(nn.Module):
    """Older transformers' Gemma: a plain nn.Embedding, and the model multiplies its output by
    sqrt(hidden_size) in its forward. Emulated with a forward pre-hook on the text model that
    turns input_ids into inputs_embeds = embed_tokens(ids) * normaliser."""

    @staticmethod
    def apply(model: nn.Module) -> nn.Embedding:
        text_model = model.model
        old = text_model.embed_tokens
        plain = nn.Embedding(old.num_embeddings, old.embedding_dim, old.padding_idx)
        plain.weight = old.weight  # the same tensor: the LM head stays tied to it
        text_model.embed_tokens = plain
        hidden = text_config(model.config).hidden_size
        normaliser = torch.tensor(hidden**0.5, dtype=plain.weight.dtype)

        def scale_after(module, args, kwargs):
            ids = kwargs.pop("input_ids", None)
            if ids is None and args:
                ids, args = args[0], args[1:]
            if ids is not None:
                kwargs["inputs_embeds"] = module.embed_tokens(ids) * normaliser
            return args, kwargs

        text_model.register_forward_pre_hook(scale_after, with_kwargs=True)
        return plain


def test_gemma_scale_inside_and_after_the_module(tiny_gemma3_text_dir):
    ids = torch.tensor([[5, 6, 7, 8, 9]])
    scaled = load_causal_lm(str(tiny_gemma3_text_dir)).eval()
    d = TINY_TEXT["hidden_size"]
    # transformers 5: the module multiplies by sqrt(d) itself, so nothing happens after it.
    assert embedding_output_scale(scaled) == 1.0
    module = scaled.get_input_embeddings()
    torch.testing.assert_close(module(ids)[0], module.weight[ids[0]] * math.sqrt(d))

    legacy = copy.deepcopy(scaled)
    plain = _ScaleAfterEmbedding.apply(legacy)
    assert embedding_output_scale(legacy) == pytest.approx(math.sqrt(d), rel=1e-7)
    torch.testing.assert_close(plain(ids)[0], module.weight[ids[0]])  # unscaled module output
    with torch.no_grad():  # the emulation is faithful: same model, same logits
        torch.testing.assert_close(legacy(ids).logits, scaled(ids).logits)

    vector = torch.randn(d)
    vector = vector * (INJECTION_SCALE / vector.norm())
    for model in (scaled, legacy):
        handle = _inject(model, 3, vector)
        try:
            row = _decoder_input(model, ids)[0, 3]
        finally:
            handle.remove()
        # Both versions put the injected row into block 0 at norm injection_scale.
        torch.testing.assert_close(row, vector, rtol=1e-5, atol=1e-4)


def test_toy_end_of_turn_and_stop_ids(toy_tokenizer):
    im_end = toy_tokenizer.convert_tokens_to_ids("<|im_end|>")
    assert end_of_turn_id(toy_tokenizer) == im_end
    assert stop_token_ids(toy_tokenizer) == [im_end]  # eos is the same token


def test_end_of_turn_is_read_from_the_template_not_eos(toy_tokenizer):
    tokenizer = copy.deepcopy(toy_tokenizer)
    # A template whose turns end with another special token than eos (as Gemma's
    # <end_of_turn> vs <eos>, Llama-3's <|eot_id|> vs <|end_of_text|>).
    tokenizer.chat_template = (
        "{% for m in messages %}{{ '<|im_start|>' + m['role'] + '\\n' + m['content'] }}"
        "{{ '<pad>\\n' }}{% endfor %}"
        "{% if add_generation_prompt %}{{ '<|im_start|>assistant\\n' }}{% endif %}"
    )
    pad = tokenizer.convert_tokens_to_ids("<pad>")
    assert end_of_turn_id(tokenizer) == pad
    assert stop_token_ids(tokenizer) == [pad, tokenizer.eos_token_id]


def test_no_template(toy_tokenizer):
    tokenizer = copy.deepcopy(toy_tokenizer)
    tokenizer.chat_template = None
    assert end_of_turn_id(tokenizer) == tokenizer.eos_token_id
    with pytest.raises(NLAConfigError, match="no chat template.*tokenizer_config.json"):
        chat_prompt_ids(tokenizer, "anna")


def test_chat_prompt_ids_are_the_template_rendered_once(toy_tokenizer):
    ids = chat_prompt_ids(toy_tokenizer, "anna painted the red ball")
    rendered = toy_tokenizer.apply_chat_template(
        [{"role": "user", "content": "anna painted the red ball"}],
        tokenize=False,
        add_generation_prompt=True,
    )
    assert ids == toy_tokenizer(rendered, add_special_tokens=False)["input_ids"]
    assert isinstance(ids, list) and all(type(i) is int for i in ids)
    start = toy_tokenizer.convert_tokens_to_ids("<|im_start|>")
    assert ids[0] == start and ids[-2:] == toy_tokenizer.encode("<|im_start|> assistant")[-2:]


def test_broken_template_is_a_config_error(toy_tokenizer):
    tokenizer = copy.deepcopy(toy_tokenizer)
    tokenizer.chat_template = "{{ raise_exception('no users here') }}"
    with pytest.raises(NLAConfigError, match="chat template failed.*no users here"):
        chat_prompt_ids(tokenizer, "anna")


def test_toy_documents_have_nothing_added(toy_tokenizer):
    # The toy tokenizer has no BOS: its documents tokenise as before, so its numbers hold.
    text = "anna painted the red ball in the park ."
    doc = encode_document(toy_tokenizer, text)
    assert doc.ids == toy_tokenizer(text, add_special_tokens=False)["input_ids"]
    assert not any(doc.added) and not any(doc.special)
    assert doc.special_lengths() == []
    # A chat marker written in the text is special (no activation position); unk is not.
    marked = encode_document(toy_tokenizer, "anna <|im_end|> zzzunknownzzz")
    assert marked.special == [False, True, False]
    assert marked.special_lengths() == [2]

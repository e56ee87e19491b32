"""A Gemma-3 multimodal checkpoint (Gemma3Config: text_config + SigLIP vision_config) loads for
extraction and the AV (text-only causal LM, the checkpoint's text weights) and for the AR (the
text base model truncated to blocks 0..l)."""

from __future__ import annotations

import pytest
import torch
from safetensors.torch import load_file, save_file
from torch import nn

from nla_lightning.core.activations import capture_activations, decoder_layers
from nla_lightning.core.families import embedding_output_scale, text_config
from nla_lightning.core.final_token import extract_final_token_activations
from nla_lightning.core.models import load_backbone, load_causal_lm
from nla_lightning.errors import NLAConfigError

TEXTS = [
    "anna painted the red ball in the park .",
    "tom ran to the big house and painted the door .",
    "the red ball",
]


@pytest.fixture(scope="module")
def full(tiny_gemma3_dir):
    """The whole multimodal model, loaded by transformers itself: the reference."""
    from transformers import Gemma3ForConditionalGeneration

    return Gemma3ForConditionalGeneration.from_pretrained(tiny_gemma3_dir).eval()


@pytest.fixture(scope="module")
def text_lm(tiny_gemma3_dir):
    return load_causal_lm(str(tiny_gemma3_dir)).eval()


def _ids(tokenizer, text: str) -> torch.Tensor:
    return torch.tensor([tokenizer(text, add_special_tokens=True)["input_ids"]])


def test_causal_lm_is_the_text_model_with_the_checkpoint_weights(full, text_lm, toy_tokenizer):
    assert type(text_lm).__name__ == "Gemma3ForCausalLM"
    assert not [n for n, _ in text_lm.named_parameters() if "vision" in n or "multi_modal" in n]
    assert text_config(text_lm.config).hidden_size == 64
    ids = _ids(toy_tokenizer, TEXTS[1])
    with torch.no_grad():
        want = full(ids).logits
        got = text_lm(ids).logits
    torch.testing.assert_close(got, want, rtol=0, atol=1e-5)
    # Not a coincidence of two random inits: a fresh model from the same config differs.
    fresh = type(text_lm)(text_lm.config).eval()
    with torch.no_grad():
        assert not torch.allclose(fresh(ids).logits, want, atol=1e-3)
    assert isinstance(text_lm.get_input_embeddings(), nn.Embedding)
    assert embedding_output_scale(text_lm) == 1.0  # transformers 5 scales inside the module


def test_text_model_generates_as_the_full_model(full, text_lm, toy_tokenizer):
    ids = _ids(toy_tokenizer, TEXTS[0])
    kwargs = {"max_new_tokens": 6, "do_sample": False, "pad_token_id": toy_tokenizer.pad_token_id}
    with torch.no_grad():
        assert text_lm.generate(ids, **kwargs).tolist() == full.generate(ids, **kwargs).tolist()


@pytest.mark.parametrize("layer", [0, 1, 2])
def test_extraction_reads_text_block_l(full, text_lm, toy_tokenizer, layer):
    """hidden_states[l + 1] of the multimodal model (index 0 is the embeddings) at each text's
    last token, read through our loader and extraction path. (The last entry of hidden_states
    has the final norm applied; the last block is checked below.)"""
    acts, n_tokens = extract_final_token_activations(
        text_lm, toy_tokenizer, TEXTS, layer, batch_size=2, progress=False
    )
    assert acts.shape == (len(TEXTS), 64)
    for i, text in enumerate(TEXTS):
        ids = _ids(toy_tokenizer, text)
        assert n_tokens[i] == ids.shape[1]
        with torch.no_grad():
            hidden = full(ids, output_hidden_states=True).hidden_states
        assert len(hidden) == 5
        torch.testing.assert_close(acts[i], hidden[layer + 1][0, -1], rtol=1e-4, atol=1e-5)
        assert not torch.allclose(acts[i], hidden[layer][0, -1], atol=1e-3)


def test_last_block_is_read_before_the_final_norm(full, text_lm, toy_tokenizer):
    acts, _ = extract_final_token_activations(text_lm, toy_tokenizer, TEXTS[:1], 3, progress=False)
    with torch.no_grad():
        hidden = full(_ids(toy_tokenizer, TEXTS[0]), output_hidden_states=True).hidden_states
        normed = full.model.language_model.norm(acts[0])
    torch.testing.assert_close(normed, hidden[4][0, -1], rtol=1e-4, atol=1e-5)


def test_blocks_of_the_full_model_are_the_text_blocks(full, toy_tokenizer):
    # The vision tower's encoder also has a `layers` list, and it comes first.
    blocks = decoder_layers(full)
    assert blocks is full.model.language_model.layers
    ids = _ids(toy_tokenizer, TEXTS[0])
    with torch.no_grad():
        hidden = full(ids, output_hidden_states=True).hidden_states
    torch.testing.assert_close(capture_activations(full, ids, None, 1), hidden[2])


@pytest.mark.parametrize("layer", [0, 2])
def test_backbone_is_the_truncated_text_model(full, tiny_gemma3_dir, toy_tokenizer, layer):
    backbone = load_backbone(str(tiny_gemma3_dir), layer + 1).eval()
    assert type(backbone).__name__ == "Gemma3TextModel"
    assert len(backbone.layers) == layer + 1 == backbone.config.num_hidden_layers
    assert len(backbone.config.layer_types) == layer + 1
    assert backbone.config.hidden_size == 64
    assert not [n for n, _ in backbone.named_parameters() if "vision" in n]
    backbone.norm = nn.Identity()  # as the AR does
    ids = _ids(toy_tokenizer, TEXTS[1])
    with torch.no_grad():
        got = backbone(input_ids=ids).last_hidden_state
        want = full(ids, output_hidden_states=True).hidden_states[layer + 1]
    torch.testing.assert_close(got, want, rtol=1e-4, atol=1e-5)


def test_backbone_of_too_many_blocks(tiny_gemma3_dir):
    with pytest.raises(NLAConfigError, match="asked for 5 blocks .* which has 4"):
        load_backbone(str(tiny_gemma3_dir), 5)


def test_gemma3_text_checkpoint_still_loads(tiny_gemma3_text_dir, toy_tokenizer):
    from transformers import Gemma3ForCausalLM

    reference = Gemma3ForCausalLM.from_pretrained(tiny_gemma3_text_dir).eval()
    model = load_causal_lm(str(tiny_gemma3_text_dir)).eval()
    assert model.config.model_type == "gemma3_text"
    ids = _ids(toy_tokenizer, TEXTS[0])
    with torch.no_grad():
        hidden = reference(ids, output_hidden_states=True).hidden_states
        torch.testing.assert_close(model(ids).logits, reference(ids).logits)
    torch.testing.assert_close(capture_activations(model, ids, None, 2), hidden[3])
    backbone = load_backbone(str(tiny_gemma3_text_dir), 2).eval()
    backbone.norm = nn.Identity()
    with torch.no_grad():
        torch.testing.assert_close(backbone(input_ids=ids).last_hidden_state, hidden[2])


def test_missing_text_weights_are_refused(tiny_gemma3_dir, tmp_path):
    """transformers would initialise a missing weight at random and only warn."""
    import shutil

    broken = tmp_path / "broken"
    shutil.copytree(tiny_gemma3_dir, broken)
    weights = load_file(broken / "model.safetensors")
    gone = [k for k in weights if ".layers.1.mlp.up_proj" in k and "language_model" in k]
    assert gone
    save_file({k: v for k, v in weights.items() if k not in gone}, broken / "model.safetensors")
    with pytest.raises(NLAConfigError, match=r"1 weights of the text model are not in the"):
        load_causal_lm(str(broken))
    with pytest.raises(NLAConfigError, match=r"weights of the first 2 blocks are not in the"):
        load_backbone(str(broken), 2)
    load_backbone(str(broken), 1)  # block 1 is not needed for one block


def test_backbone_without_final_norm_loads(tiny_gemma3_dir, tmp_path):
    """A released AR directory has no final-norm weight (the AR replaces the norm)."""
    import shutil

    ar = tmp_path / "ar"
    shutil.copytree(tiny_gemma3_dir, ar)
    weights = load_file(ar / "model.safetensors")
    save_file(
        {k: v for k, v in weights.items() if k != "language_model.model.norm.weight"},
        ar / "model.safetensors",
    )
    assert len(load_backbone(str(ar), 4).layers) == 4

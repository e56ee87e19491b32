import json

import pytest
import torch

from nla_lightning.core.activations import capture_activations
from nla_lightning.core.reconstructor import VALUE_HEAD_FILENAME, ActivationReconstructor
from nla_lightning.errors import NLAConfigError


@pytest.fixture
def ar(target_dir, toy_tokenizer, meta):
    return ActivationReconstructor.from_target(str(target_dir), toy_tokenizer, meta)


def test_fresh_ar_reads_the_targets_layer_activation(ar, target, meta):
    # Identity head + truncated backbone + no final norm: before training, the AR's output is
    # exactly the target's block-`layer` activation at the last token of the AR input.
    assert torch.equal(ar.head.weight, torch.eye(meta.d_model))
    assert len(ar.backbone.layers) == meta.layer + 1
    assert isinstance(ar.backbone.norm, torch.nn.Identity)
    rows = ar.encode(["the colour is red .", "the person is anna . the place is the park ."])
    for row in rows:
        ids = torch.tensor([row])
        expected = capture_activations(target, ids, None, meta.layer)[0, -1]
        torch.testing.assert_close(ar.predict_ids(ids), expected.unsqueeze(0), atol=1e-5, rtol=1e-5)


def test_batched_prediction_matches_one_at_a_time(ar):
    texts = ["the colour is red .", "the person is anna . the place is the park ."]
    batched = ar.predict(texts)
    for i, text in enumerate(texts):
        torch.testing.assert_close(batched[i], ar.predict([text])[0], atol=1e-5, rtol=1e-5)


def test_inputs_end_with_the_recorded_suffix(ar, meta):
    for row in ar.encode(["the colour is red .", "x"]):
        assert tuple(row[-len(meta.critic_suffix_ids) :]) == meta.critic_suffix_ids


def test_save_load_round_trip_in_official_layout(ar, tmp_path, meta):
    with torch.no_grad():
        ar.head.weight.add_(0.01 * torch.randn_like(ar.head.weight))
    ar.save(tmp_path / "ar")
    config = json.loads((tmp_path / "ar" / "config.json").read_text())
    assert config["num_hidden_layers"] == meta.layer + 1
    assert (tmp_path / "ar" / VALUE_HEAD_FILENAME).exists()
    from safetensors.torch import load_file

    head = load_file(str(tmp_path / "ar" / VALUE_HEAD_FILENAME))
    assert list(head) == ["weight"] and head["weight"].shape == (meta.d_model, meta.d_model)
    again = ActivationReconstructor.load(tmp_path / "ar")
    texts = ["the object is a ball .", "the text ends with the word red ."]
    torch.testing.assert_close(ar.predict(texts), again.predict(texts))


def test_explanation_over_the_context_is_refused(target_dir, toy_tokenizer, meta):
    ar = ActivationReconstructor.from_target(
        str(target_dir), toy_tokenizer, meta, max_input_tokens=20
    )
    with pytest.raises(NLAConfigError, match="over the AR's limit of 20"):
        ar.encode(["the colour is red . " * 10])


def test_corrupt_or_missing_head_is_a_clear_error(ar, tmp_path):
    ar.save(tmp_path / "ar")
    (tmp_path / "ar" / VALUE_HEAD_FILENAME).write_bytes(b"not safetensors")
    with pytest.raises(NLAConfigError, match="could not read"):
        ActivationReconstructor.load(tmp_path / "ar")
    (tmp_path / "ar" / VALUE_HEAD_FILENAME).unlink()
    with pytest.raises(NLAConfigError, match="not an AR checkpoint"):
        ActivationReconstructor.load(tmp_path / "ar")


def test_checkpoint_of_another_width_is_refused(ar, tmp_path, meta):
    ar.save(tmp_path / "ar")
    wrong = meta.with_updates(d_model=32)
    wrong.save(tmp_path / "ar", kind="nla_model", role="ar")
    with pytest.raises(NLAConfigError, match="d_model mismatch"):
        ActivationReconstructor.load(tmp_path / "ar")


# NF4's relative error ||AR4(x) - AR(x)|| / ||AR(x)|| on these texts: 0.13-0.15 measured; a
# randomly initialised AR of the same config is 1.5 away. About 2x the measured error.
NF4_RELATIVE_TOLERANCE = 0.3


def test_four_bit_ar_matches_the_full_precision_ar_within_nf4_error(ar, target_dir, tmp_path):
    from transformers import AutoModelForCausalLM

    from nla_lightning.core.models import load_config

    ar.save(tmp_path / "ar")
    ar4 = ActivationReconstructor.load(tmp_path / "ar", quantize_4bit=True)
    assert any("4bit" in type(m).__name__ for m in ar4.modules())
    texts = ["the colour is red .", "the place is the park ."]
    full, four = ar.predict(texts), ar4.predict(texts).float()

    def relative_error(predicted: torch.Tensor) -> torch.Tensor:
        return (predicted - full).norm(dim=-1) / full.norm(dim=-1)

    assert (relative_error(four) < NF4_RELATIVE_TOLERANCE).all()
    # The texts' predictions differ (both end in the same suffix): NF4 keeps that difference
    # (cosine 0.986 measured), so the quantised AR still reads the text.
    cos = torch.nn.functional.cosine_similarity(full[0] - full[1], four[0] - four[1], dim=0)
    assert cos > 0.9
    # The tolerance tells models apart: a random target of the same config, read as an AR.
    torch.manual_seed(1)
    AutoModelForCausalLM.from_config(load_config(str(target_dir))).save_pretrained(tmp_path / "r")
    other = ActivationReconstructor.from_target(str(tmp_path / "r"), ar.tokenizer, ar.meta)
    assert (relative_error(other.predict(texts)) > 2 * NF4_RELATIVE_TOLERANCE).all()

"""Steering hook arithmetic and generation."""

from __future__ import annotations

import torch

from nla_lightning.core.activations import capture_activations
from nla_lightning.inference import steer_generate, steering, steering_vector


def test_hook_adds_exactly_alpha_norm_unit(nla, text):
    ids = nla.encode(text)
    vector = steering_vector(nla, "the colour is red .", "the colour is blue .")
    clean = capture_activations(nla.target, ids, None, nla.layer)[0]
    with steering(nla, vector, alpha=2.0, positions=[3]):
        steered = capture_activations(nla.target, ids, None, nla.layer)[0]
    expected = clean.clone()
    expected[3] += 2.0 * clean[3].norm() * vector / vector.norm()
    torch.testing.assert_close(steered, expected)
    assert not torch.equal(steered[3], clean[3])


def test_alpha_zero_is_plain_generation(nla, text):
    vector = torch.randn(nla.meta.d_model)
    ids = nla.encode(text)
    plain = nla.target.generate(
        input_ids=ids, attention_mask=torch.ones_like(ids), do_sample=False, max_new_tokens=5
    )
    expected = nla.tokenizer.batch_decode(plain[:, ids.shape[1] :], skip_special_tokens=True)
    assert steer_generate(nla, text, vector, 0.0, max_new_tokens=5) == expected


def test_steering_changes_logits_and_spares_decode_steps(nla, text):
    ids = nla.encode(text)
    vector = torch.randn(nla.meta.d_model)
    clean = nla.target(input_ids=ids).logits
    with steering(nla, vector, alpha=4.0):
        steered = nla.target(input_ids=ids).logits
        # A one-token forward at a later position is a decode step: left alone.
        step = nla.target(input_ids=ids[:, :1], position_ids=torch.tensor([[9]])).logits
    assert not torch.allclose(clean, steered)
    torch.testing.assert_close(
        step, nla.target(ids[:, :1], position_ids=torch.tensor([[9]])).logits
    )
    samples = steer_generate(nla, text, vector, 8.0, max_new_tokens=4, samples=2, temperature=1.0)
    assert len(samples) == 2

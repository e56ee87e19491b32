"""Steering hook arithmetic and generation."""

from __future__ import annotations

import pytest
import torch

from nla_lightning.core.activations import capture_activations
from nla_lightning.core.hooks import edit_block_output
from nla_lightning.core.padding import pad_right
from nla_lightning.core.verbalizer import encode_responses
from nla_lightning.evaluation.downstream_kl import splicer
from nla_lightning.inference import steer_generate, steering, steering_vector
from tests.conftest import COLOURS, colour_centres

RED, BLUE = "the colour is red .", "the colour is blue ."


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


@pytest.fixture(scope="module")
def trained_nla(warm_nla, target_dir):
    """The warm start on the colour mapping: its AR reads "the colour is red ." as the red
    activation, its AV names the colour of an injected activation."""
    from nla_lightning.inference import NLA

    return NLA.load(*warm_nla[:2], target=str(target_dir))


def test_steering_vector_points_from_the_original_reading_to_the_edited_one(trained_nla):
    vector = steering_vector(trained_nla, RED, BLUE)
    # As documented: AR(edited) - AR(original).
    red, blue = trained_nla.ar.predict([RED, BLUE]).float()
    torch.testing.assert_close(vector, blue - red, atol=1e-5, rtol=1e-5)
    # ... which is the mapping's own red -> blue direction (cosine 0.990 measured).
    centres = colour_centres(trained_nla.meta.d_model)
    cos = torch.nn.functional.cosine_similarity(vector, centres[1] - centres[0], dim=0)
    assert cos > 0.9


def av_reading(nla, start: torch.Tensor, vector: torch.Tensor, alpha: float) -> torch.Tensor:
    """Block `layer`'s output at the last prompt position set to `start` [d], then steered by
    alpha along `vector` (the hooks in that order, as a steered forward stacks them); the AV's
    log-prob of "the colour is C ." given the resulting activation, for each colour C."""
    ids = nla.encode(RED)
    last = ids.shape[1] - 1
    with edit_block_output(nla.target, nla.layer, splicer(torch.tensor([last]), start[None])):
        with steering(nla, vector, alpha, positions=[last]):
            steered = capture_activations(nla.target, ids, None, nla.layer)[0, last]
    texts = [f"the colour is {c} ." for c in COLOURS]
    responses, mask = pad_right(encode_responses(nla.tokenizer, texts), nla.av.pad_id)
    acts = steered[None].expand(len(COLOURS), -1)
    with torch.no_grad():
        return nla.av.response_logprobs(acts, responses, mask).sum(dim=-1)


def test_steering_moves_the_av_reading_along_the_vector(trained_nla):
    """+alpha of the red -> blue vector takes the red activation to one the AV reads as blue;
    -alpha takes the blue one to red. Measured log p(blue) - log p(red): from red at alpha 0,
    0.5, 1, 1.5: -4.68, -4.44, -2.22, +3.28; from blue at 0, -0.5, -1, -1.5: +4.44, +0.24,
    -4.37, -4.68 (alpha is in units of ||h||; the centres are 38 apart at norm 25)."""
    vector = steering_vector(trained_nla, RED, BLUE)
    centres = colour_centres(trained_nla.meta.d_model)
    red, blue = COLOURS.index("red"), COLOURS.index("blue")

    def margins(start: torch.Tensor, alphas: list[float]) -> tuple[list[float], list[int]]:
        """log p(blue) - log p(red), and the AV's most likely colour, at each alpha."""
        readings = [av_reading(trained_nla, start, vector, a) for a in alphas]
        return [float(r[blue] - r[red]) for r in readings], [int(r.argmax()) for r in readings]

    towards_blue, best = margins(centres[red], [0.0, 0.5, 1.0, 1.5])
    assert towards_blue == sorted(towards_blue) and len(set(towards_blue)) == 4, towards_blue
    assert best[0] == red and best[-1] == blue, best
    towards_red, best = margins(centres[blue], [0.0, -0.5, -1.0, -1.5])
    assert towards_red == sorted(towards_red, reverse=True) and len(set(towards_red)) == 4
    assert best[0] == blue and best[-1] == red, best

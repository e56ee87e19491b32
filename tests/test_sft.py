"""Real Lightning fits of the warm-start modules on a synthetic mapping they can learn."""

import lightning as L
import pytest
import torch

from nla_lightning.data.datasets import ActivationTokens
from nla_lightning.modules.sft import ARSFTModule, AVSFTModule
from nla_lightning.reconstructor import ActivationReconstructor
from nla_lightning.training import loader, make_trainer
from nla_lightning.verbalizer import ActivationVerbalizer, encode_responses

COLOURS = ["red", "blue", "green", "yellow", "purple", "pink", "brown", "black"]
TRAINER = {"accelerator": "cpu", "devices": 1, "enable_progress_bar": False}


@pytest.fixture(scope="module")
def mapping(meta):
    """Each colour has its own activation (plus a little noise); explanations name the colour."""
    torch.manual_seed(0)
    centres = torch.randn(len(COLOURS), meta.d_model) * 3
    index = torch.arange(256) % len(COLOURS)
    activations = centres[index] + 0.1 * torch.randn(256, meta.d_model)
    explanations = [f"the colour is {COLOURS[i]} ." for i in index]
    return activations, explanations


def test_ar_sft_learns_to_reconstruct(target_dir, toy_tokenizer, meta, mapping, tmp_path):
    activations, explanations = mapping
    L.seed_everything(0, verbose=False)
    ar = ActivationReconstructor.from_target(str(target_dir), toy_tokenizer, meta)
    data = ActivationTokens(activations, ar.encode(explanations))
    module = ARSFTModule(ar, lr=3e-3, warmup_steps=5, max_steps=60)
    held_out = loader(data, 64, toy_tokenizer.pad_token_id, shuffle=False)
    trainer = make_trainer(TRAINER, 60, tmp_path)
    before = trainer.validate(module, held_out, verbose=False)[0]
    trainer.fit(module, loader(data, 32, toy_tokenizer.pad_token_id, shuffle=True))
    after = trainer.validate(module, held_out, verbose=False)[0]
    assert after["val/fve"] > 0.8 > before["val/fve"]
    assert after["val/fve_shuffled"] < 0.1


def test_av_sft_learns_to_read_the_injected_activation(
    target_dir, toy_tokenizer, meta, mapping, tmp_path
):
    from nla_lightning.models import load_causal_lm

    activations, explanations = mapping
    L.seed_everything(0, verbose=False)
    av = ActivationVerbalizer(load_causal_lm(str(target_dir)), toy_tokenizer, meta)
    data = ActivationTokens(activations, encode_responses(toy_tokenizer, explanations))
    module = AVSFTModule(av, lr=3e-3, warmup_steps=5, max_steps=200)
    trainer = make_trainer(TRAINER, 200, tmp_path)
    trainer.fit(module, loader(data, 32, av.pad_id, shuffle=True))
    metrics = trainer.validate(module, loader(data, 64, av.pad_id, shuffle=False), verbose=False)
    # The colour word is only predictable from the injected vector.
    assert metrics[0]["val/loss"] < metrics[0]["val/loss_shuffled"] - 0.2
    torch.manual_seed(0)
    said = av.eval().explain(activations[:8], max_new_tokens=12)
    right = sum(e is not None and COLOURS[i] in e for i, e in enumerate(said))
    assert right >= 6, said

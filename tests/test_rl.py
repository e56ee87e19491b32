"""Real RL steps of the tiny NLA: reference modes, isolation of the two updates, resume."""

import lightning as L
import pytest
import torch

from nla_lightning.modules.rl import NLARLModule, ReferencePolicy, RLHyperparams
from nla_lightning.reconstructor import ActivationReconstructor
from nla_lightning.verbalizer import ActivationVerbalizer

TRAINER = {
    "accelerator": "cpu",
    "devices": 1,
    "max_epochs": -1,
    "enable_progress_bar": False,
    "logger": False,
    "enable_checkpointing": False,
    "enable_model_summary": False,
}


def make_module(warm_nla, colour_mapping, reference="none", **overrides):
    av_dir, ar_dir, _ = warm_nla
    torch.manual_seed(0)
    av = ActivationVerbalizer.load(av_dir)
    ar = ActivationReconstructor.load(ar_dir)
    hp = RLHyperparams(
        steps=4,
        batch_size=2,
        group_size=3,
        max_new_tokens=6,
        av_lr=1e-3,
        ar_lr=1e-3,
        warmup_steps=1,
        beta=0.0 if reference == "none" else 0.05,
        **overrides,
    )
    frozen = None
    if reference == "quantized_4bit":
        frozen = ActivationVerbalizer.load(av_dir, quantize_4bit=True)
    activations = colour_mapping[0][:32]
    return NLARLModule(av, ar, activations, hp, ReferencePolicy(reference, frozen))


@pytest.mark.parametrize("reference", ["none", "quantized_4bit"])
def test_rl_steps_update_both_models(warm_nla, colour_mapping, reference):
    module = make_module(warm_nla, colour_mapping, reference)
    av_before = [p.detach().clone() for p in module.av.parameters()]
    ar_before = [p.detach().clone() for p in module.ar.parameters()]
    L.Trainer(**TRAINER).fit(module)
    assert module.steps_done == 4
    assert any(
        not torch.equal(a, p) for a, p in zip(av_before, module.av.parameters(), strict=True)
    )
    assert any(
        not torch.equal(a, p) for a, p in zip(ar_before, module.ar.parameters(), strict=True)
    )
    assert module.examples


def test_resume_is_bit_exact(warm_nla, colour_mapping, tmp_path):
    from nla_lightning.checkpointing import AtomicCheckpointIO, RLCheckpoint

    straight = make_module(warm_nla, colour_mapping)
    saver = RLCheckpoint(tmp_path / "ckpt", every=2, export_dir=tmp_path / "exports")
    L.Trainer(callbacks=[saver], plugins=[AtomicCheckpointIO()], **TRAINER).fit(straight)
    assert straight.steps_done == 4
    assert (tmp_path / "ckpt" / "step-2.ckpt").exists()
    assert not list((tmp_path / "ckpt").glob("*.tmp"))
    assert (tmp_path / "exports" / "step-2" / "ar" / "value_head.safetensors").exists()

    resumed = make_module(warm_nla, colour_mapping)
    L.Trainer(**TRAINER).fit(resumed, ckpt_path=tmp_path / "ckpt" / "step-2.ckpt")
    assert resumed.steps_done == 4
    for a, b in zip(straight.state_dict().values(), resumed.state_dict().values(), strict=True):
        assert torch.equal(a, b)
    assert not all(
        torch.equal(a, b)
        for a, b in zip(
            straight.state_dict().values(),
            make_module(warm_nla, colour_mapping).state_dict().values(),
            strict=True,
        )
    )

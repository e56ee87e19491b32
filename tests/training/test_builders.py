"""The builders' trainable models: QLoRA AV and AR keep training after an eval-mode forward."""

from __future__ import annotations

import math

import pytest
import torch

from nla_lightning.core.lora import CPU_INFERENCE_REPACK
from nla_lightning.core.padding import pad_right
from nla_lightning.core.verbalizer import encode_responses
from nla_lightning.training.builders import rl_ar, rl_av, warm_start_ar, warm_start_av

QLORA = {
    "dtype": "float32",
    "av_mode": "qlora",
    "ar_mode": "qlora",
    "reference": "adapter",
    "lora_rank": 4,
    "gradient_checkpointing": False,
}
EXPLANATIONS = ["the colour is red .", "the place is the park ."]


def eval_then_train(model: torch.nn.Module, loss_of) -> None:
    """An eval-mode no-grad forward (a rollout, an evaluation), then one training step: a
    finite loss, a gradient on every LoRA B matrix (A's is 0 while B is), each B moved."""
    model.eval()
    with torch.no_grad():
        loss_of()
    model.train()
    lora_b = {n: p for n, p in model.named_parameters() if p.requires_grad and "lora_B" in n}
    assert lora_b
    before = {n: p.detach().clone() for n, p in lora_b.items()}
    optimizer = torch.optim.AdamW([p for p in model.parameters() if p.requires_grad], lr=1e-2)
    loss = loss_of()
    assert math.isfinite(float(loss.detach()))
    loss.backward()
    for name, p in lora_b.items():
        assert p.grad is not None and bool(p.grad.abs().sum() > 0), name
    optimizer.step()
    for name, p in lora_b.items():
        assert not torch.equal(p.detach(), before[name]), name


@pytest.mark.parametrize("stage", ["warm_start", "rl"])
def test_qlora_trains_after_an_eval_forward(stage, target_dir, toy_tokenizer, meta, tmp_path):
    """On a CPU with AVX512-BF16, bitsandbytes 0.50 repacks a 4-bit layer's weight for an
    inference-only kernel on its first eval-mode, no-grad forward, and the next training
    forward then raised "a view of a leaf Variable that requires grad is being used in an
    in-place operation" (the fix: core/lora.py keep_4bit_trainable). On a CPU without
    AVX512-BF16 bitsandbytes never repacks, so the step passes with or without the fix: the
    same sequence still runs, and the check that the trained layers have the repack turned
    off is what fails there without the fix."""
    av = warm_start_av(str(target_dir), toy_tokenizer, meta, QLORA)
    ar = warm_start_ar(str(target_dir), toy_tokenizer, meta, QLORA)
    if stage == "rl":  # the RL stage's loaders of the saved warm start (trainable adapters)
        av, _ = rl_av(av.save(tmp_path / "av"), QLORA, "cpu")
        ar = rl_ar(ar.save(tmp_path / "ar"), QLORA, "cpu")
    modules = [*av.model.modules(), *ar.backbone.modules()]
    layers = [m for m in modules if hasattr(m, CPU_INFERENCE_REPACK)]
    assert layers, "no bitsandbytes 4-bit layer"
    assert not any(getattr(m, CPU_INFERENCE_REPACK) for m in layers)
    ids, mask = pad_right(encode_responses(toy_tokenizer, EXPLANATIONS), av.pad_id)
    generator = torch.Generator().manual_seed(0)
    activations = torch.randn(len(EXPLANATIONS), meta.d_model, generator=generator)
    eval_then_train(av.model, lambda: av.sft_loss(activations, ids, mask))
    eval_then_train(ar, lambda: ar.predict(EXPLANATIONS).square().mean())
    # No trained layer was repacked into the inference-only layout.
    assert not any(getattr(m.weight.quant_state, "packing_format_for_cpu", False) for m in layers)

"""The KL reference of each mode (training/reference.py, built by training/builders.py) is the
warm-start AV: at step 0 its per-token log-probs of sampled responses are the policy's (exactly
for a full-precision copy and for LoRA adapters off; within the NF4 quantisation error for the
4-bit copy), so the KL is 0 at step 0, and it stays the warm start while the AV trains, so the
KL is positive after a few updates. A reference built from another model (a randomly
initialised AV of the same shape) is far outside the tolerance."""

from __future__ import annotations

import lightning as L
import pytest
import torch

from nla_lightning.core.models import load_causal_lm
from nla_lightning.core.reconstructor import ActivationReconstructor
from nla_lightning.core.verbalizer import ActivationVerbalizer
from nla_lightning.settings import RLSettings
from nla_lightning.training.builders import rl_av
from nla_lightning.training.reference import ReferencePolicy
from nla_lightning.training.rl import NLARLModule
from tests.training.rl_by_hand import TRAINER

G = 4
TRAIN = {"dtype": "float32", "ar_mode": "full", "lora_rank": 4, "gradient_checkpointing": False}
MODES = {
    "frozen": {"av_mode": "full", "reference": "frozen"},
    "quantized_4bit": {"av_mode": "full", "reference": "quantized_4bit"},
    # A full warm start trained with LoRA: the reference is the AV with its adapters off.
    "adapter": {"av_mode": "lora", "reference": "adapter"},
    # A LoRA warm start: the reference is a frozen copy of the warm-start adapter.
    "adapter-lora-warm-start": {"av_mode": "lora", "reference": "adapter"},
}
# The NF4 copy's error per real token, measured on the tiny AV: mean |log p_NF4 - log p| 0.0059
# and largest 0.275 (one token) on this test's responses; k3 token mean 5.5e-4 on them and
# 0.0063 on the first RL step's. A randomly initialised AV of the same shape is off by ~4.8 per
# token (k3 ~6): ~500x these tolerances.
NF4_MEAN_ERROR, NF4_MAX_ERROR, NF4_KL = 0.01, 0.3, 0.01


@pytest.fixture(scope="module")
def lora_warm_start(warm_nla, tmp_path_factory):
    """A LoRA warm start of the AV (an adapter directory on the warm AV) whose adapter is not
    the identity, so the 'reference' adapter copy is a real model of its own."""
    av, _ = rl_av(warm_nla[0], {**TRAIN, **MODES["adapter"]}, "cpu")
    generator = torch.Generator().manual_seed(2)
    with torch.no_grad():
        for name, p in av.named_parameters():
            if "lora_B" in name:
                p.copy_(0.02 * torch.randn(p.shape, generator=generator))
    return av.save(tmp_path_factory.mktemp("lora_av"))


class KLLog(L.Callback):
    """The KL the module logged at each step."""

    def __init__(self) -> None:
        self.kl: list[float] = []

    def on_train_batch_end(self, trainer, module, outputs, batch, batch_idx) -> None:
        self.kl.append(float(trainer.callback_metrics["rl/kl"]))


def k3_token_mean(policy: torch.Tensor, reference: torch.Tensor, mask: torch.Tensor) -> float:
    """The k3 estimate exp(ref - logp) - (ref - logp) - 1, averaged over the real tokens."""
    diff = (reference - policy).double()
    per_token = diff.exp() - diff - 1
    return float(per_token[mask.bool()].mean())


def random_reference(av: ActivationVerbalizer, target_dir, mode: str) -> ReferencePolicy:
    """The same mode's reference built from a DIFFERENT model: the randomly initialised target,
    same shape and tokenizer as the AV."""
    model = load_causal_lm(str(target_dir), quantize_4bit=mode == "quantized_4bit")
    return ReferencePolicy(mode, ActivationVerbalizer(model, av.tokenizer, av.meta))


@pytest.mark.parametrize("mode", MODES)
def test_the_reference_is_the_warm_start_and_the_kl_starts_at_zero(
    mode, warm_nla, colour_mapping, target_dir, request
):
    av_dir, ar_dir, _ = warm_nla
    if mode == "adapter-lora-warm-start":
        av_dir = request.getfixturevalue("lora_warm_start")
    av, reference = rl_av(av_dir, {**TRAIN, **MODES[mode]}, "cpu")
    assert reference.mode == MODES[mode]["reference"]
    activations = colour_mapping[0][:32]
    batch = activations[:2]
    torch.manual_seed(0)
    rollout = av.sample(batch, group_size=G, max_new_tokens=16)
    ids, mask = rollout.response_ids, rollout.response_mask

    def policy_logprobs() -> torch.Tensor:
        with torch.no_grad():
            return av.response_logprobs(batch, ids, mask, group_size=G)

    # Step 0: the reference's log-probs are the policy's, and the KL is 0.
    policy = policy_logprobs()
    ref = reference.logprobs(av, batch, ids, mask, group_size=G)
    real = mask.bool()
    error = (policy - ref)[real].abs()
    kl_bound = NF4_KL if mode == "quantized_4bit" else 0.0
    if mode == "quantized_4bit":
        # A real quantisation, within its error.
        assert 0 < float(error.mean()) <= NF4_MEAN_ERROR, error.mean()
        assert float(error.max()) <= NF4_MAX_ERROR, error.max()
        assert 0 < k3_token_mean(policy, ref, mask) <= NF4_KL
    else:
        assert torch.equal(policy, ref), error.max()
        assert k3_token_mean(policy, ref, mask) == 0.0
    if mode in ("frozen", "quantized_4bit"):
        # Another model's reference is far outside the tolerance: the checks above can fail.
        other = random_reference(av, target_dir, mode).logprobs(av, batch, ids, mask, group_size=G)
        assert float((policy - other)[real].abs().mean()) > 100 * NF4_MEAN_ERROR
        assert k3_token_mean(policy, other, mask) > 100 * NF4_KL
        if mode == "quantized_4bit":
            assert {type(m).__name__ for m in reference.frozen.modules()} >= {"Linear4bit"}

    # Two real RL steps: the KL the module logs is 0 at step 0 and positive after an update.
    hp = RLSettings(
        steps=2, batch_size=2, group_size=G, max_new_tokens=16, av_lr=1e-3, ar_lr=1e-3,
        warmup_steps=0, beta=0.05, seed=3,
    )  # fmt: skip
    ar = ActivationReconstructor.load(ar_dir)
    module = NLARLModule(av, ar, activations, hp, reference)
    log = KLLog()
    L.Trainer(callbacks=[log], **TRAINER).fit(module)
    assert len(log.kl) == 2
    if mode == "quantized_4bit":
        assert 0 < log.kl[0] <= NF4_KL
    else:
        assert log.kl[0] == 0.0
    # Measured: 0.15 (frozen), 0.12 (NF4), 0.0015 (adapter), 0.009 (LoRA warm start).
    assert log.kl[1] > max(5 * kl_bound, 1e-4)

    # The reference is still the warm start (bit for bit); the policy moved away from it.
    assert torch.equal(reference.logprobs(av, batch, ids, mask, group_size=G), ref)
    moved = policy_logprobs()
    assert float((moved - policy).abs().max()) > 0.1
    assert k3_token_mean(moved, ref, mask) > max(10 * kl_bound, 1e-4)

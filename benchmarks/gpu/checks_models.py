"""The 0.5B model checks: bf16 AV and AR forward + backward, and the NF4 reference's
log-probs against the bf16 AV's."""

from __future__ import annotations

import math
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch

from gpu.memory import OVER_ESTIMATE, Memory, difference, four_bit_layers, ratio_text
from gpu.report import Row, require
from gpu.shapes import Shape, check_tokenizer, random_activations, random_target
from nla_lightning.core.activations import normalised_mse
from nla_lightning.core.meta import NLAMeta
from nla_lightning.core.models import load_config
from nla_lightning.core.padding import pad_right
from nla_lightning.core.verbalizer import ActivationVerbalizer, encode_responses
from nla_lightning.training.builders import warm_start_ar, warm_start_av
from nla_lightning.training.memory import estimate_memory
from nla_lightning.training.reference import ReferencePolicy

# Pass/fail rules of check_nf4.
NF4_MAX_MEAN_ABS_DIFF = 0.5  # nats per token
NF4_MIN_CORRELATION = 0.5

EXPLANATIONS = [
    "the colour is red .",
    "the place is the park . the object is a ball .",
    "the action is painted .",
    "the person is anna . the place is the beach . the colour is blue .",
]


@dataclass
class SmallNLA:
    """A model=qwen_small warm start on a random 0.5B: target, AV and AR directories."""

    shape: Shape
    tokenizer: Any
    meta: NLAMeta
    target_dir: Path
    av_dir: Path
    ar_dir: Path
    preset: dict[str, Any]

    @property
    def train(self) -> dict[str, Any]:
        return self.preset["model"]["train"]


def build_small(shape: Shape, preset: dict[str, Any], directory: Path, device: str) -> SmallNLA:
    """The AV saved as AV SFT saves a full fine-tune; the AR from warm_start_ar."""
    tokenizer = check_tokenizer()
    target_dir, meta, model = random_target(shape, tokenizer, directory, device, None)
    av_dir = ActivationVerbalizer(model, tokenizer, meta).save(directory / "av")
    del model
    train = preset["model"]["train"]
    ar_dir = warm_start_ar(str(target_dir), tokenizer, meta, train).save(directory / "ar")
    return SmallNLA(shape, tokenizer, meta, target_dir, av_dir, ar_dir, preset)


def require_gradients(loss: torch.Tensor, module: torch.nn.Module) -> dict[str, Any]:
    """A finite loss, a finite gradient on every trainable tensor, a non-zero total norm."""
    trainable = [p for p in module.parameters() if p.requires_grad]
    grads = [p.grad.float() for p in trainable if p.grad is not None]
    missing = len(trainable) - len(grads)
    bad = sum(not bool(torch.isfinite(g).all()) for g in grads)
    norm = float(torch.linalg.vector_norm(torch.stack([g.norm() for g in grads]))) if grads else 0
    value = float(loss.detach())
    values = {"loss": value, "grad_norm": norm, "missing_grads": missing, "bad_grads": bad}
    require(math.isfinite(value), f"loss {value}", values)
    require(
        missing == 0, f"{missing} of {len(trainable)} trainable tensors got no gradient", values
    )
    require(bad == 0, f"{bad} gradients hold NaN/inf", values)
    require(math.isfinite(norm) and norm > 0, f"gradient norm {norm}", values)
    return values


def backward_row(
    name: str,
    what: str,
    loss: torch.Tensor,
    module: torch.nn.Module,
    small: SmallNLA,
    memory: Memory,
) -> Row:
    """The backward pass of `loss` and its checked gradients as the check's row (measured =
    the peak since the forward began)."""
    loss.backward()
    values = require_gradients(loss, module)
    detail = f"{what} {values['loss']:.3f}, grad norm {values['grad_norm']:.3g}; measured = peak"
    return Row(name, small.shape.label, 0.0, memory.peak(), None, "ok", detail, values)


def check_bf16_av(small: SmallNLA, device: str, memory: Memory) -> Row:
    av = warm_start_av(str(small.target_dir), small.tokenizer, small.meta, small.train).to(device)
    require(next(av.parameters()).dtype == torch.bfloat16, "the AV did not load in bf16")
    ids, mask = pad_right(encode_responses(small.tokenizer, EXPLANATIONS), av.pad_id)
    activations = random_activations(small.meta, len(EXPLANATIONS))
    memory.reset_peak()
    loss = av.sft_loss(activations.to(device), ids.to(device), mask.to(device))
    return backward_row("bf16 AV forward+backward", "SFT loss", loss, av, small, memory)


def check_bf16_ar(small: SmallNLA, device: str, memory: Memory) -> Row:
    ar = warm_start_ar(str(small.target_dir), small.tokenizer, small.meta, small.train).to(device)
    require(ar.head.weight.dtype == torch.bfloat16, "the AR did not load in bf16")
    ids, mask = pad_right(ar.encode(EXPLANATIONS), small.tokenizer.pad_token_id)
    activations = random_activations(small.meta, len(EXPLANATIONS)).to(device)
    memory.reset_peak()
    # ARSFTModule's loss: the normalised MSE of each row, averaged.
    predicted = ar(ids.to(device), mask.to(device))
    loss = normalised_mse(predicted, activations, ar.meta.mse_scale).mean()
    return backward_row("bf16 AR forward+backward", "MSE", loss, ar, small, memory)


def check_nf4(small: SmallNLA, device: str, memory: Memory) -> Row:
    """The NF4 copy's token log-probs (through ReferencePolicy, as RL reads them) against the
    bf16 AV's on the same sampled responses. Bounds: a random model's log-probs spread by ~0.6
    nats around -log(vocab) (std-0.02 weights against unit-RMS hidden states), so an unrelated
    or broken copy differs by ~0.7 nats per token on average and is uncorrelated. NF4 keeps a
    Gaussian weight to ~10% of its std, and on random weights that error compounds through
    every block (the 0.5B shape: 0.24 nats, correlation 0.86; trained models stay closer):
    mean |difference| in (0, 0.5) and correlation > 0.5 pass; 0 means nothing was quantised.
    The NF4 weights are checked against the NF4 reference's estimate."""
    full = ActivationVerbalizer.load(small.av_dir, dtype="bfloat16", device=device)
    before = memory.allocated()
    nf4 = ActivationVerbalizer.load(
        small.av_dir, dtype="bfloat16", device=device, quantize_4bit=True
    )
    weights = difference(memory.allocated(), before)
    layers = four_bit_layers(nf4)
    require(layers > 0, "no bitsandbytes 4-bit layer in the NF4 AV")
    activations = random_activations(small.meta, 4).to(device)
    torch.manual_seed(0)
    rollout = full.sample(activations, max_new_tokens=32, min_new_tokens=32)
    ids, mask = rollout.response_ids.to(device), rollout.response_mask.to(device)
    with torch.no_grad():
        exact = full.response_logprobs(activations, ids, mask)
    # The RL stage's path: the frozen NF4 copy's log-probs through ReferencePolicy.
    approx = ReferencePolicy("quantized_4bit", nf4).logprobs(full, activations, ids, mask)
    keep = mask.bool()
    exact, approx = exact[keep].float(), approx[keep].float()
    require(bool(torch.isfinite(approx).all()), "non-finite NF4 log-probs")
    mean_diff = float((exact - approx).abs().mean())
    correlation = float(torch.corrcoef(torch.stack([exact, approx]))[0, 1])
    estimate = estimate_memory(
        load_config(str(small.av_dir)), small.shape.layer, reference="quantized_4bit"
    ).reference
    values = {
        "mean_abs_logprob_diff": mean_diff,
        "bound": NF4_MAX_MEAN_ABS_DIFF,
        "correlation": correlation,
        "tokens": int(keep.sum()),
        "nf4_layers": layers,
        "weights_gib": weights,
        "weights_estimate_gib": estimate,
    }
    require(
        0 < mean_diff < NF4_MAX_MEAN_ABS_DIFF, f"mean abs log-prob diff {mean_diff:.3g}", values
    )
    require(correlation > NF4_MIN_CORRELATION, f"log-prob correlation {correlation:.3f}", values)
    if weights is not None:
        over = weights > estimate * (1 + OVER_ESTIMATE)
        require(not over, f"NF4 weights {weights:.3f} GiB, estimate {estimate:.3f}", values)
    detail = (
        f"mean abs log-prob diff {mean_diff:.3g} < {NF4_MAX_MEAN_ABS_DIFF} over "
        f"{values['tokens']} tokens, corr {correlation:.3f}, {layers} 4-bit layers; "
        "measured = NF4 weights, "
        f"{ratio_text(weights, estimate)}"
    )
    return Row(
        "NF4 reference log-probs", small.shape.label, 0.0, weights, estimate, "ok", detail, values
    )

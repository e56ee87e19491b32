"""GPU check: the package's real code paths on randomly initialised Qwen2.5-shaped models, in
one table, with a non-zero exit on any failure. Needs no downloaded weights.

Usage: python benchmarks/gpu_check.py --device cuda [--only bf16,nf4,rl,qlora] [--rl-steps 3]
       [--scratch DIR] [--json PATH]
       python benchmarks/gpu_check.py --device cpu --quick      (tiny shapes; the test suite's)

The real check is `python benchmarks/gpu_check.py --device cuda`, sized for 8 minutes on one
H200 (the 7B check writes a ~15 GB random model under --scratch, by default the system's temp
folder). Every model is built from a literal Qwen2.5 config (0.5B or 7B shape) with random
weights, saved with save_pretrained and loaded back through the package's loaders
(load_causal_lm, warm_start_av / warm_start_ar, rl_av / rl_ar, ActivationVerbalizer.load with
bitsandbytes NF4). The tokenizer is the toy word-level one grown by the words of the release's
prompt templates (the Qwen presets' `templates: reference`): its ids are small, the models keep
Qwen's real vocabulary size. Checks:

  bf16   AV SFT loss (injection) and AR regression loss, forward + backward in bf16 on the 0.5B
         shape: finite losses, every trainable parameter with a finite gradient, norm > 0.
  nf4    the AV loaded in NF4 (bitsandbytes 4-bit) as the KL reference's log-probs against the
         bf16 AV's on the same sampled responses; its weights against the README's estimate.
  rl     `--rl-steps` RL steps of a 0.5B-shaped NLA (model=qwen_small's settings: full bf16, NF4
         reference) through NLARLModule and a Lightning Trainer, 4 x 4 samples of 32 tokens.
  qlora  experiment=qwen7b_24gb on the 7B shape (QLoRA AV and AR, adapter reference, the preset's
         RL batch, micro-batches and gradient checkpointing): GPU memory of each component
         (policy, reference and AR weights, then the optimizer + gradients + activations + KV
         cache of two RL steps) against the estimate the RL stage prints (training/memory.py).
         Fails when the measured peak is over the estimate by more than 25%, or under half of it.

A random AV never closes its <explanation> tag, so the RL checks write every response to full
length and turn its sampled ids into words: the AR is scored and trained on every sample, as
after a warm start. `--quick` runs the same code on tiny models of the same layouts (CPU: the
memory columns read n/a).
"""

from __future__ import annotations

import argparse
import gc
import itertools
import logging
import math
import sys
import tempfile
import time
import traceback
import warnings
from collections.abc import Callable
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import lightning as L
import torch
from _common import REPO, add_common_args, markdown_table, setup, write_json

from nla_lightning.core.activations import normalised_mse
from nla_lightning.core.injection_scale import from_embeddings
from nla_lightning.core.meta import NLAMeta, build_meta
from nla_lightning.core.models import load_config
from nla_lightning.core.padding import pad_right
from nla_lightning.core.templates import templates
from nla_lightning.core.verbalizer import ActivationVerbalizer, Rollout, encode_responses
from nla_lightning.settings import RLSettings
from nla_lightning.toy.tokenizer import build_toy_tokenizer
from nla_lightning.toy.world import vocabulary
from nla_lightning.training.builders import rl_ar, rl_av, warm_start_ar, warm_start_av
from nla_lightning.training.memory import GIB, estimate_memory, rl_estimate
from nla_lightning.training.reference import ReferencePolicy
from nla_lightning.training.rl import NLARLModule

CHECKS = ("bf16", "nf4", "rl", "qlora")

# Literal Hugging Face configs of Qwen/Qwen2.5-0.5B-Instruct and Qwen/Qwen2.5-7B-Instruct.
QWEN25_05B: dict[str, Any] = {
    "hidden_size": 896,
    "intermediate_size": 4864,
    "num_hidden_layers": 24,
    "num_attention_heads": 14,
    "num_key_value_heads": 2,
    "vocab_size": 151936,
    "tie_word_embeddings": True,
    "rope_theta": 1_000_000.0,
    "max_position_embeddings": 32768,
    "rms_norm_eps": 1e-6,
}
QWEN25_7B: dict[str, Any] = {
    "hidden_size": 3584,
    "intermediate_size": 18944,
    "num_hidden_layers": 28,
    "num_attention_heads": 28,
    "num_key_value_heads": 4,
    "vocab_size": 152064,
    "tie_word_embeddings": False,
    "rope_theta": 1_000_000.0,
    "max_position_embeddings": 32768,
    "rms_norm_eps": 1e-6,
}
# --quick: the same layouts (tied embeddings or not) at toy width. Widths are multiples of
# bitsandbytes' 64-weight NF4 block; the vocabulary just covers the tokenizer.
TINY: dict[str, Any] = {
    "hidden_size": 64,
    "intermediate_size": 128,
    "num_hidden_layers": 4,
    "num_attention_heads": 4,
    "num_key_value_heads": 2,
    "vocab_size": 256,
    "max_position_embeddings": 512,
}
TINY_LAYER = 2

# RL batches: the 0.5B check's small one, and --quick's for both RL checks (the 7B check
# otherwise keeps its preset's batch, micro-batches and rollout length).
SMALL_RL = {
    "batch_size": 4,
    "group_size": 4,
    "max_new_tokens": 32,
    "av_micro_batch": 8,
    "ar_micro_batch": 8,
}
QUICK_RL = {
    "batch_size": 2,
    "group_size": 2,
    "max_new_tokens": 8,
    "av_micro_batch": 2,
    "ar_micro_batch": 2,
}
MICRO_BATCHES = ("av_micro_batch", "ar_micro_batch")
# The 7B check's steps: AdamW makes its state at its first step, so only from the second step
# on are weights, optimizer state, gradients and activations all resident at once.
QLORA_STEPS = 2
RL_ROWS = 64  # random activations the RL checks draw their batches from

# Pass/fail rules (see check_nf4 and check_qlora).
NF4_MAX_MEAN_ABS_DIFF = 0.5  # nats per token
NF4_MIN_CORRELATION = 0.5
OVER_ESTIMATE = 0.25  # a measurement may exceed its estimate by this fraction
UNDER_ESTIMATE = 2.0  # an estimate may be at most this many times its measurement

EXPLANATIONS = [
    "the colour is red .",
    "the place is the park . the object is a ball .",
    "the action is painted .",
    "the person is anna . the place is the beach . the colour is blue .",
]
# Plain words of the toy world: sampled ids become explanations made of them (FullLengthRL).
WORDS = [w for w in vocabulary() if w.isalpha()]

STARTED = time.perf_counter()


def progress(message: str) -> None:
    print(f"[{time.perf_counter() - STARTED:6.1f} s] {message}", flush=True)


@dataclass
class Row:
    """One line of the table; `values` holds the numbers the JSON keeps."""

    check: str
    shape: str
    seconds: float
    measured_gib: float | None
    estimate_gib: float | None
    status: str
    detail: str
    values: dict[str, Any] = field(default_factory=dict)

    def cells(self) -> list[Any]:
        measured = "n/a" if self.measured_gib is None else self.measured_gib
        estimate = "-" if self.estimate_gib is None else self.estimate_gib
        return [self.check, self.shape, self.seconds, measured, estimate, self.status, self.detail]


HEADERS = ["check", "shape", "s", "measured GiB", "estimate GiB", "status", "detail"]


class CheckFailed(Exception):
    """A check ran but its result is wrong: the message is the table's detail, `values` what
    it measured (kept in the JSON)."""

    def __init__(self, message: str, values: dict[str, Any] | None = None) -> None:
        super().__init__(message)
        self.values = values or {}


def require(condition: bool, message: str, values: dict[str, Any] | None = None) -> None:
    if not condition:
        raise CheckFailed(message, values)


# ---- memory ------------------------------------------------------------------------------


class Memory:
    """The CUDA allocator's numbers in GiB; None on the CPU, which has nothing comparable."""

    def __init__(self, device: str) -> None:
        self.cuda = device.startswith("cuda")

    def allocated(self) -> float | None:
        return torch.cuda.memory_allocated() / GIB if self.cuda else None

    def reset_peak(self) -> None:
        if self.cuda:
            torch.cuda.reset_peak_memory_stats()

    def peak(self) -> float | None:
        return torch.cuda.max_memory_allocated() / GIB if self.cuda else None

    def release(self) -> None:
        gc.collect()
        if self.cuda:
            torch.cuda.empty_cache()


def difference(after: float | None, before: float | None) -> float | None:
    return None if after is None or before is None else after - before


def tensor_gib(module: torch.nn.Module | None) -> float:
    """GiB held by a module's parameters, buffers and NF4 block scales (absmax)."""
    if module is None:
        return 0.0
    total = 0
    for tensor in itertools.chain(module.parameters(), module.buffers()):
        total += tensor.numel() * tensor.element_size()
        state = getattr(tensor, "quant_state", None)
        if state is not None:
            total += state.absmax.numel() * state.absmax.element_size()
    return total / GIB


def four_bit_layers(module: torch.nn.Module) -> int:
    return sum("4bit" in type(m).__name__ for m in module.modules())


def ratio_text(measured: float | None, estimate: float) -> str:
    if measured is None:
        return "not measured on the CPU"
    return f"x{measured / estimate:.2f} of the estimate" if estimate > 0 else "estimate 0"


# ---- presets, shapes and random models ----------------------------------------------------


def compose(overrides: list[str]) -> dict[str, Any]:
    """The blocks of the real config tree this check reads, composed with Hydra's API (the
    others interpolate Hydra's runtime)."""
    from hydra import compose as hydra_compose
    from hydra import initialize_config_dir
    from omegaconf import OmegaConf

    from nla_lightning.settings import register_configs

    register_configs()
    with initialize_config_dir(config_dir=str(REPO / "conf"), version_base="1.3"):
        cfg = hydra_compose(config_name="train", overrides=overrides)
    blocks = {key: OmegaConf.to_container(cfg[key], resolve=True) for key in ("rl", "model")}
    return {**blocks, "precision": cfg.trainer.precision, "layer": int(cfg.layer)}


@dataclass
class Shape:
    label: str
    config: dict[str, Any]
    layer: int


def shapes(quick: bool, small_layer: int, large_layer: int) -> tuple[Shape, Shape]:
    if quick:
        return (
            Shape("tiny, 0.5B layout", {**QWEN25_05B, **TINY}, TINY_LAYER),
            Shape("tiny, 7B layout", {**QWEN25_7B, **TINY}, TINY_LAYER),
        )
    return (
        Shape("Qwen2.5-0.5B", QWEN25_05B, small_layer),
        Shape("Qwen2.5-7B", QWEN25_7B, large_layer),
    )


def check_tokenizer() -> Any:
    """The toy word-level tokenizer grown by the words of the release's prompt templates,
    which the Qwen presets use (`templates: reference`)."""
    return build_toy_tokenizer(extra_texts=templates("reference"))


def random_target(
    shape: Shape, tokenizer: Any, directory: Path, device: str, injection_scale: float | None
) -> tuple[Path, NLAMeta, torch.nn.Module]:
    """A random bf16 Qwen2 of `shape` initialised straight on `device` (a 7B initialises in
    seconds on a GPU), saved with the tokenizer under directory/target, and its NLA metadata
    (`injection_scale` None: the token-embedding rule, as a random model has no activations
    for `auto`). Returns the live model too."""
    from transformers import AutoModelForCausalLM, Qwen2Config

    config = Qwen2Config(
        bos_token_id=None,
        eos_token_id=tokenizer.eos_token_id,
        pad_token_id=tokenizer.pad_token_id,
        **shape.config,
    )
    torch.manual_seed(0)
    with torch.device(device):
        model = AutoModelForCausalLM.from_config(config, dtype=torch.bfloat16).eval()
    target_dir = directory / "target"
    model.save_pretrained(target_dir)
    tokenizer.save_pretrained(target_dir)
    actor, critic = templates("reference")
    meta = build_meta(
        tokenizer,
        config,
        base_model=f"random {shape.label}",
        layer=shape.layer,
        injection_scale=injection_scale or from_embeddings(model),
        actor_template=actor,
        critic_template=critic,
    )
    return target_dir, meta, model


def random_activations(meta: NLAMeta, rows: int, seed: int = 0) -> torch.Tensor:
    """Random activation rows of about the injection norm."""
    generator = torch.Generator().manual_seed(seed)
    vectors = torch.randn(rows, meta.d_model, generator=generator)
    return vectors * (meta.injection_scale or 1.0) / math.sqrt(meta.d_model)


# ---- RL under a Trainer -------------------------------------------------------------------


def words_of(ids: list[int]) -> str:
    return " ".join(WORDS[i % len(WORDS)] for i in ids)


class FullLengthRL(NLARLModule):
    """NLARLModule whose responses are all `max_new_tokens` long and whose explanations are
    their sampled ids as words: a random AV never closes its <explanation> tag, and without
    explanations the AR would be neither scored nor trained. So every step does a warm start's
    full work: rollout to the cap, AR scoring and regression step on every sample, GRPO step."""

    def rollout(self, activations: torch.Tensor) -> Rollout:
        self.av.eval()
        with torch.no_grad():
            rollout = self.av.sample(
                activations,
                group_size=self.hp.group_size,
                max_new_tokens=self.hp.max_new_tokens,
                temperature=self.hp.temperature,
                min_new_tokens=self.hp.max_new_tokens,
            )
        self.av.train()
        rollout.explanations = [words_of(row) for row in rollout.response_ids.tolist()]
        return rollout


def fit(module: NLARLModule, device: str, precision: str) -> tuple[L.Trainer, int]:
    """Run the module's steps under a Lightning Trainer; returns it and the number of updates
    it skipped as non-finite."""
    trainer = L.Trainer(
        accelerator="gpu" if device.startswith("cuda") else "cpu",
        devices=1,
        precision=precision,
        max_epochs=-1,
        logger=False,
        enable_checkpointing=False,
        enable_progress_bar=False,
        enable_model_summary=False,
        num_sanity_val_steps=0,
    )
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        trainer.fit(module)
    return trainer, sum("update skipped" in str(w.message) for w in caught)


def optimiser_steps(optimizer: torch.optim.Optimizer) -> int:
    """Steps AdamW took (its per-parameter `step` counter; 0 before the first)."""
    return max((int(state["step"]) for state in optimizer.state.values()), default=0)


def require_rl_steps(module: NLARLModule, trainer: L.Trainer, skipped: int) -> dict[str, Any]:
    """Every step ran, none was skipped, each optimiser stepped once per step."""
    av_steps, ar_steps = (optimiser_steps(o) for o in trainer.optimizers)
    values = {
        "steps_requested": module.hp.steps,
        "steps_done": module.steps_done,
        "skipped_updates": skipped,
        "av_optimizer_steps": av_steps,
        "ar_optimizer_steps": ar_steps,
        "timings": module.timings,
    }
    steps = module.hp.steps
    require(module.steps_done == steps, f"{module.steps_done}/{steps} steps", values)
    require(skipped == 0, f"{skipped} updates skipped as non-finite", values)
    require(len(module.timings) == steps, f"{len(module.timings)} steps timed", values)
    both = av_steps == ar_steps == steps
    require(both, f"optimiser steps: AV {av_steps}, AR {ar_steps} of {steps}", values)
    return values


def mean_phase(timings: list[dict[str, float]], phase: str) -> float:
    return sum(t[f"time/{phase}_s"] for t in timings) / max(len(timings), 1)


# ---- the 0.5B checks ----------------------------------------------------------------------


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


def check_bf16_av(small: SmallNLA, device: str, memory: Memory) -> Row:
    av = warm_start_av(str(small.target_dir), small.tokenizer, small.meta, small.train).to(device)
    require(next(av.parameters()).dtype == torch.bfloat16, "the AV did not load in bf16")
    ids, mask = pad_right(encode_responses(small.tokenizer, EXPLANATIONS), av.pad_id)
    activations = random_activations(small.meta, len(EXPLANATIONS))
    memory.reset_peak()
    loss = av.sft_loss(activations.to(device), ids.to(device), mask.to(device))
    loss.backward()
    values = require_gradients(loss, av)
    detail = f"SFT loss {values['loss']:.3f}, grad norm {values['grad_norm']:.3g}; measured = peak"
    return Row(
        "bf16 AV forward+backward",
        small.shape.label,
        0.0,
        memory.peak(),
        None,
        "ok",
        detail,
        values,
    )


def check_bf16_ar(small: SmallNLA, device: str, memory: Memory) -> Row:
    ar = warm_start_ar(str(small.target_dir), small.tokenizer, small.meta, small.train).to(device)
    require(ar.head.weight.dtype == torch.bfloat16, "the AR did not load in bf16")
    ids, mask = pad_right(ar.encode(EXPLANATIONS), small.tokenizer.pad_token_id)
    activations = random_activations(small.meta, len(EXPLANATIONS)).to(device)
    memory.reset_peak()
    # ARSFTModule's loss: the normalised MSE of each row, averaged.
    predicted = ar(ids.to(device), mask.to(device))
    loss = normalised_mse(predicted, activations, ar.meta.mse_scale).mean()
    loss.backward()
    values = require_gradients(loss, ar)
    detail = f"MSE {values['loss']:.3f}, grad norm {values['grad_norm']:.3g}; measured = peak"
    return Row(
        "bf16 AR forward+backward",
        small.shape.label,
        0.0,
        memory.peak(),
        None,
        "ok",
        detail,
        values,
    )


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


def check_rl(small: SmallNLA, device: str, memory: Memory, steps: int, quick: bool) -> Row:
    """`steps` RL steps with model=qwen_small's settings on a small batch."""
    batch = QUICK_RL if quick else SMALL_RL
    hp = RLSettings(**{**small.preset["rl"], **batch, "steps": steps, "examples_every": 0})
    av, reference = rl_av(small.av_dir, small.train, device)
    ar = rl_ar(small.ar_dir, small.train, device)
    require(
        reference.frozen is not None and four_bit_layers(reference.frozen) > 0,
        "the reference is not an NF4 copy",
    )
    estimate = rl_estimate(str(small.av_dir), small.shape.layer, small.train, hp).total
    module = FullLengthRL(av, ar, random_activations(small.meta, RL_ROWS), hp, reference)
    memory.reset_peak()
    trainer, skipped = fit(module, device, small.preset["precision"])
    peak = memory.peak()
    values = require_rl_steps(module, trainer, skipped)
    values.update(estimate_gib=estimate, peak_gib=peak)
    phases = ", ".join(
        f"{p} {mean_phase(module.timings, p):.2f} s" for p in ("rollout", "ar", "av")
    )
    detail = (
        f"{module.steps_done}/{steps} steps of {hp.batch_size} x {hp.group_size} x "
        f"{hp.max_new_tokens} tokens, NF4 reference; per step {phases}; measured = peak, "
        f"{ratio_text(peak, estimate)}"
    )
    return Row("RL steps (Trainer)", small.shape.label, 0.0, peak, estimate, "ok", detail, values)


# ---- the 7B QLoRA preset ------------------------------------------------------------------


@dataclass
class Measured:
    """GiB of each component (None on the CPU) and seconds of each phase."""

    policy: float | None = None
    reference: float | None = None
    ar: float | None = None
    step: float | None = None
    total: float | None = None
    seconds: dict[str, float] = field(default_factory=dict)


def make_warm_start(
    shape: Shape, preset: dict[str, Any], directory: Path, device: str
) -> tuple[Path, Path, NLAMeta]:
    """The preset's warm start as QLoRA SFT leaves it: AV and AR as LoRA adapters on the saved
    target. The adapters are made in LoRA mode (same shapes as QLoRA's): the warm-start
    builders load on the CPU, where NF4-quantising a 7B would take minutes."""
    tokenizer = check_tokenizer()
    progress(f"building a random {shape.label} on {device} and saving it")
    scale = preset["model"]["injection_scale"]
    target_dir, meta, model = random_target(shape, tokenizer, directory, device, scale)
    del model
    gc.collect()
    if device.startswith("cuda"):
        torch.cuda.empty_cache()
    warm = {**preset["model"]["train"], "av_mode": "lora", "ar_mode": "lora"}
    warm["gradient_checkpointing"] = False
    progress("LoRA warm start of the AV (CPU)")
    av_dir = warm_start_av(str(target_dir), tokenizer, meta, warm).save(directory / "av")
    gc.collect()
    progress("LoRA warm start of the AR (CPU)")
    ar_dir = warm_start_ar(str(target_dir), tokenizer, meta, warm).save(directory / "ar")
    gc.collect()
    return av_dir, ar_dir, meta


def keep_trainable_on_cpu(*models: torch.nn.Module) -> int:
    """On a CPU with AVX512-BF16, bitsandbytes repacks an NF4 layer's weight for an
    inference-only kernel on its first eval-mode, no-grad forward, and that kernel has no
    backward: after the RL rollout (eval mode) the policy's next training forward fails. Keep
    the trained models' 4-bit layers on the kernel that trains. Returns the layers changed."""
    layers = [m for model in models for m in model.modules()]
    layers = [m for m in layers if hasattr(m, "support_avx512bf16_for_cpu")]
    for layer in layers:
        layer.support_avx512bf16_for_cpu = False
    return len(layers)


def measure_preset(
    av_dir: Path,
    ar_dir: Path,
    meta: NLAMeta,
    preset: dict[str, Any],
    hp: RLSettings,
    device: str,
    memory: Memory,
) -> tuple[Measured, dict[str, Any]]:
    """Load AV (+ reference) and AR as the RL stage does and take one RL step, measuring the
    allocator after each: weights by difference, the step by its peak over the weights."""
    train, measured = preset["model"]["train"], Measured()
    base = memory.allocated()
    progress("loading the QLoRA AV and its reference (rl_av)")
    start = time.perf_counter()
    av, reference = rl_av(av_dir, train, device)
    measured.seconds["policy"] = time.perf_counter() - start
    after_av = memory.allocated()
    require(four_bit_layers(av) > 0, "the AV is not 4-bit")
    if memory.cuda:
        # rl_av loads both: the reference's share is what its own tensors hold.
        measured.reference = tensor_gib(reference.frozen)
        measured.policy = after_av - base - measured.reference
    progress("loading the QLoRA AR (rl_ar)")
    start = time.perf_counter()
    ar = rl_ar(ar_dir, train, device)
    measured.seconds["ar"] = time.perf_counter() - start
    require(four_bit_layers(ar) > 0, "the AR is not 4-bit")
    measured.ar = difference(memory.allocated(), after_av)
    if device == "cpu":
        keep_trainable_on_cpu(av, ar)
    module = FullLengthRL(av, ar, random_activations(meta, RL_ROWS), hp, reference)
    shape = f"{hp.batch_size} x {hp.group_size} x {hp.max_new_tokens} tokens"
    progress(f"{hp.steps} RL steps of {shape}")
    before_step = memory.allocated()
    memory.reset_peak()
    start = time.perf_counter()
    trainer, skipped = fit(module, device, preset["precision"])
    measured.seconds["step"] = time.perf_counter() - start
    peak = memory.peak()
    measured.step, measured.total = difference(peak, before_step), difference(peak, base)
    return measured, require_rl_steps(module, trainer, skipped)


def check_qlora(
    shape: Shape, preset: dict[str, Any], directory: Path, device: str, memory: Memory, quick: bool
) -> list[Row]:
    """experiment=qwen7b_24gb's memory per component against the estimate the RL stage prints
    (rl_estimate). Only the total decides: measured over the estimate by more than 25%
    (the estimate promised too little) or under half of it (it is no longer a guide) fails."""
    started = time.perf_counter()
    rl = {**preset["rl"], "steps": QLORA_STEPS, "examples_every": 0}
    rl.update(QUICK_RL if quick else {})
    hp, train = RLSettings(**rl), preset["model"]["train"]
    av_dir, ar_dir, meta = make_warm_start(shape, preset, directory, device)
    estimate = rl_estimate(str(av_dir), meta.layer, train, hp)
    measured, steps = measure_preset(av_dir, ar_dir, meta, preset, hp, device, memory)
    step_estimate = (
        estimate.optimizer + estimate.gradients + estimate.activations + estimate.kv_cache
    )
    values = {
        "config": shape.config,
        "layer": meta.layer,
        "train": train,
        "rl": {k: rl[k] for k in ("batch_size", "group_size", "max_new_tokens", *MICRO_BATCHES)},
        "estimate": {**asdict(estimate), "total": estimate.total},
        "measured": asdict(measured),
        **steps,
    }
    name, label = "7B QLoRA", shape.label
    seconds = measured.seconds
    rows = [
        Row(
            f"{name}: policy weights",
            label,
            seconds["policy"],
            measured.policy,
            estimate.policy,
            "ok",
            f"rl_av: 4-bit AV + adapters, {ratio_text(measured.policy, estimate.policy)}",
        ),
        Row(
            f"{name}: reference",
            label,
            0.0,
            measured.reference,
            estimate.reference,
            "ok",
            reference_text(train["reference"], measured.reference, estimate.reference),
        ),
        Row(
            f"{name}: AR weights",
            label,
            seconds["ar"],
            measured.ar,
            estimate.ar,
            "ok",
            f"rl_ar: 4-bit blocks 0..{meta.layer} + head, {ratio_text(measured.ar, estimate.ar)}",
        ),
        Row(
            f"{name}: RL step",
            label,
            seconds["step"],
            measured.step,
            step_estimate,
            "ok",
            f"optimizer + gradients + activations + KV cache: peak over the weights in "
            f"{hp.steps} steps of {hp.batch_size} x {hp.group_size} x {hp.max_new_tokens} "
            f"tokens, {ratio_text(measured.step, step_estimate)}",
        ),
    ]
    total = Row(
        f"{name}: total peak",
        label,
        time.perf_counter() - started,
        measured.total,
        estimate.total,
        "ok",
        "",
        values,
    )
    total.status, total.detail = judge_total(measured.total, estimate.total)
    return [*rows, total]


def reference_text(mode: str, measured: float | None, estimate: float) -> str:
    if mode == "adapter":
        return "reference=adapter: no weights of its own (the AV's base, warm-start adapter)"
    if mode == "none":
        return "reference=none: no KL reference"
    return f"reference={mode}, {ratio_text(measured, estimate)}"


def judge_total(measured: float | None, estimate: float) -> tuple[str, str]:
    if measured is None:
        return "ok", (
            "estimate only (no GPU allocator on the CPU); loads and RL steps ran, with "
            "bitsandbytes' inference-only CPU repacking off for the trained 4-bit layers"
        )
    ratio = measured / estimate
    if ratio > 1 + OVER_ESTIMATE:
        return "FAIL", f"measured is {ratio - 1:.0%} over the estimate (> {OVER_ESTIMATE:.0%})"
    if estimate > UNDER_ESTIMATE * measured:
        return "FAIL", f"the estimate over-states the peak x{1 / ratio:.2f} (> x{UNDER_ESTIMATE})"
    allowed = f"x{1 / UNDER_ESTIMATE:g}..x{1 + OVER_ESTIMATE:g}"
    return "ok", f"x{ratio:.2f} of the estimate (allowed: {allowed})"


# ---- running ------------------------------------------------------------------------------


def short(err: BaseException) -> str:
    text = str(err).strip().splitlines()
    return f"{type(err).__name__}: {text[0] if text else ''}"[:200]


def run_check(name: str, label: str, check: Callable[[], Row | list[Row]], memory: Memory):
    """One check; an exception becomes a FAIL row (its traceback on stderr, unless the check
    itself said what was wrong)."""
    progress(f"check: {name} ({label})")
    start = time.perf_counter()
    try:
        result = check()
    except Exception as err:  # any failure is a row of the table, not the end of the script
        if not isinstance(err, CheckFailed):
            traceback.print_exc()
        values = err.values if isinstance(err, CheckFailed) else {}
        seconds = time.perf_counter() - start
        rows = [Row(name, label, seconds, None, None, "FAIL", short(err), values)]
    else:
        rows = result if isinstance(result, list) else [result]
        if len(rows) == 1 and not rows[0].seconds:
            rows[0].seconds = time.perf_counter() - start
    memory.release()
    progress(f"done: {name}: {', '.join(r.status for r in rows)}")
    return rows


def small_checks(
    args: argparse.Namespace,
    only: set[str],
    shape: Shape,
    preset: dict[str, Any],
    scratch: Path,
    memory: Memory,
) -> list[Row]:
    checks = {
        "bf16": [
            ("bf16 AV forward+backward", check_bf16_av),
            ("bf16 AR forward+backward", check_bf16_ar),
        ],
        "nf4": [("NF4 reference log-probs", check_nf4)],
        "rl": [
            ("RL steps (Trainer)", lambda s, d, m: check_rl(s, d, m, args.rl_steps, args.quick))
        ],
    }
    chosen = [item for key in CHECKS if key in only for item in checks.get(key, [])]
    if not chosen:
        return []
    progress(f"building a random {shape.label} NLA (model=qwen_small)")
    try:
        small = build_small(shape, preset, scratch / "small", args.device)
    except Exception as err:  # every check of the group fails with the same cause
        traceback.print_exc()
        return [
            Row(n, shape.label, 0.0, None, None, "FAIL", f"setup: {short(err)}") for n, _ in chosen
        ]
    rows = []
    for name, check in chosen:
        rows += run_check(name, shape.label, lambda c=check: c(small, args.device, memory), memory)
    return rows


def parse_only(text: str) -> set[str]:
    chosen = {part.strip() for part in text.split(",") if part.strip()}
    unknown = chosen - set(CHECKS)
    if unknown or not chosen:
        raise SystemExit(f"--only: choose among {','.join(CHECKS)}, got {text!r}")
    return chosen


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--only", default=",".join(CHECKS), help="checks to run (comma list)")
    parser.add_argument("--rl-steps", type=int, default=3, help="steps of the RL check")
    parser.add_argument("--scratch", type=Path, default=None, help="where models are saved")
    add_common_args(parser)
    args = parser.parse_args()
    only = parse_only(args.only)
    info = setup(args)
    for name in ("lightning.pytorch", "lightning.fabric"):
        logging.getLogger(name).setLevel(logging.WARNING)
    memory = Memory(args.device)
    small_preset = compose(["model=qwen_small", "trainer=gpu"])
    large_preset = compose(["experiment=qwen7b_24gb"])
    small, large = shapes(args.quick, small_preset["layer"], large_preset["layer"])
    rows: list[Row] = []
    with tempfile.TemporaryDirectory(prefix="nla-gpu-check-", dir=args.scratch) as directory:
        scratch = Path(directory)
        rows += small_checks(args, only, small, small_preset, scratch, memory)
        if "qlora" in only:
            rows += run_check(
                "7B QLoRA preset",
                large.label,
                lambda: check_qlora(
                    large, large_preset, scratch / "large", args.device, memory, args.quick
                ),
                memory,
            )
    passed = sum(row.status == "ok" for row in rows)
    print()
    print(markdown_table(HEADERS, [row.cells() for row in rows]))
    write_json(
        args.json,
        {
            "benchmark": "gpu_check",
            "machine": info,
            "quick": args.quick,
            "checks": sorted(only, key=CHECKS.index),
            "rows": [asdict(row) for row in rows],
            "passed": passed,
            "total": len(rows),
        },
    )
    print(f"\ngpu check: {passed}/{len(rows)} ok", flush=True)
    sys.exit(0 if passed == len(rows) else 1)


if __name__ == "__main__":
    main()

"""experiment=qwen7b_24gb on the 7B shape: the GPU memory of each component of QLoRA RL
against the estimate the RL stage prints (training/memory.py)."""

from __future__ import annotations

import gc
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

from gpu.checks_rl import QUICK_RL, RL_ROWS, FullLengthRL, fit, require_rl_steps
from gpu.memory import (
    OVER_ESTIMATE,
    UNDER_ESTIMATE,
    Memory,
    difference,
    four_bit_layers,
    ratio_text,
    tensor_gib,
)
from gpu.report import Row, progress, require
from gpu.shapes import Shape, check_tokenizer, random_activations, random_target
from nla_lightning.core.meta import NLAMeta
from nla_lightning.settings import RLSettings
from nla_lightning.training.builders import rl_ar, rl_av, warm_start_ar, warm_start_av
from nla_lightning.training.memory import rl_estimate

MICRO_BATCHES = ("av_micro_batch", "ar_micro_batch")
# The 7B check's steps: AdamW makes its state at its first step, so only from the second step
# on are weights, optimizer state, gradients and activations all resident at once.
QLORA_STEPS = 2


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
    shape: Shape, preset: dict[str, Any], directory: Path, device: str, memory: Memory
) -> tuple[Path, Path, NLAMeta]:
    """The preset's warm start as QLoRA SFT leaves it: AV and AR as LoRA adapters on the saved
    target. The adapters are made in LoRA mode (same shapes as QLoRA's): the warm-start
    builders load on the CPU, where NF4-quantising a 7B would take minutes."""
    tokenizer = check_tokenizer()
    progress(f"building a random {shape.label} on {device} and saving it")
    scale = preset["model"]["injection_scale"]
    target_dir, meta, model = random_target(shape, tokenizer, directory, device, scale)
    del model
    memory.release()
    warm = {**preset["model"]["train"], "av_mode": "lora", "ar_mode": "lora"}
    warm["gradient_checkpointing"] = False
    progress("LoRA warm start of the AV (CPU)")
    av_dir = warm_start_av(str(target_dir), tokenizer, meta, warm).save(directory / "av")
    gc.collect()
    progress("LoRA warm start of the AR (CPU)")
    ar_dir = warm_start_ar(str(target_dir), tokenizer, meta, warm).save(directory / "ar")
    gc.collect()
    return av_dir, ar_dir, meta


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
    av_dir, ar_dir, meta = make_warm_start(shape, preset, directory, device, memory)
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
        # The trained 4-bit layers' repacking is turned off by the package's builders
        # (nla_lightning.core.lora.keep_4bit_trainable).
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

"""RL steps through NLARLModule under a Lightning Trainer, each response written to full
length (shared with the QLoRA check), and the 0.5B check: model=qwen_small's RL steps."""

from __future__ import annotations

import warnings
from typing import Any

import lightning as L
import torch
from _common import bench_trainer
from forced_rl import ForcedLengthRL

from gpu.checks_models import SmallNLA
from gpu.memory import Memory, four_bit_layers, ratio_text
from gpu.report import Row, require
from gpu.shapes import random_activations
from nla_lightning.core.verbalizer import Rollout
from nla_lightning.settings import RLSettings
from nla_lightning.toy.world import vocabulary
from nla_lightning.training.builders import rl_ar, rl_av
from nla_lightning.training.memory import rl_estimate
from nla_lightning.training.rl import NLARLModule

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
RL_ROWS = 64  # random activations the RL checks draw their batches from
# Plain words of the toy world: sampled ids become explanations made of them (FullLengthRL).
WORDS = [w for w in vocabulary() if w.isalpha()]


def words_of(ids: list[int]) -> str:
    return " ".join(WORDS[i % len(WORDS)] for i in ids)


class FullLengthRL(ForcedLengthRL):
    """Explanations made of the sampled ids as words (the tokenizer's own decoding of a random
    AV's ids can merge with the critic template)."""

    def explanations(self, rollout: Rollout) -> list[str]:
        return [words_of(row) for row in rollout.response_ids.tolist()]


def fit(module: NLARLModule, device: str, precision: str) -> tuple[L.Trainer, int]:
    """Run the module's steps under a Lightning Trainer; returns it and the number of updates
    it skipped as non-finite."""
    trainer = bench_trainer(device, precision=precision, num_sanity_val_steps=0)
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

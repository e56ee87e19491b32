"""The RL check under `trainer.strategy=fsdp`: the sharded path (FSDP2 units, rollouts on the
models gathered whole, mixed precision, the weights gathered back to the main process) on this
machine's one device. One rank holds every shard; N GPUs divide the weights N ways
(README, per-rank memory)."""

from __future__ import annotations

import math

import lightning as L
import torch

from gpu.checks_models import SmallNLA
from gpu.checks_rl import QUICK_RL, RL_ROWS, SMALL_RL, FullLengthRL
from gpu.memory import Memory, ratio_text
from gpu.report import Row, require
from gpu.shapes import random_activations
from nla_lightning.settings import RLSettings
from nla_lightning.training.builders import rl_ar, rl_av
from nla_lightning.training.memory import rl_estimate
from nla_lightning.training.sharded_strategy import resolve_strategy


class RankPeak(L.Callback):
    """The rank's peak GPU memory over the fit, put in the metrics the launcher hands back to
    the main process (a spawned rank's allocations are its own, not the main process's)."""

    def on_train_start(self, trainer: L.Trainer, module: L.LightningModule) -> None:
        if torch.cuda.is_available():
            torch.cuda.reset_peak_memory_stats()

    def on_train_end(self, trainer: L.Trainer, module: L.LightningModule) -> None:
        peak = torch.cuda.max_memory_allocated() / 2**30 if torch.cuda.is_available() else -1.0
        trainer.callback_metrics["rank_peak_gib"] = torch.tensor(peak)


def trainable(module: torch.nn.Module) -> dict[str, torch.Tensor]:
    return {
        n: p.detach().float().cpu().clone() for n, p in module.named_parameters() if p.requires_grad
    }


def check_rl_sharded(small: SmallNLA, device: str, memory: Memory, steps: int, quick: bool) -> Row:
    """The RL check's `steps` steps under trainer.strategy=fsdp (spawned on CUDA, forked on
    the CPU): every step done, the AV and AR weights that came back moved and finite."""
    batch = QUICK_RL if quick else SMALL_RL
    hp = RLSettings(**{**small.preset["rl"], **batch, "steps": steps, "examples_every": 0})
    av, reference = rl_av(small.av_dir, small.train, device)
    ar = rl_ar(small.ar_dir, small.train, device)
    estimate = rl_estimate(str(small.av_dir), small.shape.layer, small.train, hp).total
    module = FullLengthRL(av, ar, random_activations(small.meta, RL_ROWS), hp, reference)
    before = trainable(module)
    cuda = device.startswith("cuda")
    options = resolve_strategy(
        {
            "accelerator": "gpu" if cuda else "cpu",
            "devices": 1,
            "strategy": "fsdp" if cuda else "fsdp_fork",  # no fork after CUDA is initialised
            "precision": small.preset["precision"],
        }
    )
    trainer = L.Trainer(
        max_epochs=-1,
        logger=False,
        enable_checkpointing=False,
        enable_progress_bar=False,
        enable_model_summary=False,
        callbacks=[RankPeak()],
        **options,
    )
    trainer.fit(module)
    after = trainable(module)
    moved = {
        side: max(float((after[n] - before[n]).abs().max()) for n in after if n.startswith(side))
        for side in ("av.", "ar.")
    }
    peak = float(trainer.callback_metrics["rank_peak_gib"])
    peak = None if peak < 0 else peak
    values = {"steps_done": module.steps_done, "moved": moved, "peak_gib": peak}
    require(module.steps_done == steps, f"{module.steps_done}/{steps} steps", values)
    finite = all(math.isfinite(float(t.abs().max())) for t in after.values())
    require(finite, "non-finite weights came back from the rank", values)
    require(min(moved.values()) > 0, f"weights did not move: {moved}", values)
    detail = (
        f"{module.steps_done}/{steps} steps, 1 rank (FSDP2); AV moved {moved['av.']:.2e}, AR "
        f"{moved['ar.']:.2e}; measured = the rank's peak, {ratio_text(peak, estimate)}"
    )
    label = small.shape.label
    return Row("RL steps (trainer=fsdp)", label, 0.0, peak, estimate, "ok", detail, values)

"""Joint RL: GRPO for the AV, one regression step for the AR per batch, KL to a frozen reference.

One LightningModule with manual optimisation; each training step reads like the method:
rollout -> score with the current AR and take its regression step (one AR forward) -> AV step
-> log.
"""

from __future__ import annotations

import json
import time
import warnings
from dataclasses import asdict
from functools import partial
from pathlib import Path
from typing import Any

import lightning as L
import torch

from nla_lightning.core.activations import normalised_mse
from nla_lightning.core.metrics import normalised_variance
from nla_lightning.core.padding import pad_right
from nla_lightning.core.reconstructor import ActivationReconstructor
from nla_lightning.core.verbalizer import ActivationVerbalizer, Rollout
from nla_lightning.errors import NLAConfigError
from nla_lightning.settings.rl import RLSettings
from nla_lightning.training.checkpointing import replace_directory
from nla_lightning.training.distributed import GradientSync
from nla_lightning.training.dropout import disable_dropout
from nla_lightning.training.example_log import log_examples
from nla_lightning.training.grpo import (
    chunk_weight,
    finite_or_none,
    group_advantages,
    grpo_loss,
    rewards_from_mse,
)
from nla_lightning.training.reference import ReferencePolicy
from nla_lightning.training.rl_metrics import example_rows, step_metrics
from nla_lightning.training.rl_optimisers import count_bad_step, rl_optimisers
from nla_lightning.training.rl_schedule import StepIndices, batch_rows, seed_for
from nla_lightning.training.sharding import gathered, is_sharded, shard_under_strategy


class NLARLModule(L.LightningModule):
    def __init__(
        self,
        av: ActivationVerbalizer,
        ar: ActivationReconstructor,
        activations: torch.Tensor,
        hp: RLSettings,
        reference: ReferencePolicy | None = None,
        examples_path: str | Path | None = None,
    ) -> None:
        super().__init__()
        self.automatic_optimization = False
        self.examples_path = examples_path
        self.av = av
        self.ar = ar
        self.hp = hp
        # A plain attribute (not a submodule): the frozen reference is rebuilt, never saved.
        self.__dict__["reference"] = reference or ReferencePolicy("none")
        if hp.beta > 0 and self.reference.mode == "none":
            raise NLAConfigError(
                "beta > 0 needs a reference policy: set model.train.reference to "
                "quantized_4bit or adapter, or stage.rl.beta=0"
            )
        self.activations = activations
        # The FVE denominator per row and dimension, for the per-step FVE.
        self.variance = normalised_variance(activations, av.meta.mse_scale)
        # A buffer, so the count travels with the weights (spawned DDP ranks, checkpoints).
        self.register_buffer("step_count", torch.zeros((), dtype=torch.long))
        self.bad_steps = 0
        self._skipped: list[str] = []  # what was non-finite in the current step
        self.distributed = GradientSync(None)
        self.examples: list[dict[str, Any]] = []
        self.timings: list[dict[str, float]] = []
        self.save_hyperparameters(asdict(hp))

    @property
    def steps_done(self) -> int:
        return int(self.step_count)

    @steps_done.setter
    def steps_done(self, value: int) -> None:
        self.step_count.fill_(value)

    def configure_model(self) -> None:
        """`trainer.strategy=fsdp`: the AV, the AR and a full-precision frozen reference sharded
        over the ranks (an NF4 reference stays whole on each rank: 4-bit weights do not shard)."""
        shard_under_strategy(self, self.av.model)
        shard_under_strategy(self, self.ar, blocks_of=self.ar.backbone)
        if self.reference.mode == "frozen":
            shard_under_strategy(self, self.reference.frozen.model)

    def gathered(self):
        """The AV and AR whole on every rank (collective), for the held-out curve."""
        return gathered([self.av, self.ar])

    def on_fit_start(self) -> None:
        # from_pretrained returns eval-mode models; the policy and AR train (the reference not).
        self.train()
        disable_dropout(self.av, self.ar)

    def on_train_start(self) -> None:
        # By now the strategy has wrapped (DDP) or sharded the module; the process group exists.
        self.distributed = GradientSync(self.trainer.strategy, sharded=is_sharded(self.av))

    def on_fit_end(self) -> None:
        # Written by rank 0 itself: with spawned ranks the main process never sees the list.
        if self.examples_path and self.global_rank == 0:
            Path(self.examples_path).write_text(
                "".join(json.dumps(e) + "\n" for e in self.examples)
            )

    # ---- data ---------------------------------------------------------------------------
    def train_dataloader(self) -> torch.utils.data.DataLoader:
        return torch.utils.data.DataLoader(StepIndices(self), batch_size=None)

    def batch_rows(self, step: int) -> torch.Tensor:
        """Row indices of this rank's batch at `step`: epochs of seeded permutations."""
        n, world = len(self.activations), self.trainer.world_size
        return batch_rows(n, self.hp.batch_size, step, world, self.global_rank, self.hp.seed)

    # ---- the step -----------------------------------------------------------------------
    def training_step(self, step: int, batch_idx: int) -> None:
        if step >= self.hp.steps:
            self.trainer.should_stop = True
            return
        # Sampling depends only on (seed, step, rank): resuming replays the same rollouts.
        torch.manual_seed(seed_for(self.hp.seed, "step", step, self.global_rank))
        self.distributed.begin_step()
        self._skipped = []
        av_opt, ar_opt = self.optimizers()
        activations = self.activations[self.batch_rows(step)].to(self.device)
        times = {"start": time.perf_counter()}
        rollout = self.rollout(activations)
        times["rollout"] = time.perf_counter()
        rows = self._ar_rows(rollout.explanations)
        rewards, mse, valid, ar_loss = self.score_and_update_ar(rows, activations, ar_opt)
        times["ar"] = time.perf_counter()
        av_stats = self.update_av(rollout, activations, rewards, av_opt)
        times["av"] = time.perf_counter()
        self.bad_steps = count_bad_step(self.bad_steps, self._skipped, self.hp.max_bad_steps)
        self.steps_done = step + 1
        self.log_step(step, rollout, rewards, mse, valid, ar_loss, av_stats, times)
        if self.steps_done >= self.hp.steps:
            self.trainer.should_stop = True

    @torch.no_grad()
    def rollout(self, activations: torch.Tensor) -> Rollout:
        """(i) G explanations per activation from the current AV."""
        self.av.eval()
        # Sharded: each rank stops sampling when its own responses end, so the AV is gathered
        # whole first and its forwards wait on no other rank.
        with gathered([self.av]):
            rollout = self.av.sample(
                activations,
                group_size=self.hp.group_size,
                max_new_tokens=self.hp.max_new_tokens,
                temperature=self.hp.temperature,
                compile=self.hp.compile_rollout and not self.distributed.lockstep,
            )
        self.av.train()
        return rollout

    def _ar_rows(self, explanations: list[str | None]) -> list[list[int] | None]:
        """AR input ids per explanation; None for a missing or over-long one."""
        present = [i for i, e in enumerate(explanations) if e is not None]
        rows: list[list[int] | None] = [None] * len(explanations)
        if present:
            encoded = self.ar.encode([explanations[i] for i in present], overflow="none")
            for i, row in zip(present, encoded, strict=True):
                rows[i] = row
        return rows

    @torch.no_grad()
    def score(
        self, rows: list[list[int] | None], activations: torch.Tensor
    ) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        """Rewards [N] from the CURRENT AR without a step (no grad, eval mode), per-sample MSE
        [N] and validity [N]: what score_and_update_ar reads from its training forward."""
        targets = activations.repeat_interleave(self.hp.group_size, dim=0)
        valid, mse, index = self._unscored(rows)
        if index:
            self.ar.eval()
            mse[index] = self._ar_mse([rows[i] for i in index], targets[index])
            self.ar.train()
        return rewards_from_mse(mse, valid, kind=self.hp.reward), mse, valid

    def _unscored(self, rows: list[list[int] | None]):
        """Validity [N], MSE [N] at the failure value 2 (an orthogonal reconstruction) and the
        indices of the valid rows, which the AR then scores."""
        valid = torch.tensor([r is not None for r in rows], device=self.device)
        mse = torch.full((len(rows),), 2.0, device=self.device)
        return valid, mse, [i for i, row in enumerate(rows) if row is not None]

    def _ar_mse(self, rows: list[list[int]], targets: torch.Tensor) -> torch.Tensor:
        """Per-sample normalised MSE [n] of the AR's predictions for the explanation ids."""
        ids, mask = pad_right(rows, self.ar.tokenizer.pad_token_id)
        predicted = self.ar(ids.to(self.device), mask.to(self.device))
        return normalised_mse(predicted, targets, self.ar.meta.mse_scale)

    def ar_loss(self, rows: list[list[int]], targets: torch.Tensor) -> torch.Tensor:
        """Mean normalised MSE of the AR on (explanation ids -> activation). The ids are plain
        integers from the rollout, so no gradient can flow back into the AV."""
        return self.ar_objective(self._ar_mse(rows, targets))

    def ar_objective(self, mse: torch.Tensor) -> torch.Tensor:
        """The AR's regression loss from its per-sample normalised MSE [n]: the mean."""
        return mse.mean()

    def score_and_update_ar(
        self, rows: list[list[int] | None], activations: torch.Tensor, optimizer: Any
    ) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor, float | None]:
        """(ii) rewards from the CURRENT AR and (iii) one regression step on the valid
        explanations, from ONE forward of the AR per micro-batch: its predictions, made before
        the step, give the rewards (detached); its loss's gradient is the step. (Dropout is off
        in RL, so a training-mode forward predicts what an eval-mode one would.) Returns
        rewards [N], per-sample MSE [N], validity [N] and the AR loss (None: no step)."""
        targets = activations.repeat_interleave(self.hp.group_size, dim=0)
        valid, mse, index = self._unscored(rows)
        optimizer.zero_grad()
        total, finite = 0.0, True
        chunk = self.hp.ar_micro_batch or max(len(index), 1)
        parts = [index[start : start + chunk] for start in range(0, len(index), chunk)]
        # The loss is the mean over the valid rows of ALL ranks: ranks with more valid rows
        # weigh more (as the same batch in one process would).
        share = self.distributed.share(len(index))
        for part in parts:
            per_sample = self._ar_mse([rows[i] for i in part], targets[part])
            mse[part] = per_sample.detach()
            loss = self.ar_objective(per_sample) * (len(part) / len(index))
            finite = finite and finite_or_none(loss)
            # After a non-finite chunk the rest are still scored (their rewards), not trained
            # (sharded: still back-propagated, every rank must; the step is skipped anyway).
            if finite or self.distributed.lockstep:
                self.manual_backward(loss * share)
            if finite:
                total += float(loss.detach())
        if self.distributed.lockstep:
            for _ in range(self.distributed.largest(len(parts)) - len(parts)):
                self._blank_ar_pass()
        rewards = rewards_from_mse(mse, valid, kind=self.hp.reward)
        return rewards, mse, valid, self._step_ar(finite, bool(index), total, optimizer)

    def _blank_ar_pass(self) -> None:
        """AR forward and backward on one padding token, weight 0: a sharded rank with fewer
        valid explanations still joins every gather and gradient reduction of the others."""
        pad = self.ar.tokenizer.pad_token_id
        ids = torch.full((1, 1), pad, dtype=torch.long, device=self.device)
        self.manual_backward(self.ar(ids, torch.ones_like(ids)).sum() * 0.0)

    def _step_ar(self, finite: bool, any_valid: bool, total: float, optimizer: Any):
        # Every rank takes the same decision, so the collective gradient sync never deadlocks.
        if not self.distributed.all_true(finite):
            return self._skip("AR loss", optimizer)
        if not self.distributed.any_true(any_valid):
            return None
        self.distributed.average_gradients(self.ar.parameters())
        self._clip(optimizer)
        optimizer.step()
        self.lr_schedulers()[1].step()
        return total if any_valid else None

    def update_av(
        self, rollout: Rollout, activations: torch.Tensor, rewards: torch.Tensor, optimizer: Any
    ) -> dict[str, float] | None:
        """(iii) GRPO step(s) on the AV: clipped ratio, KL to the reference (rl.kl_estimator)."""
        if not self.distributed.all_true(finite_or_none(rewards)):
            self._skip("reward", optimizer)
            return None
        g = self.hp.group_size
        advantages = group_advantages(rewards, g, self.hp.scale_by_std)
        ids, mask = rollout.response_ids.to(self.device), rollout.response_mask.to(self.device)
        n = len(ids)
        chunk = self.hp.av_micro_batch or n
        chunks = [slice(s, s + chunk) for s in range(0, n, chunk)]
        # Micro-batches of whole groups run each group's prompt once (its G responses share it).
        shared = g if chunk % g == 0 else 1
        vectors = activations if shared > 1 else activations.repeat_interleave(g, dim=0)

        def rows(part: slice) -> torch.Tensor:
            return vectors[part.start // shared : part.stop // shared]

        # The step's loss is the global batch's (module doc of distributed.py): this rank's
        # part weighted by its share of the normaliser, and by the longest response anywhere.
        weight = self.distributed.loss_weight(self.hp.aggregation, mask)
        max_length = self.distributed.largest(ids.shape[1])
        old = [None] * len(chunks)
        refs = [
            self.reference.logprobs(self.av, rows(c), ids[c], mask[c], group_size=shared)
            for c in chunks
        ]
        stats = {"kl": 0.0, "clip_fraction": 0.0, "policy_loss": 0.0}
        for _ in range(self.hp.inner_epochs):
            optimizer.zero_grad()
            for k, part in enumerate(chunks):
                logprobs = self.av.response_logprobs(
                    rows(part), ids[part], mask[part], group_size=shared
                )
                if old[k] is None:
                    # Rollout log-probs: the policy before this step's updates.
                    old[k] = logprobs.detach()
                out = grpo_loss(
                    logprobs,
                    old[k],
                    advantages[part],
                    mask[part],
                    ref_logprobs=refs[k],
                    beta=self.hp.beta,
                    clip_eps=self.hp.clip_eps,
                    aggregation=self.hp.aggregation,
                    max_length=max_length,
                    kl_estimator=self.hp.kl_estimator,
                )
                share = chunk_weight(self.hp.aggregation, mask[part], mask)
                loss = out.loss * share * weight
                if not self.distributed.all_true(finite_or_none(loss)):
                    self._skip("AV loss", optimizer)
                    return None
                self.manual_backward(loss)
                # kl and clip_fraction are token means: weighted by the chunk's tokens.
                weights = {"policy_loss": share, "kl": chunk_weight("token_mean", mask[part], mask)}
                weights["clip_fraction"] = weights["kl"]
                for key in stats:
                    stats[key] += float(getattr(out, key)) * weights[key] / self.hp.inner_epochs
            self.distributed.average_gradients(self.av.parameters())
            self._clip(optimizer)
            optimizer.step()
        self.lr_schedulers()[0].step()
        return stats

    def _clip(self, optimizer: Any) -> None:
        """rl.gradient_clip_val: manual optimisation clips here, after the gradients are
        averaged across ranks (Lightning's own clipping only serves automatic optimisation)."""
        if self.hp.gradient_clip_val:
            self.clip_gradients(
                optimizer,
                gradient_clip_val=self.hp.gradient_clip_val,
                gradient_clip_algorithm="norm",
            )

    def _skip(self, what: str, optimizer: Any) -> None:
        """Drop one update (AR or AV) of this step; the step is counted once, at its end."""
        optimizer.zero_grad()
        self._skipped.append(what)
        warnings.warn(f"step {self.steps_done}: non-finite {what}; update skipped", stacklevel=2)
        return None

    # ---- logging ------------------------------------------------------------------------
    def log_step(self, step, rollout, rewards, mse, valid, ar_loss, av_stats, times) -> None:
        g = self.hp.group_size
        metrics = step_metrics(
            rollout, rewards, mse, valid, ar_loss, av_stats, times, self.variance, g
        )
        self.timings.append(
            {k: v for k, v in metrics.items() if k.startswith("time/")}
            | {"samples": len(rewards), "tokens": float(rollout.response_mask.sum())}
        )
        self.log_dict(metrics, on_step=True, prog_bar=False, batch_size=len(rewards))
        self.log("fve", metrics["rl/fve"], prog_bar=True, logger=False)
        if self.hp.examples_every and step % self.hp.examples_every == 0:
            rows = example_rows(step, rollout, rewards, mse, g)
            self.examples.extend(rows)
            if self.global_rank == 0:
                log_examples(self.logger, rows, step)

    def export(self, directory: str | Path) -> dict[str, Path]:
        """AV and AR in the release's layout, sidecars saying stage rl (each written whole,
        then swapped in)."""
        directory = Path(directory)
        return {
            "av": replace_directory(partial(self.av.save, stage="rl"), directory / "av"),
            "ar": replace_directory(partial(self.ar.save, stage="rl"), directory / "ar"),
        }

    # ---- optimisers and state -----------------------------------------------------------
    def configure_optimizers(self):
        return rl_optimisers(self.av, self.ar, self.hp)

    def on_save_checkpoint(self, checkpoint: dict[str, Any]) -> None:
        checkpoint["nla_rl"] = {"bad_steps": self.bad_steps}

    def on_load_checkpoint(self, checkpoint: dict[str, Any]) -> None:
        state = checkpoint.get("nla_rl")
        if state is None:
            raise NLAConfigError("this checkpoint was not written by the RL stage")
        self.bad_steps = state["bad_steps"]

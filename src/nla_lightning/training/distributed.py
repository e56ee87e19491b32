"""What a module needs from the other ranks: shared decisions, the global batch's normalisers
(RL and the AV warm start) and, under DDP, the RL module's gradient averaging.

DDP: one RL step makes two backward passes (AR, then AV) inside one forward of Lightning's DDP
wrapper, which DDP's reducer does not allow. So the reducer is switched off and the module
averages gradients itself, right before each optimiser step.

FSDP2 (`trainer.strategy=fsdp`): the engine reduce-scatters (averages) each unit's gradients in
its backward, so nothing is averaged here; instead every rank must run the same number of
forwards and backwards (`lockstep`)."""

from __future__ import annotations

from collections.abc import Iterable
from typing import Any

import torch
import torch.distributed as dist
from torch.nn.parallel import DistributedDataParallel

BUCKET_ELEMENTS = 1 << 24  # all-reduce ~64 MB of fp32 at a time


class GradientSync:
    """Collective helpers that are no-ops in a single process."""

    def __init__(self, strategy: Any, sharded: bool = False) -> None:
        wrapped = getattr(strategy, "model", None)
        ddp = isinstance(wrapped, DistributedDataParallel) and dist.is_initialized()
        self.wrapped = wrapped
        # Our own averaging: DDP only (FSDP2 averages in its backward).
        self.active = ddp
        # Ranks must make the same forwards and backwards: FSDP2 gathers in each of them.
        self.lockstep = sharded and dist.is_initialized()
        self.collective = ddp or self.lockstep
        self.world_size = dist.get_world_size() if self.collective else 1

    def begin_step(self) -> None:
        """Keep DDP's reducer out of this step's backward passes (Lightning re-arms it after
        every step for manual optimisation)."""
        if self.active:
            self.wrapped.require_backward_grad_sync = False

    def _reduce(self, value: float, op: dist.ReduceOp) -> float:
        if not self.collective:
            return value
        tensor = torch.tensor([float(value)], dtype=torch.float64)
        dist.all_reduce(tensor, op=op)
        return float(tensor.item())

    def _reduce_flag(self, flag: bool, op: dist.ReduceOp) -> bool:
        return bool(self._reduce(1.0 if flag else 0.0, op))

    def total(self, value: float) -> float:
        """The sum of `value` over ranks."""
        return self._reduce(value, dist.ReduceOp.SUM)

    def largest(self, value: int) -> int:
        """The largest `value` of any rank."""
        return int(self._reduce(value, dist.ReduceOp.MAX))

    def share(self, local: float) -> float:
        """This rank's part of a normaliser summed over ranks, times the number of ranks: the
        weight that turns this rank's mean into its term of the global batch's mean once the
        ranks' gradients are averaged (1 in a single process; 0 when nothing is counted)."""
        whole = self.total(local)
        return self.world_size * local / whole if whole else 0.0

    def all_true(self, flag: bool) -> bool:
        return self._reduce_flag(flag, dist.ReduceOp.MIN)

    def any_true(self, flag: bool) -> bool:
        return self._reduce_flag(flag, dist.ReduceOp.MAX)

    def loss_weight(self, aggregation: str, mask: torch.Tensor) -> float:
        """This rank's weight in the global batch's GRPO loss: its share of the aggregation's
        normaliser (tokens or responses; `sum` has none, so every rank's sum counts whole)."""
        if aggregation == "sum":
            return float(self.world_size)
        local = float(mask.sum()) if aggregation == "token_mean" else float(mask.shape[0])
        return self.share(local)

    def average_gradients(self, parameters: Iterable[torch.nn.Parameter]) -> None:
        """Mean of every trainable parameter's gradient over ranks (missing = zero)."""
        if not self.active:
            return
        params = [p for p in parameters if p.requires_grad]
        for p in params:
            if p.grad is None:
                p.grad = torch.zeros_like(p)
        bucket: list[torch.Tensor] = []
        size = 0
        for p in params:
            bucket.append(p.grad)
            size += p.grad.numel()
            if size >= BUCKET_ELEMENTS:
                self._reduce_bucket(bucket)
                bucket, size = [], 0
        if bucket:
            self._reduce_bucket(bucket)

    def _reduce_bucket(self, grads: list[torch.Tensor]) -> None:
        flat = torch.cat([g.reshape(-1) for g in grads])
        dist.all_reduce(flat)
        flat /= self.world_size
        offset = 0
        for g in grads:
            g.copy_(flat[offset : offset + g.numel()].view_as(g))
            offset += g.numel()

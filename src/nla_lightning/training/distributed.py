"""Gradient averaging for the RL module under DDP.

One RL step makes two backward passes (AR, then AV) inside one forward of Lightning's DDP
wrapper, which DDP's reducer does not allow. So the reducer is switched off and the module
averages gradients itself, right before each optimiser step."""

from __future__ import annotations

from collections.abc import Iterable
from typing import Any

import torch
import torch.distributed as dist
from torch.nn.parallel import DistributedDataParallel

BUCKET_ELEMENTS = 1 << 24  # all-reduce ~64 MB of fp32 at a time


class GradientSync:
    """Collective helpers that are no-ops in a single process."""

    def __init__(self, strategy: Any) -> None:
        wrapped = getattr(strategy, "model", None)
        self.active = isinstance(wrapped, DistributedDataParallel) and dist.is_initialized()
        self.wrapped = wrapped
        if self.active:
            self.world_size = dist.get_world_size()

    def begin_step(self) -> None:
        """Keep DDP's reducer out of this step's backward passes (Lightning re-arms it after
        every step for manual optimisation)."""
        if self.active:
            self.wrapped.require_backward_grad_sync = False

    def _reduce_flag(self, flag: bool, op: dist.ReduceOp) -> bool:
        if not self.active:
            return flag
        value = torch.tensor([1.0 if flag else 0.0])
        dist.all_reduce(value, op=op)
        return bool(value.item())

    def all_true(self, flag: bool) -> bool:
        return self._reduce_flag(flag, dist.ReduceOp.MIN)

    def any_true(self, flag: bool) -> bool:
        return self._reduce_flag(flag, dist.ReduceOp.MAX)

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

"""GPU memory as the CUDA allocator reports it (None on the CPU), module sizes, and the rule
that compares a measurement with its estimate."""

from __future__ import annotations

import gc
import itertools

import torch

from nla_lightning.training.memory import GIB

# Pass/fail rules of a memory measurement against its estimate (check_nf4, check_qlora).
OVER_ESTIMATE = 0.25  # a measurement may exceed its estimate by this fraction
UNDER_ESTIMATE = 2.0  # an estimate may be at most this many times its measurement


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

"""Fraction of variance explained (FVE) of normalised activations, as a torchmetrics Metric."""

from __future__ import annotations

import torch
from torchmetrics import Metric

from nla_lightning.core.activations import CHECK_CHUNK_ROWS, normalise, normalised_mean


class FVE(Metric):
    """1 - sum ||pred - h||^2 / sum ||h - mean(h)||^2, both rescaled to norm `mse_scale`.

    Sums are kept (not means) so the metric is exact across batches and processes.
    """

    full_state_update = False
    higher_is_better = True

    def __init__(self, d_model: int, mse_scale: float, **kwargs) -> None:
        super().__init__(**kwargs)
        self.mse_scale = mse_scale
        self.add_state("sse", default=torch.zeros((), dtype=torch.float64), dist_reduce_fx="sum")
        self.add_state(
            "sum", default=torch.zeros(d_model, dtype=torch.float64), dist_reduce_fx="sum"
        )
        self.add_state("sumsq", default=torch.zeros((), dtype=torch.float64), dist_reduce_fx="sum")
        self.add_state("count", default=torch.zeros((), dtype=torch.float64), dist_reduce_fx="sum")

    def update(self, prediction: torch.Tensor, target: torch.Tensor) -> None:
        pred = normalise(prediction.detach().double(), self.mse_scale)
        true = normalise(target.detach().double(), self.mse_scale)
        self.sse += (pred - true).pow(2).sum()
        self.sum += true.sum(dim=0)
        self.sumsq += true.pow(2).sum()
        self.count += true.shape[0]

    def compute(self) -> torch.Tensor:
        total_variance = _total_variance(self.sumsq, self.sum, self.count)
        return (1 - self.sse / total_variance.clamp_min(1e-12)).float()


def _total_variance(sumsq: torch.Tensor, sums: torch.Tensor, count: torch.Tensor) -> torch.Tensor:
    """The FVE denominator: sum over rows of ||h - mean(h)||^2, from running sums."""
    return sumsq - sums.pow(2).sum() / count.clamp_min(1)


def normalised_variance(targets: torch.Tensor, mse_scale: float) -> float:
    """The FVE denominator per row and dimension (the per-dimension variance of the rows
    rescaled to norm `mse_scale`, averaged over dimensions): 1 - mean normalised MSE / this is
    the FVE. Summed a chunk at a time, so a memory-mapped split is never copied whole."""
    sumsq = torch.zeros((), dtype=torch.float64)
    sums = torch.zeros(targets.shape[-1], dtype=torch.float64)
    for start in range(0, targets.shape[0], CHECK_CHUNK_ROWS):
        true = normalise(targets[start : start + CHECK_CHUNK_ROWS].detach().double(), mse_scale)
        sumsq += true.pow(2).sum()
        sums += true.sum(dim=0)
    count = torch.tensor(float(targets.shape[0]))
    return float(_total_variance(sumsq, sums, count) / targets.numel())


def fve(prediction: torch.Tensor, target: torch.Tensor, mse_scale: float) -> float:
    """FVE of one set of predictions (convenience for evaluation code), in this process alone:
    rank 0 scores the held-out curve while the other ranks of a fit do not."""
    metric = FVE(target.shape[-1], mse_scale, sync_on_compute=False)
    metric.update(prediction, target)
    return float(metric.compute())


def mean_baseline_fve(
    train_targets: torch.Tensor, targets: torch.Tensor, mse_scale: float
) -> float:
    """FVE of always predicting the mean normalised training activation."""
    mean = normalised_mean(train_targets, mse_scale).unsqueeze(0)
    return fve(mean.expand_as(targets), targets, mse_scale)

"""A fit continued from a mid-epoch checkpoint trains on the batches an uninterrupted fit would
have seen: the same weights bit for bit (CPU), with gradient accumulation and across epochs."""

import lightning as L
import pytest
import torch
from torch.utils.data import DataLoader, RandomSampler

from nla_lightning.training.resumable import EpochSeededSampler, StepCheckpoint, existing
from nla_lightning.training.trainer import make_trainer


def test_each_epoch_is_the_order_a_seeded_random_sampler_draws():
    data = list(range(23))
    reference = RandomSampler(data, generator=torch.Generator().manual_seed(5))
    expected = [list(reference) for _ in range(4)]  # one iteration per epoch
    sampler = EpochSeededSampler(data, seed=5)
    for epoch in (2, 0, 3, 1):  # in any order: each epoch from the seed alone
        sampler.set_epoch(epoch)
        assert list(sampler) == expected[epoch]
    sampler.set_epoch(1)
    sampler.skip_once(1, 7)
    assert list(sampler) == expected[1][7:]
    assert list(sampler) == expected[1]  # only once


class Regression(L.LightningModule):
    """A linear map fitted by AdamW with a step-wise schedule: any batch taken out of order,
    repeated or lost changes its weights."""

    def __init__(self) -> None:
        super().__init__()
        torch.manual_seed(0)
        self.layer = torch.nn.Linear(4, 1)

    def training_step(self, batch, batch_idx):
        x, y = batch
        return torch.nn.functional.mse_loss(self.layer(x).squeeze(-1), y)

    def configure_optimizers(self):
        optimizer = torch.optim.AdamW(self.parameters(), lr=0.05)
        schedule = torch.optim.lr_scheduler.LambdaLR(optimizer, lambda step: 1.0 / (1 + step))
        return {"optimizer": optimizer, "lr_scheduler": {"scheduler": schedule, "interval": "step"}}


class StopAt(L.Callback):
    """Ends the fit after `step` optimiser steps, as a kill right after a checkpoint would."""

    def __init__(self, step: int) -> None:
        self.step = step

    def on_train_batch_end(self, trainer, *args):
        if trainer.global_step >= self.step:
            trainer.should_stop = True


def fit(tmp_path, steps, checkpoint, every, accumulate, stop_at=None):
    generator = torch.Generator().manual_seed(1)
    rows = [
        (torch.randn(4, generator=generator), torch.randn((), generator=generator))
        for _ in range(30)
    ]
    loader = DataLoader(rows, batch_size=4, sampler=EpochSeededSampler(rows, seed=3))
    saver = StepCheckpoint(checkpoint, every, loader.sampler, batch_size=4)
    callbacks = [saver] + ([StopAt(stop_at)] if stop_at else [])
    options = {"accelerator": "cpu", "devices": 1, "enable_progress_bar": False}
    trainer = make_trainer(
        options, steps, tmp_path, accumulate_grad_batches=accumulate, callbacks=callbacks
    )
    module = Regression()
    trainer.fit(module, loader, ckpt_path=existing(checkpoint))
    return module.layer.weight.detach().clone(), trainer.global_step


@pytest.mark.parametrize(
    ("accumulate", "every", "stop_at"),
    [
        (1, 3, 3),  # mid-epoch (8 batches an epoch)
        (1, 4, 8),  # the checkpoint at an epoch's last batch
        (2, 2, 6),  # two batches a step, into the second epoch
    ],
)
def test_a_continued_fit_equals_an_uninterrupted_one(tmp_path, accumulate, every, stop_at):
    straight, steps = fit(tmp_path / "a", 14, tmp_path / "a.ckpt", 0, accumulate)
    assert steps == 14
    stopped, at = fit(tmp_path / "b", 14, tmp_path / "b.ckpt", every, accumulate, stop_at)
    assert at == stop_at and (tmp_path / "b.ckpt").is_file()
    continued, steps = fit(tmp_path / "b", 14, tmp_path / "b.ckpt", every, accumulate)
    assert steps == 14
    assert not torch.equal(stopped, straight)  # the stop came before the end
    assert torch.equal(continued, straight)

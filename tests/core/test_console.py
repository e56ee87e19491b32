"""The libraries' own console output is off by default and back with verbose."""

import logging

import lightning as L
import torch
from transformers.utils import logging as hf_logging

from nla_lightning.core.console import quiet_libraries


class _Tiny(L.LightningModule):
    def __init__(self):
        super().__init__()
        self.layer = torch.nn.Linear(2, 1)

    def training_step(self, batch, _):
        return self.layer(batch).pow(2).mean()

    def configure_optimizers(self):
        return torch.optim.SGD(self.parameters(), lr=0.1)

    def train_dataloader(self):
        return torch.utils.data.DataLoader(torch.randn(4, 2), batch_size=2)


def fit_output(capsys) -> str:
    trainer = L.Trainer(
        max_steps=2, logger=False, enable_checkpointing=False, enable_progress_bar=False,
        enable_model_summary=False, accelerator="cpu",
    )  # fmt: skip
    trainer.fit(_Tiny())
    out = capsys.readouterr()
    return out.out + out.err


def test_lightning_and_transformers_are_quiet_unless_verbose(capsys, caplog):
    try:
        quiet_libraries(verbose=False)
        assert logging.getLogger("lightning.pytorch").getEffectiveLevel() == logging.WARNING
        assert hf_logging.get_verbosity() == hf_logging.ERROR
        assert not hf_logging.is_progress_bar_enabled()
        with caplog.at_level(logging.NOTSET):
            quiet = fit_output(capsys) + caplog.text
        assert "GPU available" not in quiet
        quiet_libraries(verbose=True)
        caplog.clear()
        with caplog.at_level(logging.INFO, logger="lightning.pytorch"):
            loud = fit_output(capsys) + caplog.text
        assert "GPU available" in loud
        assert hf_logging.is_progress_bar_enabled()
    finally:
        quiet_libraries(verbose=False)

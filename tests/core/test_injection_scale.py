"""model.injection_scale: `auto` is a round number a bit above the mean activation norm (the
release's rule: Qwen2.5-7B layer 20, mean ~125 -> 150), `embedding` the token-embedding norm."""

from __future__ import annotations

import math

import numpy as np
import pyarrow.parquet as pq
import pytest
import torch
import yaml

from nla_lightning.core.injection_scale import (
    check_setting,
    from_activations,
    mean_norm,
    round_above,
)
from nla_lightning.errors import NLAConfigError
from tests.conftest import TINY_RUN, plain


@pytest.mark.parametrize(
    ("mean", "scale"),
    [
        (125.0, 150.0),  # the release's Qwen2.5-7B layer 20
        (27.0, 30.0),  # Llama-3.3-70B's 30
        (72000.0, 80000.0),  # Gemma-3-12B's 80000
        (50000.0, 60000.0),  # Gemma-3-27B's 60000
        (0.95, 1.5),  # 1.045 -> the next round number
        (100.0, 150.0),  # 110 is over 100: never below the 10% headroom
        (136.36, 150.0),  # exactly 150 / 1.1 -> 150, not 200
        (3.5, 4.0),
    ],
)
def test_round_above_gives_the_release_scales(mean, scale):
    assert round_above(mean) == scale


def test_the_rule_on_a_synthetic_activation_set():
    # Rows of known norm: 4 rows at 100 and 4 at 120 -> mean 110 -> 121 wanted -> 150.
    generator = torch.Generator().manual_seed(0)
    directions = torch.randn(8, 16, generator=generator)
    directions = directions / directions.norm(dim=-1, keepdim=True)
    norms = torch.tensor([100.0] * 4 + [120.0] * 4).unsqueeze(-1)
    activations = directions * norms
    assert mean_norm(activations) == pytest.approx(110.0, rel=1e-6)
    assert from_activations(activations) == 150.0
    # The chunked mean equals the whole mean (a dataset is read in chunks).
    many = torch.randn(70000, 4, generator=generator)
    assert mean_norm(many) == pytest.approx(float(many.double().norm(dim=-1).mean()), rel=1e-9)


@pytest.mark.parametrize("bad", [0.0, -1.0, float("nan"), float("inf")])
def test_a_degenerate_mean_is_a_clear_error(bad):
    with pytest.raises(NLAConfigError, match="model.injection_scale"):
        round_above(bad)


@pytest.mark.parametrize("setting", ["auto", "embedding", 150, 0.5])
def test_settings_accepted(setting):
    check_setting("model.injection_scale", setting)


@pytest.mark.parametrize("setting", ["median", 0, -3.0, float("nan"), True])
def test_settings_refused(setting):
    with pytest.raises(NLAConfigError, match="model.injection_scale"):
        check_setting("model.injection_scale", setting)


def test_auto_is_taken_from_the_extracted_activations_and_recorded(tmp_path):
    """A real data stage: the scale comes from the AV-SFT split's rows (read here with pyarrow
    alone), reaches summary.json and the warm-started AV's sidecar."""
    from nla_lightning.pipeline import run

    out = tmp_path / "run"
    summary = run(
        plain([*TINY_RUN, "model.injection_scale=auto", "stage.run=[target,data,av_sft]"], out)
    )
    column = pq.read_table(out / "data" / "av_sft.parquet", columns=["activation_vector"])
    rows = np.asarray(column.column(0).combine_chunks().flatten()).reshape(column.num_rows, -1)
    mean = float(np.linalg.norm(rows.astype(np.float64), axis=-1).mean())
    expected = round_above(mean)
    assert expected >= 1.1 * mean and expected < 2 * 1.1 * mean
    assert summary["stages"]["data"]["injection_scale"] == expected
    sidecar = yaml.safe_load((out / "checkpoints" / "av" / "nla_meta.yaml").read_text())
    assert math.isclose(sidecar["extraction"]["injection_scale"], expected)
    # The dataset sidecars keep the release's format: no injection scale.
    dataset = yaml.safe_load((out / "data" / "av_sft.parquet.nla_meta.yaml").read_text())
    assert "injection_scale" not in dataset["extraction"]

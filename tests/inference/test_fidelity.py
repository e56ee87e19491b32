"""Splicing and the fidelity report."""

from __future__ import annotations

import math

import pytest
import torch

from nla_lightning.inference import fidelity, spliced_kl


def test_splicing_the_true_activation_changes_nothing(nla, text):
    _, acts = nla.activations(text)
    ids = nla.encode(text)
    kl = spliced_kl(nla, ids, range(6), acts, batch_size=4)
    assert kl.shape == (6,)
    assert kl.abs().max() < 1e-5
    # Splicing something else must move the distribution, or this test could not fail.
    assert spliced_kl(nla, ids, range(6), acts.flip(0) * 3, batch_size=4).max() > 1e-4


def test_fidelity_report(nla, text):
    report = fidelity(nla, text, tokens=[1, 2, 4], samples=2, max_new_tokens=4)
    for key in ("kl_reconstruction", "kl_mean", "kl_shuffled", "kl_zero_ablation"):
        assert math.isfinite(report[key]) and report[key] >= 0, key
    assert report["positions"] == [1, 2, 4]
    assert len(report["kl_per_position"]) == 3
    assert report["kl_reconstruction"] == pytest.approx(
        torch.tensor(report["kl_per_position"]).mean().item()
    )

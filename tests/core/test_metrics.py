import pytest
import torch

from nla_lightning.core.metrics import FVE, fve, mean_baseline_fve


def test_perfect_prediction_explains_everything():
    h = torch.randn(50, 8)
    assert fve(h * 3.0, h, 8**0.5) == pytest.approx(1.0)  # norms do not matter


def test_hand_computed_value():
    # scale 1: targets e1, e2 -> mean (0.5, 0.5), total variance 2 * 0.5 = 1.
    # predictions e1, e1 -> squared errors 0 and 2 -> FVE = 1 - 2 / 1 = -1.
    target = torch.tensor([[1.0, 0.0], [0.0, 1.0]])
    prediction = torch.tensor([[1.0, 0.0], [1.0, 0.0]])
    assert fve(prediction, target, 1.0) == pytest.approx(-1.0)
    # predicting (1, 1) (normalised to the diagonal) for both: errors 2 - sqrt2 each
    assert fve(torch.ones(2, 2), target, 1.0) == pytest.approx(1 - 2 * (2 - 2**0.5))


def test_accumulating_batches_equals_one_shot():
    h, p = torch.randn(64, 16), torch.randn(64, 16)
    metric = FVE(16, 4.0)
    for i in range(0, 64, 10):
        metric.update(p[i : i + 10], h[i : i + 10])
    assert float(metric.compute()) == pytest.approx(fve(p, h, 4.0), abs=1e-6)


def test_mean_baseline_is_fve_of_the_normalised_training_mean():
    train = torch.randn(100, 4) + torch.tensor([5.0, 0, 0, 0])
    held_out = torch.randn(40, 4) + torch.tensor([5.0, 0, 0, 0])
    mean = (train / train.norm(dim=-1, keepdim=True)).mean(0, keepdim=True)
    expected = fve(mean.expand(40, -1), held_out, 2.0)
    assert mean_baseline_fve(train, held_out, 2.0) == pytest.approx(expected)
    assert expected < 1.0


def test_the_per_step_fve_formula_equals_the_fve_metric():
    """RL's per-step FVE (1 - mean normalised MSE / normalised_variance) and NLA.fidelity
    scores use the same denominator as the FVE metric, chunked or not."""
    from nla_lightning.core.activations import normalised_mse
    from nla_lightning.core.metrics import fve, normalised_variance

    generator = torch.Generator().manual_seed(0)
    targets = torch.randn(300, 16, generator=generator) * 5 + 2
    predicted = targets + torch.randn(300, 16, generator=generator) * 3
    scale = 4.0
    per_step = 1 - float(normalised_mse(predicted, targets, scale).mean()) / normalised_variance(
        targets, scale
    )
    assert abs(per_step - fve(predicted, targets, scale)) < 1e-5
    import nla_lightning.core.metrics as metrics

    whole = normalised_variance(targets, scale)
    chunk = metrics.CHECK_CHUNK_ROWS
    try:
        metrics.CHECK_CHUNK_ROWS = 7  # 300 rows in 43 chunks, the last one short
        assert abs(metrics.normalised_variance(targets, scale) - whole) < 1e-12
    finally:
        metrics.CHECK_CHUNK_ROWS = chunk

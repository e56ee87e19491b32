"""The one evaluator (RL curve and eval stage) and downstream KL, on real tiny models."""

import pytest
import torch

from nla_lightning.core.metrics import fve
from nla_lightning.core.padding import pad_right
from nla_lightning.core.reconstructor import ActivationReconstructor
from nla_lightning.core.verbalizer import ActivationVerbalizer, encode_responses
from nla_lightning.data.datasets import derangement
from nla_lightning.evaluation.downstream_kl import fidelity_scores
from nla_lightning.evaluation.evaluator import evaluate_nla
from nla_lightning.evaluation.round_trip import round_trip
from tests.conftest import LAYER, fve_by_hand


@pytest.fixture(scope="module")
def warm_pair(warm_nla):
    av_dir, ar_dir, _ = warm_nla
    return ActivationVerbalizer.load(av_dir).eval(), ActivationReconstructor.load(ar_dir).eval()


def test_scores_are_the_round_trip_against_the_truth(warm_pair, colour_mapping):
    av, ar = warm_pair
    activations = colour_mapping[0][:24]
    scores = evaluate_nla(av, ar, activations, batch_size=10, max_new_tokens=16)
    trip = round_trip(av, ar, activations, batch_size=10, max_new_tokens=16, temperature=0.0)
    # Greedy decoding: the evaluator's explanations and predictions are the round trip's.
    assert scores.explanations == trip.explanations
    torch.testing.assert_close(scores.predicted, trip.predicted)
    assert scores.fve == pytest.approx(fve(trip.predicted, activations, av.meta.mse_scale))
    assert scores.failure_rate == trip.failures / 24
    assert scores.response_length == pytest.approx(trip.tokens / 24)
    # The warm start learned the colour mapping: its own activation beats another row's.
    assert scores.fve > scores.fve_shuffled + 0.2
    point = scores.curve_point()
    assert point["fve"] == scores.fve and "recall" not in point  # no toy snippets given


def test_the_greedy_shuffled_control_is_the_av_fed_the_shuffled_rows(warm_pair, colour_mapping):
    """At temperature 0 the control reuses the round trip's explanations in the shuffled order
    instead of sampling again: it equals sampling the shuffled rows (batches of 10, so rows
    land in other batches and other positions than in the round trip)."""
    av, ar = warm_pair
    activations = colour_mapping[0][:24]
    scores = evaluate_nla(av, ar, activations, batch_size=10, max_new_tokens=16, seed=3)
    shuffled = activations[derangement(24, 3)]
    control = round_trip(av, ar, shuffled, batch_size=10, max_new_tokens=16, temperature=0.0)
    assert scores.fve_shuffled == pytest.approx(
        fve(control.predicted, activations, av.meta.mse_scale), abs=1e-6
    )
    assert scores.fve_shuffled < scores.fve - 0.2


def test_warm_start_metrics_are_the_held_out_rows_numbers(
    warm_nla, warm_pair, colour_held_out, target_dir, toy_tokenizer
):
    """warm_nla's metrics are measured on its held-out rows (the mapping with noise the fits
    never saw, one batch of 64, shuffled control by derangement seed 0): recomputed by hand.
    Held out: AR FVE -1.325 before, 0.994 after (shuffled -1.037); AV loss 0.070 (shuffled
    0.422). On the training rows the after numbers were 0.994 (-0.998) and 0.070 (0.415)."""
    av, ar = warm_pair
    metrics = warm_nla[2]
    acts, texts = colour_held_out
    control = acts[derangement(len(acts), 0)]
    scale = ar.meta.mse_scale
    fresh = ActivationReconstructor.from_target(str(target_dir), toy_tokenizer, ar.meta)
    for name, model in (("ar_before", fresh), ("ar_after", ar)):
        predicted = model.eval().predict(texts)
        got = metrics[name]["val/fve"], metrics[name]["val/fve_shuffled"]
        by_hand = fve_by_hand(predicted, acts, scale), fve_by_hand(predicted, control, scale)
        assert got == pytest.approx(by_hand, abs=1e-5), name
    ids, mask = pad_right(encode_responses(av.tokenizer, texts), av.pad_id)
    with torch.no_grad():
        by_hand = float(av.sft_loss(acts, ids, mask)), float(av.sft_loss(control, ids, mask))
    got = metrics["av_after"]["val/loss"], metrics["av_after"]["val/loss_shuffled"]
    assert got == pytest.approx(by_hand, rel=1e-4)


def test_splicing_each_rows_own_activation_moves_nothing(target, toy_tokenizer):
    from nla_lightning.core.final_token import extract_final_token_activations

    texts = ["the red ball rolls .", "a blue cup", "the green tree grows tall ."] * 3
    activations, _ = extract_final_token_activations(
        target, toy_tokenizer, texts, LAYER, progress=False
    )
    rows = toy_tokenizer(texts, add_special_tokens=True)["input_ids"]
    scores = fidelity_scores(target, LAYER, rows, activations, activations, pad_id=0, seed=0)
    assert scores["rows"] == len(texts)
    assert scores["kl_nla"] < 1e-5  # h replaced by itself
    # The baselines really replace something: the mean direction and other rows' vectors.
    assert scores["kl_mean"] > 1e-3 and scores["kl_shuffled"] > 1e-3

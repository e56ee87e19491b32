"""The one evaluator (RL curve and eval stage) and downstream KL, on real tiny models."""

import pytest
import torch

from nla_lightning.core.metrics import fve
from nla_lightning.core.reconstructor import ActivationReconstructor
from nla_lightning.core.verbalizer import ActivationVerbalizer
from nla_lightning.evaluation.downstream_kl import fidelity_scores
from nla_lightning.evaluation.evaluator import evaluate_nla
from nla_lightning.evaluation.round_trip import round_trip
from tests.conftest import LAYER


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

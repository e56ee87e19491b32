"""NLA loading, activations, explain, reconstruct and score."""

from __future__ import annotations

import math
import shutil

import pytest
import torch

from nla_lightning.core.meta import NLAMeta
from nla_lightning.errors import NLAConfigError
from nla_lightning.inference import NLA


def test_activations_match_hidden_states(nla, text):
    tokens, acts = nla.activations(text)
    ids = nla.encode(text)
    hidden = nla.target(input_ids=ids, output_hidden_states=True).hidden_states[nla.layer + 1]
    assert len(tokens) == acts.shape[0] == ids.shape[1] == 6
    assert acts.shape[1] == nla.meta.d_model
    torch.testing.assert_close(acts, hidden[0].float())


def test_explain_every_token(nla, text):
    results = nla.explain(text, samples=2, max_new_tokens=6, batch_size=4, progress=False)
    assert [r.index for r in results] == list(range(6))
    # Each score by hand: 1 - MSE(AR(explanation), h) / the mean per-dim variance of the
    # text's activations, all at norm mse_scale; and the cosine of the two.
    _, acts = nla.activations(text)
    scale = nla.meta.mse_scale
    at_scale = acts.double() * (scale / acts.double().norm(dim=-1, keepdim=True))
    variance = float((at_scale - at_scale.mean(dim=0)).pow(2).mean())
    for r in results:
        assert len(r.explanations) == len(r.scores) == len(r.cosines) == 2
        assert all(math.isfinite(s) for s in r.scores + r.cosines)
        assert r.best in r.explanations
        predicted = nla.reconstruct_many(r.explanations).double()
        predicted = predicted * (scale / predicted.norm(dim=-1, keepdim=True))
        h = at_scale[r.index]
        scores = 1 - (predicted - h).pow(2).mean(dim=-1) / variance
        assert r.scores == pytest.approx(scores.tolist(), abs=1e-4)
        assert r.cosines == pytest.approx((predicted @ h / scale**2).tolist(), abs=1e-5)


def test_explain_chosen_tokens(nla, text):
    results = nla.explain(text, tokens=[4, 1], samples=1, max_new_tokens=4, progress=False)
    tokens, _ = nla.activations(text)
    assert [(r.index, r.token) for r in results] == [(4, tokens[4]), (1, tokens[1])]


def test_bad_inputs_raise(nla, text):
    with pytest.raises(NLAConfigError, match=r"0\.\.5"):
        nla.explain(text, tokens=[6], progress=False)
    with pytest.raises(NLAConfigError, match="empty"):
        nla.activations("")
    with pytest.raises(NLAConfigError, match="128"):
        nla.activations(" ".join(["red"] * 129))


def test_av_and_ar_of_other_layers_are_refused(quick_nla_dirs, target_dir, tmp_path):
    av_dir, ar_dir = quick_nla_dirs
    other = tmp_path / "ar"
    shutil.copytree(ar_dir, other)
    NLAMeta.load(other).with_updates(layer=1).save(other, kind="nla_model", role="ar")
    with pytest.raises(NLAConfigError, match="layer"):
        NLA.load(av_dir, other, target=str(target_dir))


def test_target_must_be_given_when_unknown(quick_nla_dirs):
    with pytest.raises(NLAConfigError, match="target="):
        NLA.load(*quick_nla_dirs)


def test_score_of_own_reconstruction_is_perfect(nla):
    explanation = "the colour is red ."
    predicted = nla.reconstruct(explanation)
    assert predicted.shape == (nla.meta.d_model,)
    scores = nla.score(predicted, explanation)
    assert scores["mse"] == pytest.approx(0.0, abs=1e-6)
    assert scores["cosine"] == pytest.approx(1.0, abs=1e-5)
    assert nla.score(-predicted, explanation)["cosine"] == pytest.approx(-1.0, abs=1e-5)

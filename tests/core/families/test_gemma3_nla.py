"""An NLA of the real Gemma-3-270m, made with nla_lightning and exported: the documented reader
sees the same AV input (the injected row at norm injection_scale after Gemma's sqrt(d) embedding
scale, one BOS), the same AV log-probs (responses closed by <end_of_turn>) and the same AR
predictions (AR inputs with their BOS)."""

from __future__ import annotations

import torch

from nla_lightning.core.interop import export_official
from nla_lightning.core.meta import build_meta
from nla_lightning.core.models import load_causal_lm, load_config, load_tokenizer
from nla_lightning.core.reconstructor import ActivationReconstructor
from nla_lightning.core.verbalizer import ActivationVerbalizer, encode_responses
from tests.core.interop.reference_client import ReferenceAR, load_nla_config
from tests.core.interop.release_pair import check_av_against_reference

LAYER = 3
EXPLANATIONS = ["A greeting at the start of a letter.", "the next word is likely 'world'"]


def test_gemma_nla_matches_the_documented_reader(gemma3_270m, tmp_path):
    path = str(gemma3_270m.path)
    tokenizer = load_tokenizer(path)
    meta = build_meta(tokenizer, load_config(path), "google/gemma-3-270m-it", LAYER, 60.0)
    assert (meta.injection_char, meta.injection_token_id) == ("㈜", 246566)
    av = ActivationVerbalizer(load_causal_lm(path), tokenizer, meta).eval()
    ar = ActivationReconstructor.from_target(path, tokenizer, meta).eval()
    assert av.prompt_ids.tolist().count(tokenizer.bos_token_id) == 1
    assert encode_responses(tokenizer, ["x"])[0][-1] == tokenizer.convert_tokens_to_ids(
        "<end_of_turn>"
    )
    av.save(tmp_path / "ours" / "av")
    ar.save(tmp_path / "ours" / "ar")
    av_dir, ar_dir = export_official(tmp_path / "ours" / "av", tmp_path / "ours" / "ar", tmp_path)

    assert load_nla_config(av_dir, tokenizer)["injection_scale"] == 60.0
    check_av_against_reference(av, av_dir, EXPLANATIONS[0], seed=5)
    reference = ReferenceAR(ar_dir)
    assert reference.input_ids(EXPLANATIONS[0])[0] == tokenizer.bos_token_id
    with torch.no_grad():
        mine = ar.predict(EXPLANATIONS)
    theirs = torch.stack([reference.reconstruct(e) for e in EXPLANATIONS])
    torch.testing.assert_close(mine, theirs, atol=1e-4, rtol=1e-4)

"""An NLA made and saved by nla_lightning is already in the release's layout: the documented
reader accepts it as saved and after export, and reproduces its AR predictions and AV log-probs."""

from __future__ import annotations

import json
import math

import pytest
import torch
from safetensors import safe_open

from nla_lightning.core.interop import export_official
from nla_lightning.core.meta import build_meta
from nla_lightning.core.models import load_causal_lm, load_config
from nla_lightning.core.reconstructor import ActivationReconstructor
from nla_lightning.core.verbalizer import ActivationVerbalizer
from tests.core.interop.reference_client import ReferenceAR, load_nla_config
from tests.core.interop.release_pair import (
    AR_TEMPLATE,
    AV_TEMPLATE,
    LAYER,
    check_av_against_reference,
)

EXPLANATIONS = ["A cat on a warm windowsill.", "the next token is likely a closing bracket"]


@pytest.fixture(scope="module")
def ours(qwen_target, qwen_tokenizer, tmp_path_factory):
    """An AV and an AR made with nla_lightning's API from the tiny target, saved to disk."""
    meta = build_meta(
        qwen_tokenizer,
        load_config(str(qwen_target)),
        base_model="tiny-qwen",
        layer=LAYER,
        injection_scale=3.0,
        actor_template=AV_TEMPLATE,
        critic_template=AR_TEMPLATE,
    )
    out = tmp_path_factory.mktemp("ours")
    ar = ActivationReconstructor.from_target(str(qwen_target), qwen_tokenizer, meta)
    with torch.no_grad():
        generator = torch.Generator().manual_seed(2)
        ar.head.weight.add_(0.05 * torch.randn(meta.d_model, meta.d_model, generator=generator))
    ar.save(out / "ar")
    av = ActivationVerbalizer(load_causal_lm(str(qwen_target)), qwen_tokenizer, meta)
    av.save(out / "av")
    return av.eval(), ar.eval(), out


@pytest.mark.parametrize("exported", [False, True])
def test_documented_reader_reproduces_our_numbers(ours, tmp_path, exported):
    av, ar, out = ours
    av_dir, ar_dir = out / "av", out / "ar"
    if exported:
        av_dir, ar_dir = export_official(av_dir, ar_dir, tmp_path / "release")
    config = load_nla_config(av_dir, av.tokenizer)
    assert config["injection_scale"] == 3.0 and config["d_model"] == av.meta.d_model

    reference = ReferenceAR(ar_dir)
    assert reference.mse_scale == pytest.approx(math.sqrt(av.meta.d_model))
    with torch.no_grad():
        mine = ar.predict(EXPLANATIONS)
    theirs = torch.stack([reference.reconstruct(e) for e in EXPLANATIONS])
    torch.testing.assert_close(mine, theirs, atol=1e-5, rtol=1e-5)

    check_av_against_reference(av, av_dir, EXPLANATIONS[0], seed=4)


def test_ar_directory_holds_only_embeddings_and_blocks(ours):
    _, _, out = ours
    config = json.loads((out / "ar" / "config.json").read_text())
    assert config["num_hidden_layers"] == LAYER + 1
    assert config["architectures"] == ["Qwen2ForCausalLM"]
    with safe_open(str(out / "ar" / "model.safetensors"), framework="pt") as f:
        keys = set(f.keys())
    assert "model.embed_tokens.weight" in keys
    assert not any(k.startswith(("lm_head", "model.norm")) for k in keys)
    assert {k.split(".")[2] for k in keys if k.startswith("model.layers.")} == {
        str(i) for i in range(LAYER + 1)
    }

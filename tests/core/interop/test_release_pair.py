"""Released and officially trained pairs, written from the documented layout, import; their
numbers through nla_lightning equal a reader written to the documentation."""

from __future__ import annotations

import shutil

import pytest
import torch
import yaml

from nla_lightning.core.interop import import_official
from nla_lightning.core.meta import NLAMeta
from nla_lightning.core.reconstructor import ActivationReconstructor
from nla_lightning.core.sidecar import read_pair
from nla_lightning.core.verbalizer import ActivationVerbalizer
from nla_lightning.errors import NLAConfigError
from tests.core.interop.reference_client import ReferenceAR
from tests.core.interop.release_pair import (
    INJECTION_SCALE,
    LAYER,
    check_av_against_reference,
    write_release_pair,
    write_sidecar,
)

EXPLANATIONS = [
    "The text is about a cat sleeping on a warm windowsill.",
    "A recipe step: stir the sauce slowly; the next word is likely 'until'",
    "Code: a Python function returning a list</",
]


@pytest.fixture(params=["release", "trainer"])
def pair(request, qwen_target, qwen_tokenizer, tmp_path):
    return write_release_pair(qwen_target, qwen_tokenizer, tmp_path / "given", request.param)


def test_pair_imports_with_each_side_completed_from_the_other(pair, tmp_path):
    av_dir, ar_dir = pair
    av_out, ar_out = import_official(av_dir, ar_dir, tmp_path / "ours")
    av_meta, ar_meta = NLAMeta.load(av_out), NLAMeta.load(ar_out)
    assert av_meta == ar_meta.with_updates(injection_scale=INJECTION_SCALE)
    assert av_meta.layer == LAYER and av_meta.injection_scale == INJECTION_SCALE
    # The AR's file records no injection scale (it never injects), as the release writes it.
    assert ar_meta.injection_scale is None
    written = yaml.safe_load((ar_out / "nla_meta.yaml").read_text(encoding="utf-8"))
    assert written["role"] == "ar" and written["critic"] == {"extraction_layer_index": LAYER}


def test_imported_pair_reproduces_the_documented_numbers(pair, tmp_path):
    av_dir, ar_dir = pair
    av_out, ar_out = import_official(av_dir, ar_dir, tmp_path / "ours")
    av_meta, ar_meta = read_pair(av_out, ar_out)
    ar = ActivationReconstructor.load(ar_out, meta=ar_meta).eval()
    reference = ReferenceAR(ar_dir)
    with torch.no_grad():
        ours = ar.predict(EXPLANATIONS[:2])
    expected = torch.stack([reference.reconstruct(e) for e in EXPLANATIONS[:2]])
    torch.testing.assert_close(ours, expected, atol=1e-5, rtol=1e-5)

    av = ActivationVerbalizer.load(av_out, meta=av_meta).eval()
    # Our AV on the imported files against the documented reader on the given ones.
    check_av_against_reference(av, av_dir, EXPLANATIONS[0], seed=3)


def test_trainer_av_alone_asks_for_its_partner(qwen_target, qwen_tokenizer, tmp_path):
    av_dir, ar_dir = write_release_pair(qwen_target, qwen_tokenizer, tmp_path, "trainer")
    with pytest.raises(NLAConfigError, match="records no layer") as err:
        NLAMeta.load(av_dir)
    assert str(av_dir / "nla_meta.yaml") in str(err.value)
    assert NLAMeta.load(av_dir, partner=ar_dir).layer == LAYER


@pytest.mark.parametrize(
    ("section", "key", "value", "named"),
    [
        (None, "extraction_layer_index", LAYER + 1, "layer"),
        (None, "d_model", 32, "d_model"),
        ("tokens", "injection_token_id", 5, "injection_token_id"),
        ("prompt_templates", "ar", "Explain: {explanation} <summary>", "prompt_templates.ar"),
    ],
)
def test_partners_that_disagree_are_refused(
    qwen_target, qwen_tokenizer, tmp_path, section, key, value, named
):
    av_dir, ar_dir = write_release_pair(qwen_target, qwen_tokenizer, tmp_path, "release")
    data = yaml.safe_load((ar_dir / "nla_meta.yaml").read_text(encoding="utf-8"))
    (data if section is None else data[section])[key] = value
    if key == "extraction_layer_index":
        data["critic"][key] = value
    write_sidecar(ar_dir, data)
    with pytest.raises(NLAConfigError, match=named) as err:
        import_official(av_dir, ar_dir, tmp_path / "out")
    assert "ar" in str(err.value).lower()
    assert not (tmp_path / "out").exists()


@pytest.mark.parametrize(
    ("section", "spellings", "named"),
    [
        ("tokens", ["injection_left_neighbor_id"], "tokens.injection_left_neighbor_id"),
        ("prompt_templates", ["av"], "prompt_templates.av"),
        (None, ["d_model"], "d_model"),
    ],
)
def test_a_field_in_no_spelling_is_named_with_its_file(
    qwen_target, qwen_tokenizer, tmp_path, section, spellings, named
):
    av_dir, ar_dir = write_release_pair(qwen_target, qwen_tokenizer, tmp_path, "release")
    for directory in (av_dir, ar_dir):
        data = yaml.safe_load((directory / "nla_meta.yaml").read_text(encoding="utf-8"))
        for key in spellings:
            (data if section is None else data[section]).pop(key)
        write_sidecar(directory, data)
    with pytest.raises(NLAConfigError, match="missing required NLA metadata") as err:
        read_pair(av_dir, ar_dir)
    assert named in str(err.value) and "nla_meta.yaml" in str(err.value)


def test_swapped_roles_and_lora_are_refused(qwen_target, qwen_tokenizer, tmp_path):
    av_dir, ar_dir = write_release_pair(qwen_target, qwen_tokenizer, tmp_path, "release")
    with pytest.raises(NLAConfigError, match="passed as the AV"):
        import_official(ar_dir, av_dir, tmp_path / "out")
    lora = tmp_path / "lora"
    shutil.copytree(av_dir, lora)
    (lora / "adapter_config.json").write_text('{"base_model_name_or_path": "x"}')
    with pytest.raises(NLAConfigError, match="merge"):
        import_official(lora, ar_dir, tmp_path / "out")

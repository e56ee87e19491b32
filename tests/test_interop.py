"""Conversion between our checkpoint layout and the official release layout."""

from __future__ import annotations

import json
import shutil
from pathlib import Path
from typing import Any

import pytest
import torch
import yaml
from safetensors.torch import save_file

from nla_lightning.errors import NLAConfigError
from nla_lightning.interop import export_official, import_official, read_official_meta
from nla_lightning.meta import META_FILENAME, NLAMeta
from nla_lightning.reconstructor import VALUE_HEAD_FILENAME, ActivationReconstructor
from nla_lightning.verbalizer import ActivationVerbalizer, encode_responses

EXPLANATIONS = ["the colour is red .", "the colour is blue and green .", "pink"]


def official_meta(meta: NLAMeta, role: str, layer: int | None = None) -> dict[str, Any]:
    """A release-style meta: neighbour_ids pair, top-level d_model, no base_model or layer_index
    for the AR (only critic.extraction_layer_index)."""
    layer = meta.layer if layer is None else layer
    data: dict[str, Any] = {
        "kind": "nla_model",
        "role": role,
        "d_model": meta.d_model,
        "extraction": {
            "injection_scale": meta.injection_scale,
            "mse_scale": meta.mse_scale,
        },
        "tokens": {
            "injection_char": meta.injection_char,
            "injection_token_id": meta.injection_token_id,
            "neighbour_ids": [meta.left_neighbour_id, meta.right_neighbour_id],
            "critic_suffix_ids": list(meta.critic_suffix_ids),
        },
        "prompt_templates": {"actor": meta.actor_template, "critic": meta.critic_template},
    }
    if role == "ar":
        data["critic"] = {"extraction_layer_index": layer}
    else:
        data["extraction"]["layer_index"] = layer
    return data


def write_yaml(data: dict[str, Any], directory: Path) -> None:
    directory.mkdir(parents=True, exist_ok=True)
    (directory / META_FILENAME).write_text(yaml.safe_dump(data, allow_unicode=True), "utf-8")


def official_av(target_dir: Path, meta: NLAMeta, path: Path) -> Path:
    """An official AV: the target's HF files plus a release-style meta."""
    shutil.copytree(target_dir, path)
    write_yaml(official_meta(meta, "av"), path)
    return path


def official_ar(target_dir: Path, tokenizer: Any, meta: NLAMeta, path: Path, layer: int) -> Any:
    """An official AR written by hand: a truncated causal LM with a non-trivial final norm (so a
    converter that kept it would be caught), a random head and a release-style meta."""
    from transformers import AutoConfig, AutoModelForCausalLM

    config = AutoConfig.from_pretrained(target_dir)
    config.num_hidden_layers = layer + 1
    if getattr(config, "layer_types", None) is not None:
        config.layer_types = config.layer_types[: layer + 1]
    model = AutoModelForCausalLM.from_pretrained(target_dir, config=config).eval()
    with torch.no_grad():
        model.model.norm.weight.mul_(3.0).add_(0.5)
    model.save_pretrained(path)
    tokenizer.save_pretrained(path)
    head = torch.randn(meta.d_model, meta.d_model, generator=torch.Generator().manual_seed(1))
    save_file({"weight": head}, str(path / VALUE_HEAD_FILENAME))
    write_yaml(official_meta(meta, "ar", layer), path)
    return model, head


@pytest.fixture(scope="module")
def ours(target_dir, toy_tokenizer, meta, tmp_path_factory) -> tuple[Path, Path]:
    """Our AV and AR (perturbed head and last block, so no fresh start can match them)."""
    from nla_lightning.models import load_causal_lm

    out = tmp_path_factory.mktemp("ours")
    av = ActivationVerbalizer(load_causal_lm(str(target_dir)), toy_tokenizer, meta)
    av.save(out / "av")
    ar = ActivationReconstructor.from_target(str(target_dir), toy_tokenizer, meta)
    generator = torch.Generator().manual_seed(0)
    with torch.no_grad():
        ar.head.weight.add_(0.3 * torch.randn(ar.head.weight.shape, generator=generator))
        block = ar.backbone.layers[meta.layer].mlp.down_proj.weight
        block.add_(0.05 * torch.randn(block.shape, generator=generator))
    ar.save(out / "ar")
    return out / "av", out / "ar"


def av_logprobs(av: ActivationVerbalizer) -> torch.Tensor:
    from nla_lightning.padding import pad_right

    acts = torch.randn(
        len(EXPLANATIONS), av.meta.d_model, generator=torch.Generator().manual_seed(2)
    )
    ids, mask = pad_right(encode_responses(av.tokenizer, EXPLANATIONS), av.pad_id)
    return av.response_logprobs(acts, ids, mask)


@torch.no_grad()
def test_round_trip_keeps_predictions(ours, tmp_path):
    av_dir, ar_dir = ours
    off_av, off_ar = export_official(av_dir, ar_dir, tmp_path / "official")

    config = json.loads((off_ar / "config.json").read_text())
    assert config["num_hidden_layers"] == NLAMeta.load(ar_dir).layer + 1
    assert config["architectures"][0].endswith("ForCausalLM")
    ar_yaml = yaml.safe_load((off_ar / META_FILENAME).read_text())
    assert ar_yaml["critic"]["extraction_layer_index"] == NLAMeta.load(ar_dir).layer
    av_yaml = yaml.safe_load((off_av / META_FILENAME).read_text())
    meta = NLAMeta.load(av_dir)
    assert av_yaml["tokens"]["neighbour_ids"] == [meta.left_neighbour_id, meta.right_neighbour_id]
    assert read_official_meta(off_ar) == NLAMeta.load(ar_dir)

    back_av, back_ar = import_official(off_av, off_ar, tmp_path / "back")
    before = ActivationReconstructor.load(ar_dir).eval().predict(EXPLANATIONS)
    after = ActivationReconstructor.load(back_ar).eval().predict(EXPLANATIONS)
    torch.testing.assert_close(after, before, rtol=0, atol=0)
    lp_before = av_logprobs(ActivationVerbalizer.load(av_dir).eval())
    lp_after = av_logprobs(ActivationVerbalizer.load(back_av).eval())
    torch.testing.assert_close(lp_after, lp_before, rtol=0, atol=0)


@torch.no_grad()
def test_import_handwritten_official_ar(target_dir, toy_tokenizer, meta, tmp_path):
    av_dir = official_av(target_dir, meta, tmp_path / "off_av")
    model, head = official_ar(target_dir, toy_tokenizer, meta, tmp_path / "off_ar", meta.layer)
    _, ar_dir = import_official(av_dir, tmp_path / "off_ar", tmp_path / "ours")

    ar = ActivationReconstructor.load(ar_dir).eval()
    assert ar.meta.base_model == "unknown" and ar.meta.layer == meta.layer
    captured = []

    def grab(_module, _args, output):
        # Decoder layers return a tensor or a tuple whose first item is the hidden state.
        captured.append(output[0] if isinstance(output, tuple) else output)

    handle = model.model.layers[meta.layer].register_forward_hook(grab)
    try:
        for explanation, ids in zip(EXPLANATIONS, ar.encode(EXPLANATIONS), strict=True):
            captured.clear()
            model(input_ids=torch.tensor([ids]))
            expected = captured[0][0, -1] @ head.T
            got = ar.predict([explanation])[0]
            torch.testing.assert_close(got, expected, rtol=1e-5, atol=1e-5)
    finally:
        handle.remove()


@pytest.mark.parametrize(
    ("drop", "missing"),
    [
        (("extraction", "mse_scale"), "extraction.mse_scale"),
        (("tokens", "neighbour_ids"), "tokens.left_neighbour_id"),
        (("critic", "extraction_layer_index"), "critic.extraction_layer_index"),
        (("d_model",), "d_model"),
    ],
)
def test_missing_fields_are_named(meta, tmp_path, drop, missing):
    data = official_meta(meta, "ar")
    read_official_meta(write_and_return(data, tmp_path / "ok"))  # the full file reads
    node = data
    for key in drop[:-1]:
        node = node[key]
    del node[drop[-1]]
    with pytest.raises(NLAConfigError, match="missing required") as info:
        read_official_meta(write_and_return(data, tmp_path / "bad"))
    assert missing in str(info.value)


@pytest.mark.parametrize(
    "spelling",
    [
        {"left_neighbour_id": 11, "right_neighbour_id": 12},
        {"left_neighbor_id": 11, "right_neighbor_id": 12},
        {"neighbour_ids": [11, 12]},
    ],
)
def test_neighbour_spellings(meta, tmp_path, spelling):
    data = official_meta(meta, "av")
    del data["tokens"]["neighbour_ids"]
    data["tokens"].update(spelling)
    read = read_official_meta(write_and_return(data, tmp_path))
    assert (read.left_neighbour_id, read.right_neighbour_id) == (11, 12)
    assert read.d_model == meta.d_model and read.base_model == "unknown"


def write_and_return(data: dict[str, Any], directory: Path) -> Path:
    write_yaml(data, directory)
    return directory


def test_layer_mismatch_is_refused(target_dir, toy_tokenizer, meta, tmp_path):
    av_dir = official_av(target_dir, meta, tmp_path / "off_av")
    official_ar(target_dir, toy_tokenizer, meta, tmp_path / "off_ar", meta.layer - 1)
    with pytest.raises(NLAConfigError, match="layer"):
        import_official(av_dir, tmp_path / "off_ar", tmp_path / "ours")
    assert not (tmp_path / "ours" / "ar").exists()


def test_lora_checkpoint_is_refused(ours, tmp_path):
    av_dir, ar_dir = ours
    lora_ar = tmp_path / "ar"
    shutil.copytree(ar_dir, lora_ar)
    (lora_ar / "adapter_config.json").write_text("{}")
    with pytest.raises(NLAConfigError, match="merge"):
        export_official(av_dir, lora_ar, tmp_path / "official")

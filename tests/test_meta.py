import re

import pytest
import yaml

from nla_lightning.errors import NLAConfigError
from nla_lightning.meta import NLAMeta, build_meta


def test_round_trip_keeps_every_field(meta, tmp_path):
    path = meta.save(tmp_path, kind="nla_model", role="ar")
    assert path.name == "nla_meta.yaml"
    assert NLAMeta.load(tmp_path) == meta


def test_yaml_uses_official_field_names(meta, tmp_path):
    data = yaml.safe_load(meta.save(tmp_path / "x.nla_meta.yaml", kind="nla_dataset").read_text())
    assert data["kind"] == "nla_dataset"
    assert set(data["extraction"]) >= {
        "base_model",
        "d_model",
        "layer_index",
        "injection_scale",
        "mse_scale",
    }
    assert set(data["tokens"]) >= {"injection_char", "injection_token_id", "critic_suffix_ids"}
    assert set(data["prompt_templates"]) == {"actor", "critic"}
    ar = yaml.safe_load(meta.save(tmp_path, kind="nla_model", role="ar").read_text())
    assert ar["role"] == "ar" and ar["critic"] == {"extraction_layer_index": meta.layer}


def test_mse_scale_defaults_to_sqrt_d_model(meta):
    assert meta.mse_scale == pytest.approx(meta.d_model**0.5)


def test_injection_token_is_single_and_between_neighbours(meta, toy_tokenizer):
    assert toy_tokenizer.encode(meta.injection_char, add_special_tokens=False) == [
        meta.injection_token_id
    ]
    assert toy_tokenizer.convert_ids_to_tokens(
        [meta.left_neighbour_id, meta.right_neighbour_id]
    ) == ["<concept>", "</concept>"]


def test_layer_out_of_range_is_refused(meta):
    with pytest.raises(NLAConfigError, match="out of range"):
        meta.with_updates(layer=4)


def test_template_with_repeated_injection_char_is_refused(toy_tokenizer, target_dir):
    from nla_lightning.models import load_config

    with pytest.raises(NLAConfigError, match="exactly once"):
        build_meta(
            toy_tokenizer,
            load_config(str(target_dir)),
            "m",
            2,
            1.0,
            actor_template="Explain <concept>{injection_char}</concept> {injection_char}",
            injection_char="㊗",
        )


def test_template_without_injection_char_is_refused(meta):
    with pytest.raises(NLAConfigError, match="injection_char"):
        meta.with_updates(actor_template="Explain the vector .")


def test_other_tokenizer_is_refused(meta):
    from nla_lightning.toy.tokenizer import build_toy_tokenizer

    other = build_toy_tokenizer(extra_texts=["zebra giraffe okapi " * 3, "Explain the vector"])
    with pytest.raises(NLAConfigError, match="another model"):
        meta.check_tokenizer(other)


def test_d_model_mismatch_is_refused(meta, target):
    target.config.hidden_size = 32
    with pytest.raises(NLAConfigError, match="d_model mismatch"):
        meta.check_model(target.config)


def test_missing_and_corrupt_files_say_what_is_wrong(tmp_path):
    with pytest.raises(NLAConfigError, match="sidecar"):
        NLAMeta.load(tmp_path)
    (tmp_path / "nla_meta.yaml").write_text("kind: nla_model\nextraction: {d_model: 3}\n")
    with pytest.raises(NLAConfigError, match="not a valid nla_meta"):
        NLAMeta.load(tmp_path)
    (tmp_path / "nla_meta.yaml").write_text("kind: [unclosed\n")
    with pytest.raises(NLAConfigError, match="not valid YAML"):
        NLAMeta.load(tmp_path)


def test_compatibility_check_names_the_difference(meta):
    with pytest.raises(NLAConfigError, match="layer"):
        meta.check_compatible(meta.with_updates(layer=1))
    with pytest.raises(NLAConfigError, match="d_model"):
        meta.check_compatible(meta.with_updates(d_model=32))


@pytest.mark.parametrize(
    ("char", "reason"),
    [("qqq", "'qqq' -> \\[1\\]"), ("Explain", "found 2 times"), ("red blue", "-> \\[")],
)
def test_bad_injection_char_is_refused(toy_tokenizer, target_dir, char, reason):
    from nla_lightning.models import load_config
    from nla_lightning.pipeline import templates

    actor, _ = templates("toy")
    with pytest.raises(NLAConfigError, match="no injection character") as err:
        build_meta(
            toy_tokenizer,
            load_config(str(target_dir)),
            "m",
            2,
            1.0,
            actor_template=actor,
            injection_char=char,
        )
    assert char in str(err.value)
    assert re.search(reason, str(err.value))

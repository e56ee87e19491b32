import re

import pytest
import yaml

from nla_lightning.core.meta import NLAMeta, build_meta
from nla_lightning.errors import NLAConfigError


def test_round_trip_keeps_every_field(meta, tmp_path):
    path = meta.save(tmp_path, kind="nla_model", role="av")
    assert path.name == "nla_meta.yaml"
    assert NLAMeta.load(tmp_path) == meta


def test_model_sidecars_use_the_release_spelling(meta, tmp_path):
    av = yaml.safe_load(meta.save(tmp_path, kind="nla_model", role="av", stage="rl").read_text())
    assert av["kind"] == "nla_model" and av["schema_version"] == 2
    assert (av["role"], av["stage"], av["d_model"]) == ("av", "rl", meta.d_model)
    assert av["base_checkpoint"] == meta.base_model
    assert av["extraction"] == {"injection_scale": 1.0, "mse_scale": meta.mse_scale}
    assert av["tokens"] == {
        "injection_char": meta.injection_char,
        "injection_token_id": meta.injection_token_id,
        "injection_left_neighbor_id": meta.left_neighbour_id,
        "injection_right_neighbor_id": meta.right_neighbour_id,
        "critic_suffix_ids": list(meta.critic_suffix_ids),
    }
    assert av["prompt_templates"] == {"av": meta.actor_template, "ar": meta.critic_template}
    assert av["extraction_layer_index"] == meta.layer and "critic" not in av
    ar = yaml.safe_load(meta.save(tmp_path, kind="nla_model", role="ar").read_text())
    assert ar["role"] == "ar" and ar["critic"] == {"extraction_layer_index": meta.layer}
    # The AR never injects: the release writes null there.
    assert ar["extraction"]["injection_scale"] is None
    assert NLAMeta.load(tmp_path).injection_scale is None


def test_dataset_sidecars_use_the_release_spelling(meta, tmp_path):
    path = meta.save(tmp_path / "x.nla_meta.yaml", kind="nla_dataset", stage="rl", row_count=7)
    data = yaml.safe_load(path.read_text())
    assert (data["kind"], data["schema_version"], data["stage"], data["row_count"]) == (
        "nla_dataset",
        1,
        "rl",
        7,
    )
    # Exactly the release's extraction fields: no injection scale (a training setting), and
    # mse_scale left out because it is the default sqrt(d_model).
    assert set(data["extraction"]) == {
        "base_model",
        "d_model",
        "layer_index",
        "norm",
        "corpus",
        "corpus_slice",
        "positions_per_doc",
    }
    assert data["extraction"]["norm"] == "none"
    assert set(data["prompt_templates"]) == {"actor", "critic"}
    read = NLAMeta.load(path)
    assert read.injection_scale is None and read.mse_scale == pytest.approx(meta.d_model**0.5)
    assert read.with_updates(injection_scale=meta.injection_scale) == meta


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
    from nla_lightning.core.models import load_config

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


def test_other_tokenizer_is_refused(meta, target):
    from nla_lightning.core.templates import templates
    from nla_lightning.toy.tokenizer import build_toy_tokenizer

    other = build_toy_tokenizer(extra_texts=[*templates("toy"), "qwzx plmok vrtyu"])
    with pytest.raises(NLAConfigError, match="another model"):
        meta.check_tokenizer(other, target.config)
    with pytest.raises(NLAConfigError, match="another model"):
        meta.with_updates(injection_token_id=meta.injection_token_id + 1).check_tokenizer(other)


def test_d_model_mismatch_is_refused(meta, target):
    target.config.hidden_size = 32
    with pytest.raises(NLAConfigError, match="d_model mismatch"):
        meta.check_model(target.config)


def test_missing_and_corrupt_files_say_what_is_wrong(tmp_path):
    with pytest.raises(NLAConfigError, match="sidecar"):
        NLAMeta.load(tmp_path)
    (tmp_path / "nla_meta.yaml").write_text("kind: nla_model\nextraction: {d_model: 3}\n")
    with pytest.raises(NLAConfigError, match="missing required NLA metadata") as err:
        NLAMeta.load(tmp_path)
    assert "tokens.injection_char" in str(err.value) and "nla_meta.yaml" in str(err.value)
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
    from nla_lightning.core.models import load_config
    from nla_lightning.core.templates import templates

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

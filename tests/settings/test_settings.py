"""The typed settings are the one source of defaults, and a bad value is refused, by key, before
any model loads."""

from __future__ import annotations

from dataclasses import asdict

import pytest

from nla_lightning.errors import NLAConfigError
from nla_lightning.settings import EvalSettings, RLSettings, WarmStartSettings, validate
from nla_lightning.settings.run import REFUSED_TRAINER_KEYS
from tests.conftest import compose, plain


def test_composed_defaults_are_the_dataclass_defaults(tmp_path):
    cfg = plain([], tmp_path)
    assert cfg["rl"] == asdict(RLSettings(seed=cfg["seed"]))
    assert cfg["sft"] == asdict(WarmStartSettings())
    assert cfg["eval"] == asdict(EvalSettings())
    # ...and the validated settings hold exactly those values.
    settings = validate(cfg)
    assert settings.rl == RLSettings(seed=cfg["seed"])
    assert settings.sft == WarmStartSettings() and settings.eval == EvalSettings()


def test_a_command_line_value_reaches_the_typed_settings(tmp_path):
    settings = validate(plain(["rl.beta=0.05", "sft.ar.lr=0.002", "seed=7"], tmp_path))
    assert settings.rl.beta == 0.05 and settings.rl.seed == 7
    assert settings.sft.ar.lr == 0.002
    assert settings.sft.av.lr == WarmStartSettings().av.lr  # the other side keeps its default


@pytest.mark.parametrize(
    ("override", "key"),
    [
        ("rl.group_size=0", "rl.group_size"),
        ("rl.clip_eps=1.5", "rl.clip_eps"),
        ("rl.aggregation=sum", "rl.aggregation"),
        ("rl.reward=mse", "rl.reward"),
        ("rl.gradient_clip_val=-1", "rl.gradient_clip_val"),
        ("rl.beta=-0.1", "rl.beta"),
        ("sft.av.lr=0", "sft.av.lr"),
        ("eval.rows=0", "eval.rows"),
        ("layer=99", "layer"),
        ("model.train.av_mode=half", "model.train.av_mode"),
        ("model.injection_scale=-2", "model.injection_scale"),
        ("stage.run=[rl,bogus]", "bogus"),
        ("stage.run=[rl,rl]", "twice"),
    ],
)
def test_each_bad_value_is_refused_naming_its_key(override, key, tmp_path):
    with pytest.raises(NLAConfigError) as err:
        validate(plain([override], tmp_path))
    assert key in str(err.value)
    assert not any(tmp_path.iterdir()), "validation must not write anything"


def test_a_wrong_type_fails_when_composed():
    with pytest.raises(Exception, match="rl.steps|steps"):
        compose(["rl.steps=many"])


def test_an_unknown_key_is_refused_with_the_known_ones(tmp_path):
    with pytest.raises(NLAConfigError, match="clip_value.*gradient_clip_val"):
        validate(plain(["+rl.clip_value=1.0"], tmp_path))


@pytest.mark.parametrize("key", sorted(REFUSED_TRAINER_KEYS))
def test_trainer_keys_a_stage_cannot_honour_are_refused(key, tmp_path):
    with pytest.raises(NLAConfigError) as err:
        validate(plain([f"+trainer.{key}=1"], tmp_path))
    message = str(err.value)
    assert f"trainer.{key}" in message and "instead" in message


def test_beta_without_a_reference_is_refused(tmp_path):
    with pytest.raises(NLAConfigError, match="reference"):
        validate(plain(["model.train.reference=none"], tmp_path))
    # Without RL in the run, the same setting is harmless.
    validate(plain(["model.train.reference=none", "stage=warm_start"], tmp_path))

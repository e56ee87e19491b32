"""The typed settings are the one source of defaults, and a bad value is refused, by key, before
any model loads."""

from __future__ import annotations

from dataclasses import asdict
from pathlib import Path

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
        ("rl.reward=mse", "rl.reward"),
        ("rl.gradient_clip_val=-1", "rl.gradient_clip_val"),
        ("rl.beta=-0.1", "rl.beta"),
        ("sft.av.lr=0", "sft.av.lr"),
        ("eval.rows=0", "eval.rows"),
        ("layer=99", "layer"),
        ("model.train.av_mode=half", "model.train.av_mode"),
        ("model.injection_scale=-2", "model.injection_scale"),
        ("rl.kl_estimator=k2", "rl.kl_estimator"),
        ("rl.aggregation=mean", "rl.aggregation"),
        ("rl.adam_betas=[0.9,1.0]", "rl.adam_betas[1]"),
        ("rl.adam_betas=[0.9]", "rl.adam_betas"),
        ("rl.av_lr=0", "rl.av_lr"),
        ("rl.gradient_clip_val=0", "rl.gradient_clip_val"),
        ("sft.av.lr_schedule=linear", "sft.av.lr_schedule"),
        ("sft.ar.accumulate_grad_batches=0", "sft.ar.accumulate_grad_batches"),
        ("model.injection_scale=median", "model.injection_scale"),
        ("model.train.reference=bf16", "model.train.reference"),
        ("data.fractions={av_sft:0.3,ar_sft:0.3,rl:0.3,eval:0.2}", "sum to 1"),
        ("data.fractions={av_sft:0.5,ar_sft:0.4,rl:0.0,eval:0.1}", "data.fractions.rl"),
        ("data.n_docs=5", "data.fractions"),
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


# The release's recipe, written from method.md ("The official recipe"), not from our configs.
RELEASE_RL = {
    "batch_size": 128,
    "group_size": 4,
    "av_lr": 1e-5,
    "ar_lr": 5e-5,
    "kl_estimator": "k1",
    "beta": 0.01,
    "scale_by_std": True,
    "aggregation": "sequence_mean",
    "gradient_clip_val": 1.0,
    "adam_betas": [0.9, 0.95],
    "max_new_tokens": 150,
    "reward": "neg_mse",
    "clip_eps": 0.2,
    "warmup_steps": 0,
}


def test_the_release_experiment_is_the_release_recipe(tmp_path):
    settings = validate(plain(["experiment=qwen7b_release"], tmp_path))
    for key, value in RELEASE_RL.items():
        assert getattr(settings.rl, key) == value, key
    assert settings.layer == 20 and settings.model["injection_scale"] == 150
    assert settings.model["train"]["av_mode"] == settings.model["train"]["ar_mode"] == "full"
    assert settings.model["dtype"] == "bfloat16"
    assert (settings.sft.av.lr, settings.sft.ar.lr) == (5e-5, 1e-4)
    for side in (settings.sft.av, settings.sft.ar):
        assert side.lr_schedule == "constant" and side.gradient_clip_val == 1.0
        assert side.batch_size * side.accumulate_grad_batches == 256
    data = settings.data
    assert (data.prefixes_per_doc, data.min_tokens - 1, data.max_tokens) == (10, 50, 4096)


def test_real_model_presets_do_not_inherit_toy_values(tmp_path):
    toy = validate(plain([], tmp_path))
    for model in ("qwen", "qwen_small", "llama", "gemma"):
        real = validate(plain([f"model={model}"], tmp_path))
        assert real.rl.av_lr < toy.rl.av_lr and real.sft.av.lr < toy.sft.av.lr, model
        assert real.sft.ar.lr <= 1e-4, model  # the identity-initialised d x d head stays near it
        assert real.rl.scale_by_std and real.rl.kl_estimator == "k1", model
        assert real.rl.gradient_clip_val == 1.0 and real.rl.adam_betas == [0.9, 0.95], model
    qwen = validate(plain(["model=qwen"], tmp_path))
    assert qwen.layer == 20 and qwen.model["injection_scale"] == 150
    # A group chosen on the command line still wins over the preset's.
    assert validate(plain(["model=qwen", "rl=default"], tmp_path)).rl == toy.rl


CONF = Path(__file__).resolve().parents[2] / "conf"
# Options that need a corpus to validate (and, unless they choose one, a writer that can
# summarise it).
CORPUS = ["data=corpus", "data.builtin=python_reference"]
# Groups whose options each become one case; finetune is chosen at model.train.
GROUPS = {
    "rl": "rl",
    "sft": "sft",
    "eval": "eval",
    "data": "data",
    "experiment": "experiment",
    "debug": "debug",
    "model": "model",
    "finetune": "finetune@model.train",
    "writer": "writer",
    "trainer": "trainer",
    "logger": "logger",
}


def preset_overrides() -> list[list[str]]:
    """Every option of every config group whose keys reach a typed schema, as overrides."""
    cases = []
    for group, target in GROUPS.items():
        for path in sorted((CONF / group).glob("*.yaml")):
            option = f"{target}={path.stem}"
            text = path.read_text()
            if group == "writer":
                extra = [] if path.stem == "template" else CORPUS
            elif path.stem == "corpus" or (group == "experiment" and "/data: corpus" in text):
                extra = [*CORPUS, *([] if "override /writer" in text else ["writer=openai"])]
            else:
                extra = []
            cases.append([option, *extra])
    return cases


@pytest.mark.parametrize("overrides", preset_overrides(), ids=" ".join)
def test_every_preset_validates_so_each_of_its_keys_has_a_schema_entry(overrides, tmp_path):
    # A key a YAML file sets but no settings dataclass declares is refused by name here.
    settings = validate(plain(overrides, tmp_path))
    assert settings.rl.steps > 0 and settings.sft.av.max_steps > 0

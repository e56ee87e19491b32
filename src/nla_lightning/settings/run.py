"""A composed config checked as a whole (`validate`), before any model or data loads."""

from __future__ import annotations

import math
from dataclasses import asdict, dataclass, fields
from pathlib import Path
from typing import Any

from nla_lightning.core.injection_scale import check_setting as check_injection_scale
from nla_lightning.core.layers import check_layer
from nla_lightning.core.lora import TRAIN_MODES
from nla_lightning.core.models import DTYPES
from nla_lightning.core.templates import TEMPLATES
from nla_lightning.errors import NLAConfigError
from nla_lightning.settings import checks
from nla_lightning.settings.data import DATA_SETTINGS, CorpusDataSettings, ToyDataSettings
from nla_lightning.settings.evaluation import EvalSettings
from nla_lightning.settings.rl import RLSettings
from nla_lightning.settings.sft import SFTSettings, WarmStartSettings

# The stage names, in the order a whole run takes them (stages/ has one module each).
STAGE_NAMES = ("target", "data", "av_sft", "ar_sft", "rl", "eval")
# The RL stage's KL reference, the frozen warm-start AV: a separate NF4 copy (quantized_4bit),
# a separate copy in the training dtype (frozen, the release's), the LoRA-trained AV with its
# adapters off (adapter), or no KL (none).
REFERENCE_MODES = ("quantized_4bit", "frozen", "adapter", "none")
# Trainer keys that would change the optimisation: each stage takes them from its own group
# (SFT clips through Lightning, RL clips itself under manual optimisation), so one set here
# would be honoured by some stages and silently dropped by others.
REFUSED_TRAINER_KEYS = {
    "gradient_clip_val": "sft.av.gradient_clip_val, sft.ar.gradient_clip_val or "
    "rl.gradient_clip_val",
    "gradient_clip_algorithm": "the stages clip by norm",
    "accumulate_grad_batches": "sft.av.accumulate_grad_batches, sft.ar.accumulate_grad_batches "
    "or rl.av_micro_batch / rl.ar_micro_batch (same update, less memory)",
    "max_steps": "sft.av.max_steps, sft.ar.max_steps or rl.steps",
    "max_epochs": "sft.av.max_steps, sft.ar.max_steps or rl.steps",
}


@dataclass
class RunSettings:
    """What a run does: its stages and every stage's typed settings; the blocks that are
    handed on as they are (model, trainer, writer, logger) were checked here too."""

    stages: list[str]
    layer: int
    seed: int
    from_run: Path | None
    ckpt_path: str | None
    output_dir: Path
    sft: WarmStartSettings
    rl: RLSettings
    eval: EvalSettings
    data: ToyDataSettings | CorpusDataSettings
    model: dict[str, Any]
    trainer: dict[str, Any]
    writer: dict[str, Any]
    logger: dict[str, Any] | None
    cache_dir: str | None
    verbose: bool = False


def _build(kind: type, values: dict[str, Any] | None, key: str) -> Any:
    """A settings dataclass from a config block; an unknown key names its block."""
    values = dict(values or {})
    known = {f.name for f in fields(kind)}
    unknown = sorted(set(values) - known)
    if unknown:
        raise NLAConfigError(f"{key} has unknown keys {unknown}: the keys are {sorted(known)}")
    return kind(**values)


def _warm_start(values: dict[str, Any] | None) -> WarmStartSettings:
    """sft.av and sft.ar; a key left out keeps that side's own default."""
    values = dict(values or {})
    unknown = sorted(set(values) - {"av", "ar"})
    if unknown:
        raise NLAConfigError(f"sft has unknown keys {unknown}: the keys are ['ar', 'av']")
    defaults = WarmStartSettings()
    sides = {}
    for side in ("av", "ar"):
        given = _build(SFTSettings, values.get(side), f"sft.{side}")  # checks the keys
        del given
        sides[side] = SFTSettings(**{**asdict(getattr(defaults, side)), **(values.get(side) or {})})
    return WarmStartSettings(**sides)


def check_stages(stages: Any) -> list[str]:
    if not stages or isinstance(stages, str):
        raise NLAConfigError(
            f"stage.run={stages!r}: expected a list of stages from {list(STAGE_NAMES)}, "
            "e.g. stage.run=[target,data,av_sft]"
        )
    stages = list(stages)
    unknown = [s for s in stages if s not in STAGE_NAMES]
    if unknown:
        raise NLAConfigError(
            f"stage.run has unknown stages {unknown}: choose from {list(STAGE_NAMES)}"
        )
    repeated = sorted({s for s in stages if stages.count(s) > 1})
    if repeated:
        raise NLAConfigError(f"stage.run names {repeated} twice: each stage runs once per run")
    return stages


# The split each stage trains or evaluates on (data.fractions names them).
SPLIT_OF_STAGE = {"av_sft": "av_sft", "ar_sft": "ar_sft", "rl": "rl", "eval": "eval"}


def check_splits(stages: list[str], data: ToyDataSettings | CorpusDataSettings) -> None:
    """A run that makes its data must give each of its stages' splits some documents."""
    if "data" not in stages:
        return
    for stage_name in stages:
        split = SPLIT_OF_STAGE.get(stage_name)
        if split is None:
            continue
        fraction = data.fractions.get(split, 0.0)
        if fraction <= 0:
            raise NLAConfigError(
                f"data.fractions.{split}={fraction}: stage {stage_name} trains or evaluates on "
                f"that split, so it would be empty; give it a fraction > 0 (and lower another "
                "so the fractions still sum to 1), or drop the stage from stage.run"
            )
        if data.n_docs is not None and data.n_docs * fraction < 1:
            raise NLAConfigError(
                f"data.fractions.{split}={fraction} of data.n_docs={data.n_docs} documents is "
                f"less than one document: the {split} split would be empty; raise data.n_docs "
                f"to at least {math.ceil(1 / fraction)} or the fraction"
            )


def check_model(model: dict[str, Any]) -> None:
    checks.one_of("model.source", model.get("source"), ("toy", "hub"))
    checks.one_of("model.templates", model.get("templates"), sorted(TEMPLATES))
    checks.one_of("model.dtype", model.get("dtype"), sorted(DTYPES))
    check_injection_scale("model.injection_scale", model.get("injection_scale"))
    if model.get("mse_scale") is not None:
        checks.positive("model.mse_scale", model["mse_scale"])
    train = model.get("train") or {}
    checks.one_of("model.train.av_mode", train.get("av_mode"), TRAIN_MODES)
    checks.one_of("model.train.ar_mode", train.get("ar_mode"), TRAIN_MODES)
    checks.one_of("model.train.reference", train.get("reference"), REFERENCE_MODES)
    checks.positive("model.train.lora_rank", train.get("lora_rank"))
    if train["reference"] == "adapter" and train["av_mode"] == "full":
        raise NLAConfigError(
            "model.train.reference=adapter needs a LoRA-trained AV (model.train.av_mode=lora or "
            "qlora): a fully fine-tuned AV has no frozen base to fall back on"
        )


def check_writer(data: str, writer: str) -> None:
    """The summary writer must be able to serve the data."""
    if data == "toy" and writer != "template":
        raise NLAConfigError("data=toy is summarised by writer=template (its ground truth)")
    if data == "corpus" and writer == "template":
        raise NLAConfigError(
            "writer=template only knows the toy world: for data=corpus choose writer=local, "
            "writer=openai or writer=anthropic"
        )


def check_trainer(trainer: dict[str, Any]) -> None:
    for key, instead in REFUSED_TRAINER_KEYS.items():
        if trainer.get(key) is not None:
            raise NLAConfigError(
                f"trainer.{key}={trainer[key]!r} is not honoured by every stage: set {instead} "
                "instead"
            )


def validate(cfg: dict[str, Any]) -> RunSettings:
    """Every setting of a composed (plain dict) config, checked; one line per mistake."""
    stages = check_stages(cfg["stage"]["run"])
    model = cfg["model"]
    check_model(model)
    check_layer(cfg["layer"], model.get("num_layers"), model["name"])
    data_name = cfg["data"].get("name")
    checks.one_of("data.name", data_name, sorted(DATA_SETTINGS))
    check_writer(data_name, cfg["writer"]["name"])
    check_trainer(cfg["trainer"])
    rl = _build(RLSettings, {**cfg.get("rl", {}), "seed": cfg["seed"]}, "rl")
    if rl.beta > 0 and model["train"]["reference"] == "none" and "rl" in stages:
        raise NLAConfigError(
            "rl.beta > 0 needs a reference policy: set model.train.reference to quantized_4bit "
            "or adapter, or rl.beta=0"
        )
    data = _build(DATA_SETTINGS[data_name], cfg["data"], "data")
    check_splits(stages, data)
    from_run = cfg.get("from_run")
    if from_run is not None and not Path(from_run).is_dir():
        raise NLAConfigError(f"from_run={from_run}: no such run directory")
    return RunSettings(
        stages=stages,
        layer=cfg["layer"],
        seed=cfg["seed"],
        from_run=Path(from_run) if from_run else None,
        ckpt_path=cfg.get("ckpt_path"),
        output_dir=Path(cfg["paths"]["output_dir"]),
        sft=_warm_start(cfg.get("sft")),
        rl=rl,
        eval=_build(EvalSettings, cfg.get("eval"), "eval"),
        data=data,
        model=model,
        trainer=cfg["trainer"],
        writer=cfg["writer"],
        logger=cfg.get("logger") or None,
        cache_dir=cfg["paths"].get("cache_dir"),
        verbose=checks.boolean("verbose", cfg.get("verbose", False)),
    )

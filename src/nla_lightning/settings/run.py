"""A composed config checked as a whole (`validate`), before any model or data loads."""

from __future__ import annotations

import math
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

from nla_lightning.core.layers import check_layer
from nla_lightning.errors import NLAConfigError
from nla_lightning.settings import checks
from nla_lightning.settings.data import DATA_SETTINGS, CorpusDataSettings, ToyDataSettings
from nla_lightning.settings.evaluation import EvalSettings
from nla_lightning.settings.logger import logger_settings
from nla_lightning.settings.model import REFERENCE_MODES, model_settings
from nla_lightning.settings.rl import RLSettings
from nla_lightning.settings.sft import SFTSettings, WarmStartSettings
from nla_lightning.settings.trainer import REFUSED_TRAINER_KEYS, trainer_settings
from nla_lightning.settings.writer import writer_settings

# Imported from here by other modules (training/, tests); their schemas hold them.
__all__ = ["REFERENCE_MODES", "REFUSED_TRAINER_KEYS", "RunSettings", "STAGE_NAMES", "validate"]

# The stage names, in the order a whole run takes them (stages/ has one module each).
STAGE_NAMES = ("target", "data", "av_sft", "ar_sft", "rl", "eval")


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


def _warm_start(values: dict[str, Any] | None) -> WarmStartSettings:
    """sft.av and sft.ar; a key left out keeps that side's own default."""
    values = dict(values or {})
    unknown = sorted(set(values) - {"av", "ar"})
    if unknown:
        raise NLAConfigError(f"sft has unknown keys {unknown}: the keys are ['ar', 'av']")
    defaults = WarmStartSettings()
    sides = {}
    for side in ("av", "ar"):
        checks.block(SFTSettings, values.get(side), f"sft.{side}")  # checks the keys
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


def validate(cfg: dict[str, Any]) -> RunSettings:
    """Every setting of a composed (plain dict) config, checked; one line per mistake."""
    stages = check_stages(cfg["stage"]["run"])
    # Every key of the blocks handed on as dicts (model, writer, trainer) passes a schema.
    model = model_settings(cfg["model"])
    check_layer(cfg["layer"], model.num_layers, model.name)
    data_name = cfg["data"].get("name")
    checks.one_of("data.name", data_name, sorted(DATA_SETTINGS))
    writer_settings(data_name, cfg["writer"])
    trainer_settings(cfg["trainer"])
    rl = checks.block(RLSettings, {**cfg.get("rl", {}), "seed": cfg["seed"]}, "rl")
    if rl.beta > 0 and model.train.reference == "none" and "rl" in stages:
        raise NLAConfigError(
            "rl.beta > 0 needs a reference policy: set model.train.reference to quantized_4bit "
            "or adapter, or rl.beta=0"
        )
    data = checks.block(DATA_SETTINGS[data_name], cfg["data"], "data")
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
        eval=checks.block(EvalSettings, cfg.get("eval"), "eval"),
        data=data,
        model=cfg["model"],
        trainer=cfg["trainer"],
        writer=cfg["writer"],
        logger=logger_settings(cfg.get("logger")),
        cache_dir=cfg["paths"].get("cache_dir"),
        verbose=checks.boolean("verbose", cfg.get("verbose", False)),
    )

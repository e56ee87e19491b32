"""The RL stage as the pipeline runs it: load the warm start, train jointly, evaluate, export."""

from __future__ import annotations

import dataclasses
import time
from pathlib import Path
from typing import Any

import lightning as L

from nla_lightning.checkpointing import AtomicCheckpointIO, RLCheckpoint
from nla_lightning.data.store import read_activations
from nla_lightning.errors import NLAConfigError
from nla_lightning.eval_stage import toy_snippets
from nla_lightning.evaluation import evaluate_nla
from nla_lightning.held_out import HeldOutCurve, log_held_out
from nla_lightning.lora import (
    add_lora,
    check_mode,
    gradient_checkpointing,
    is_adapter_dir,
    weights_of,
)
from nla_lightning.memory import estimate_memory
from nla_lightning.meta import NLAMeta
from nla_lightning.models import load_config
from nla_lightning.modules.rl import (
    REFERENCE_ADAPTER,
    NLARLModule,
    ReferencePolicy,
    RLHyperparams,
)
from nla_lightning.reconstructor import ActivationReconstructor
from nla_lightning.training import device_of, make_logger
from nla_lightning.verbalizer import ActivationVerbalizer


def rl_hyperparams(rl_cfg: dict[str, Any], seed: int) -> RLHyperparams:
    names = {f.name for f in dataclasses.fields(RLHyperparams)}
    return RLHyperparams(**{k: v for k, v in rl_cfg.items() if k in names}, seed=seed)


def memory_report(base_model: str, meta: NLAMeta, train: dict[str, Any], hp: RLHyperparams):
    """The per-component GPU memory estimate printed before anything big is loaded."""
    config = load_config(weights_of(base_model))
    estimate = estimate_memory(
        config,
        meta.layer,
        av_mode=train["av_mode"],
        ar_mode=train["ar_mode"],
        reference=train["reference"],
        dtype_bytes=2 if train["dtype"] in ("bfloat16", "float16") else 4,
        lora_rank=train["lora_rank"],
        micro_batch=hp.av_micro_batch or hp.batch_size * hp.group_size,
        seq_len=hp.max_new_tokens + 128,
        rollout_batch=hp.batch_size * hp.group_size,
        gradient_checkpointing=train["gradient_checkpointing"],
    )
    print(f"\nEstimated GPU memory for RL at layer {meta.layer}:\n{estimate.table()}")
    return estimate


def build_av(av_dir: Path, train: dict[str, Any], device: str) -> tuple[ActivationVerbalizer, Any]:
    """The trainable AV (full, LoRA or QLoRA) and its frozen reference."""
    check_mode(train["av_mode"], "av")
    mode, reference = train["av_mode"], train["reference"]
    lora_warm_start = is_adapter_dir(av_dir)
    if lora_warm_start and mode == "full":
        raise NLAConfigError(
            f"{av_dir} is a LoRA warm start: train it with model.train.av_mode=lora or qlora"
        )
    av = ActivationVerbalizer.load(
        av_dir,
        dtype=train["dtype"],
        device=device,
        quantize_4bit=mode == "qlora",
        trainable=True,
    )
    if lora_warm_start:
        # Keep training the warm-start adapter; a frozen copy of it is the KL reference.
        av.model.load_adapter(str(av_dir), adapter_name=REFERENCE_ADAPTER, is_trainable=False)
        av.model.set_adapter("default")
    elif mode != "full":
        av.model = add_lora(av.model, rank=train["lora_rank"], alpha=2 * train["lora_rank"])
    elif reference == "adapter":
        raise NLAConfigError(
            "reference=adapter needs a LoRA-trained AV (model.train.av_mode=lora or qlora): a "
            "fully fine-tuned AV has no frozen base to fall back on"
        )
    if train["gradient_checkpointing"]:
        gradient_checkpointing(av.model)
    frozen = None
    if reference == "quantized_4bit":
        frozen = ActivationVerbalizer.load(
            av_dir, dtype=train["dtype"], device=device, quantize_4bit=True
        )
    return av, ReferencePolicy(reference, frozen)


def build_ar(ar_dir: Path, train: dict[str, Any], device: str) -> ActivationReconstructor:
    """The trainable AR: full, LoRA, or LoRA on a 4-bit backbone (QLoRA)."""
    check_mode(train["ar_mode"], "ar")
    ar = ActivationReconstructor.load(
        ar_dir,
        dtype=train["dtype"],
        device=device,
        quantize_4bit=train["ar_mode"] == "qlora",
        trainable=True,
    )
    if train["ar_mode"] != "full" and not is_adapter_dir(ar_dir):
        ar.enable_lora(train["lora_rank"])
    if train["gradient_checkpointing"]:
        gradient_checkpointing(ar.backbone)
    return ar


def train_rl(
    cfg: dict[str, Any],
    meta: NLAMeta,
    av_dir: Path,
    ar_dir: Path,
    paths: dict[str, Path],
    out_dir: Path,
) -> dict[str, Any]:
    """Joint RL from a warm start; returns held-out FVE before and after, and the control."""
    started = time.time()
    rl_cfg, train = cfg["stage"]["rl"], cfg["model"]["train"]
    hp = rl_hyperparams(rl_cfg, cfg["seed"])
    device = device_of(cfg["trainer"])
    if train["estimate_memory"]:
        memory_report(str(av_dir), meta, train, hp)
    av, reference = build_av(av_dir, train, device)
    ar = build_ar(ar_dir, train, device)
    rl_data = read_activations(paths["rl"], expect=meta)
    eval_table = read_activations(paths["eval"], expect=meta)
    held_out = eval_table.activations[: rl_cfg["eval_rows"]]
    snippets = toy_snippets({k: v[: len(held_out)] for k, v in eval_table.columns.items()})
    # Scored like the eval stage (same decoding), so the curve ends where eval.json starts.
    temperature = cfg["stage"].get("eval", {}).get("temperature", 1.0)
    evaluate = lambda: evaluate_nla(  # noqa: E731
        av,
        ar,
        held_out,
        max_new_tokens=hp.max_new_tokens,
        seed=cfg["seed"],
        temperature=temperature,
        snippets=snippets,
    )
    before = evaluate()
    module = NLARLModule(
        av, ar, rl_data.activations, hp, reference, examples_path=out_dir / "rl_examples.jsonl"
    )
    logger = make_logger(cfg, out_dir, "rl") or False
    curve = HeldOutCurve(evaluate, rl_cfg.get("eval_every", 0), start=before)
    options = {k: v for k, v in cfg["trainer"].items() if k not in ("gradient_clip_val",)}
    trainer = L.Trainer(
        max_epochs=-1,
        logger=logger,
        callbacks=[
            curve,
            RLCheckpoint(
                out_dir / "rl_checkpoints",
                rl_cfg["checkpoint_every"],
                out_dir / "rl_exports" if rl_cfg["export_every_checkpoint"] else None,
            ),
        ],
        plugins=[AtomicCheckpointIO()],
        enable_checkpointing=False,
        enable_model_summary=False,
        default_root_dir=str(out_dir),
        **options,
    )
    trainer.fit(module, ckpt_path=cfg.get("ckpt_path"))
    after = evaluate()
    log_held_out(logger, module.steps_done, after)
    exports = module.export(out_dir / "checkpoints" / "rl")
    return {
        "fve_start": before["fve"],
        "fve_shuffled_start": before["fve_shuffled"],
        "fve": after["fve"],
        "fve_shuffled": after["fve_shuffled"],
        "failure_rate": after["failure_rate"],
        "response_length": after["response_length"],
        "steps": module.steps_done,
        "eval_rows": len(held_out),
        # Spawned ranks keep their callback's points: then the curve is before and after.
        "curve": [*(curve.curve or [{"step": 0, **before}]), {"step": module.steps_done, **after}],
        "checkpoints": {k: str(v) for k, v in exports.items()},
        "wall_s": round(time.time() - started, 1),
    }

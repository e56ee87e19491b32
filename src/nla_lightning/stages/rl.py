"""Stage `rl`: joint RL from the warm start (GRPO for the AV, a regression step for the AR,
KL to the frozen warm start), with a held-out curve, resumable checkpoints and the result
exported to checkpoints/rl/{av,ar} in the release's layout."""

from __future__ import annotations

import time
from functools import partial
from typing import Any

import lightning as L

from nla_lightning.data.store import read_activations
from nla_lightning.data.toy import toy_snippets
from nla_lightning.evaluation.evaluator import evaluate_nla
from nla_lightning.settings import RunSettings
from nla_lightning.stages.context import Need, StageContext
from nla_lightning.training.builders import rl_ar, rl_av
from nla_lightning.training.callbacks import HeldOutCurve, log_held_out
from nla_lightning.training.checkpointing import AtomicCheckpointIO, RLCheckpoint
from nla_lightning.training.memory import rl_estimate
from nla_lightning.training.progress import StageProgress, module_steps
from nla_lightning.training.resumable import existing
from nla_lightning.training.rl import NLARLModule
from nla_lightning.training.sharded_strategy import resolve_strategy
from nla_lightning.training.trainer import device_of, make_logger, stage_bar

NAME = "rl"


def needs(settings: RunSettings) -> list[Need]:
    return [
        Need.all_of("the warm start", "av_sft and ar_sft", "checkpoints/av", "checkpoints/ar"),
        Need.all_of("the RL and eval data", "data", "data/rl.parquet", "data/eval.parquet"),
    ]


def makes(settings: RunSettings) -> list[str]:
    return ["checkpoints/rl/av", "checkpoints/rl/ar"]


def run(ctx: StageContext) -> dict[str, Any]:
    settings, hp = ctx.settings, ctx.settings.rl
    started = time.time()
    train, device = settings.model["train"], device_of(settings.trainer)
    av_dir, ar_dir = ctx.require("checkpoints/av"), ctx.require("checkpoints/ar")
    meta = ctx.load_meta()
    # A GPU's budget: on the CPU (the toy world) the table only repeats zeros.
    if train["estimate_memory"] and device != "cpu":
        estimate = rl_estimate(str(av_dir), meta.layer, train, hp)
        print(f"\nEstimated GPU memory for RL at layer {meta.layer}:\n{estimate.table()}")
    av, reference = rl_av(av_dir, train, device)
    ar = rl_ar(ar_dir, train, device)
    rl_data = read_activations(ctx.split("rl"), expect=meta)
    eval_table = read_activations(ctx.split("eval"), expect=meta)
    held_out = eval_table.activations[: hp.eval_rows]
    snippets = toy_snippets({k: v[: len(held_out)] for k, v in eval_table.columns.items()})

    # Decoded like the eval stage, so the curve ends where eval.json starts. A partial, not a
    # closure: spawned (or launched) ranks receive the curve's callback pickled.
    evaluate = partial(
        curve_point,
        av,
        ar,
        held_out,
        max_new_tokens=hp.max_new_tokens,
        seed=settings.seed,
        temperature=settings.eval.temperature,
        snippets=snippets,
    )
    before = evaluate()
    module = NLARLModule(
        av, ar, rl_data.activations, hp, reference, examples_path=ctx.run.rl_examples
    )
    logger = make_logger(settings.logger, ctx.run.root, NAME) or False
    curve = HeldOutCurve(evaluate, hp.eval_every, start=before)
    checkpoints = RLCheckpoint(
        ctx.run.rl_checkpoints,
        hp.checkpoint_every,
        ctx.run.rl_exports if hp.export_every_checkpoint else None,
    )
    options = resolve_strategy(dict(settings.trainer))
    bar = StageProgress("rl", hp.steps, "fve", done=module_steps)
    last = ctx.run.rl_checkpoints / "last.ckpt"
    stop = ctx.graceful_stop(NAME, on_stop=checkpoints.save, checkpoint=last)
    trainer = L.Trainer(
        max_epochs=-1,
        logger=logger,
        callbacks=[curve, checkpoints, stop, *stage_bar(options, bar)],
        plugins=[AtomicCheckpointIO()],
        enable_checkpointing=False,
        enable_model_summary=False,
        default_root_dir=str(ctx.run.root),
        **options,
    )
    # This run's own checkpoint (an earlier start of it was cut off) before ckpt_path.
    trainer.fit(module, ckpt_path=existing(last) or settings.ckpt_path)
    after = evaluate()
    log_held_out(logger, module.steps_done, after)
    exports = module.export(ctx.run.nla("rl")[0].parent)
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


def curve_point(*args: Any, **kwargs: Any) -> dict[str, float]:
    """One point of the held-out curve: `evaluate_nla(*args, **kwargs)`'s curve numbers."""
    return evaluate_nla(*args, **kwargs).curve_point()

"""Stage `eval`: every NLA of the run on held-out data, written to eval.json.

For each checkpoint pair (the warm start, and the RL result when there is one): the round-trip
FVE of AR(AV(h)) and its shuffled control, the attribute recall/precision/confabulation of the
explanations (toy world), and downstream fidelity: the KL of the target's next-token
distribution when h is replaced by AR(AV(h)), beside the mean-vector and shuffled replacements.
Evaluating another run (stage=eval from_run=DIR) also writes eval.json into that run."""

from __future__ import annotations

import json
import time
from typing import Any

import torch

from nla_lightning.core.meta import NLAMeta
from nla_lightning.core.metrics import mean_baseline_fve
from nla_lightning.core.models import load_causal_lm
from nla_lightning.core.reconstructor import ActivationReconstructor
from nla_lightning.core.verbalizer import ActivationVerbalizer
from nla_lightning.data.store import read_activations
from nla_lightning.data.toy import toy_snippets
from nla_lightning.errors import NLAConfigError
from nla_lightning.evaluation.downstream_kl import fidelity_scores
from nla_lightning.evaluation.evaluator import evaluate_nla
from nla_lightning.settings import RunSettings
from nla_lightning.stages.context import Need, StageContext
from nla_lightning.stages.run_dir import CONDITIONS
from nla_lightning.training.trainer import device_of

NAME = "eval"
EXAMPLES = 5


def needs(settings: RunSettings) -> list[Need]:
    pairs = tuple(tuple(f"checkpoints/{p}" for p in pair) for pair in CONDITIONS.values())
    found = [
        Need("a trained NLA", pairs, "av_sft and ar_sft, or rl"),
        Need.all_of("the held-out data", "data", "data/eval.parquet"),
    ]
    if settings.eval.fidelity_rows and settings.model["source"] == "toy":
        found.append(Need.all_of("the toy target (for fidelity)", "target", "target"))
    return found


def makes(settings: RunSettings) -> list[str]:
    return ["eval.json"]


def run(ctx: StageContext) -> dict[str, Any]:
    started = time.time()
    settings = ctx.settings
    hp, device = settings.eval, device_of(settings.trainer)
    # The NLAs of from_run, then this run's (the newer wins for a condition both hold).
    pairs = {**(ctx.source.pairs() if ctx.source else {}), **ctx.run.pairs()}
    if not pairs:
        raise NLAConfigError("no trained NLA (checkpoints/av and checkpoints/ar) to evaluate")
    meta = ctx.load_meta()
    table = read_activations(ctx.split("eval"), expect=meta)
    n = min(hp.rows, len(table))
    activations = table.activations[:n].clone()
    columns = {k: v[:n] for k, v in table.columns.items()}
    snippets = toy_snippets(columns)
    fidelity = _fidelity_inputs(ctx, meta, columns, device) if hp.fidelity_rows else None
    report: dict[str, Any] = {
        "model": meta.base_model,
        "layer": meta.layer,
        "eval_rows": n,
        "fve": {},
        "attributes": {},
        "fidelity": {},
    }
    train_split = ctx.find("data/ar_sft.parquet") or ctx.find("data/rl.parquet")
    if train_split is not None:
        train_acts = read_activations(train_split, expect=meta).activations
        report["fve"]["mean_baseline"] = mean_baseline_fve(train_acts, activations, meta.mse_scale)
    dtype = settings.model["train"]["dtype"]
    for condition, (av_dir, ar_dir) in pairs.items():
        av = ActivationVerbalizer.load(av_dir, dtype=dtype, device=device).eval()
        ar = ActivationReconstructor.load(ar_dir, dtype=dtype, device=device).eval()
        scores = evaluate_nla(
            av,
            ar,
            activations,
            batch_size=hp.batch_size,
            max_new_tokens=hp.max_new_tokens,
            temperature=hp.temperature,
            seed=settings.seed,
            snippets=snippets,
        )
        report["fve"][condition] = {
            "fve": scores.fve,
            "fve_shuffled": scores.fve_shuffled,
            "failure_rate": scores.failure_rate,
        }
        if scores.attributes is not None:
            report["attributes"][condition] = scores.attributes
            # The control: the latest AV, fed another row's activation.
            report["attributes"]["shuffled"] = scores.attributes_shuffled
        if fidelity is not None:
            target, rows, pad_id = fidelity
            report["fidelity"][condition] = fidelity_scores(
                target,
                meta.layer,
                rows,
                activations,
                scores.predicted,
                pad_id=pad_id,
                batch_size=hp.batch_size,
                seed=settings.seed,
            )
        texts = [s.text for s in snippets] if snippets else columns.get("text")
        report.setdefault("examples", {})[condition] = [
            {"text": texts[i] if texts else None, "explanation": e}
            for i, e in enumerate(scores.explanations[:EXAMPLES])
        ]
        del av, ar
    report["wall_s"] = round(time.time() - started, 1)
    text = json.dumps(report, indent=2)
    ctx.run.eval_json.parent.mkdir(parents=True, exist_ok=True)
    ctx.run.eval_json.write_text(text)
    if ctx.source is not None and settings.stages == [NAME]:
        ctx.source.eval_json.write_text(text)
    return report


def _fidelity_inputs(
    ctx: StageContext, meta: NLAMeta, columns: dict[str, list], device: str
) -> tuple[torch.nn.Module, list[list[int]], int] | None:
    """The target and the first eval.fidelity_rows held-out texts as it reads them."""
    if "text" not in columns:
        return None
    target = ctx.load_target()
    model = load_causal_lm(target.path, dtype=ctx.settings.model["train"]["dtype"], device=device)
    meta.check_model(model.config)
    texts = list(columns["text"])[: ctx.settings.eval.fidelity_rows]
    # As extracted (method.md, "Tokenisation protocol"): the text column has no BOS in it.
    rows = target.tokenizer(texts, add_special_tokens=True)["input_ids"]
    return model.eval(), rows, target.tokenizer.pad_token_id or 0

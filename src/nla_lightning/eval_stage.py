"""stage=eval: the whole NLA on held-out data, before and after RL, written to eval.json.

For each checkpoint pair of a run (the warm start, and the RL result when there is one): the
round-trip FVE of AR(AV(h)) and its shuffled control, the attribute recall/precision/
confabulation of the explanations (toy world), and downstream fidelity: the KL of the target's
next-token distribution when h is replaced by AR(AV(h)), beside the mean-vector and shuffled
replacements."""

from __future__ import annotations

import json
import time
from pathlib import Path
from typing import Any

import torch

from nla_lightning.activations import normalise
from nla_lightning.data.datasets import derangement
from nla_lightning.data.store import read_activations
from nla_lightning.errors import NLAConfigError
from nla_lightning.evaluation import round_trip
from nla_lightning.inference.fidelity import last_token_kl
from nla_lightning.meta import NLAMeta
from nla_lightning.metrics import fve, mean_baseline_fve
from nla_lightning.models import load_causal_lm, load_tokenizer
from nla_lightning.reconstructor import ActivationReconstructor
from nla_lightning.training import device_of
from nla_lightning.verbalizer import ActivationVerbalizer

CHECKPOINTS = {"warm_start": ("av", "ar"), "rl": ("rl/av", "rl/ar")}


def checkpoint_pairs(run_dir: Path) -> dict[str, tuple[Path, Path]]:
    """The (AV, AR) directories a run holds, by condition (none for a run without an NLA)."""
    pairs = {}
    for condition, (av, ar) in CHECKPOINTS.items():
        av_dir, ar_dir = run_dir / "checkpoints" / av, run_dir / "checkpoints" / ar
        if av_dir.exists() and ar_dir.exists():
            pairs[condition] = (av_dir, ar_dir)
    return pairs


def target_path(cfg: dict[str, Any], run_dir: Path) -> str:
    """The toy target lives in its run; a real one is where the config says."""
    model = cfg["model"]
    if model["source"] == "toy":
        return str(run_dir / "target")
    return model.get("path") or model["name"]


def toy_snippets(columns: dict[str, list[Any]]) -> list | None:
    """Ground-truth snippets of a toy-world split, None for other data."""
    if "ground_truth" not in columns:
        return None
    from nla_lightning.toy.world import Snippet

    return [
        Snippet.from_ground_truth(text, truth)
        for text, truth in zip(columns["text"], columns["ground_truth"], strict=True)
    ]


def evaluate_pair(
    av_dir: Path,
    ar_dir: Path,
    activations: torch.Tensor,
    snippets: list | None,
    target: torch.nn.Module | None,
    rows: list[list[int]] | None,
    eval_cfg: dict[str, Any],
    train: dict[str, Any],
    device: str,
    seed: int,
) -> dict[str, Any]:
    """Every score of one (AV, AR) pair on the same held-out rows."""
    kwargs = {"dtype": train["dtype"], "device": device}
    av = ActivationVerbalizer.load(av_dir, **kwargs).eval()
    ar = ActivationReconstructor.load(ar_dir, **kwargs).eval()
    meta = av.meta
    shuffle = derangement(len(activations), seed)
    size = eval_cfg["batch_size"]
    decoding = {
        "batch_size": size,
        "max_new_tokens": eval_cfg["max_new_tokens"],
        "temperature": eval_cfg.get("temperature", 0.0),
    }
    torch.manual_seed(seed)
    trip = round_trip(av, ar, activations, **decoding)
    shuffled_trip = round_trip(av, ar, activations[shuffle], **decoding)
    explanations, predicted = trip.explanations, trip.predicted
    result: dict[str, Any] = {
        "fve": fve(predicted, activations, meta.mse_scale),
        "fve_shuffled": fve(shuffled_trip.predicted, activations, meta.mse_scale),
        "failure_rate": trip.failures / len(explanations),
        "examples": [
            {"text": s.text if snippets else None, "explanation": e}
            for s, e in zip(snippets or [None] * 3, explanations[:3], strict=False)
        ],
    }
    if snippets is not None:
        from nla_lightning.toy.scoring import score_attributes

        result["attributes"] = score_attributes(explanations, snippets)
        result["attributes_shuffled"] = score_attributes(shuffled_trip.explanations, snippets)
    if target is not None and rows is not None:
        n = min(eval_cfg["fidelity_rows"], len(rows))
        norms = activations[:n].norm(dim=-1, keepdim=True)
        at_norm = lambda v: normalise(v[:n].float(), 1.0) * norms  # noqa: E731
        mean = normalise(activations.float(), 1.0).mean(dim=0, keepdim=True).expand(n, -1)
        kl = last_token_kl(
            target,
            meta.layer,
            rows[:n],
            {
                "kl_nla": at_norm(predicted),
                "kl_mean": at_norm(mean),
                "kl_shuffled": at_norm(predicted[derangement(n, seed)]),
            },
            pad_id=eval_cfg.get("pad_id", 0),
            batch_size=size,
        )
        result["fidelity"] = {name: float(v.mean()) for name, v in kl.items()}
        result["fidelity"]["rows"] = n
    return result


def evaluate_run(
    cfg: dict[str, Any],
    meta: NLAMeta,
    paths: dict[str, Path],
    pairs: dict[str, tuple[Path, Path]],
    run_dir: Path,
    out_dir: Path,
) -> dict[str, Any]:
    """Evaluate each (AV, AR) pair on the eval split of `run_dir`; writes out_dir/eval.json."""
    started = time.time()
    eval_cfg, train = cfg["stage"]["eval"], cfg["model"]["train"]
    device = device_of(cfg["trainer"])
    if not pairs:
        raise NLAConfigError(
            f"{run_dir} holds no trained NLA (checkpoints/av and checkpoints/ar): evaluate a "
            "finished run with stage=eval stage.eval.from_run=<run dir>"
        )
    table = read_activations(paths["eval"], expect=meta)
    n = min(eval_cfg["rows"], len(table))
    activations = table.activations[:n].clone()
    columns = {k: v[:n] for k, v in table.columns.items()}
    snippets = toy_snippets(columns)
    target, rows = None, None
    if eval_cfg["fidelity_rows"] and "text" in columns:
        path = target_path(cfg, run_dir)
        tokenizer = load_tokenizer(path)
        target = load_causal_lm(path, dtype=train["dtype"], device=device).eval()
        meta.check_model(target.config)
        # As extracted (method.md, "Tokenisation protocol"): the text column has no BOS in it.
        rows = tokenizer(list(columns["text"]), add_special_tokens=True)["input_ids"]
        eval_cfg = {**eval_cfg, "pad_id": tokenizer.pad_token_id or 0}
    report: dict[str, Any] = {
        "model": meta.base_model,
        "layer": meta.layer,
        "eval_rows": n,
        "fve": {},
        "attributes": {},
        "fidelity": {},
    }
    reference = paths.get("ar_sft") or paths.get("rl")
    if reference is not None and Path(reference).exists():
        train_acts = read_activations(reference, expect=meta).activations
        report["fve"]["mean_baseline"] = mean_baseline_fve(train_acts, activations, meta.mse_scale)
    for condition, (av_dir, ar_dir) in pairs.items():
        scores = evaluate_pair(
            av_dir,
            ar_dir,
            activations,
            snippets,
            target,
            rows,
            eval_cfg,
            train,
            device,
            cfg["seed"],
        )
        report["fve"][condition] = {k: scores[k] for k in ("fve", "fve_shuffled", "failure_rate")}
        if "attributes" in scores:
            report["attributes"][condition] = scores["attributes"]
            # The control: the latest AV, fed another row's activation.
            report["attributes"]["shuffled"] = scores["attributes_shuffled"]
        if "fidelity" in scores:
            report["fidelity"][condition] = scores["fidelity"]
        report.setdefault("examples", {})[condition] = scores["examples"]
    report["wall_s"] = round(time.time() - started, 1)
    out_dir.mkdir(parents=True, exist_ok=True)
    (out_dir / "eval.json").write_text(json.dumps(report, indent=2))
    return report

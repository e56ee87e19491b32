"""`run(cfg)`: the whole job a config describes, from target to exported NLA and summary.json.

Hydra stops here: the config becomes plain dicts and everything below takes ordinary arguments.
"""

from __future__ import annotations

import json
import time
from pathlib import Path
from typing import Any

import lightning as L
import torch

from nla_lightning.data.columns import explanations
from nla_lightning.data.datasets import ActivationTokens
from nla_lightning.data.store import read_activations
from nla_lightning.errors import NLAConfigError
from nla_lightning.eval_stage import checkpoint_pairs
from nla_lightning.families import embedding_output_scale, text_config
from nla_lightning.lora import add_lora, check_mode, gradient_checkpointing
from nla_lightning.meta import (
    REFERENCE_ACTOR_TEMPLATE,
    REFERENCE_CRITIC_TEMPLATE,
    NLAMeta,
    build_meta,
)
from nla_lightning.metrics import mean_baseline_fve
from nla_lightning.models import load_causal_lm
from nla_lightning.modules.sft import ARSFTModule, AVSFTModule
from nla_lightning.reconstructor import ActivationReconstructor
from nla_lightning.target import Target, build_toy_target, check_layer, load_hub_target
from nla_lightning.training import device_of, loader, make_logger, make_trainer
from nla_lightning.verbalizer import ActivationVerbalizer, encode_responses

TOY_ACTOR_TEMPLATE = "Explain the vector <concept>{injection_char}</concept> ."
STAGES = ("extract", "av_sft", "ar_sft", "rl", "eval")


def templates(name: str) -> tuple[str, str]:
    if name == "reference":
        return REFERENCE_ACTOR_TEMPLATE, REFERENCE_CRITIC_TEMPLATE
    if name == "toy":
        return TOY_ACTOR_TEMPLATE, REFERENCE_CRITIC_TEMPLATE
    raise NLAConfigError(f"unknown prompt templates {name!r}: choose 'reference' or 'toy'")


def injection_scale_for(model: torch.nn.Module, setting: float | str) -> float:
    """'auto': the median norm of a token's row as it enters the first block (Gemma scales the
    embedding by sqrt(d)), so the injected vector looks like a token."""
    if setting != "auto":
        return float(setting)
    module = model.get_input_embeddings()
    weight = module.weight.detach().float()
    scale = float(getattr(module, "embed_scale", 1.0)) * embedding_output_scale(model)
    return float(weight.norm(dim=-1).median()) * scale


def check_writer(data: str, writer: str) -> None:
    """Fail before any work when the summary writer cannot serve the data."""
    if data == "toy" and writer != "template":
        raise NLAConfigError("data=toy is summarised by writer=template (its ground truth)")
    if data == "corpus" and writer == "template":
        raise NLAConfigError(
            "writer=template only knows the toy world: for data=corpus choose writer=local, "
            "writer=openai or writer=anthropic"
        )


def prepare_target(cfg: dict[str, Any], out_dir: Path) -> tuple[Target, list]:
    """The target model and, for the toy world, the documents the NLA is trained on."""
    model_cfg, data_cfg = cfg["model"], cfg["data"]
    check_layer(cfg["layer"], model_cfg["num_layers"], model_cfg["name"])
    check_writer(data_cfg["name"], cfg["writer"]["name"])
    documents = []
    if data_cfg["name"] == "toy":
        from nla_lightning.toy.world import generate_documents

        documents = generate_documents(data_cfg["n_docs"], seed=cfg["seed"])
    elif data_cfg["name"] == "corpus":
        from nla_lightning.data.corpus_data import corpus_documents

        documents = corpus_documents(data_cfg)
    if model_cfg["source"] == "toy":
        from nla_lightning.toy.tokenizer import build_toy_tokenizer
        from nla_lightning.toy.world import generate_documents

        if data_cfg["name"] == "toy":
            corpus = [
                d.text
                for d in generate_documents(
                    model_cfg["pretrain"]["n_docs"], seed=cfg["seed"] + 7919
                )
            ]
        else:
            # The tiny target learns the user's corpus itself: its words become the vocabulary.
            documents = list(documents)
            corpus = [text for _, text in documents if text.strip()]
        tokenizer = build_toy_tokenizer(extra_texts=[*templates(model_cfg["templates"]), *corpus])
        target = build_toy_target(
            model_cfg,
            tokenizer,
            corpus,
            out_dir,
            cfg["trainer"],
            make_logger(cfg, out_dir, "target"),
            cfg["seed"],
        )
    elif model_cfg["source"] == "hub":
        target = load_hub_target(model_cfg)
    else:
        raise NLAConfigError(f"unknown model.source {model_cfg['source']!r}: use 'toy' or 'hub'")
    check_layer(cfg["layer"], text_config(target.config).num_hidden_layers, target.name)
    return target, documents


def prepare_data(
    cfg: dict[str, Any], target: Target, documents: list, out_dir: Path
) -> tuple[NLAMeta, dict[str, Path], dict[str, Any]]:
    """Metadata of the new NLA, its dataset files and a report of how they were made."""
    model_cfg, data_cfg = cfg["model"], cfg["data"]
    device = device_of(cfg["trainer"])
    model = load_causal_lm(
        target.path,
        dtype=model_cfg["dtype"],
        device=device,
        quantize_4bit=bool(data_cfg.get("extract_4bit", False)),
    ).eval()
    actor, critic = templates(model_cfg["templates"])
    meta = build_meta(
        target.tokenizer,
        target.config,
        base_model=target.name,
        layer=cfg["layer"],
        injection_scale=injection_scale_for(model, model_cfg["injection_scale"]),
        mse_scale=model_cfg.get("mse_scale"),
        actor_template=actor,
        critic_template=critic,
        injection_char=model_cfg.get("injection_char"),
    )
    if data_cfg["name"] == "corpus":
        from nla_lightning.data.corpus_data import build_corpus_splits

        paths, report = build_corpus_splits(
            documents, model, target.tokenizer, meta, out_dir, data_cfg, cfg["writer"], cfg["seed"]
        )
        return meta, paths, report
    from nla_lightning.data.toy_data import build_toy_splits

    paths = build_toy_splits(
        documents,
        model,
        target.tokenizer,
        meta,
        out_dir / "data",
        fractions=data_cfg["fractions"],
        snippets_per_doc=data_cfg["snippets_per_doc"],
        seed=cfg["seed"],
        writer=cfg["writer"],
        batch_size=data_cfg["extract_batch_size"],
        min_words=data_cfg["min_words"],
    )
    del model
    return meta, paths, {"rows": {name: _rows(path) for name, path in paths.items()}}


def explanations_of(table: Any) -> list[str]:
    """Warm-start explanations of a dataset: our `explanation` column, the bodies of the
    official layout's `response` column, or the AR-SFT `prompt` column (whole AR inputs)
    without the critic template of the dataset's metadata."""
    return explanations(table.columns, table.meta)


def _rows(path: Path) -> int:
    import pyarrow.parquet as pq

    return pq.read_metadata(path).num_rows


def _schedule(hp: dict[str, Any]) -> dict[str, Any]:
    return {k: hp[k] for k in ("lr", "weight_decay", "warmup_steps", "max_steps")}


def _fit_and_validate(
    cfg: dict[str, Any],
    stage: str,
    module: L.LightningModule,
    train: ActivationTokens,
    held_out: ActivationTokens,
    pad: int,
    out_dir: Path,
) -> tuple[float, dict[str, float]]:
    """Fit a warm-start module, then validate it once on held-out rows."""
    hp = cfg["stage"][stage]
    trainer = make_trainer(
        cfg["trainer"], hp["max_steps"], out_dir, make_logger(cfg, out_dir, stage)
    )
    trainer.fit(module, loader(train, hp["batch_size"], pad, shuffle=True, seed=cfg["seed"]))
    train_loss = float(trainer.callback_metrics.get("train/loss", float("nan")))
    metrics = trainer.validate(module, loader(held_out, hp["batch_size"], pad, shuffle=False))[0]
    return train_loss, metrics


def train_av(
    cfg: dict[str, Any], target: Target, meta: NLAMeta, paths: dict[str, Path], out_dir: Path
) -> dict[str, Any]:
    """AV warm start; returns held-out loss with true and with shuffled activations."""
    hp = cfg["stage"]["av_sft"]
    started = time.time()
    train = cfg["model"]["train"]
    check_mode(train["av_mode"], "av")
    model = load_causal_lm(
        target.path, dtype=cfg["model"]["dtype"], quantize_4bit=train["av_mode"] == "qlora"
    )
    if train["av_mode"] != "full":
        model = add_lora(model, rank=train["lora_rank"], alpha=2 * train["lora_rank"])
    if train["gradient_checkpointing"]:
        gradient_checkpointing(model)
    av = ActivationVerbalizer(model, target.tokenizer, meta)
    train_table = read_activations(paths["av_sft"], expect=meta)
    eval_table = read_activations(paths["eval"], expect=meta)
    pad = av.pad_id
    train = ActivationTokens(
        train_table.activations,
        encode_responses(target.tokenizer, explanations_of(train_table)),
        seed=cfg["seed"],
    )
    held_out = ActivationTokens(
        eval_table.activations,
        encode_responses(target.tokenizer, explanations_of(eval_table)),
        seed=cfg["seed"],
    )
    module = AVSFTModule(av, **_schedule(hp))
    train_loss, metrics = _fit_and_validate(cfg, "av_sft", module, train, held_out, pad, out_dir)
    av.save(out_dir / "checkpoints" / "av")
    with torch.no_grad():
        examples = _examples(av.eval(), eval_table, n=4, max_new_tokens=hp["max_new_tokens"])
    return {
        "loss": metrics["val/loss"],
        "loss_shuffled": metrics["val/loss_shuffled"],
        "train_loss": train_loss,
        "steps": hp["max_steps"],
        "train_rows": len(train),
        "eval_rows": len(held_out),
        "examples": examples,
        "wall_s": round(time.time() - started, 1),
    }


def _examples(av: ActivationVerbalizer, table: Any, n: int, max_new_tokens: int) -> list[dict]:
    """A few sampled explanations of held-out activations beside their text and target."""
    rollout = av.sample(table.activations[:n], max_new_tokens=max_new_tokens)
    return [
        {
            "text": table.columns["text"][i],
            "warm_start_target": explanations_of(table)[i],
            "sampled": rollout.explanations[i] or f"(no explanation: {rollout.texts[i][:80]!r})",
        }
        for i in range(min(n, len(rollout.texts)))
    ]


def train_ar(
    cfg: dict[str, Any], target: Target, meta: NLAMeta, paths: dict[str, Path], out_dir: Path
) -> dict[str, Any]:
    """AR warm start; returns held-out FVE beside the shuffled and mean baselines."""
    hp = cfg["stage"]["ar_sft"]
    started = time.time()
    train = cfg["model"]["train"]
    check_mode(train["ar_mode"], "ar")
    ar = ActivationReconstructor.from_target(
        target.path,
        target.tokenizer,
        meta,
        dtype=cfg["model"]["dtype"],
        quantize_4bit=train["ar_mode"] == "qlora",
    )
    if train["ar_mode"] != "full":
        ar.enable_lora(train["lora_rank"])
    if train["gradient_checkpointing"]:
        gradient_checkpointing(ar.backbone)
    train_table = read_activations(paths["ar_sft"], expect=meta)
    eval_table = read_activations(paths["eval"], expect=meta)
    pad = target.tokenizer.pad_token_id
    train = ActivationTokens(
        train_table.activations, ar.encode(explanations_of(train_table)), seed=cfg["seed"]
    )
    held_out = ActivationTokens(
        eval_table.activations, ar.encode(explanations_of(eval_table)), seed=cfg["seed"]
    )
    module = ARSFTModule(ar, **_schedule(hp))
    train_loss, metrics = _fit_and_validate(cfg, "ar_sft", module, train, held_out, pad, out_dir)
    ar.save(out_dir / "checkpoints" / "ar")
    return {
        "fve": metrics["val/fve"],
        "fve_shuffled": metrics["val/fve_shuffled"],
        "fve_mean_baseline": mean_baseline_fve(
            train_table.activations, eval_table.activations, meta.mse_scale
        ),
        "loss": metrics["val/loss"],
        "train_loss": train_loss,
        "steps": hp["max_steps"],
        "train_rows": len(train),
        "eval_rows": len(held_out),
        "wall_s": round(time.time() - started, 1),
    }


def run(cfg: dict[str, Any]) -> dict[str, Any]:
    """Run the configured stages; writes checkpoints and summary.json under cfg.paths.output_dir."""
    started = time.time()
    out_dir = Path(cfg["paths"]["output_dir"])
    out_dir.mkdir(parents=True, exist_ok=True)
    L.seed_everything(cfg["seed"], workers=True, verbose=False)
    stages = list(cfg["stage"]["run"])
    unknown = [s for s in stages if s not in STAGES]
    if unknown:
        raise NLAConfigError(f"unknown stages {unknown}: choose from {list(STAGES)}")

    summary: dict[str, Any] = {"seed": cfg["seed"], "stages": {}}
    if stages[0] in ("rl", "eval"):
        meta, paths, source = _previous_run(cfg, stages[0])
    else:
        target, documents = prepare_target(cfg, out_dir)
        meta, paths, data_report = prepare_data(cfg, target, documents, out_dir)
        source = out_dir
        if target.report:
            summary["stages"]["target"] = target.report
        summary["stages"]["data"] = data_report
    summary.update({"model": meta.base_model, "layer": meta.layer, "d_model": meta.d_model})
    summary["data"] = {name: str(path) for name, path in paths.items()}
    if "av_sft" in stages:
        summary["stages"]["av_sft"] = train_av(cfg, target, meta, paths, out_dir)
    if "ar_sft" in stages:
        summary["stages"]["ar_sft"] = train_ar(cfg, target, meta, paths, out_dir)
    if "rl" in stages:
        from nla_lightning.rl_stage import train_rl

        warm = source / "checkpoints"
        summary["stages"]["rl"] = train_rl(cfg, meta, warm / "av", warm / "ar", paths, out_dir)
    if "eval" in stages:
        summary["stages"]["eval"] = evaluate(cfg, meta, paths, source, out_dir)
    summary["checkpoints"] = {
        name: str(out_dir / "checkpoints" / name)
        for name in ("av", "ar", "rl/av", "rl/ar")
        if (out_dir / "checkpoints" / name).exists()
    }
    summary["wall_s"] = round(time.time() - started, 1)
    (out_dir / "summary.json").write_text(json.dumps(summary, indent=2))
    print(human_summary(summary, out_dir))
    return summary


def _previous_run(cfg: dict[str, Any], stage: str) -> tuple[NLAMeta, dict[str, Path], Path]:
    """stage=rl or stage=eval alone: the NLA and data of an earlier run (stage.<stage>.from_run)."""
    source = cfg["stage"][stage].get("from_run")
    needs = {"rl": "a warm start", "eval": "a trained NLA"}[stage]
    if not source:
        raise NLAConfigError(
            f"stage={stage} needs {needs}: pass stage.{stage}.from_run=<a run dir holding "
            "checkpoints/av, checkpoints/ar and data/>, or run the default stage=all"
        )
    source = Path(source)
    paths = {name: source / "data" / f"{name}.parquet" for name in ("ar_sft", "rl", "eval")}
    required = [source / "checkpoints" / "av", paths["eval"]]
    if stage == "rl":
        required.append(paths["rl"])
    missing = [str(p) for p in required if not p.exists()]
    if missing:
        raise NLAConfigError(f"{source} is not a finished warm-start run: missing {missing}")
    return NLAMeta.load(source / "checkpoints" / "av"), paths, source


def evaluate(
    cfg: dict[str, Any], meta: NLAMeta, paths: dict[str, Path], source: Path, out_dir: Path
) -> dict[str, Any]:
    """stage eval: every NLA of this run (RL output here, warm start here or in `source`);
    eval.json goes to this run and, for stage=eval of an earlier run, to that run too."""
    from nla_lightning.eval_stage import evaluate_run

    pairs = checkpoint_pairs(source)
    pairs.update(checkpoint_pairs(out_dir))
    report = evaluate_run(cfg, meta, paths, pairs, source, out_dir)
    if source != out_dir and cfg["stage"]["run"] == ["eval"]:
        (source / "eval.json").write_text((out_dir / "eval.json").read_text())
    return report


def human_summary(summary: dict[str, Any], out_dir: Path) -> str:
    stages = summary["stages"]
    lines = [
        "",
        f"NLA for {summary['model']} at layer {summary['layer']} (d_model {summary['d_model']})"
        f" - {summary['wall_s']:.0f} s",
    ]
    if "target" in stages:
        t = stages["target"]
        lines.append(
            f"  target   pretrained {t['pretrain_steps']} steps, loss {t['pretrain_loss']:.3f}"
        )
    if "av_sft" in stages:
        a = stages["av_sft"]
        lines.append(
            f"  AV SFT   held-out loss {a['loss']:.3f}  "
            f"(shuffled activations {a['loss_shuffled']:.3f})"
        )
        for ex in a["examples"][:2]:
            lines.append(f"    text: ...{ex['text'][-60:]}")
            lines.append(f"    AV  : {ex['sampled']}")
    if "ar_sft" in stages:
        r = stages["ar_sft"]
        lines.append(
            f"  AR SFT   held-out FVE {r['fve']:.3f}  (shuffled {r['fve_shuffled']:.3f}, "
            f"mean {r['fve_mean_baseline']:.3f})"
        )
    if "rl" in stages:
        r = stages["rl"]
        lines.append(
            f"  RL       {r['steps']} steps: held-out FVE of AR(AV(h)) {r['fve_start']:.3f} -> "
            f"{r['fve']:.3f}  (shuffled control {r['fve_shuffled_start']:.3f} -> "
            f"{r['fve_shuffled']:.3f})"
        )
    if "eval" in stages:
        lines.extend(_eval_lines(stages["eval"]))
    lines.append(f"  outputs  {out_dir}")
    return "\n".join(lines)


def _eval_lines(report: dict[str, Any]) -> list[str]:
    """One line per NLA of eval.json: FVE, attributes (toy world) and fidelity."""
    names = {"warm_start": "warm start", "rl": "after RL"}
    lines = [f"  eval     {report['eval_rows']} held-out rows (eval.json)"]
    for condition, name in names.items():
        if condition not in report["fve"]:
            continue
        parts = [f"FVE {report['fve'][condition]['fve']:.3f}"]
        scores = report["attributes"].get(condition)
        if scores and scores["recall"] is not None:
            precision = scores["precision"]
            shown = "-" if precision is None else f"{precision:.3f}"
            parts.append(f"recall {scores['recall']:.3f} precision {shown}")
        kl = report["fidelity"].get(condition)
        if kl:
            parts.append(f"KL {kl['kl_nla']:.3f} (mean {kl['kl_mean']:.3f})")
        lines.append(f"    {name:<11}" + ", ".join(parts))
    return lines

"""Stage `data`: the NLA's metadata (prompts, injection token and scale) and its dataset:
the target's activations at the configured layer, split by document into data/<split>.parquet,
with the warm-start explanations of the summary writer."""

from __future__ import annotations

from typing import Any

import pyarrow.parquet as pq

from nla_lightning.core.injection_scale import known_before_extraction
from nla_lightning.core.meta import build_meta
from nla_lightning.core.models import load_causal_lm
from nla_lightning.core.templates import templates
from nla_lightning.data.splits import check_every_split_filled
from nla_lightning.settings import RunSettings
from nla_lightning.stages.context import Need, StageContext
from nla_lightning.stages.target import documents
from nla_lightning.training.trainer import device_of

NAME = "data"


def needs(settings: RunSettings) -> list[Need]:
    if settings.model["source"] == "hub":
        return []
    return [Need.all_of("the toy target", "target", "target")]


def makes(settings: RunSettings) -> list[str]:
    return [f"data/{name}.parquet" for name, part in settings.data.fractions.items() if part > 0]


def run(ctx: StageContext) -> dict[str, Any]:
    settings = ctx.settings
    model_cfg, data = settings.model, settings.data
    if data.name == "corpus":
        # Known from the document ids alone: refuse an empty split before the model loads.
        check_every_split_filled(
            (doc_id for doc_id, _ in documents(ctx)), data.fractions, settings.seed
        )
    target = ctx.load_target()
    model = load_causal_lm(
        target.path,
        dtype=model_cfg["dtype"],
        device=device_of(settings.trainer),
        quantize_4bit=getattr(data, "extract_4bit", False),
    ).eval()
    actor, critic = templates(model_cfg["templates"])
    ctx.meta = meta = build_meta(
        target.tokenizer,
        target.config,
        base_model=target.name,
        layer=settings.layer,
        injection_scale=known_before_extraction(model_cfg["injection_scale"], model),
        mse_scale=model_cfg.get("mse_scale"),
        actor_template=actor,
        critic_template=critic,
        injection_char=model_cfg.get("injection_char"),
    )
    if data.name == "corpus":
        from nla_lightning.data.corpus import build_corpus_splits

        _, done = build_corpus_splits(
            documents(ctx),
            model,
            target.tokenizer,
            meta,
            ctx.run.extraction,
            ctx.run.data,
            data,
            settings.writer,
            settings.seed,
        )
    else:
        from nla_lightning.data.toy import build_toy_splits

        build_toy_splits(
            documents(ctx),
            model,
            target.tokenizer,
            meta,
            ctx.run.data,
            fractions=data.fractions,
            snippets_per_doc=data.snippets_per_doc,
            seed=settings.seed,
            writer=settings.writer,
            batch_size=data.extract_batch_size,
            min_words=data.min_words,
        )
        done = {}
    rows = {name: pq.read_metadata(path).num_rows for name, path in ctx.run.splits().items()}
    if meta.injection_scale is None:  # `auto`: now that the activations exist
        ctx.meta = meta = meta.with_updates(injection_scale=ctx.injection_scale(meta))
    return {"rows": rows, "injection_scale": meta.injection_scale, **done}

"""Stage `target`: the model M whose activations the NLA explains.

A real model (`model.source=hub`) is only named here: its tokenizer and config are read and the
layer checked against its true depth; each later stage loads the weights it needs. The toy
world's target is built from config and pretrained on the toy corpus (or on the user's corpus
with data=corpus), then saved in the run as target/."""

from __future__ import annotations

from collections.abc import Iterable
from typing import Any

from nla_lightning.core.families import text_config
from nla_lightning.core.layers import check_layer
from nla_lightning.core.target import load_hub_target
from nla_lightning.core.templates import templates
from nla_lightning.settings import RunSettings
from nla_lightning.stages.context import Need, StageContext
from nla_lightning.training.trainer import make_logger

NAME = "target"


def needs(settings: RunSettings) -> list[Need]:
    return []


def makes(settings: RunSettings) -> list[str]:
    return ["target"] if settings.model["source"] == "toy" else []


def run(ctx: StageContext) -> dict[str, Any]:
    settings = ctx.settings
    model = settings.model
    if model["source"] == "hub":
        ctx.target = load_hub_target(model, settings.cache_dir)
    else:
        ctx.target = _pretrain_toy_target(ctx)
    target = ctx.target
    check_layer(settings.layer, text_config(target.config).num_hidden_layers, target.name)
    return target.pretraining


def _pretrain_toy_target(ctx: StageContext):
    from nla_lightning.toy.tokenizer import build_toy_tokenizer
    from nla_lightning.training.pretrain import build_toy_target
    from nla_lightning.training.resumable import save_now

    settings = ctx.settings
    model = settings.model
    if settings.data.name == "toy":
        from nla_lightning.toy.world import generate_documents

        # Its own documents (another seed): the target learns the world, not the NLA's data.
        pretrain_docs = generate_documents(model["pretrain"]["n_docs"], seed=settings.seed + 7919)
        corpus = [d.text for d in pretrain_docs]
    else:
        # The tiny target learns the user's corpus itself: its words become the vocabulary.
        corpus = [text for _, text in documents(ctx) if text.strip()]
    checkpoint = ctx.run.stage_checkpoint("target")  # continued from, where a start left it
    tokenizer = build_toy_tokenizer(extra_texts=[*templates(model["templates"]), *corpus])
    return build_toy_target(
        model,
        tokenizer,
        corpus,
        ctx.run.target,
        settings.trainer,
        make_logger(settings.logger, ctx.run.root, "target"),
        settings.seed,
        checkpoint=checkpoint,
        callbacks=[ctx.graceful_stop("target", save_now, checkpoint)],
    )


def documents(ctx: StageContext) -> Iterable:
    """The run's documents: the toy world's (made once from the seed), or the configured
    corpus's (doc_id, text) pairs, streamed afresh at each call."""
    data = ctx.settings.data
    if data.name != "toy":
        from nla_lightning.data.corpus import corpus_documents

        return corpus_documents(data)
    if ctx.documents is None:
        from nla_lightning.toy.world import generate_documents

        ctx.documents = generate_documents(data.n_docs, seed=ctx.settings.seed)
    return ctx.documents

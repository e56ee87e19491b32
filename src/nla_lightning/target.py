"""The target model M: the toy world's tiny Qwen2 (built offline and pretrained on the toy
corpus) or a real model from the Hub or a local directory."""

from __future__ import annotations

import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch
from torch.utils.data import DataLoader

from nla_lightning.errors import NLAConfigError
from nla_lightning.families import text_config
from nla_lightning.models import load_config, load_tokenizer
from nla_lightning.modules.pretrain import CausalLMPretrainModule, pack_blocks
from nla_lightning.training import make_trainer


@dataclass
class Target:
    """Where the target's weights are (a local dir or a Hub name) and its tokenizer/config."""

    name: str
    path: str
    tokenizer: Any
    config: Any
    report: dict[str, Any] = field(default_factory=dict)


def check_layer(layer: int, num_layers: int, name: str) -> None:
    if not 0 <= layer < num_layers:
        raise NLAConfigError(
            f"layer={layer} is out of range for {name}, which has {num_layers} layers: "
            f"pass layer=0..{num_layers - 1} (default {2 * num_layers // 3})"
        )


def load_hub_target(model_cfg: dict[str, Any]) -> Target:
    """Tokenizer and config of a real model; the weights are loaded later by each stage.

    `config` is the checkpoint's own (a Gemma-3 `Gemma3Config` included): read its sizes
    through `families.text_config`, which is checked here to have them."""
    path = model_cfg.get("path") or model_cfg["name"]
    tokenizer = load_tokenizer(path)
    config = load_config(path)
    text = text_config(config)
    missing = [k for k in ("hidden_size", "num_hidden_layers") if getattr(text, k, None) is None]
    if missing:
        raise NLAConfigError(
            f"{path}: its config ({type(config).__name__}, model_type "
            f"{getattr(config, 'model_type', None)!r}) has no {' / '.join(missing)} on its text "
            "side; expected a decoder-only causal LM (Qwen2, Llama, Gemma, Mistral) or a "
            "Gemma-3 checkpoint: point model.path at such a model"
        )
    return Target(name=model_cfg["name"], path=path, tokenizer=tokenizer, config=config)


def toy_config(tokenizer: Any, architecture: dict[str, Any]) -> Any:
    """The toy target's Qwen2 config: the architecture fields plus the tokenizer's ids."""
    from transformers import Qwen2Config

    return Qwen2Config(
        vocab_size=len(tokenizer),
        tie_word_embeddings=True,
        bos_token_id=None,
        eos_token_id=tokenizer.eos_token_id,
        pad_token_id=tokenizer.pad_token_id,
        **architecture,
    )


def build_toy_target(
    model_cfg: dict[str, Any],
    tokenizer: Any,
    corpus: list[str],
    out_dir: Path,
    trainer_cfg: dict[str, Any],
    logger: Any,
    seed: int,
) -> Target:
    """A Qwen2-architecture model built from config, pretrained on `corpus`, saved to disk."""
    from transformers import AutoModelForCausalLM

    started = time.time()
    config = toy_config(tokenizer, dict(model_cfg["architecture"]))
    torch.manual_seed(seed)
    model = AutoModelForCausalLM.from_config(config)
    pretrain = model_cfg["pretrain"]
    rows = tokenizer(corpus, add_special_tokens=False)["input_ids"]
    blocks = pack_blocks(rows, pretrain["block_size"], tokenizer.eos_token_id)
    data = DataLoader(
        blocks,
        batch_size=pretrain["batch_size"],
        shuffle=True,
        generator=torch.Generator().manual_seed(seed),
    )
    module = CausalLMPretrainModule(
        model, lr=pretrain["lr"], warmup_steps=pretrain["warmup_steps"], max_steps=pretrain["steps"]
    )
    trainer = make_trainer(trainer_cfg, pretrain["steps"], out_dir, logger)
    trainer.fit(module, data)
    loss = float(trainer.callback_metrics.get("train/loss", float("nan")))
    path = out_dir / "target"
    model.save_pretrained(path)
    tokenizer.save_pretrained(path)
    report = {
        "params": sum(p.numel() for p in model.parameters()),
        "pretrain_loss": loss,
        "pretrain_steps": pretrain["steps"],
        "corpus_tokens": int(sum(len(r) for r in rows)),
        "wall_s": round(time.time() - started, 1),
    }
    return Target(
        name=model_cfg["name"], path=str(path), tokenizer=tokenizer, config=config, report=report
    )

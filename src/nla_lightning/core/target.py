"""The target model M: where its weights are, its tokenizer and config (a real model from the
Hub or a local directory; the toy world's is built by `training.pretrain.build_toy_target`)."""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from nla_lightning.core.families import text_config
from nla_lightning.core.models import load_config, load_tokenizer
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


def load_local_target(name: str, path: str | Path) -> Target:
    """A target saved as an ordinary Hugging Face directory (the toy world's, in its run)."""
    return Target(
        name=name,
        path=str(path),
        tokenizer=load_tokenizer(str(path)),
        config=load_config(str(path)),
    )

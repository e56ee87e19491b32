"""Qwen2.5 shapes (literal configs, or toy-width ones for --quick), the presets' settings,
and random models of a shape saved where the package's loaders read them."""

from __future__ import annotations

import math
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch
from _common import REPO, toy_tokenizer

from nla_lightning.core.injection_scale import from_embeddings
from nla_lightning.core.meta import NLAMeta, build_meta
from nla_lightning.core.templates import templates

# Literal Hugging Face configs of Qwen/Qwen2.5-0.5B-Instruct and Qwen/Qwen2.5-7B-Instruct.
QWEN25_05B: dict[str, Any] = {
    "hidden_size": 896,
    "intermediate_size": 4864,
    "num_hidden_layers": 24,
    "num_attention_heads": 14,
    "num_key_value_heads": 2,
    "vocab_size": 151936,
    "tie_word_embeddings": True,
    "rope_theta": 1_000_000.0,
    "max_position_embeddings": 32768,
    "rms_norm_eps": 1e-6,
}
QWEN25_7B: dict[str, Any] = {
    "hidden_size": 3584,
    "intermediate_size": 18944,
    "num_hidden_layers": 28,
    "num_attention_heads": 28,
    "num_key_value_heads": 4,
    "vocab_size": 152064,
    "tie_word_embeddings": False,
    "rope_theta": 1_000_000.0,
    "max_position_embeddings": 32768,
    "rms_norm_eps": 1e-6,
}
# --quick: the same layouts (tied embeddings or not) at toy width. Widths are multiples of
# bitsandbytes' 64-weight NF4 block; the vocabulary just covers the tokenizer.
TINY: dict[str, Any] = {
    "hidden_size": 64,
    "intermediate_size": 128,
    "num_hidden_layers": 4,
    "num_attention_heads": 4,
    "num_key_value_heads": 2,
    "vocab_size": 256,
    "max_position_embeddings": 512,
}
TINY_LAYER = 2


def compose(overrides: list[str]) -> dict[str, Any]:
    """The blocks of the real config tree this check reads, composed with Hydra's API (the
    others interpolate Hydra's runtime)."""
    from hydra import compose as hydra_compose
    from hydra import initialize_config_dir
    from omegaconf import OmegaConf

    from nla_lightning.settings import register_configs

    register_configs()
    with initialize_config_dir(config_dir=str(REPO / "conf"), version_base="1.3"):
        cfg = hydra_compose(config_name="train", overrides=overrides)
    blocks = {key: OmegaConf.to_container(cfg[key], resolve=True) for key in ("rl", "model")}
    return {**blocks, "precision": cfg.trainer.precision, "layer": int(cfg.layer)}


@dataclass
class Shape:
    label: str
    config: dict[str, Any]
    layer: int


def shapes(quick: bool, small_layer: int, large_layer: int) -> tuple[Shape, Shape]:
    if quick:
        return (
            Shape("tiny, 0.5B layout", {**QWEN25_05B, **TINY}, TINY_LAYER),
            Shape("tiny, 7B layout", {**QWEN25_7B, **TINY}, TINY_LAYER),
        )
    return (
        Shape("Qwen2.5-0.5B", QWEN25_05B, small_layer),
        Shape("Qwen2.5-7B", QWEN25_7B, large_layer),
    )


def check_tokenizer() -> Any:
    """The toy word-level tokenizer grown by the words of the release's prompt templates,
    which the Qwen presets use (`templates: reference`)."""
    return toy_tokenizer("reference")


def random_target(
    shape: Shape, tokenizer: Any, directory: Path, device: str, injection_scale: float | None
) -> tuple[Path, NLAMeta, torch.nn.Module]:
    """A random bf16 Qwen2 of `shape` initialised straight on `device` (a 7B initialises in
    seconds on a GPU), saved with the tokenizer under directory/target, and its NLA metadata
    (`injection_scale` None: the token-embedding rule, as a random model has no activations
    for `auto`). Returns the live model too."""
    from transformers import AutoModelForCausalLM, Qwen2Config

    config = Qwen2Config(
        bos_token_id=None,
        eos_token_id=tokenizer.eos_token_id,
        pad_token_id=tokenizer.pad_token_id,
        **shape.config,
    )
    torch.manual_seed(0)
    with torch.device(device):
        model = AutoModelForCausalLM.from_config(config, dtype=torch.bfloat16).eval()
    target_dir = directory / "target"
    model.save_pretrained(target_dir)
    tokenizer.save_pretrained(target_dir)
    actor, critic = templates("reference")
    meta = build_meta(
        tokenizer,
        config,
        base_model=f"random {shape.label}",
        layer=shape.layer,
        injection_scale=injection_scale or from_embeddings(model),
        actor_template=actor,
        critic_template=critic,
    )
    return target_dir, meta, model


def random_activations(meta: NLAMeta, rows: int, seed: int = 0) -> torch.Tensor:
    """Random activation rows of about the injection norm."""
    generator = torch.Generator().manual_seed(seed)
    vectors = torch.randn(rows, meta.d_model, generator=generator)
    return vectors * (meta.injection_scale or 1.0) / math.sqrt(meta.d_model)

"""LoRA / QLoRA adapters through peft, as a config option for the AV and the AR."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from torch import nn

from nla_lightning.errors import NLAConfigError

TRAIN_MODES = ("full", "lora", "qlora")


def add_lora(
    model: nn.Module, rank: int = 16, alpha: int = 32, dropout: float = 0.0, causal_lm: bool = True
) -> Any:
    """Wrap `model` with trainable LoRA adapters on every linear projection of its blocks."""
    from peft import LoraConfig, get_peft_model, prepare_model_for_kbit_training

    if getattr(model, "is_loaded_in_4bit", False):
        # Norms and the embedding stay in full precision; inputs get gradients for checkpointing.
        model = prepare_model_for_kbit_training(model, use_gradient_checkpointing=False)
    config = LoraConfig(
        r=rank,
        lora_alpha=alpha,
        lora_dropout=dropout,
        target_modules=[
            "q_proj",
            "k_proj",
            "v_proj",
            "o_proj",
            "gate_proj",
            "up_proj",
            "down_proj",
        ],
        task_type="CAUSAL_LM" if causal_lm else "FEATURE_EXTRACTION",
    )
    return get_peft_model(model, config)


def check_mode(mode: str, role: str) -> None:
    if mode not in TRAIN_MODES:
        raise NLAConfigError(f"unknown {role}_mode {mode!r}: choose one of {list(TRAIN_MODES)}")


def is_adapter_dir(path: Any) -> bool:
    """True for a checkpoint that stores LoRA adapters on top of a named base."""
    return (Path(path) / "adapter_config.json").exists()


def weights_of(path: Any) -> str:
    """The directory holding full weights: the adapter's base for a LoRA checkpoint."""
    if is_adapter_dir(path):
        config = json.loads((Path(path) / "adapter_config.json").read_text(encoding="utf-8"))
        return str(config["base_model_name_or_path"])
    return str(path)


def save_adapter(model: Any, directory: Any) -> None:
    """Save only the trained ("default") adapter, at the top of `directory`."""
    model.save_pretrained(str(directory), selected_adapters=["default"])


def is_peft(model: Any) -> bool:
    return hasattr(model, "peft_config")


def gradient_checkpointing(model: Any) -> None:
    # Non-reentrant: works when the (frozen) embedding output needs no gradient.
    model.gradient_checkpointing_enable({"use_reentrant": False})

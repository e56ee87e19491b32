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
        keep_4bit_trainable(model)
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


# bitsandbytes' Linear4bit flag (set from has_avx512bf16() when the layer is made) that lets
# its forward repack the weight for an inference-only CPU kernel.
CPU_INFERENCE_REPACK = "support_avx512bf16_for_cpu"


def keep_4bit_trainable(model: nn.Module) -> int:
    """Keep the 4-bit layers of a model that will be trained on the kernel that trains; returns
    how many layers that is.

    On a CPU with AVX512-BF16, bitsandbytes' Linear4bit.forward (bitsandbytes 0.50,
    nn/modules.py) repacks its weight in place for an inference-only kernel (gemv_4bit) the
    first time it sees a CPU input in eval mode that needs no gradient (the RL rollout, an
    evaluation, SFT validation): `support_avx512bf16_for_cpu and not self.training and
    x.requires_grad == False`. That layout stays, and the kernel has no backward: the next
    training forward fails in matmul_4bit's `result += bias` ("a view of a leaf Variable that
    requires grad is being used in an in-place operation"), and a layer without bias passes
    no gradient to its input. With the flag off the layer always dequantises and multiplies,
    as on every CPU without AVX512-BF16 and on the GPU. A frozen 4-bit model that is never
    trained (the quantized_4bit KL reference) keeps the fast inference kernel."""
    layers = [m for m in model.modules() if hasattr(m, CPU_INFERENCE_REPACK)]
    for layer in layers:
        setattr(layer, CPU_INFERENCE_REPACK, False)
    return len(layers)


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


def base_model(model: Any) -> Any:
    """The transformers model under a peft wrapper (the model itself when unwrapped)."""
    return model.get_base_model() if hasattr(model, "get_base_model") else model


def gradient_checkpointing(model: Any) -> None:
    # Non-reentrant: works when the (frozen) embedding output needs no gradient. Newer
    # transformers call it activation checkpointing and warn on the old name.
    enable = getattr(model, "activation_checkpointing_enable", None)
    enable = enable or model.gradient_checkpointing_enable
    enable({"use_reentrant": False})

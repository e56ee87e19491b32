"""The trainable AV and AR of each stage, in the configured fine-tuning mode
(`model.train`: full, LoRA or QLoRA), and the RL stage's frozen KL reference."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from nla_lightning.core.lora import (
    add_lora,
    check_mode,
    gradient_checkpointing,
    is_adapter_dir,
    keep_4bit_trainable,
)
from nla_lightning.core.meta import NLAMeta
from nla_lightning.core.models import load_causal_lm
from nla_lightning.core.reconstructor import ActivationReconstructor
from nla_lightning.core.verbalizer import ActivationVerbalizer
from nla_lightning.errors import NLAConfigError
from nla_lightning.training.reference import REFERENCE_ADAPTER, ReferencePolicy


def warm_start_av(target_path: str, tokenizer: Any, meta: NLAMeta, train: dict[str, Any]):
    """A new AV from the target's weights, ready for its supervised warm start."""
    check_mode(train["av_mode"], "av")
    model = load_causal_lm(
        target_path, dtype=train["dtype"], quantize_4bit=train["av_mode"] == "qlora"
    )
    if train["av_mode"] != "full":
        model = add_lora(model, rank=train["lora_rank"], alpha=2 * train["lora_rank"])
    if train["gradient_checkpointing"]:
        gradient_checkpointing(model)
    return ActivationVerbalizer(model, tokenizer, meta)


def warm_start_ar(
    target_path: str, tokenizer: Any, meta: NLAMeta, train: dict[str, Any]
) -> ActivationReconstructor:
    """A new AR from the target's first layer + 1 blocks, ready for its warm start."""
    check_mode(train["ar_mode"], "ar")
    ar = ActivationReconstructor.from_target(
        target_path,
        tokenizer,
        meta,
        dtype=train["dtype"],
        quantize_4bit=train["ar_mode"] == "qlora",
    )
    if train["ar_mode"] != "full":
        ar.enable_lora(train["lora_rank"])
    if train["gradient_checkpointing"]:
        gradient_checkpointing(ar.backbone)
    return ar


def rl_av(
    av_dir: Path, train: dict[str, Any], device: str
) -> tuple[ActivationVerbalizer, ReferencePolicy]:
    """The warm-start AV to train with RL (full, LoRA or QLoRA) and its frozen reference."""
    check_mode(train["av_mode"], "av")
    mode, reference = train["av_mode"], train["reference"]
    lora_warm_start = is_adapter_dir(av_dir)
    if lora_warm_start and mode == "full":
        raise NLAConfigError(
            f"{av_dir} is a LoRA warm start: train it with model.train.av_mode=lora or qlora"
        )
    av = ActivationVerbalizer.load(
        av_dir,
        dtype=train["dtype"],
        device=device,
        quantize_4bit=mode == "qlora",
        trainable=True,
    )
    if lora_warm_start:
        # Keep training the warm-start adapter; a frozen copy of it is the KL reference.
        av.model.load_adapter(str(av_dir), adapter_name=REFERENCE_ADAPTER, is_trainable=False)
        av.model.set_adapter("default")
        # Loaded trainable, not through add_lora: its 4-bit layers must stay trainable too.
        keep_4bit_trainable(av.model)
    elif mode != "full":
        av.model = add_lora(av.model, rank=train["lora_rank"], alpha=2 * train["lora_rank"])
    elif reference == "adapter":
        raise NLAConfigError(
            "reference=adapter needs a LoRA-trained AV (model.train.av_mode=lora or qlora): a "
            "fully fine-tuned AV has no frozen base to fall back on"
        )
    if train["gradient_checkpointing"]:
        gradient_checkpointing(av.model)
    frozen = None
    if reference in ("quantized_4bit", "frozen"):
        frozen = ActivationVerbalizer.load(
            av_dir, dtype=train["dtype"], device=device, quantize_4bit=reference == "quantized_4bit"
        )
    return av, ReferencePolicy(reference, frozen)


def rl_ar(ar_dir: Path, train: dict[str, Any], device: str) -> ActivationReconstructor:
    """The warm-start AR to train with RL: full, LoRA, or LoRA on a 4-bit backbone (QLoRA)."""
    check_mode(train["ar_mode"], "ar")
    ar = ActivationReconstructor.load(
        ar_dir,
        dtype=train["dtype"],
        device=device,
        quantize_4bit=train["ar_mode"] == "qlora",
        trainable=True,
    )
    if train["ar_mode"] != "full" and not is_adapter_dir(ar_dir):
        ar.enable_lora(train["lora_rank"])
    elif train["ar_mode"] == "qlora":
        # The warm-start adapter, loaded trainable rather than through add_lora.
        keep_4bit_trainable(ar.backbone)
    if train["gradient_checkpointing"]:
        gradient_checkpointing(ar.backbone)
    return ar

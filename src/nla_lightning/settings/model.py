"""The target model and how AV and AR are trained from it (`model.*`, `model.train.*`), and,
for the toy world's target, its architecture and pretraining (`model.architecture.*`,
`model.pretrain.*`).

`conf/model/*.yaml` choose the values and `conf/finetune/*.yaml` fill `model.train`; every key
they set is a field here, so a key no schema declares is refused when the config is validated.
The composed block is handed on to the stages as the plain dict it is; `model_settings` only
checks it.
"""

from __future__ import annotations

from dataclasses import dataclass, field, is_dataclass
from typing import Any

from nla_lightning.core.injection_scale import check_setting as check_injection_scale
from nla_lightning.core.lora import TRAIN_MODES
from nla_lightning.core.models import DTYPES
from nla_lightning.core.templates import TEMPLATES
from nla_lightning.errors import NLAConfigError
from nla_lightning.settings import checks

SOURCES = ("toy", "hub")
# The RL stage's KL reference, the frozen warm-start AV: a separate NF4 copy (quantized_4bit),
# a separate copy in the training dtype (frozen, the release's), the LoRA-trained AV with its
# adapters off (adapter), or no KL (none).
REFERENCE_MODES = ("quantized_4bit", "frozen", "adapter", "none")


@dataclass
class FinetuneSettings:
    """How AV and AR are trained (`model.train`, from conf/finetune/; these are full.yaml's)."""

    dtype: str = "float32"  # the presets interpolate model.dtype
    av_mode: str = "full"  # full | lora | qlora
    ar_mode: str = "full"
    reference: str = "quantized_4bit"  # one of REFERENCE_MODES
    lora_rank: int = 16
    gradient_checkpointing: bool = False
    estimate_memory: bool = True  # the RL memory estimate printed before RL on a GPU

    def __post_init__(self) -> None:
        checks.one_of("model.train.dtype", self.dtype, sorted(DTYPES))
        checks.one_of("model.train.av_mode", self.av_mode, TRAIN_MODES)
        checks.one_of("model.train.ar_mode", self.ar_mode, TRAIN_MODES)
        checks.one_of("model.train.reference", self.reference, REFERENCE_MODES)
        checks.integer("model.train.lora_rank", self.lora_rank, 1)
        checks.boolean("model.train.gradient_checkpointing", self.gradient_checkpointing)
        checks.boolean("model.train.estimate_memory", self.estimate_memory)
        if self.reference == "adapter" and self.av_mode == "full":
            raise NLAConfigError(
                "model.train.reference=adapter needs a LoRA-trained AV (model.train.av_mode=lora "
                "or qlora): a fully fine-tuned AV has no frozen base to fall back on"
            )


@dataclass
class ArchitectureSettings:
    """The toy target's Qwen2 shape (`model.architecture`): the Qwen2Config fields it sets;
    vocabulary, tied embeddings and special-token ids come from the toy tokenizer."""

    hidden_size: int = 128
    intermediate_size: int = 256
    num_hidden_layers: int = 4
    num_attention_heads: int = 4
    num_key_value_heads: int = 2
    max_position_embeddings: int = 256

    def __post_init__(self) -> None:
        for key, value in vars(self).items():
            checks.integer(f"model.architecture.{key}", value, 1)
        if self.hidden_size % self.num_attention_heads:
            raise NLAConfigError(
                f"model.architecture.hidden_size={self.hidden_size} is not a multiple of "
                f"model.architecture.num_attention_heads={self.num_attention_heads}: each head "
                "takes an equal share of it"
            )
        if self.num_attention_heads % self.num_key_value_heads:
            raise NLAConfigError(
                f"model.architecture.num_attention_heads={self.num_attention_heads} is not a "
                f"multiple of model.architecture.num_key_value_heads={self.num_key_value_heads}: "
                "each key-value head serves an equal group of query heads"
            )


@dataclass
class PretrainSettings:
    """The toy target's pretraining on the toy corpus (`model.pretrain`; tiny.yaml's values)."""

    n_docs: int = 25000  # documents of the pretraining corpus
    steps: int = 1000
    batch_size: int = 32
    block_size: int = 64  # tokens per training row
    lr: float = 3.0e-3
    warmup_steps: int = 30
    gradient_clip_val: float | None = 1.0  # Lightning clips by norm; None = off
    # A mid-stage checkpoint every N steps (0 = none): a killed run continues from it.
    checkpoint_every: int = 200

    def __post_init__(self) -> None:
        for key in ("n_docs", "steps", "batch_size", "block_size"):
            checks.integer(f"model.pretrain.{key}", getattr(self, key), 1)
        checks.positive("model.pretrain.lr", self.lr)
        checks.integer("model.pretrain.warmup_steps", self.warmup_steps, 0)
        checks.integer("model.pretrain.checkpoint_every", self.checkpoint_every, 0)
        checks.optional_positive("model.pretrain.gradient_clip_val", self.gradient_clip_val)


@dataclass
class ModelSettings:
    """The target model: where it comes from, the layer's defaults, AV/AR prompt templates,
    the injection and MSE scales, and how AV and AR are trained."""

    name: str
    source: str  # toy: built from `architecture` and pretrained here; hub: loaded
    path: str | None = None  # local weights instead of the Hub cache
    num_layers: int | None = None
    default_layer: int = 0
    dtype: str = "float32"
    templates: str = "reference"
    injection_scale: float | str = "auto"  # a number or one of core.injection_scale.RULES
    mse_scale: float | None = None  # None = sqrt(d_model)
    injection_char: str | None = None  # None = the first rare single-token character
    train: FinetuneSettings = field(default_factory=FinetuneSettings)
    architecture: ArchitectureSettings | None = None  # source=toy only
    pretrain: PretrainSettings | None = None  # source=toy only

    def __post_init__(self) -> None:
        checks.text("model.name", self.name)
        checks.one_of("model.source", self.source, SOURCES)
        checks.optional_text("model.path", self.path)
        if self.num_layers is not None:
            checks.integer("model.num_layers", self.num_layers, 1)
        checks.integer("model.default_layer", self.default_layer, 0)
        if self.num_layers is not None and self.default_layer >= self.num_layers:
            raise NLAConfigError(
                f"model.default_layer={self.default_layer} is out of range: "
                f"model.num_layers={self.num_layers}, so pass 0..{self.num_layers - 1}"
            )
        checks.one_of("model.dtype", self.dtype, sorted(DTYPES))
        checks.one_of("model.templates", self.templates, sorted(TEMPLATES))
        check_injection_scale("model.injection_scale", self.injection_scale)
        checks.optional_positive("model.mse_scale", self.mse_scale)
        if self.injection_char is not None and (
            not isinstance(self.injection_char, str) or len(self.injection_char) != 1
        ):
            raise NLAConfigError(
                f"model.injection_char={self.injection_char!r}: expected one character (a rare "
                "single-token one), or null for the first of U+3200..U+33FF the tokenizer has"
            )
        # The nested blocks, after this block's own keys (model.dtype=... names model.dtype).
        self.train = checks.block(FinetuneSettings, _fields(self.train), "model.train")
        if self.architecture is not None:
            self.architecture = checks.block(
                ArchitectureSettings, _fields(self.architecture), "model.architecture"
            )
        if self.pretrain is not None:
            self.pretrain = checks.block(PretrainSettings, _fields(self.pretrain), "model.pretrain")
        layers = self.architecture and self.architecture.num_hidden_layers
        if self.source == "toy" and layers and self.num_layers not in (None, layers):
            raise NLAConfigError(
                f"model.num_layers={self.num_layers} but the toy target is built with "
                f"model.architecture.num_hidden_layers={layers}: set that one (the preset's "
                "num_layers follows it)"
            )
        toy_blocks = {"architecture": self.architecture, "pretrain": self.pretrain}
        for key, block in toy_blocks.items():
            if self.source == "toy" and block is None:
                raise NLAConfigError(
                    f"model.{key} is missing: model.source=toy builds and pretrains its target "
                    "from model.architecture and model.pretrain (conf/model/tiny.yaml has both)"
                )
            if self.source == "hub" and block is not None:
                raise NLAConfigError(
                    f"model.{key} is set but model.source=hub loads a trained model: only "
                    f"source=toy reads it; drop it (~model.{key})"
                )


def _fields(block: Any) -> Any:
    """A nested block as given: a config's dict, or a settings dataclass's fields."""
    return vars(block) if is_dataclass(block) else block


def model_settings(values: dict[str, Any]) -> ModelSettings:
    """The `model` block, every key (nested blocks too) through its schema."""
    return checks.block(ModelSettings, values, "model")

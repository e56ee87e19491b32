"""AR (activation reconstructor): the target truncated to blocks 0..layer, no final norm, and an
identity-initialised d x d head reading the last token."""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path
from typing import Any

import torch
from safetensors.torch import load_file, save_file
from torch import nn

from nla_lightning.core.lora import add_lora, is_adapter_dir, is_peft, save_adapter, weights_of
from nla_lightning.core.meta import NLAMeta, critic_suffix_ids
from nla_lightning.core.models import load_backbone
from nla_lightning.core.padding import pad_right
from nla_lightning.errors import NLAConfigError

VALUE_HEAD_FILENAME = "value_head.safetensors"
# An AR input longer than this is a failure (RL reward, eval), as in the release's recipe.
MAX_INPUT_TOKENS = 300


def read_value_head(directory: str | Path, d_model: int) -> torch.Tensor:
    """The d x d head weight (key `weight`, no bias) of an AR directory, checked."""
    path = Path(directory) / VALUE_HEAD_FILENAME
    if not path.exists():
        raise NLAConfigError(
            f"{directory} has no {VALUE_HEAD_FILENAME}: it is not an AR checkpoint; pass the "
            "AR directory"
        )
    try:
        weight = load_file(str(path))["weight"]
    except Exception as err:  # safetensors raises several types for corrupt files
        raise NLAConfigError(f"could not read the key 'weight' of {path}: {err}") from err
    if tuple(weight.shape) != (d_model, d_model):
        raise NLAConfigError(
            f"{path} holds a {tuple(weight.shape)} head but d_model is {d_model}; expected a "
            f"({d_model}, {d_model}) matrix without bias"
        )
    return weight


def save_truncated_causal_lm(backbone: nn.Module, directory: Path) -> None:
    """Save a base model as the causal LM it came from, minus lm_head and final norm: the
    config names the causal-LM class, the weights carry its `model.` prefix."""
    import transformers
    from huggingface_hub import save_torch_state_dict
    from transformers.models.auto.modeling_auto import MODEL_FOR_CAUSAL_LM_MAPPING_NAMES

    config = backbone.config
    name = MODEL_FOR_CAUSAL_LM_MAPPING_NAMES.get(config.model_type)
    if name is None:
        raise NLAConfigError(
            f"no causal-LM class is known for model type {config.model_type!r}: the AR cannot be "
            "saved in the release layout"
        )
    prefix = getattr(transformers, name).base_model_prefix
    state = {
        f"{prefix}.{key}": value.detach().contiguous()
        for key, value in backbone.state_dict().items()
        # The final norm is identity here; lm_head was never loaded.
        if not key.startswith("norm.")
    }
    config = type(config).from_dict(config.to_dict())
    config.architectures = [name]
    config.dtype = next(backbone.parameters()).dtype
    config.save_pretrained(directory)
    save_torch_state_dict(state, directory, max_shard_size="5GB", metadata={"format": "pt"})


class ActivationReconstructor(nn.Module):
    """Explanation text -> predicted activation [B, d]."""

    def __init__(
        self,
        backbone: nn.Module,
        tokenizer: Any,
        meta: NLAMeta,
        max_input_tokens: int | None = None,
    ) -> None:
        super().__init__()
        meta.check_model(backbone.config)
        meta.check_tokenizer(tokenizer, backbone.config)
        if hasattr(backbone, "norm"):
            # The target's activation at block `layer` is read before any final norm.
            backbone.norm = nn.Identity()
        self.backbone = backbone
        self.tokenizer = tokenizer
        if meta.critic_suffix_ids is None:
            meta = meta.with_updates(
                critic_suffix_ids=tuple(critic_suffix_ids(tokenizer, meta.critic_template))
            )
        self.meta = meta
        limit = getattr(backbone.config, "max_position_embeddings", None) or MAX_INPUT_TOKENS
        self.max_input_tokens = min(max_input_tokens or MAX_INPUT_TOKENS, limit)
        self.head = nn.Linear(meta.d_model, meta.d_model, bias=False)
        with torch.no_grad():
            # Identity start: the last hidden state already lives in activation space.
            self.head.weight.copy_(torch.eye(meta.d_model))
        first = next(backbone.parameters())
        self.head.to(device=first.device, dtype=first.dtype if first.is_floating_point() else None)

    @property
    def device(self) -> torch.device:
        return self.head.weight.device

    @classmethod
    def from_target(
        cls,
        name_or_path: str,
        tokenizer: Any,
        meta: NLAMeta,
        dtype: str | torch.dtype = "float32",
        device: str = "cpu",
        quantize_4bit: bool = False,
        max_input_tokens: int | None = None,
    ) -> ActivationReconstructor:
        """A fresh AR from the target model: only blocks 0..layer are loaded."""
        backbone = load_backbone(
            name_or_path, meta.layer + 1, dtype=dtype, quantize_4bit=quantize_4bit, device=device
        )
        return cls(backbone, tokenizer, meta, max_input_tokens=max_input_tokens)

    @classmethod
    def load(
        cls,
        directory: str | Path,
        dtype: str | torch.dtype = "float32",
        device: str = "cpu",
        quantize_4bit: bool = False,
        tokenizer: Any = None,
        trainable: bool = False,
        meta: NLAMeta | None = None,
    ) -> ActivationReconstructor:
        """Load the release's AR layout (truncated backbone + value_head.safetensors + meta);
        `meta`: the file's, completed from the AV's."""
        from nla_lightning.core.models import load_tokenizer

        directory = Path(directory)
        meta = meta or NLAMeta.load(directory)
        if not (directory / VALUE_HEAD_FILENAME).exists():
            # Checked before any weights load; the head is read once the backbone fits.
            read_value_head(directory, meta.d_model)
        tokenizer = tokenizer or load_tokenizer(str(directory))
        adapter = is_adapter_dir(directory)
        # A LoRA-trained AR stores its adapter; the backbone comes from the base it names.
        base = weights_of(directory)
        ar = cls.from_target(
            base, tokenizer, meta, dtype=dtype, device=device, quantize_4bit=quantize_4bit
        )
        if adapter:
            from peft import PeftModel

            ar.backbone = PeftModel.from_pretrained(
                ar.backbone, str(directory), is_trainable=trainable
            )
        with torch.no_grad():
            ar.head.weight.copy_(read_value_head(directory, meta.d_model))
        return ar

    def enable_lora(self, rank: int = 16, alpha: int | None = None) -> None:
        """Train LoRA adapters (and the head) instead of the whole backbone."""
        self.backbone = add_lora(self.backbone, rank, alpha or 2 * rank, causal_lm=False)

    def save(self, directory: str | Path, stage: str = "sl") -> Path:
        """The release's AR layout: a causal-LM config with layer+1 blocks whose weights are
        the blocks and embeddings only (no lm_head, no final norm: a loader replaces both by
        identity), the tokenizer, value_head.safetensors and nla_meta.yaml. With LoRA: the
        adapter directory, which names its base. `stage`: sl (warm start) or rl."""
        directory = Path(directory)
        directory.mkdir(parents=True, exist_ok=True)
        if is_peft(self.backbone):
            save_adapter(self.backbone, directory)
        else:
            save_truncated_causal_lm(self.backbone, directory)
        self.tokenizer.save_pretrained(directory)
        weight = self.head.weight.detach().to("cpu").contiguous()
        save_file({"weight": weight}, str(directory / VALUE_HEAD_FILENAME))
        self.meta.save(directory, kind="nla_model", role="ar", stage=stage)
        return directory

    def encode(
        self, explanations: Sequence[str], overflow: str = "raise"
    ) -> list[list[int] | None]:
        """Token ids of the AR inputs: each whole `critic_template.format(explanation=e)` string
        tokenised at once with the tokenizer's special tokens (BOS for Llama and Gemma), as the
        release trained its ARs; the head reads the last token. An input that does not end with
        `critic_suffix_ids`, or is over `max_input_tokens`, raises (overflow="raise", for data)
        or becomes None (overflow="none": a failure in RL and evaluation)."""
        texts = [self.meta.critic_text(e) for e in explanations]
        rows: list[list[int] | None] = list(
            self.tokenizer(texts, add_special_tokens=True)["input_ids"]
        )
        tail = list(self.meta.critic_suffix_ids)
        for i, row in enumerate(rows):
            problem = None
            if row[-len(tail) :] != tail:
                problem = (
                    f"does not end with the critic suffix ids {tail} (it ends {row[-len(tail):]}): "
                    "its last characters merged with the template's suffix; end the explanation "
                    "with ordinary text"
                )
            elif len(row) > self.max_input_tokens:
                problem = (
                    f"is {len(row)} tokens, over the AR's limit of {self.max_input_tokens}: "
                    "shorten the explanation (cap the AV's response length) or raise the AR's "
                    "max_input_tokens"
                )
            if problem is None:
                continue
            if overflow == "none":
                rows[i] = None
                continue
            raise NLAConfigError(f"the AR input of explanation {i} {problem}")
        return rows

    def forward(self, input_ids: torch.Tensor, attention_mask: torch.Tensor) -> torch.Tensor:
        """Right-padded ids [B, T] -> predicted activations [B, d] (last real token)."""
        hidden = self.backbone(
            input_ids=input_ids, attention_mask=attention_mask, use_cache=False
        ).last_hidden_state
        last = attention_mask.sum(dim=1) - 1
        readout = hidden[torch.arange(hidden.shape[0], device=hidden.device), last]
        return self.head(readout.to(self.head.weight.dtype))

    def predict_ids(self, input_ids: torch.Tensor) -> torch.Tensor:
        """Unpadded ids [B, T] -> predicted activations [B, d]."""
        return self(input_ids.to(self.device), torch.ones_like(input_ids, device=self.device))

    def predict(self, explanations: Sequence[str]) -> torch.Tensor:
        """Explanations -> predicted activations [B, d] (gradients flow if enabled)."""
        ids, mask = pad_right(self.encode(explanations), self.tokenizer.pad_token_id)
        return self(ids.to(self.device), mask.to(self.device))

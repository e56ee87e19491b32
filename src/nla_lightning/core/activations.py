"""Residual-stream capture at the output of block `layer`, normalisation and checks."""

from __future__ import annotations

import torch
from torch import nn

from nla_lightning.core.families import text_config
from nla_lightning.core.layers import check_layer
from nla_lightning.errors import NLAConfigError

CHECK_CHUNK_ROWS = 65536


class _StopForward(Exception):
    """Raised by the capture hook: blocks above `layer` are never needed, so skip them."""


def _layers_beside_embeddings(model: nn.Module) -> str | None:
    """Name of the `layers` list beside the input embeddings (`model.language_model.layers` in
    a multimodal model, whose vision tower holds another `layers` list that comes first)."""
    get = getattr(model, "get_input_embeddings", None)
    embeddings = get() if get is not None else None
    if embeddings is None:
        return None
    for name, module in model.named_modules():
        if module is embeddings:
            parent = name.rpartition(".")[0]
            return f"{parent}.layers" if parent else "layers"
    return None


def decoder_layers(model: nn.Module) -> nn.ModuleList:
    """The list of transformer blocks of a transformers causal LM or base model (the TEXT
    blocks of a multimodal one)."""
    config = getattr(model, "config", None)
    n_layers = None if config is None else getattr(text_config(config), "num_hidden_layers", None)
    candidates = [
        (name, module)
        for name, module in model.named_modules()
        if isinstance(module, nn.ModuleList) and name.split(".")[-1] == "layers"
    ]
    beside = _layers_beside_embeddings(model)
    candidates.sort(key=lambda item: item[0] != beside)  # stable: the rest keep their order
    for _, module in candidates:
        if n_layers is None or len(module) == n_layers:
            return module
    raise NLAConfigError(
        f"could not find the decoder blocks of {type(model).__name__}: expected a ModuleList "
        f"named 'layers' of {n_layers} blocks (Qwen2, Llama, Gemma, Mistral architectures)"
    )


@torch.inference_mode()
def capture_activations(
    model: nn.Module,
    input_ids: torch.Tensor,
    attention_mask: torch.Tensor | None,
    layer: int,
) -> torch.Tensor:
    """Residual stream at the output of block `layer`: [B, T, d] (= hidden_states[layer+1])."""
    blocks = decoder_layers(model)
    check_layer(layer, len(blocks), type(model).__name__)
    captured: list[torch.Tensor] = []

    def hook(_module: nn.Module, _args: tuple, output: torch.Tensor | tuple) -> None:
        captured.append(output[0] if isinstance(output, tuple) else output)
        raise _StopForward

    handle = blocks[layer].register_forward_hook(hook)
    try:
        model(input_ids=input_ids, attention_mask=attention_mask, use_cache=False)
    except _StopForward:
        pass
    finally:
        handle.remove()
    return captured[0]


def last_token_activations(
    model: nn.Module, input_ids: torch.Tensor, attention_mask: torch.Tensor, layer: int
) -> torch.Tensor:
    """Activation at each row's last real token of a right-padded batch: [B, d]."""
    hidden = capture_activations(model, input_ids, attention_mask, layer)
    last = attention_mask.sum(dim=1) - 1
    return hidden[torch.arange(hidden.shape[0], device=hidden.device), last]


def check_finite(activations: torch.Tensor, where: str = "activations") -> None:
    """Fail loudly on NaN/inf rather than training on garbage (chunked: large mapped data)."""
    bad_rows: list[int] = []
    count = 0
    for start in range(0, activations.shape[0], CHECK_CHUNK_ROWS):
        bad = ~torch.isfinite(activations[start : start + CHECK_CHUNK_ROWS]).all(dim=-1)
        if bad.any():
            rows = (bad.nonzero().flatten() + start).tolist()
            bad_rows.extend(rows[: max(0, 5 - len(bad_rows))])
            count += len(rows)
    if count:
        raise NLAConfigError(
            f"{where} contain NaN or inf values (rows {bad_rows}, {count} in all): "
            "re-extract them, or drop those rows"
        )


def check_width(activations: torch.Tensor, d_model: int, where: str = "activations") -> None:
    if activations.shape[-1] != d_model:
        raise NLAConfigError(
            f"{where} have width {activations.shape[-1]} but the model's d_model is {d_model}: "
            "the data was extracted from another model"
        )


def normalise(vectors: torch.Tensor, scale: float, eps: float = 1e-8) -> torch.Tensor:
    """Rescale each vector to L2 norm `scale` (method: compare at a common norm)."""
    return vectors * (scale / vectors.norm(dim=-1, keepdim=True).clamp_min(eps))


def normalised_mean(activations: torch.Tensor, scale: float) -> torch.Tensor:
    """Mean of the rows rescaled to norm `scale`, in float64, a chunk at a time: [d]."""
    total = torch.zeros(activations.shape[-1], dtype=torch.float64)
    for start in range(0, activations.shape[0], CHECK_CHUNK_ROWS):
        chunk = activations[start : start + CHECK_CHUNK_ROWS].double()
        total += normalise(chunk, scale).sum(dim=0)
    return total / max(1, activations.shape[0])


def normalised_mse(prediction: torch.Tensor, target: torch.Tensor, scale: float) -> torch.Tensor:
    """Per-row MSE after both are rescaled to norm `scale`: [B]."""
    diff = normalise(prediction.float(), scale) - normalise(target.float(), scale)
    return diff.pow(2).mean(dim=-1)

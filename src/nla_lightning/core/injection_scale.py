"""The injection scale: the norm an activation is given when it replaces the injection token's
embedding in the AV's prompt. One rule per setting of `model.injection_scale`:

- a number: that number;
- `auto` (real models): a round number a bit above the mean L2 norm of the extracted
  activations, as the release chose its scales (Qwen2.5-7B layer 20: mean ~125 -> 150), so the
  injected row looks like the residual stream the AV will be asked about;
- `embedding`: the median norm of a token's row as it enters the first block (Gemma scales by
  sqrt(d)), so the injected row looks like a token.
"""

from __future__ import annotations

import math
from typing import Any

import torch

from nla_lightning.errors import NLAConfigError

RULES = ("auto", "embedding")
# Round numbers: these mantissas times a power of ten (..., 100, 150, 200, 250, 300, 400, ...).
ROUND_MANTISSAS = (1.0, 1.5, 2.0, 2.5, 3.0, 4.0, 5.0, 6.0, 8.0)
# "A bit above": at least 10% over the mean.
HEADROOM = 1.1
NORM_CHUNK_ROWS = 65536


def round_above(mean_norm: float) -> float:
    """The smallest round number (see ROUND_MANTISSAS) >= HEADROOM x mean_norm."""
    if not (math.isfinite(mean_norm) and mean_norm > 0):
        raise NLAConfigError(
            f"the extracted activations have mean norm {mean_norm!r}: expected a positive finite "
            "number; check the extraction (all-zero or NaN activations), or set "
            "model.injection_scale to a number"
        )
    wanted = HEADROOM * mean_norm
    power = 10.0 ** math.floor(math.log10(wanted))
    for mantissa in (*ROUND_MANTISSAS, 10.0):
        # A relative tolerance, so 1.5 x 100 is not refused for being 150.00000000000003.
        if mantissa * power >= wanted * (1 - 1e-12):
            return float(f"{mantissa * power:.6g}")
    raise AssertionError("unreachable: 10 x power >= wanted")


def mean_norm(activations: torch.Tensor) -> float:
    """Mean L2 norm of the rows of [N, d] raw activations, in float64, chunk by chunk (a
    memory-mapped dataset is never copied whole)."""
    if activations.shape[0] == 0:
        raise NLAConfigError("no activations to take the injection scale from: the split is empty")
    total = 0.0
    for start in range(0, activations.shape[0], NORM_CHUNK_ROWS):
        rows = activations[start : start + NORM_CHUNK_ROWS].double()
        total += float(torch.linalg.vector_norm(rows, dim=-1).sum())
    return total / activations.shape[0]


def from_activations(activations: torch.Tensor) -> float:
    """`auto`: a round number a bit above the activations' mean norm."""
    return round_above(mean_norm(activations))


def from_embeddings(model: Any) -> float:
    """`embedding`: the median norm of a token's row as it enters the first block."""
    from nla_lightning.core.families import embedding_output_scale

    module = model.get_input_embeddings()
    weight = module.weight.detach().float()
    scale = float(getattr(module, "embed_scale", 1.0)) * embedding_output_scale(model)
    return float(weight.norm(dim=-1).median()) * scale


def known_before_extraction(setting: float | str, model: Any) -> float | None:
    """The scale a setting gives without the activations: a number, or `embedding` from the
    model; None for `auto`, which needs the extracted activations."""
    if setting == "auto":
        return None
    return from_embeddings(model) if setting == "embedding" else float(setting)


def check_setting(key: str, setting: Any) -> None:
    """A positive finite number or one of RULES."""
    if setting in RULES:
        return
    if (
        isinstance(setting, bool)
        or not isinstance(setting, (int, float))
        or not math.isfinite(setting)
        or setting <= 0
    ):
        raise NLAConfigError(
            f"{key}={setting!r}: expected a positive number or one of {list(RULES)} ('auto': a "
            "round number above the mean activation norm; 'embedding': the token-embedding norm)"
        )

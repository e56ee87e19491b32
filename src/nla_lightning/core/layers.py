"""The one check that a block index names a block of the model (every caller uses it)."""

from __future__ import annotations

from nla_lightning.errors import NLAConfigError


def check_layer(layer: int, num_layers: int | None, model: str) -> None:
    """`layer` indexes the residual stream after block `layer` (hidden_states[layer + 1]), so
    it must be 0..num_layers-1; `num_layers` None (unknown yet) checks only the sign."""
    if isinstance(layer, bool) or not isinstance(layer, int):
        raise NLAConfigError(f"layer={layer!r} is not a block index: pass an integer, e.g. layer=2")
    if layer < 0 or (num_layers is not None and layer >= num_layers):
        top = "N-1" if num_layers is None else num_layers - 1
        default = "" if num_layers is None else f" (default {2 * num_layers // 3})"
        raise NLAConfigError(
            f"layer={layer} is out of range for {model}, which has {num_layers or '?'} layers: "
            f"pass layer=0..{top}{default}"
        )

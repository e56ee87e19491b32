"""Block-output hooks shared by steering and fidelity: read and rewrite the residual stream."""

from __future__ import annotations

from collections.abc import Callable, Iterator
from contextlib import contextmanager
from typing import Any

import torch
from torch import nn

from nla_lightning.core.activations import decoder_layers

# (hidden [B, T, d], absolute positions [B, T]) -> new hidden [B, T, d]
Edit = Callable[[torch.Tensor, torch.Tensor], torch.Tensor]


def _positions(kwargs: dict[str, Any], hidden: torch.Tensor) -> torch.Tensor:
    """Absolute position of every token of this forward: [B, T]."""
    ids = kwargs.get("position_ids")
    if ids is not None:
        return ids.to(hidden.device).expand(hidden.shape[0], -1)
    # Without position ids a forward of one token is taken as a cached decode step (never a
    # prompt position), a longer one as the prefill starting at 0.
    b, t = hidden.shape[:2]
    start = 1 << 30 if t == 1 else 0
    return (torch.arange(t, device=hidden.device) + start).expand(b, -1)


@contextmanager
def edit_block_output(model: nn.Module, layer: int, edit: Edit) -> Iterator[None]:
    """Rewrite the output of block `layer` with `edit` for every forward inside the block."""

    def hook(_m: nn.Module, _args: tuple, kwargs: dict[str, Any], output: Any) -> Any:
        hidden = output[0] if isinstance(output, tuple) else output
        new = edit(hidden, _positions(kwargs, hidden)).to(hidden.dtype)
        return (new, *output[1:]) if isinstance(output, tuple) else new

    handle = decoder_layers(model)[layer].register_forward_hook(hook, with_kwargs=True)
    try:
        yield
    finally:
        handle.remove()

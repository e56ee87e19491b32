"""Dropout off for RL: rewards are read from the AR's training forward, and the GRPO ratio
compares log-probs of one deterministic policy."""

from __future__ import annotations

from torch import nn


def disable_dropout(*modules: nn.Module) -> None:
    """Set every dropout layer's probability to 0 (attention dropout in the HF models we load
    is already 0 in their configs)."""
    for module in modules:
        for layer in module.modules():
            if isinstance(layer, nn.Dropout):
                layer.p = 0.0

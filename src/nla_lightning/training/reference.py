"""The KL penalty's reference: log-probs of the frozen warm-start AV."""

from __future__ import annotations

import torch

from nla_lightning.core.verbalizer import ActivationVerbalizer
from nla_lightning.errors import NLAConfigError
from nla_lightning.settings.model import REFERENCE_MODES

REFERENCE_ADAPTER = "reference"


class ReferencePolicy:
    """Log-probs of the frozen warm-start AV for the KL penalty.

    `quantized_4bit` / `frozen`: a separate NF4 / full-precision copy; `adapter`: the trained
    AV with its LoRA adapters disabled (no extra weights); `none`: no KL.
    """

    def __init__(self, mode: str, frozen: ActivationVerbalizer | None = None) -> None:
        if mode not in REFERENCE_MODES:
            raise NLAConfigError(f"unknown reference mode {mode!r}: use one of {REFERENCE_MODES}")
        if mode in ("quantized_4bit", "frozen") and frozen is None:
            raise NLAConfigError(f"reference mode {mode} needs the frozen copy of the AV")
        self.mode = mode
        self.frozen = frozen
        if frozen is not None:
            frozen.requires_grad_(False)
            frozen.eval()

    @torch.no_grad()
    def logprobs(
        self,
        av: ActivationVerbalizer,
        activations: torch.Tensor,
        ids: torch.Tensor,
        mask: torch.Tensor,
        group_size: int = 1,
    ) -> torch.Tensor | None:
        """Reference log-probs [N, T] of the responses (`group_size`: as
        `ActivationVerbalizer.response_logprobs`); None without a reference."""
        if self.mode == "none":
            return None
        if self.mode == "adapter":
            if not hasattr(av.model, "disable_adapter"):
                raise NLAConfigError(
                    "reference mode 'adapter' needs an AV trained with LoRA "
                    "(model.train.av_mode=lora or qlora)"
                )
            if REFERENCE_ADAPTER in av.model.peft_config:
                # LoRA warm start: the frozen copy of the warm-start adapter.
                av.model.set_adapter(REFERENCE_ADAPTER)
                try:
                    return av.response_logprobs(activations, ids, mask, group_size)
                finally:
                    av.model.set_adapter("default")
            # Full warm start + LoRA for RL: adapters off is exactly the warm start.
            with av.model.disable_adapter():
                return av.response_logprobs(activations, ids, mask, group_size)
        return self.frozen.response_logprobs(
            activations,
            ids.to(self.frozen.prompt_ids.device),
            mask.to(self.frozen.prompt_ids.device),
            group_size,
        ).to(ids.device)

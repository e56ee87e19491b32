"""Held-out evaluation of a whole NLA: AV explains, AR reconstructs, FVE against the truth."""

from __future__ import annotations

import torch

from nla_lightning.data.datasets import derangement
from nla_lightning.metrics import FVE
from nla_lightning.reconstructor import ActivationReconstructor
from nla_lightning.verbalizer import ActivationVerbalizer


@torch.no_grad()
def reconstruct_explanations(
    ar: ActivationReconstructor, explanations: list[str | None], batch_size: int = 64
) -> torch.Tensor:
    """AR predictions [N, d]; a missing explanation is read as an empty one."""
    rows = [e if e is not None else "" for e in explanations]
    parts = [ar.predict(rows[i : i + batch_size]) for i in range(0, len(rows), batch_size)]
    return torch.cat(parts).float()


@torch.no_grad()
def evaluate_nla(
    av: ActivationVerbalizer,
    ar: ActivationReconstructor,
    activations: torch.Tensor,
    batch_size: int = 64,
    max_new_tokens: int = 40,
    seed: int = 0,
    temperature: float = 1.0,
    snippets: list | None = None,
) -> dict[str, float]:
    """FVE of AR(AV(h)) on held-out activations, and the same with each AV fed another row's
    activation (the shuffled control), plus the AV's failure rate and response length.
    Temperature 0 scores the AV's greedy explanation. With the rows' toy-world `snippets`, also
    the attribute recall, precision and confabulation of the explanations."""
    was_training = av.training, ar.training
    av.eval()
    ar.eval()
    meta = av.meta
    device = ar.device
    shuffled = activations[derangement(len(activations), seed)]
    results: dict[str, float] = {}
    for name, source in (("fve", activations), ("fve_shuffled", shuffled)):
        torch.manual_seed(seed)
        metric = FVE(meta.d_model, meta.mse_scale)
        failures, tokens, said = 0, 0, []
        for start in range(0, len(activations), batch_size):
            rollout = av.sample(
                source[start : start + batch_size].to(device),
                max_new_tokens=max_new_tokens,
                temperature=temperature,
            )
            predicted = reconstruct_explanations(ar, rollout.explanations, batch_size)
            metric.update(predicted.cpu(), activations[start : start + batch_size])
            failures += sum(e is None for e in rollout.explanations)
            said.extend(rollout.explanations)
            tokens += int(rollout.lengths.sum())
        results[name] = float(metric.compute())
        if name == "fve":
            results["failure_rate"] = failures / len(activations)
            results["response_length"] = tokens / len(activations)
            if snippets is not None:
                from nla_lightning.toy.scoring import score_attributes

                scores = score_attributes(said, snippets[: len(said)])
                for key in ("recall", "precision", "confabulation"):
                    results[key] = scores[key]
    av.train(was_training[0])
    ar.train(was_training[1])
    return results

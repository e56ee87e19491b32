"""Every setting of the RL stage (`rl.*` on the command line) with its one default."""

from __future__ import annotations

from dataclasses import dataclass, field

from nla_lightning.settings import checks

# How per-token losses become one number, and how an MSE becomes a reward (training/grpo.py).
AGGREGATIONS = ("token_mean", "sequence_mean", "constant_norm", "sum")
KL_ESTIMATORS = ("k1", "k3")
REWARD_KINDS = ("neg_log_mse", "neg_mse")


@dataclass
class RLSettings:
    """GRPO for the AV, one regression step for the AR per batch, KL to the warm start.

    The defaults are the toy world's (method.md, "The official recipe", lists the release's)."""

    steps: int = 300
    batch_size: int = 8  # activations per step; each gets `group_size` samples
    group_size: int = 4
    max_new_tokens: int = 150  # the release caps rollouts here; longer is a failure
    temperature: float = 1.0
    # Decode the rollout through a compiled step over a static KV cache: the same tokens with
    # fewer Python-level operations per token, after a one-off compile (about 15-30 s on a
    # 2-core CPU for the toy AV); worth it for long runs, not for a few hundred tiny steps.
    compile_rollout: bool = False
    beta: float = 0.01  # KL weight; > 0 needs model.train.reference
    # Per-token KL to the reference: k3 = exp(ref - logp) - (ref - logp) - 1 (>= 0, low
    # variance), k1 = logp - ref (the release's).
    kl_estimator: str = "k3"
    clip_eps: float = 0.2
    inner_epochs: int = 1
    # Divide group advantages (r - mean) by the group's unbiased std + 1e-6 (the release does).
    scale_by_std: bool = False
    # How per-token losses become one number: token_mean = over every token of the batch;
    # sequence_mean = each sample's token mean, then the mean over samples (the release's);
    # constant_norm = sum / (samples x max_new_tokens); sum = the plain sum.
    aggregation: str = "token_mean"
    reward: str = "neg_log_mse"  # neg_log_mse (the paper's) | neg_mse (the release code's)
    av_lr: float = 1.0e-4
    ar_lr: float = 3.0e-4
    warmup_steps: int = 10  # linear warm-up, then constant (0 = constant from the start)
    # AdamW of both updates; the release's are [0.9, 0.95].
    adam_betas: list[float] = field(default_factory=lambda: [0.9, 0.999])
    adam_eps: float = 1.0e-8
    weight_decay: float = 0.0
    # Manual optimisation: the stage clips by norm itself (trainer.gradient_clip_val is
    # refused). None = off.
    gradient_clip_val: float | None = None
    # Rows per AV forward/backward; 0 = the whole batch at once. A multiple of group_size (or 0)
    # runs each group's prompt once for its G responses (without gradient checkpointing).
    av_micro_batch: int = 0
    ar_micro_batch: int = 0
    max_bad_steps: int = 5  # non-finite steps in a row before the run stops
    examples_every: int = 25  # sampled explanations logged every N steps (0 = never)
    eval_rows: int = 512  # held-out rows of the RL curve
    eval_every: int = 50  # held-out FVE during RL (val/fve); 0 = only before and after
    checkpoint_every: int = 50
    export_every_checkpoint: bool = False
    seed: int = 0  # follows the run's top-level `seed`

    def __post_init__(self) -> None:
        for key in ("steps", "batch_size", "group_size", "max_new_tokens", "inner_epochs"):
            checks.positive(f"rl.{key}", getattr(self, key))
        for key in ("av_lr", "ar_lr"):
            checks.positive(f"rl.{key}", getattr(self, key))
        checks.non_negative("rl.temperature", self.temperature)
        checks.non_negative("rl.beta", self.beta)
        checks.between("rl.clip_eps", self.clip_eps, 0.0, 1.0)
        checks.one_of("rl.aggregation", self.aggregation, AGGREGATIONS)
        checks.one_of("rl.kl_estimator", self.kl_estimator, KL_ESTIMATORS)
        self.adam_betas = checks.betas("rl.adam_betas", self.adam_betas)
        checks.positive("rl.adam_eps", self.adam_eps)
        checks.non_negative("rl.weight_decay", self.weight_decay)
        checks.one_of("rl.reward", self.reward, REWARD_KINDS)
        checks.optional_positive("rl.gradient_clip_val", self.gradient_clip_val)
        for key in (
            "warmup_steps",
            "av_micro_batch",
            "ar_micro_batch",
            "examples_every",
            "eval_every",
        ):
            checks.non_negative(f"rl.{key}", getattr(self, key))
        for key in ("max_bad_steps", "eval_rows", "checkpoint_every"):
            checks.positive(f"rl.{key}", getattr(self, key))

"""Back-of-the-envelope GPU memory estimate for one NLA training run, printed before loading.

Everything is computed from a transformers config (Llama / Qwen2 / Qwen3 / Mistral / Gemma-style
decoders), no weights are touched. Conventions (all sizes in bytes, reported in GiB = 2**30):

* Weights: `dtype_bytes` per parameter. NF4 (bitsandbytes 4-bit, double quant off, blocksize 64)
  stores the Linear weights of the decoder blocks at 0.5 byte/param plus one fp32 absmax per 64
  weights (4/64 = 0.0625 byte/param); embeddings, lm_head, norms and biases stay in `dtype`
  (bitsandbytes only quantises nn.Linear, and transformers skips the lm_head).
* Trainable parameters: all of them in `full` mode; in `lora` / `qlora` only the LoRA adapters
  (plus the AR's d x d head, always trained). They are held in `dtype` (no fp32 master copy,
  i.e. "bf16-true" training; PEFT may upcast adapters to fp32, negligible at LoRA sizes).
  Gradients: `dtype_bytes` per trainable param. AdamW: two fp32 moments = 8 bytes per param.
* Activations of one training micro-batch (`micro_batch` x `seq_len` tokens), per token per
  layer, with SDPA / flash attention (no seq^2 score matrix): the tensors saved for backward by
  a SwiGLU block, ~ dtype_bytes * (7 * hidden + 2 * kv_heads * head_dim + 4 * intermediate)
  (2 norm inputs, q/k/v/o inputs and outputs, gate/up/act/down inputs), an adaptation of
  Korthikanti et al. 2022 (34 * hidden for a 4x GeLU MLP). With gradient checkpointing only each
  block's input is kept (hidden * dtype_bytes) plus one block recomputed in full. The AV adds its
  logits: micro_batch * seq_len * vocab * (dtype_bytes + 4) (logits + fp32 log-softmax). AV and
  AR activations are summed (conservative).
* KV cache for sampling rollouts on the AV: 2 * layers * kv_heads * head_dim * seq_len
  (prompt + response) * rollout_batch * dtype_bytes.
* The total is the plain sum of the components (no CUDA context, allocator fragmentation or
  temporary buffers: keep 1-2 GiB of headroom).
"""

from __future__ import annotations

from dataclasses import dataclass, fields
from typing import Any

from nla_lightning.core.families import text_config
from nla_lightning.settings.model import REFERENCE_MODES
from nla_lightning.settings.rl import RLSettings

GIB = 2**30
NF4_BYTES_PER_PARAM = 0.5 + 4 / 64  # packed 4-bit weight + fp32 absmax per 64-weight block
ADAM_BYTES_PER_PARAM = 8  # exp_avg + exp_avg_sq in fp32
ALL_LINEAR = ("q_proj", "k_proj", "v_proj", "o_proj", "gate_proj", "up_proj", "down_proj")
TRAIN_MODES = ("full", "lora", "qlora")


def _dims(config: Any) -> dict[str, int]:
    c = text_config(config)
    heads = c.num_attention_heads
    head_dim = getattr(c, "head_dim", None) or c.hidden_size // heads
    return {
        "h": c.hidden_size,
        "i": c.intermediate_size,
        "layers": c.num_hidden_layers,
        "heads": heads,
        "kv": getattr(c, "num_key_value_heads", None) or heads,
        "hd": head_dim,
        "vocab": c.vocab_size,
    }


def _linear_shapes(config: Any) -> dict[str, tuple[int, int]]:
    """(in_features, out_features) of every Linear in one decoder block."""
    d = _dims(config)
    h, q, kv = d["h"], d["heads"] * d["hd"], d["kv"] * d["hd"]
    return {
        "q_proj": (h, q), "k_proj": (h, kv), "v_proj": (h, kv), "o_proj": (q, h),
        "gate_proj": (h, d["i"]), "up_proj": (h, d["i"]), "down_proj": (d["i"], h),
    }  # fmt: skip


def _block_parameters(config: Any) -> tuple[int, int]:
    """(Linear weights, everything else: biases and norms) of one decoder block."""
    c, d = text_config(config), _dims(config)
    shapes = _linear_shapes(config)
    linear = sum(i * o for i, o in shapes.values())
    other = 2 * d["h"]  # input_layernorm + post_attention_layernorm
    if c.model_type.startswith(("gemma2", "gemma3")):
        other += 2 * d["h"]  # pre/post feed-forward norms
    if c.model_type.startswith(("qwen3", "gemma3")):
        other += 2 * d["hd"]  # q_norm, k_norm
    if c.model_type == "qwen2":
        other += sum(shapes[m][1] for m in ("q_proj", "k_proj", "v_proj"))
    elif getattr(c, "attention_bias", False):
        other += sum(shapes[m][1] for m in ("q_proj", "k_proj", "v_proj", "o_proj"))
    if getattr(c, "mlp_bias", False):
        other += sum(shapes[m][1] for m in ("gate_proj", "up_proj", "down_proj"))
    return linear, other


def _split_parameters(
    config: Any, num_layers: int | None, include_lm_head: bool, include_final_norm: bool
) -> tuple[int, int]:
    """(quantisable block Linear weights, parameters that stay in dtype)."""
    c, d = text_config(config), _dims(config)
    n = d["layers"] if num_layers is None else num_layers
    if not 0 <= n <= d["layers"]:
        raise ValueError(f"num_layers={n} outside 0..{d['layers']}")
    linear, other = _block_parameters(config)
    kept = d["vocab"] * d["h"] + n * other + (d["h"] if include_final_norm else 0)
    if include_lm_head and not getattr(c, "tie_word_embeddings", False):
        kept += d["vocab"] * d["h"]
    return n * linear, kept


def count_parameters(
    config: Any,
    num_layers: int | None = None,
    include_lm_head: bool = True,
    include_final_norm: bool = True,
) -> int:
    """Exact parameter count (tied embeddings counted once) of the decoder, truncated to
    `num_layers` blocks if given."""
    return sum(_split_parameters(config, num_layers, include_lm_head, include_final_norm))


def lora_parameters(
    config: Any, rank: int, target_modules=ALL_LINEAR, num_layers: int | None = None
) -> int:
    """Parameters of LoRA adapters (A: rank x in, B: out x rank) on `target_modules`."""
    shapes = _linear_shapes(config)
    unknown = set(target_modules) - set(shapes)
    if unknown:
        raise ValueError(f"unknown LoRA target modules {sorted(unknown)}; known: {ALL_LINEAR}")
    n = _dims(config)["layers"] if num_layers is None else num_layers
    return n * sum(rank * (shapes[m][0] + shapes[m][1]) for m in target_modules)


@dataclass
class MemoryEstimate:
    """Estimated GPU memory per component, in GiB."""

    policy: float
    reference: float
    ar: float
    optimizer: float
    gradients: float
    activations: float
    kv_cache: float

    @property
    def total(self) -> float:
        return sum(getattr(self, f.name) for f in fields(self))

    def table(self) -> str:
        rows = [(f.name, getattr(self, f.name)) for f in fields(self)] + [("total", self.total)]
        width = max(len(name) for name, _ in rows)
        lines = [f"{'component':<{width}}  {'GiB':>7}"]
        lines += [f"{name:<{width}}  {gib:>7.1f}" for name, gib in rows]
        return "\n".join(lines)

    def fits(self, gpu_gib: float) -> bool:
        return self.total <= gpu_gib


def _weight_bytes(config, num_layers, include_lm_head, include_final_norm, quantized, dtype_bytes):
    linear, kept = _split_parameters(config, num_layers, include_lm_head, include_final_norm)
    return linear * (NF4_BYTES_PER_PARAM if quantized else dtype_bytes) + kept * dtype_bytes


def estimate_memory(
    config: Any,
    layer: int,
    av_mode: str = "full",
    ar_mode: str = "full",
    reference: str = "quantized_4bit",
    dtype_bytes: int = 2,
    lora_rank: int = 16,
    micro_batch: int = 4,
    seq_len: int = 512,
    rollout_batch: int = 16,
    gradient_checkpointing: bool = False,
) -> MemoryEstimate:
    """Estimate of the GPU memory of AV + reference + AR training (see the module docstring)."""
    for name, mode in (("av_mode", av_mode), ("ar_mode", ar_mode)):
        if mode not in TRAIN_MODES:
            raise ValueError(f"{name}={mode!r}, expected one of {TRAIN_MODES}")
    if reference not in REFERENCE_MODES:
        raise ValueError(f"reference={reference!r}, expected one of {REFERENCE_MODES}")
    if reference == "adapter" and av_mode == "full":
        raise ValueError(
            "reference='adapter' needs av_mode 'lora' or 'qlora': the reference is the AV with its "
            "LoRA adapters disabled, and a fully fine-tuned AV has no frozen base weights to reuse"
        )
    d = _dims(config)
    if not 0 <= layer < d["layers"]:
        raise ValueError(f"layer={layer} outside 0..{d['layers'] - 1}")
    ar_layers = layer + 1

    policy = _weight_bytes(config, None, True, True, av_mode == "qlora", dtype_bytes)
    ar = _weight_bytes(config, ar_layers, False, False, ar_mode == "qlora", dtype_bytes)
    head = d["h"] * d["h"]
    ar += head * dtype_bytes
    if av_mode == "full":
        av_trainable = count_parameters(config)
    else:
        av_trainable = lora_parameters(config, lora_rank)
        policy += av_trainable * dtype_bytes
    if ar_mode == "full":
        ar_trainable = count_parameters(config, ar_layers, False, False) + head
    else:
        ar_trainable = lora_parameters(config, lora_rank, num_layers=ar_layers) + head
        ar += (ar_trainable - head) * dtype_bytes
    trainable = av_trainable + ar_trainable
    # A separate frozen AV: in NF4 (quantized_4bit) or in the training dtype (frozen).
    ref = (
        _weight_bytes(config, None, True, True, reference == "quantized_4bit", dtype_bytes)
        if reference in ("quantized_4bit", "frozen")
        else 0
    )

    tokens = micro_batch * seq_len
    full_block = dtype_bytes * (7 * d["h"] + 2 * d["kv"] * d["hd"] + 4 * d["i"])
    per_layer = dtype_bytes * d["h"] if gradient_checkpointing else full_block
    recompute = full_block if gradient_checkpointing else 0
    activations = tokens * (
        (d["layers"] + ar_layers) * per_layer + 2 * recompute + d["vocab"] * (dtype_bytes + 4)
    )
    kv_cache = 2 * d["layers"] * d["kv"] * d["hd"] * seq_len * rollout_batch * dtype_bytes
    return MemoryEstimate(
        policy=policy / GIB,
        reference=ref / GIB,
        ar=ar / GIB,
        optimizer=trainable * ADAM_BYTES_PER_PARAM / GIB,
        gradients=trainable * dtype_bytes / GIB,
        activations=activations / GIB,
        kv_cache=kv_cache / GIB,
    )


def rl_estimate(av_dir: str, layer: int, train: dict[str, Any], hp: RLSettings) -> MemoryEstimate:
    """The RL stage's per-component estimate for the warm start in `av_dir` and the
    configured fine-tuning mode (`model.train`), printed before anything big is loaded."""
    from nla_lightning.core.lora import weights_of
    from nla_lightning.core.models import load_config

    return estimate_memory(
        load_config(weights_of(av_dir)),
        layer,
        av_mode=train["av_mode"],
        ar_mode=train["ar_mode"],
        reference=train["reference"],
        dtype_bytes=2 if train["dtype"] in ("bfloat16", "float16") else 4,
        lora_rank=train["lora_rank"],
        micro_batch=hp.av_micro_batch or hp.batch_size * hp.group_size,
        seq_len=hp.max_new_tokens + 128,
        rollout_batch=hp.batch_size * hp.group_size,
        gradient_checkpointing=train["gradient_checkpointing"],
    )


def per_rank_gib(
    config: Any, estimate: MemoryEstimate, ranks: int, reference: str, dtype_bytes: int = 2
) -> float:
    """GiB on each of `ranks` GPUs under trainer.strategy=fsdp (FSDP2), for the same global
    batch as `estimate` (one GPU's): weights, gradients, AdamW moments and a `frozen`
    reference sharded 1/ranks (an NF4 reference stays whole on every rank); then the larger of
    the two phases of a step. Rollout: the AV gathered whole (sampling waits on no other rank)
    plus 1/ranks of the rollout's KV cache. Update: one micro-batch's activations (the same
    micro-batch per rank) plus two gathered blocks (the one running, the next prefetched)."""
    if ranks < 1:
        raise ValueError(f"ranks={ranks}, expected >= 1")
    whole_reference = estimate.reference if reference == "quantized_4bit" else 0.0
    shared = (
        estimate.policy
        + estimate.ar
        + estimate.optimizer
        + estimate.gradients
        + estimate.reference
        - whole_reference
    )
    states = shared / ranks + whole_reference
    rollout = states + estimate.policy * (ranks - 1) / ranks + estimate.kv_cache / ranks
    block = sum(_block_parameters(config)) * dtype_bytes / GIB
    update = states + estimate.activations + 2 * block
    return max(rollout, update)

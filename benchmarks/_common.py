"""Helpers shared by the benchmark scripts: machine header, Markdown tables, JSON output and the
default tiny toy target (random weights: speed does not depend on what the weights are)."""

from __future__ import annotations

import argparse
import json
import os
import platform
import statistics
import time
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")

import torch  # noqa: E402

REPO = Path(__file__).resolve().parents[1]
TINY_MODEL_CONF = REPO / "conf" / "model" / "tiny.yaml"


def add_common_args(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--device", default="cpu", help="cpu (default) or cuda")
    parser.add_argument("--json", type=Path, default=None, help="also write the numbers here")
    parser.add_argument("--quick", action="store_true", help="tiny sizes: a smoke test")
    parser.add_argument(
        "--threads", type=int, default=None, help="torch CPU threads (default: torch's choice)"
    )


def setup(args: argparse.Namespace) -> dict[str, Any]:
    """Apply --threads, check --device, print and return the machine description."""
    if args.threads:
        torch.set_num_threads(args.threads)
    if args.device.startswith("cuda") and not torch.cuda.is_available():
        raise SystemExit("--device cuda was asked for, but torch sees no CUDA device")
    info = machine_info(args.device)
    print(machine_line(info) + "\n")
    return info


def cpu_model() -> str:
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or platform.machine()


def machine_info(device: str) -> dict[str, Any]:
    import transformers

    info: dict[str, Any] = {
        "cpu": cpu_model(),
        "cores": os.cpu_count(),
        "torch_threads": torch.get_num_threads(),
        "torch": torch.__version__,
        "transformers": transformers.__version__,
        "python": platform.python_version(),
        "device": device,
    }
    if device.startswith("cuda"):
        info["gpu"] = torch.cuda.get_device_name(torch.device(device))
    if hasattr(os, "getloadavg"):
        info["load_avg_1m"] = round(os.getloadavg()[0], 2)
    return info


def machine_line(info: dict[str, Any]) -> str:
    device = info["device"] + (f" ({info['gpu']})" if "gpu" in info else "")
    load = f", load average {info['load_avg_1m']}" if "load_avg_1m" in info else ""
    return (
        f"machine: {info['cpu']}, {info['cores']} cores, {info['torch_threads']} torch threads"
        f"{load}; torch {info['torch']}, transformers {info['transformers']}, "
        f"python {info['python']}; device {device}"
    )


def markdown_table(headers: Sequence[str], rows: Sequence[Sequence[Any]]) -> str:
    """A plain Markdown table; floats get 4 significant digits (whole numbers from 1000)."""

    def cell(value: Any) -> str:
        if isinstance(value, float):
            return f"{value:.4g}" if abs(value) < 1000 else f"{value:.0f}"
        return str(value)

    lines = ["| " + " | ".join(headers) + " |", "|" + "|".join("---" for _ in headers) + "|"]
    lines += ["| " + " | ".join(cell(v) for v in row) + " |" for row in rows]
    return "\n".join(lines)


def write_json(path: Path | None, payload: dict[str, Any]) -> None:
    if path is None:
        return
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(payload, indent=2))
    print(f"\nwrote {path}")


def sync(device: str) -> None:
    if device.startswith("cuda"):
        torch.cuda.synchronize()


def timed(fn: Callable[[], Any], device: str) -> tuple[float, Any]:
    """(seconds, result) of one call, with the device synchronised on both sides."""
    sync(device)
    start = time.perf_counter()
    result = fn()
    sync(device)
    return time.perf_counter() - start, result


def median(values: Sequence[float]) -> float:
    return float(statistics.median(values))


def tiny_architecture() -> dict[str, Any]:
    """The default run's target architecture (conf/model/tiny.yaml)."""
    import yaml

    return dict(yaml.safe_load(TINY_MODEL_CONF.read_text())["architecture"])


def toy_tokenizer(prompts: str = "toy") -> Any:
    """The toy word-level tokenizer grown by the words of a set of prompt templates (`toy`, or
    `reference`: the release's, which the Qwen presets use)."""
    from nla_lightning.core.templates import templates
    from nla_lightning.toy.tokenizer import build_toy_tokenizer

    return build_toy_tokenizer(extra_texts=templates(prompts))


def toy_target(tokenizer: Any, seed: int = 0, **overrides: Any) -> torch.nn.Module:
    """A randomly initialised tiny Qwen2 with the default run's architecture (as pretraining
    starts it); `overrides` change architecture fields."""
    from transformers import AutoModelForCausalLM

    from nla_lightning.training.pretrain import toy_config

    config = toy_config(tokenizer, {**tiny_architecture(), **overrides})
    torch.manual_seed(seed)
    return AutoModelForCausalLM.from_config(config).eval()


def toy_meta(
    tokenizer: Any, model: torch.nn.Module, layer: int = 2, prompts: str = "toy"
) -> Any:
    """NLA metadata for the toy target, made as the pipeline makes it (`prompts`: the toy
    templates, or the release's `reference` ones, with a prompt of real length)."""
    from nla_lightning.core.injection_scale import from_embeddings
    from nla_lightning.core.meta import build_meta
    from nla_lightning.core.templates import templates

    actor, critic = templates(prompts)
    return build_meta(
        tokenizer,
        model.config,
        base_model="toy-qwen2-tiny",
        layer=layer,
        injection_scale=from_embeddings(model),  # the toy world's rule (conf/model/tiny.yaml)
        actor_template=actor,
        critic_template=critic,
    )


def synthetic_run(
    directory: Path, rows: int = 256, hidden: int | None = None, prompts: str = "toy"
) -> tuple[Path, Any, torch.Tensor]:
    """An untrained NLA on the tiny target (`hidden`: another width, shaped like the default
    128: MLP 2x, heads of 32, a key/value head per two; `prompts`: its templates, as in
    `toy_meta`): (AV dir, AR, activations [rows, d])."""
    from nla_lightning.core.reconstructor import ActivationReconstructor
    from nla_lightning.core.verbalizer import ActivationVerbalizer

    tokenizer = toy_tokenizer(prompts)
    widths = {}
    if hidden is not None:
        widths = {
            "hidden_size": hidden,
            "intermediate_size": 2 * hidden,
            "num_attention_heads": hidden // 32,
            "num_key_value_heads": hidden // 64,
        }
    model = toy_target(tokenizer, **widths)
    meta = toy_meta(tokenizer, model, prompts=prompts)
    target_dir = directory / "target"
    model.save_pretrained(target_dir)
    tokenizer.save_pretrained(target_dir)
    av_dir = ActivationVerbalizer(model, tokenizer, meta).save(directory / "av")
    ar = ActivationReconstructor.from_target(str(target_dir), tokenizer, meta)
    activations = torch.randn(rows, meta.d_model, generator=torch.Generator().manual_seed(0))
    return av_dir, ar, activations


def bench_trainer(device: str, **extra: Any) -> Any:
    """A Lightning Trainer that only runs the module: no logger, checkpoints, bars or summary."""
    import lightning as L

    return L.Trainer(
        accelerator="gpu" if device.startswith("cuda") else "cpu",
        devices=1,
        max_epochs=-1,
        logger=False,
        enable_checkpointing=False,
        enable_progress_bar=False,
        enable_model_summary=False,
        **extra,
    )

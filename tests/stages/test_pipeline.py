"""The real entry: Hydra composition of conf/, a full tiny run, the CLI and multirun."""

import json
import math
import os
import subprocess
import sys
from pathlib import Path

import pytest
import torch
from hydra.errors import MissingConfigException

from nla_lightning.core.padding import pad_right
from nla_lightning.core.reconstructor import ActivationReconstructor
from nla_lightning.core.verbalizer import ActivationVerbalizer, encode_responses
from nla_lightning.data.columns import table_explanations
from nla_lightning.data.datasets import derangement
from nla_lightning.data.store import read_activations
from nla_lightning.errors import NLAConfigError
from nla_lightning.evaluation.round_trip import round_trip
from nla_lightning.pipeline import run
from tests.conftest import (
    TINY_RUN,
    compose,
    fve_by_hand,
    mean_prediction_by_hand,
    plain,
    train_py,
)

ROOT = Path(__file__).resolve().parents[2]


def test_tiny_run_writes_summary_checkpoints_and_logs(tiny_run):
    summary, out = tiny_run
    on_disk = json.loads((out / "summary.json").read_text())
    assert on_disk["wall_s"] > 0
    stages = on_disk["stages"]
    check_ar_sft_numbers(stages["ar_sft"], out, on_disk["seed"])
    check_av_sft_numbers(stages["av_sft"], out, on_disk["seed"])
    assert stages["target"]["pretrain_steps"] == 10
    for part in ("av_sft", "ar_sft", "rl", "eval"):
        assert (out / "data" / f"{part}.parquet").exists()
        assert (out / "data" / f"{part}.parquet.nla_meta.yaml").exists()
    assert (out / "logs" / "av_sft" / "metrics.csv").exists()
    rl = stages["rl"]
    assert rl["steps"] == 3
    check_rl_numbers(rl, out, on_disk["seed"])
    assert (out / "rl_checkpoints" / "last.ckpt").exists()
    assert (out / "checkpoints" / "rl" / "ar" / "value_head.safetensors").exists()
    assert "explanation" in (out / "logs" / "rl" / "examples.csv").read_text()
    metrics = (out / "logs" / "rl" / "metrics.csv").read_text().splitlines()[0]
    for column in ("rl/fve", "rl/reward", "rl/kl", "rl/clip_fraction", "time/rollout_s"):
        assert column in metrics


def check_av_sft_numbers(av_sft: dict, out: Path, seed: int) -> None:
    """The AV stage's held-out loss and its shuffled control, recomputed from the run's
    checkpoint: the mean response-token NLL of each batch (sft.av.batch_size rows), averaged
    over batches by rows as Lightning logs it. The 4-step AV is untrained (4.7480 vs 4.7486
    seen): only an exact recomputation tells the two apart."""
    settings = json.loads((out / "run_settings.json").read_text())
    held_out = read_activations(out / "data" / "eval.parquet")
    av = ActivationVerbalizer.load(out / "checkpoints" / "av").eval()
    rows = encode_responses(av.tokenizer, table_explanations(held_out))
    size = settings["sft"]["av"]["batch_size"]

    def loss(activations: torch.Tensor) -> float:
        total = 0.0
        for start in range(0, len(rows), size):
            ids, mask = pad_right(rows[start : start + size], av.pad_id)
            with torch.no_grad():
                batch = av.sft_loss(activations[start : start + size], ids, mask)
            total += float(batch) * len(ids)
        return total / len(rows)

    h = held_out.activations
    assert math.isfinite(av_sft["loss"]) and math.isfinite(av_sft["loss_shuffled"])
    assert av_sft["loss"] == pytest.approx(loss(h), abs=1e-5)
    assert av_sft["loss_shuffled"] == pytest.approx(loss(h[derangement(len(h), seed)]), abs=1e-5)


def check_ar_sft_numbers(ar_sft: dict, out: Path, seed: int) -> None:
    """The AR stage's held-out numbers, recomputed by hand from the run's own checkpoint and
    data. The 4-step smoke AR is untrained (fve -0.289, shuffled -0.319, mean -0.157 seen), so
    no ordering between them holds: each is the FVE of the right predictions on the right rows."""
    held_out = read_activations(out / "data" / "eval.parquet")
    train = read_activations(out / "data" / "ar_sft.parquet").activations
    h, scale = held_out.activations, held_out.meta.mse_scale
    ar = ActivationReconstructor.load(out / "checkpoints" / "ar").eval()
    predicted = ar.predict(table_explanations(held_out))
    shuffled = h[derangement(len(h), seed)]
    for key in ("fve", "fve_shuffled", "fve_mean_baseline"):
        assert math.isfinite(ar_sft[key]), key
    assert ar_sft["fve"] == pytest.approx(fve_by_hand(predicted, h, scale), abs=1e-5)
    by_hand = fve_by_hand(predicted, shuffled, scale)
    assert ar_sft["fve_shuffled"] == pytest.approx(by_hand, abs=1e-5)
    mean = mean_prediction_by_hand(train, len(h), scale)
    assert ar_sft["fve_mean_baseline"] == pytest.approx(fve_by_hand(mean, h, scale), abs=1e-5)
    assert ar_sft["fve_mean_baseline"] < 0  # a constant prediction explains no variance


def check_rl_numbers(rl: dict, out: Path, seed: int) -> None:
    """RL's held-out FVE before and after, and the shuffled controls: the greedy round trip of
    the warm-start and the RL checkpoints on the first eval_rows held-out rows (and on another
    row's activation), scored by hand. Untrained: every number is -1.868 in the smoke run."""
    settings = json.loads((out / "run_settings.json").read_text())
    held_out = read_activations(out / "data" / "eval.parquet")
    h, scale = held_out.activations[: rl["eval_rows"]], held_out.meta.mse_scale
    shuffled = h[derangement(len(h), seed)]
    for suffix, (av_dir, ar_dir) in (("_start", ("av", "ar")), ("", ("rl/av", "rl/ar"))):
        av = ActivationVerbalizer.load(out / "checkpoints" / av_dir).eval()
        ar = ActivationReconstructor.load(out / "checkpoints" / ar_dir).eval()
        # Greedy: one batch of both sets of rows reads each row as two batches would.
        trip = round_trip(
            av,
            ar,
            torch.cat([h, shuffled]),
            max_new_tokens=settings["rl"]["max_new_tokens"],
            temperature=settings["eval"]["temperature"],
        )
        own, control = trip.predicted.split(len(h))
        for key, predicted in (("fve", own), ("fve_shuffled", control)):
            assert math.isfinite(rl[key + suffix]), key + suffix
            by_hand = fve_by_hand(predicted, h, scale)
            assert rl[key + suffix] == pytest.approx(by_hand, abs=1e-5), key + suffix


def test_rl_stage_resumes_from_a_previous_run(tiny_run, tmp_path):
    _, previous = tiny_run
    cfg = plain(
        [
            *TINY_RUN,
            "stage=rl",
            f"from_run={previous}",
            "rl.steps=4",
            f"ckpt_path={previous / 'rl_checkpoints' / 'step-2.ckpt'}",
        ],
        tmp_path,
    )
    summary = run(cfg)
    assert summary["stages"]["rl"]["steps"] == 4
    # The curve continues the one the checkpoint holds (the previous run's up to step 2).
    curve = summary["stages"]["rl"]["curve"]
    assert [p["step"] for p in curve] == [0, 1, 2, 3, 4]
    before = json.loads((previous / "summary.json").read_text())["stages"]["rl"]["curve"]
    assert curve[:3] == before[:3]
    assert "av_sft" not in summary["stages"]


def test_rl_stage_without_a_warm_start_says_what_to_pass(tmp_path):
    with pytest.raises(NLAConfigError, match="from_run"):
        run(plain([*TINY_RUN, "stage=rl"], tmp_path))


def test_exported_checkpoints_reload_and_work(tiny_run):
    summary, out = tiny_run
    av = ActivationVerbalizer.load(out / "checkpoints" / "av")
    ar = ActivationReconstructor.load(out / "checkpoints" / "ar")
    av.meta.check_compatible(ar.meta, what="the AR")
    rollout = av.sample(torch.randn(2, av.meta.d_model), max_new_tokens=8)
    assert len(rollout.texts) == 2
    assert ar.predict(["the colour is red ."]).shape == (1, ar.meta.d_model)


def test_qwen_config_composes_and_fails_only_for_want_of_weights(tmp_path):
    cfg = plain(["model=qwen", "layer=18"], tmp_path)
    assert cfg["model"]["name"] == "Qwen/Qwen2.5-7B-Instruct"
    assert cfg["model"]["num_layers"] == 28 and cfg["layer"] == 18
    with pytest.raises(NLAConfigError, match="could not be downloaded"):
        run(cfg)


def test_default_layer_is_two_thirds_of_depth_unless_the_release_chose_one():
    for model, depth in (("qwen_small", 24), ("llama", 32), ("gemma", 42)):
        assert compose([f"model={model}"]).layer == 2 * depth // 3, model
    assert compose(["model=qwen"]).layer == 20  # the released Qwen NLA's layer (18 by the rule)
    assert compose(["model=qwen", "layer=18"]).layer == 18
    assert compose([]).layer == 2


def test_layer_out_of_range_is_refused_before_loading(tmp_path):
    with pytest.raises(NLAConfigError, match="layer=28 is out of range"):
        run(plain(["model=qwen", "layer=28"], tmp_path))


def test_unknown_model_name_lists_the_choices():
    with pytest.raises(MissingConfigException, match="qwen"):
        compose(["model=qwen9000"])


def test_cli_qwen_exits_with_a_clear_message(tmp_path):
    done = train_py(["model=qwen", "layer=18", f"hydra.run.dir={tmp_path}"], tmp_path)
    assert done.returncode == 2
    assert "could not be downloaded" in done.stderr and "model.path" in done.stderr


# What the libraries print on their own, which a default run keeps off the console.
LIBRARY_CHATTER = (
    "GPU available",
    "Tip:",
    "weights_only",
    "LeafSpec",
    "Loading weights",
    "Writing model shards",
    "Epoch 0/",
    "is deprecated",
)


def test_cli_multirun_over_seeds_with_a_quiet_console(tmp_path):
    bars = "trainer.enable_progress_bar=true"  # the smoke preset turns them off
    args = ["-m", "seed=1,2", *TINY_RUN, bars, f"hydra.sweep.dir={tmp_path}"]
    # A fresh interpreter (not tests/launcher.py's fork): what importing prints counts too.
    done = subprocess.run(
        [sys.executable, str(Path(__file__).resolve().parents[2] / "train.py"), *args],
        cwd=tmp_path,
        env={**os.environ, "HF_HUB_OFFLINE": "1"},
        capture_output=True,
        text=True,
        timeout=600,
    )
    assert done.returncode == 0, done.stderr[-3000:]
    seeds = sorted(json.loads((tmp_path / d / "summary.json").read_text())["seed"] for d in "01")
    assert seeds == [1, 2]
    console = done.stdout + done.stderr
    assert [c for c in LIBRARY_CHATTER if c in console] == []
    # One bar per trained stage, named, at its total (tqdm redraws with carriage returns).
    finals = [line.split("\r")[-1] for line in console.splitlines()]
    for stage, total in (("target", 10), ("av_sft", 4), ("ar_sft", 4), ("rl", 2)):
        assert any(
            line.startswith(f"{stage}: 100%") and f"{total}/{total}" in line for line in finals
        ), (stage, [line for line in finals if line.startswith(stage)])
    # Apart from the bars, each run's output fits on a screen.
    other = [line for line in finals if line.strip() and "%|" not in line]
    assert len(other) <= 2 * 40, "\n".join(other)


def test_lora_warm_start_and_rl_with_the_adapter_reference(tmp_path):
    lora = [
        "model.train.av_mode=lora",
        "model.train.ar_mode=lora",
        "model.train.reference=adapter",
        "model.train.lora_rank=4",
        "model.train.gradient_checkpointing=true",
    ]
    summary = run(plain([*TINY_RUN, *lora], tmp_path))
    assert summary["stages"]["rl"]["steps"] == 2
    for role in ("av", "ar"):
        assert (tmp_path / "checkpoints" / role / "adapter_config.json").exists()
        assert (tmp_path / "checkpoints" / "rl" / role / "adapter_config.json").exists()
        assert not (tmp_path / "checkpoints" / "rl" / role / "reference").exists()
    av = ActivationVerbalizer.load(tmp_path / "checkpoints" / "rl" / "av")
    ar = ActivationReconstructor.load(tmp_path / "checkpoints" / "rl" / "ar")
    assert ar.predict(["the colour is red ."]).shape == (1, av.meta.d_model)

"""The real entry: Hydra composition of conf/, a full tiny run, the CLI and multirun."""

import json
from pathlib import Path

import pytest
from hydra.errors import MissingConfigException

from nla_lightning.core.reconstructor import ActivationReconstructor
from nla_lightning.core.verbalizer import ActivationVerbalizer
from nla_lightning.errors import NLAConfigError
from nla_lightning.pipeline import run
from tests.conftest import TINY_RUN, compose, plain, train_py

ROOT = Path(__file__).resolve().parents[2]


def test_tiny_run_writes_summary_checkpoints_and_logs(tiny_run):
    summary, out = tiny_run
    on_disk = json.loads((out / "summary.json").read_text())
    assert on_disk["wall_s"] > 0
    stages = on_disk["stages"]
    for key in ("fve", "fve_shuffled", "fve_mean_baseline"):
        assert isinstance(stages["ar_sft"][key], float)
    for key in ("loss", "loss_shuffled"):
        assert stages["av_sft"][key] > 0
    assert stages["target"]["pretrain_steps"] == 10
    for part in ("av_sft", "ar_sft", "rl", "eval"):
        assert (out / "data" / f"{part}.parquet").exists()
        assert (out / "data" / f"{part}.parquet.nla_meta.yaml").exists()
    assert (out / "logs" / "av_sft" / "metrics.csv").exists()
    rl = stages["rl"]
    assert rl["steps"] == 3
    for key in ("fve_start", "fve", "fve_shuffled"):
        assert isinstance(rl[key], float)
    assert (out / "rl_checkpoints" / "last.ckpt").exists()
    assert (out / "checkpoints" / "rl" / "ar" / "value_head.safetensors").exists()
    assert "explanation" in (out / "logs" / "rl" / "examples.csv").read_text()
    metrics = (out / "logs" / "rl" / "metrics.csv").read_text().splitlines()[0]
    for column in ("rl/fve", "rl/reward", "rl/kl", "rl/clip_fraction", "time/rollout_s"):
        assert column in metrics


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
    # The curve starts where the checkpoint left off.
    assert [p["step"] for p in summary["stages"]["rl"]["curve"]] == [2, 3, 4]
    assert "av_sft" not in summary["stages"]


def test_rl_stage_without_a_warm_start_says_what_to_pass(tmp_path):
    with pytest.raises(NLAConfigError, match="from_run"):
        run(plain([*TINY_RUN, "stage=rl"], tmp_path))


def test_exported_checkpoints_reload_and_work(tiny_run):
    summary, out = tiny_run
    av = ActivationVerbalizer.load(out / "checkpoints" / "av")
    ar = ActivationReconstructor.load(out / "checkpoints" / "ar")
    av.meta.check_compatible(ar.meta, what="the AR")
    import torch

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
    done = train_py(args, tmp_path)
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

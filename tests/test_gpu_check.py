"""benchmarks/gpu_check.py in --quick mode on the CPU: every check runs and passes, its numbers
are the ones the checks stand for, and a failing check makes the script exit non-zero."""

from __future__ import annotations

import json
import math
import os
import subprocess
from pathlib import Path

import pytest
from transformers import Qwen2Config

from nla_lightning.training.memory import estimate_memory
from tests.conftest import compose
from tests.launcher import run_python

REPO = Path(__file__).resolve().parents[1]
SCRIPT = REPO / "benchmarks" / "gpu_check.py"
CHECKS = [
    "bf16 AV forward+backward",
    "bf16 AR forward+backward",
    "NF4 reference log-probs",
    "RL steps (Trainer)",
    "RL steps (trainer=fsdp)",
    "7B QLoRA: policy weights",
    "7B QLoRA: reference",
    "7B QLoRA: AR weights",
    "7B QLoRA: RL step",
    "7B QLoRA: total peak",
]


def run_check(tmp_path: Path, *extra: str) -> tuple[subprocess.CompletedProcess, dict]:
    out = tmp_path / "gpu_check.json"
    env = dict(os.environ, HF_HUB_OFFLINE="1", TOKENIZERS_PARALLELISM="false")
    command = [str(SCRIPT), "--device", "cpu", "--quick", "--threads", "1"]
    argv = [*command, "--json", str(out), "--scratch", str(tmp_path), *extra]
    done = run_python(argv, REPO, env)  # a child process, forked from a preloaded one
    payload = json.loads(out.read_text()) if out.exists() else {}
    return done, payload


def table(stdout: str) -> dict[str, list[str]]:
    """The check table's rows by check name."""
    lines = stdout.splitlines()
    start = next(i for i, line in enumerate(lines) if line.startswith("| check |"))
    rows = {}
    for line in lines[start + 2 :]:
        if not line.startswith("|"):
            break
        cells = [cell.strip() for cell in line.strip("|").split("|")]
        rows[cells[0]] = cells
    return rows


@pytest.fixture(scope="module")
def quick_run(tmp_path_factory):
    return run_check(tmp_path_factory.mktemp("gpu_check"))


def test_every_check_runs_and_passes(quick_run):
    done, payload = quick_run
    assert done.returncode == 0, done.stdout[-3000:] + done.stderr[-4000:]
    assert done.stdout.rstrip().splitlines()[-1] == f"gpu check: {len(CHECKS)}/{len(CHECKS)} ok"
    rows = table(done.stdout)
    assert list(rows) == CHECKS
    for cells in rows.values():
        assert cells[5] == "ok", cells
        assert cells[3] == "n/a", cells  # no GPU allocator to read on the CPU
    assert payload["quick"] is True and payload["machine"]["device"] == "cpu"
    assert payload["passed"] == payload["total"] == len(CHECKS)


def rows_by_name(payload: dict) -> dict[str, dict]:
    return {row["check"]: row for row in payload["rows"]}


def test_gradients_are_finite_and_reach_every_parameter(quick_run):
    rows = rows_by_name(quick_run[1])
    for name in CHECKS[:2]:
        values = rows[name]["values"]
        assert math.isfinite(values["loss"]) and values["loss"] > 0
        assert math.isfinite(values["grad_norm"]) and values["grad_norm"] > 0
        assert values["missing_grads"] == values["bad_grads"] == 0


def test_nf4_reference_is_quantised_and_close(quick_run):
    values = rows_by_name(quick_run[1])["NF4 reference log-probs"]["values"]
    # Quantised (not an exact copy) yet close to the bf16 AV and following it.
    assert 0 < values["mean_abs_logprob_diff"] < values["bound"] == 0.5
    assert values["correlation"] > 0.5
    assert values["nf4_layers"] > 0 and values["tokens"] == 4 * 32
    assert values["weights_gib"] is None and values["weights_estimate_gib"] > 0


def test_rl_runs_every_requested_step(quick_run):
    values = rows_by_name(quick_run[1])["RL steps (Trainer)"]["values"]
    assert values["steps_requested"] == values["steps_done"] == 3
    assert values["av_optimizer_steps"] == values["ar_optimizer_steps"] == 3
    assert values["skipped_updates"] == 0
    assert len(values["timings"]) == 3
    for step in values["timings"]:
        assert step["samples"] == 2 * 2  # --quick: 2 activations x 2 samples
        assert step["tokens"] == 2 * 2 * 8  # every response written to its cap
        assert all(step[f"time/{p}_s"] > 0 for p in ("rollout", "ar", "av"))


def test_sharded_rl_brings_back_moved_weights(quick_run):
    """trainer.strategy=fsdp on one (forked) rank: the step count and the weights came back
    from the rank, both models moved by about a learning rate's worth and stayed finite."""
    values = rows_by_name(quick_run[1])["RL steps (trainer=fsdp)"]["values"]
    assert values["steps_done"] == 3
    assert values["moved"]["av."] > 1e-6 and values["moved"]["ar."] > 1e-6
    assert values["peak_gib"] is None  # no GPU allocator on the CPU


def test_qlora_estimate_is_the_presets(quick_run):
    """The estimate printed is estimate_memory for experiment=qwen7b_24gb's settings on the
    tiny 7B-layout model, with --quick's RL batch."""
    rows = rows_by_name(quick_run[1])
    values = rows["7B QLoRA: total peak"]["values"]
    preset = compose(["experiment=qwen7b_24gb"])
    train = dict(preset.model.train)
    assert values["train"] == train
    assert train["av_mode"] == train["ar_mode"] == "qlora" and train["reference"] == "adapter"
    config = values["config"]
    assert config["tie_word_embeddings"] is False and config["vocab_size"] == 256
    rl = values["rl"]
    rollouts = rl["batch_size"] * rl["group_size"]
    expected = estimate_memory(
        Qwen2Config(**config),
        values["layer"],
        av_mode=train["av_mode"],
        ar_mode=train["ar_mode"],
        reference=train["reference"],
        dtype_bytes=2,
        lora_rank=train["lora_rank"],
        micro_batch=rl["av_micro_batch"],
        seq_len=rl["max_new_tokens"] + 128,
        rollout_batch=rollouts,
        gradient_checkpointing=train["gradient_checkpointing"],
    )
    estimate = values["estimate"]
    for key in ("policy", "reference", "ar", "optimizer", "gradients", "activations", "kv_cache"):
        assert estimate[key] == pytest.approx(getattr(expected, key)), key
    assert estimate["total"] == pytest.approx(expected.total)
    assert rows["7B QLoRA: total peak"]["estimate_gib"] == pytest.approx(expected.total)
    assert rows["7B QLoRA: policy weights"]["estimate_gib"] == pytest.approx(expected.policy)
    assert rows["7B QLoRA: reference"]["estimate_gib"] == 0
    step = expected.optimizer + expected.gradients + expected.activations + expected.kv_cache
    assert rows["7B QLoRA: RL step"]["estimate_gib"] == pytest.approx(step)
    assert values["steps_done"] == values["av_optimizer_steps"] == values["ar_optimizer_steps"]
    assert values["steps_done"] == 2 and values["skipped_updates"] == 0


def test_a_failing_check_fails_the_script(tmp_path):
    # An RL check asked for zero steps is refused by RLSettings: a real failure of that check.
    done, payload = run_check(tmp_path, "--only", "rl", "--rl-steps", "0")
    assert done.returncode == 1, done.stdout[-3000:] + done.stderr[-3000:]
    assert done.stdout.rstrip().splitlines()[-1] == "gpu check: 0/1 ok"
    (row,) = table(done.stdout).values()
    assert row[0] == "RL steps (Trainer)" and row[5] == "FAIL"
    assert "rl.steps" in row[6]
    assert payload["passed"] == 0 and payload["total"] == 1

"""Ctrl-C (SIGINT) during RL: the run stops after the step under way, keeps a checkpoint, says
how to resume, and the documented command finishes the run."""

import json
import os
import shlex
import signal
import time
from pathlib import Path

from tests.conftest import TINY_RUN, train_py
from tests.launcher import run_python, start_python

REPO = Path(__file__).resolve().parents[1]
ENV = {**os.environ, "HF_HUB_OFFLINE": "1"}


def test_ctrl_c_in_rl_keeps_a_checkpoint_and_the_printed_command_resumes(tiny_run, tmp_path):
    _, warm = tiny_run  # a finished tiny run: its warm start
    run = tmp_path / "run"
    rl = [*TINY_RUN, "rl.steps=40", "rl.eval_every=0"]
    args = [*rl, "stage=rl", f"from_run={warm}", f"hydra.run.dir={run}"]
    process = start_python([str(REPO / "train.py"), *args], tmp_path, ENV)
    deadline = time.time() + 240
    while not (run / "rl_checkpoints" / "step-2.ckpt").exists():
        assert process.poll() is None and time.time() < deadline, process.communicate()
        time.sleep(0.2)
    process.send_signal(signal.SIGINT)
    out, err = process.communicate()
    assert process.returncode == 130, err[-3000:]
    message = err.strip().splitlines()[-1]
    assert message.startswith("rl stopped by Ctrl-C.") and "Traceback" not in err
    ckpt = Path(message.split("Its steps so far are in ")[1].split(";")[0])
    command = shlex.split(message.split("continue with: ")[1])
    assert command[0] == "python" and Path(command[1]).name == "train.py"
    assert command == shlex.split((run / "command.txt").read_text())
    import torch

    stopped_at = torch.load(ckpt, weights_only=False)["state_dict"]["step_count"].item()
    assert 2 <= stopped_at < 40  # a whole step, before the end

    # The command as printed: the same run directory, continued from its checkpoint.
    done = run_python(command[1:], tmp_path, ENV)
    assert done.returncode == 0, done.stderr[-3000:]
    summary = json.loads((run / "summary.json").read_text())
    assert summary["stages"]["rl"]["steps"] == 40
    # Continued, not started again: the curve holds no point twice and starts at step 0.
    steps = [point["step"] for point in summary["stages"]["rl"]["curve"]]
    assert steps == sorted(set(steps)) and steps[0] == 0


def rl_weights(run: Path) -> dict:
    from safetensors.torch import load_file

    return {
        f"{role}/{name}": tensor
        for role in ("av", "ar")
        for path in sorted((run / "checkpoints" / "rl" / role).glob("*.safetensors"))
        for name, tensor in load_file(str(path)).items()
    }


def test_sigkill_in_rl_then_resume_equals_an_uninterrupted_run(tiny_run, tmp_path):
    """SIGKILL (no handler runs) at a random point after the third checkpoint: last.ckpt is a
    whole checkpoint of some finished step, and resuming from it gives the straight run's
    weights bit for bit (CPU)."""
    import random

    import torch

    _, warm = tiny_run
    rl = [*TINY_RUN, "rl.steps=12", "rl.eval_every=0", "stage=rl", f"from_run={warm}"]
    straight = train_py([*rl, f"hydra.run.dir={tmp_path}/straight"], tmp_path)
    assert straight.returncode == 0, straight.stderr[-3000:]

    run = tmp_path / "killed"
    process = start_python([str(REPO / "train.py"), *rl, f"hydra.run.dir={run}"], tmp_path, ENV)
    deadline = time.time() + 240
    while not (run / "rl_checkpoints" / "step-3.ckpt").exists():
        assert process.poll() is None and time.time() < deadline
        time.sleep(0.05)
    time.sleep(random.Random().uniform(0.0, 0.6))  # anywhere in a later step or checkpoint
    process.kill()
    process.wait()
    last = run / "rl_checkpoints" / "last.ckpt"
    kept = torch.load(last, weights_only=False)["state_dict"]["step_count"].item()
    assert 3 <= kept <= 12

    resumed = train_py([*rl, f"ckpt_path={last}", f"hydra.run.dir={tmp_path}/resumed"], tmp_path)
    assert resumed.returncode == 0, resumed.stderr[-3000:]
    expected, got = rl_weights(tmp_path / "straight"), rl_weights(tmp_path / "resumed")
    assert expected.keys() == got.keys() and expected
    assert all(torch.equal(expected[k], got[k]) for k in expected)


def test_ctrl_c_in_a_warm_start_keeps_its_checkpoint_and_the_command_continues_it(
    tiny_run, tmp_path
):
    """SIGINT in AV SFT: exit 130 after a whole optimiser step, a checkpoint of it, and the
    printed command continues the fit from that step (its log starts after it)."""
    import torch

    _, made = tiny_run
    run = tmp_path / "run"
    args = [
        *TINY_RUN,
        "stage=av_sft",
        f"from_run={made}",
        "sft.av.max_steps=80",
        "sft.av.checkpoint_every=5",
        "trainer.log_every_n_steps=1",
        f"hydra.run.dir={run}",
    ]
    process = start_python([str(REPO / "train.py"), *args], tmp_path, ENV)
    checkpoint = run / "stages" / "av_sft.ckpt"
    deadline = time.time() + 240
    while not checkpoint.exists():
        assert process.poll() is None and time.time() < deadline, process.communicate()
        time.sleep(0.1)
    process.send_signal(signal.SIGINT)
    _, err = process.communicate()
    assert process.returncode == 130, err[-3000:]
    message = err.strip().splitlines()[-1]
    assert message.startswith("av_sft stopped by Ctrl-C.") and "Traceback" not in err
    assert f"Its steps so far are in {checkpoint};" in message
    stopped_at = torch.load(checkpoint, weights_only=False)["global_step"]
    assert 5 <= stopped_at < 80

    command = shlex.split(message.split("continue with: ")[1])
    done = run_python(command[1:], tmp_path, ENV)
    assert done.returncode == 0, done.stderr[-3000:]
    summary = json.loads((run / "summary.json").read_text())
    assert summary["stages"]["av_sft"]["steps"] == 80
    import csv

    with open(run / "logs" / "av_sft" / "metrics.csv") as log:
        steps = [int(row["step"]) for row in csv.DictReader(log) if row.get("train/loss")]
    assert steps and min(steps) >= stopped_at and max(steps) == 79
    assert not checkpoint.exists()  # the stage finished: its checkpoint is gone

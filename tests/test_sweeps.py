"""Hydra multirun over RL knobs, the Optuna search and the headline experiment config."""

import json
from pathlib import Path

import yaml

from tests.conftest import TINY_RUN, compose, train_py

ROOT = Path(__file__).resolve().parents[1]


def test_multirun_over_rl_beta_from_one_warm_start(tiny_run, tmp_path):
    _, warm = tiny_run
    args = ["-m", *TINY_RUN, "stage=rl", f"from_run={warm}", "rl.beta=0.0,0.05"]
    done = train_py([*args, f"hydra.sweep.dir={tmp_path}"], tmp_path)
    assert done.returncode == 0, done.stderr[-3000:]
    betas = []
    for job in ("0", "1"):
        summary = json.loads((tmp_path / job / "summary.json").read_text())
        assert summary["stages"]["rl"]["steps"] == 2
        betas.append(yaml.safe_load((tmp_path / job / ".hydra" / "config.yaml").read_text()))
    assert [c["rl"]["beta"] for c in betas] == [0.0, 0.05]


def test_optuna_search_maximises_held_out_fve(tiny_run, tmp_path):
    _, warm = tiny_run
    args = [
        "hparams_search=rl_optuna",
        "hydra.sweeper.n_trials=2",
        "hydra.sweeper.sampler.n_startup_trials=1",
        *TINY_RUN,
        "stage=rl",
        f"from_run={warm}",
        f"hydra.sweep.dir={tmp_path}",
    ]
    done = train_py(args, tmp_path)
    assert done.returncode == 0, done.stderr[-3000:]
    results = yaml.safe_load((tmp_path / "optimization_results.yaml").read_text())
    trials = [json.loads((tmp_path / j / "summary.json").read_text()) for j in ("0", "1")]
    assert results["best_value"] == max(t["stages"]["rl"]["fve"] for t in trials)
    searched = {"rl.av_lr", "rl.ar_lr", "rl.beta", "rl.group_size"}
    # An override on the command line fixes a knob: Optuna searches only the others.
    fixed = {o.split("=")[0] for o in TINY_RUN}
    assert set(results["best_params"]) == searched - fixed


def test_a_missing_optimized_metric_is_a_clear_error(tiny_run, tmp_path):
    _, warm = tiny_run
    args = [
        *TINY_RUN,
        "stage=rl",
        f"from_run={warm}",
        "rl.steps=1",
        "optimized_metric=stages.eval.fve",
    ]
    done = train_py([*args, f"hydra.run.dir={tmp_path}"], tmp_path)
    assert done.returncode == 2
    assert "optimized_metric=stages.eval.fve" in done.stderr and "['rl']" in done.stderr
    # Refused before anything ran: no RL step was spent on a run that could not report it.
    assert not (tmp_path / "summary.json").exists()
    assert not (tmp_path / "rl_checkpoints").exists() and not (tmp_path / "logs").exists()


def test_headline_experiment_composes():
    cfg = compose(["experiment=toy_headline"])
    assert cfg.model.name == "toy-qwen2-tiny" and cfg.rl.steps == 300
    assert cfg.stage.run == ["target", "data", "av_sft", "ar_sft", "rl", "eval"]

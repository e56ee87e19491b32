"""Hydra multirun over RL knobs, the Optuna search, cluster sweeps through the submitit
launcher (conf/hydra/launcher/) and the headline experiment config."""

import json
import shlex
from pathlib import Path

import pytest
import yaml

from tests.conftest import CONF_DIR, TINY_RUN, compose, train_py

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


def test_submitit_local_runs_the_jobs_of_a_multirun_side_by_side(tiny_run, tmp_path):
    """hydra/launcher=local (conf/hydra/launcher/local.yaml): each job in a fresh process of
    submitit's local executor, all at once; run dirs as in an ordinary multirun."""
    _, warm = tiny_run
    sweep = tmp_path / "sweep"
    # One RL step, the held-out curve only before and after it: each job's pipeline is ~10 s.
    rl = [*TINY_RUN, "stage=rl", f"from_run={warm}", "rl.steps=1", "rl.eval_every=0"]
    args = ["-m", *rl, "seed=1,2", "hydra/launcher=local"]
    # Through the forked interpreter like the other sweeps: only the submitting process is
    # forked; submitit starts each job as `python -m submitit.core._submit` of its own (the
    # job's ~10 s of imports are the bulk of this test).
    done = train_py([*args, f"hydra.sweep.dir={sweep}"], tmp_path)
    assert done.returncode == 0, done.stderr[-3000:]
    spans = []
    for job, seed in (("0", 1), ("1", 2)):
        run = sweep / job
        summary = json.loads((run / "summary.json").read_text())
        assert summary["seed"] == seed and summary["stages"]["rl"]["steps"] == 1
        assert yaml.safe_load((run / ".hydra" / "config.yaml").read_text())["seed"] == seed
        # The command that continues the job names train.py, not submitit's entry point that
        # ran it (train.py reads the script's name before main() is pickled to the job).
        command = shlex.split((run / "command.txt").read_text())
        assert Path(command[1]).name == "train.py", command
        assert f"seed={seed}" in command and command[-1] == f"hydra.run.dir={run}"
        # Each job's pipeline, from its start (command.txt, written before the first stage)
        # to its end (summary.json, written last), as the job's own files record it.
        started, ended = (run / "command.txt").stat(), (run / "summary.json").stat()
        spans.append((started.st_mtime, ended.st_mtime))
    # In parallel: each job started before the other finished. One after the other (Hydra's
    # basic launcher, or an executor running one job at a time), job 1 starts after job 0 ends.
    (start0, end0), (start1, end1) = spans
    assert max(start0, start1) < min(end0, end1), f"the jobs did not overlap: {spans}"
    # Each job's console output (its summary) lands in the submitit folder in the sweep dir.
    logs = sorted(sweep.glob(".submitit/*/*_0_log.out"))
    assert len(logs) == 2
    assert sorted(log.read_text().split("outputs  ")[1].split()[0] for log in logs) == [
        str(sweep / "0"),
        str(sweep / "1"),
    ]


def launcher_config(overrides: list[str]) -> dict:
    """hydra.launcher as a sweep gets it (resolved), composed with Hydra's API."""
    from hydra import compose as hydra_compose
    from hydra import initialize_config_dir
    from omegaconf import OmegaConf

    from nla_lightning.settings import register_configs

    register_configs()
    with initialize_config_dir(config_dir=CONF_DIR, version_base="1.3", job_name="train"):
        cfg = hydra_compose("train", overrides=overrides, return_hydra_config=True)
        return {
            "launcher": OmegaConf.to_container(cfg.hydra.launcher, resolve=True),
            "sweeper": OmegaConf.to_container(cfg.hydra.sweeper),
        }


def test_slurm_launcher_preset_composes_with_the_documented_values():
    """hydra/launcher=slurm (no SLURM here: the values only), alone and under the Optuna
    search with parallel trials, as the README's "Cluster sweeps" runs it."""
    from hydra.errors import ConfigCompositionException

    sweep = ["hydra.sweep.dir=/shared/multirun/x"]
    slurm = launcher_config(["hydra/launcher=slurm", "hydra.launcher.partition=gpu", *sweep])
    launcher = slurm["launcher"]
    assert launcher["_target_"].endswith("submitit_launcher.SlurmLauncher")
    assert launcher["submitit_folder"] == "/shared/multirun/x/.submitit/%j"
    assert launcher["partition"] == "gpu" and launcher["name"] == "train"
    assert launcher["timeout_min"] == 24 * 60 and launcher["max_num_timeout"] == 0
    # One process per job runs the whole pipeline; it uses one GPU.
    assert (launcher["nodes"], launcher["tasks_per_node"], launcher["gpus_per_node"]) == (1, 1, 1)
    assert (launcher["cpus_per_task"], launcher["mem_gb"]) == (8, 64)

    local = launcher_config(["hydra/launcher=local", *sweep])["launcher"]
    assert local["_target_"].endswith("submitit_launcher.LocalLauncher")
    assert local["timeout_min"] == 24 * 60 and local["gpus_per_node"] is None
    assert local["submitit_folder"] == launcher["submitit_folder"]

    # Optuna trials in parallel: batches of n_jobs trials, each batch one job array.
    search = ["hparams_search=rl_optuna", "hydra.sweeper.n_jobs=4", "hydra/launcher=slurm"]
    optuna = launcher_config([*search, *sweep])
    assert optuna["sweeper"]["n_jobs"] == 4
    assert optuna["launcher"] == {**launcher, "partition": None}

    # The plugin's schema: a misspelt key fails at composition, before anything is submitted.
    with pytest.raises(ConfigCompositionException, match="partion"):
        launcher_config(["hydra/launcher=slurm", "hydra.launcher.partion=gpu"])


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

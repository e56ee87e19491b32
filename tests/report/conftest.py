"""One real short training run per session (the project's own pipeline), and variants of it."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import pytest
from omegaconf import OmegaConf

from tests.conftest import TINY_RUN, compose

# A few more RL steps, each logged, so the curves have several points; no RL checkpoints
# beyond the last one, which the report does not read.
REPORT_RUN = [
    *TINY_RUN,
    "stage.rl.steps=3",
    "stage.rl.checkpoint_every=100",
    "trainer.log_every_n_steps=1",
]


def plain(overrides: list[str], out_dir: Path) -> dict:
    cfg = compose([*overrides, f"paths.output_dir={out_dir}"])
    return OmegaConf.to_container(cfg, resolve=True)


@pytest.fixture(scope="session")
def real_run(tmp_path_factory) -> Path:
    from nla_lightning.pipeline import run

    out = tmp_path_factory.mktemp("report_run")
    run(plain(REPORT_RUN, out))
    return out


def copy_run(source: Path, target: Path) -> Path:
    """The run's report inputs (summary, eval.json, logs), without its checkpoints and data."""
    shutil.copytree(
        source, target, ignore=shutil.ignore_patterns("checkpoints", "rl_checkpoints", "data")
    )
    return target


@pytest.fixture
def relabelled_run(real_run, tmp_path) -> Path:
    """The same run as Hydra would have recorded it when launched with overrides."""
    run = copy_run(real_run, tmp_path / "relabelled")
    (run / ".hydra").mkdir(exist_ok=True)
    (run / ".hydra" / "overrides.yaml").write_text("- seed=1\n- stage.rl.beta=0.05\n")
    return run


@pytest.fixture
def warm_start_only_run(real_run, tmp_path) -> Path:
    """A run that ended before RL (stage=warm_start): no RL logs, no rl or eval stage."""
    run = copy_run(real_run, tmp_path / "warm_start_only")
    shutil.rmtree(run / "logs" / "rl")
    (run / "eval.json").unlink(missing_ok=True)
    summary = json.loads((run / "summary.json").read_text())
    for stage in ("rl", "eval"):
        summary["stages"].pop(stage, None)
    (run / "summary.json").write_text(json.dumps(summary))
    return run

"""One real short training run per session (the project's own pipeline), and variants of it."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import pytest


@pytest.fixture(scope="session")
def real_run(tiny_run) -> Path:
    """The session's whole tiny run (tests/conftest.py)."""
    return tiny_run[1]


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
    (run / ".hydra" / "overrides.yaml").write_text("- seed=1\n- rl.beta=0.05\n")
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

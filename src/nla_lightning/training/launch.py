"""How many processes run `train.py`: one. Several ranks are Lightning's, started by each fit.

The pipeline's stages that are not fits (data extraction, summaries, evaluation, exports,
the run's state) run once and write the run directory from one process; a launcher that
starts `train.py` in N processes (torchrun, `srun` with several tasks, several nodes) would
run all of them N times into the same directory. Such a start is refused before anything
runs, naming what works instead."""

from __future__ import annotations

import os
from collections.abc import Mapping

from nla_lightning.errors import NLAConfigError

# (environment variable, launcher) of the launchers that start one process per rank.
PROCESS_LAUNCHERS = (("WORLD_SIZE", "torchrun"), ("SLURM_NTASKS", "srun"))


def check_single_process(trainer: Mapping, environ: Mapping[str, str] = os.environ) -> None:
    """Refuse trainer.num_nodes > 1 and a start by a per-rank launcher with several ranks."""
    nodes = int(trainer.get("num_nodes", 1))
    started = [
        f"{launcher} ({variable}={environ[variable]})"
        for variable, launcher in PROCESS_LAUNCHERS
        if environ.get(variable, "1").isdigit() and int(environ.get(variable, "1")) > 1
    ]
    if nodes == 1 and not started:
        return
    why = f"trainer.num_nodes={nodes}" if nodes > 1 else f"train.py started by {started[0]}"
    raise NLAConfigError(
        f"{why}: train.py runs in ONE process, which spawns a rank per device for each fit "
        "(trainer=fsdp or trainer=ddp with trainer.devices=N on one node). Start it once: "
        "`python train.py trainer=fsdp trainer.accelerator=gpu trainer.devices=N` (under "
        "SLURM: one task with N GPUs and SLURM_JOB_NAME=interactive); several nodes are not "
        "supported yet"
    )

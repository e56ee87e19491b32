"""train.py runs in one process: per-rank launchers and several nodes are refused up front."""

import pytest

from nla_lightning.errors import NLAConfigError
from nla_lightning.training.launch import check_single_process


@pytest.mark.parametrize(
    "trainer, environ, named",
    [
        ({"num_nodes": 2}, {}, "trainer.num_nodes=2"),
        ({}, {"WORLD_SIZE": "2", "RANK": "0"}, "torchrun (WORLD_SIZE=2)"),
        ({"devices": 4}, {"SLURM_NTASKS": "4"}, "srun (SLURM_NTASKS=4)"),
    ],
)
def test_a_start_in_several_processes_is_refused(trainer, environ, named):
    with pytest.raises(NLAConfigError, match="spawns a rank per device") as refused:
        check_single_process(trainer, environ)
    assert named in str(refused.value)


@pytest.mark.parametrize(
    "environ", [{}, {"WORLD_SIZE": "1"}, {"SLURM_NTASKS": "1", "SLURM_JOB_NAME": "x"}]
)
def test_one_process_is_accepted(environ):
    check_single_process({"num_nodes": 1, "devices": 2, "strategy": "fsdp"}, environ)

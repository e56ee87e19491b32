"""train.py under launchers that start a process per rank (training/launched.py): torchrun with
two ranks, and two SLURM nodes of one task each, every rank on this machine's CPUs (gloo).
Rank 0 runs the pipeline, the others serve its fits: the warm starts equal the single-process
run's to float rounding, as `python train.py trainer=fsdp` does."""

import os
import socket
from pathlib import Path

import pytest
import torch.distributed.run

from nla_lightning.errors import NLAConfigError
from nla_lightning.training.launched import check_ranks
from tests.conftest import TINY_RUN
from tests.launcher import start_python
from tests.training.test_fsdp import max_difference

TRAIN_PY = str(Path(__file__).resolve().parents[2] / "train.py")
# From the tiny run's target and data, each rank half of its batches (the ranks' batches
# together are its batches).
FROM_TINY_RUN = [
    *TINY_RUN,
    "sft.av.batch_size=16",
    "sft.ar.batch_size=16",
    "rl.batch_size=1",
    "rl.steps=2",
]


def free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return probe.getsockname()[1]


def environment(**variables: object) -> dict[str, str]:
    """This process's environment without any launcher's variables, plus `variables`."""
    launchers = ("SLURM_", "TORCHELASTIC_", "RANK", "LOCAL_RANK", "WORLD_SIZE", "GROUP_RANK")
    kept = {k: v for k, v in os.environ.items() if not k.startswith(launchers)}
    return {**kept, "HF_HUB_OFFLINE": "1", **{k: str(v) for k, v in variables.items()}}


def finished(children, timeout: float = 600) -> list[str]:
    """Each child's stderr tail, after every child has ended with status 0."""
    outputs = [child.communicate(timeout) for child in children]
    for child, (out, err) in zip(children, outputs, strict=True):
        assert child.returncode == 0, out[-2000:] + err[-4000:]
    return [err for _out, err in outputs]


def test_torchrun_ranks_run_the_pipeline_on_rank_0_and_equal_one_process(tiny_run, tmp_path):
    """`torchrun --nproc-per-node=2 train.py trainer=fsdp trainer.devices=2`: the launcher's
    ranks, not spawned ones (each rank a fresh interpreter started by torchrun)."""
    summary, single = tiny_run
    run_dir = tmp_path / "run"
    argv = [
        torch.distributed.run.__file__,
        "--nnodes=1",
        "--nproc-per-node=2",
        "--master-addr=127.0.0.1",
        f"--master-port={free_port()}",
        TRAIN_PY,
        *FROM_TINY_RUN,
        "trainer=fsdp",
        "stage.run=[av_sft,ar_sft,rl]",
        f"from_run={single}",
        f"hydra.run.dir={run_dir}",
    ]
    finished([start_python(argv, tmp_path, environment())])
    for side in ("av", "ar"):
        assert max_difference(single / "checkpoints" / side, run_dir / "checkpoints" / side) < 1e-5
    assert (run_dir / "checkpoints/rl/av/model.safetensors").is_file()


@pytest.mark.parametrize("preset", ["fsdp", "ddp"])
def test_two_slurm_nodes_warm_start_the_ar_as_one_process_does(preset, tiny_run, tmp_path):
    """srun's variables for 2 nodes x 1 task (SLURM_PROCID, SLURM_NODEID...), the tasks
    started here: Lightning's SLURM environment places the ranks; node 1's rank serves. Under
    trainer=ddp too (Lightning's DDP over the launcher's ranks)."""
    _summary, single = tiny_run
    run_dir = tmp_path / "run"
    args = [
        *FROM_TINY_RUN,
        f"trainer={preset}",
        "trainer.devices=1",
        "trainer.num_nodes=2",
        "stage.run=[ar_sft]",
        f"from_run={single}",
        f"hydra.run.dir={run_dir}",
    ]
    port = free_port()
    tasks = [
        start_python(
            [TRAIN_PY, *args],
            tmp_path,
            environment(
                SLURM_NTASKS=2, SLURM_NNODES=2, SLURM_NTASKS_PER_NODE=1, SLURM_PROCID=node,
                SLURM_LOCALID=0, SLURM_NODEID=node, SLURM_JOB_ID=4242, SLURM_JOB_NAME="nla",
                SLURM_NODELIST="127.0.0.1", MASTER_ADDR="127.0.0.1", MASTER_PORT=port,
            ),  # fmt: skip
        )
        for node in (0, 1)
    ]
    finished(tasks)
    assert max_difference(single / "checkpoints/ar", run_dir / "checkpoints/ar") < 1e-5
    assert not (run_dir / "checkpoints/av").exists()


def torchrun_environ(world: int, local: int) -> dict[str, str]:
    return {"TORCHELASTIC_RUN_ID": "x", "WORLD_SIZE": str(world), "LOCAL_WORLD_SIZE": str(local)}


@pytest.mark.parametrize(
    "trainer, named",
    [
        ({"strategy": "auto", "devices": 1}, "trainer.strategy=auto runs one process"),
        ({"strategy": "fsdp", "devices": 4}, "trainer.devices=4 x trainer.num_nodes=1"),
        ({"strategy": "ddp", "devices": 2, "num_nodes": 2}, "2 a node"),
    ],
)
def test_a_layout_other_than_the_launchers_is_refused(trainer, named, monkeypatch):
    from lightning.fabric.plugins.environments import TorchElasticEnvironment

    for key, value in torchrun_environ(world=2, local=2).items():
        monkeypatch.setenv(key, value)
    with pytest.raises(NLAConfigError, match="torchrun started 2 ranks") as refused:
        check_ranks(trainer, TorchElasticEnvironment())
    assert named in str(refused.value)


def test_several_nodes_without_a_launcher_are_refused():
    with pytest.raises(NLAConfigError, match="num_nodes=2 needs a process per rank") as refused:
        check_ranks({"num_nodes": 2, "devices": 1, "strategy": "fsdp"}, None)
    assert "torchrun --nnodes=2" in str(refused.value)
    check_ranks({"num_nodes": 1, "devices": 2, "strategy": "fsdp"}, None)  # one node: spawned

"""train.py under a launcher that starts a process per rank: torchrun or srun, one node or several.

`python train.py trainer=fsdp` is one process that spawns a rank per device for each fit. A
cluster launcher starts every rank itself, on every node, before anything runs. Then global
rank 0 runs the pipeline as the one process would, and every other rank serves its fits
(`serve`): at each fit rank 0 sends the trainer, the module and its loaders to every rank (as
spawning pickles them to its ranks), all ranks run the fit together, and rank 0 takes the
fitted weights back whole. The stages that are not fits (extraction, summaries, evaluation,
exports) run on rank 0 alone, so the run directory keeps one writer; the other ranks wait.
"""

from __future__ import annotations

import io
import os
from collections.abc import Iterator, Mapping
from contextlib import contextmanager
from dataclasses import dataclass
from datetime import timedelta
from typing import Any

import torch
import torch.distributed as dist
from lightning.fabric.plugins.environments import (
    ClusterEnvironment,
    SLURMEnvironment,
    TorchElasticEnvironment,
)
from lightning.fabric.utilities.distributed import _init_dist_connection
from lightning.pytorch.strategies.launchers.launcher import _Launcher
from lightning.pytorch.strategies.launchers.multiprocessing import _GlobalStateSnapshot
from lightning.pytorch.trainer.states import TrainerFn

from nla_lightning.errors import NLAConfigError
from nla_lightning.training.sharding import whole_state_dict

# The other ranks wait for rank 0's next fit through its extraction, summary writing and
# evaluation, which take hours on a real corpus: far past the default 30 minutes.
WAIT_FOR_RANK_0 = timedelta(days=7)
# trainer.strategy values that run a process per rank (the others run one process).
PER_RANK_STRATEGIES = ("fsdp", "fsdp_fork", "ddp", "ddp_spawn", "ddp_fork")
NODES_HELP = "see the README, 'Several nodes'"


def launched_environment() -> ClusterEnvironment | None:
    """Lightning's cluster environment when a per-rank launcher started this process as one
    of several ranks (torchrun first, as Lightning does, since it also runs inside SLURM)."""
    for kind in (TorchElasticEnvironment, SLURMEnvironment):
        if kind.detect():
            environment = kind()
            return environment if environment.world_size() > 1 else None
    return None


def launcher_name(environment: ClusterEnvironment) -> str:
    return "torchrun" if isinstance(environment, TorchElasticEnvironment) else "srun"


def check_ranks(trainer: Mapping, environment: ClusterEnvironment | None) -> None:
    """Before anything runs: the trainer settings describe the ranks the launcher started
    (trainer.devices processes on each of trainer.num_nodes nodes), or, without a launcher,
    one node."""
    nodes, devices = int(trainer.get("num_nodes", 1)), trainer.get("devices", 1)
    strategy = trainer.get("strategy", "auto")
    if environment is None:
        if nodes > 1:
            raise NLAConfigError(
                f"trainer.num_nodes={nodes} needs a process per rank on every node, started "
                "by torchrun or srun (e.g. on each node: torchrun --nnodes=2 --nproc-per-node=N "
                "--rdzv-backend=c10d --rdzv-endpoint=HOST:29500 train.py trainer=fsdp "
                f"trainer.num_nodes=2 trainer.devices=N hydra.run.dir=SHARED/DIR); {NODES_HELP}"
            )
        return
    launcher, world = launcher_name(environment), environment.world_size()
    if strategy not in PER_RANK_STRATEGIES:
        raise NLAConfigError(
            f"{launcher} started {world} ranks, but trainer.strategy={strategy} runs one "
            "process: add trainer=fsdp (sharded) or trainer=ddp to the command"
        )
    local = int(os.environ.get("LOCAL_WORLD_SIZE", os.environ.get("SLURM_NTASKS_PER_NODE", "0")))
    fits = isinstance(devices, int) and devices * nodes == world and devices == (local or devices)
    if not fits:
        per_node = f", {local} a node" if local else ""
        raise NLAConfigError(
            f"{launcher} started {world} ranks{per_node}, but trainer.devices={devices} x "
            f"trainer.num_nodes={nodes} describes another layout: set trainer.devices to the "
            f"processes per node and trainer.num_nodes to the nodes; {NODES_HELP}"
        )


# The gloo group of rank 0's messages (None: not launched), patient enough for rank 0's stages
# between fits; every rank's process group is made with it, before the first fit, which finds it.
_MESSAGES: Any = None


def connect(environment: ClusterEnvironment) -> None:
    """Join every rank's process group (gloo, and NCCL for CUDA tensors where CUDA is here: the
    same choice on every rank, none of which has read the config yet)."""
    global _MESSAGES
    backend = "cpu:gloo,cuda:nccl" if torch.cuda.is_available() else "gloo"
    _init_dist_connection(environment, backend)
    _MESSAGES = dist.new_group(backend="gloo", timeout=WAIT_FOR_RANK_0)


def disconnect() -> None:
    global _MESSAGES
    _MESSAGES = None
    if dist.is_initialized():
        dist.destroy_process_group()


def is_launched() -> bool:
    """Whether this process is one of several ranks started by a launcher (and connected)."""
    return _MESSAGES is not None


def _pack(message: Any) -> bytes:
    """torch.save keeps tensors' storages as they are (pickle shares them, memory of this
    process); loaded on the CPU, each rank's strategy moves its module to its own device."""
    buffer = io.BytesIO()
    torch.save(message, buffer)
    return buffer.getvalue()


def _unpack(data: bytes) -> Any:
    return torch.load(io.BytesIO(data), map_location="cpu", weights_only=False)


def _send(data: bytes) -> None:
    """Rank 0: a packed message to every other rank."""
    tensor = torch.frombuffer(bytearray(data), dtype=torch.uint8)
    dist.broadcast(torch.tensor([tensor.numel()]), src=0, group=_MESSAGES)
    dist.broadcast(tensor, src=0, group=_MESSAGES)


def _receive() -> Any:
    size = torch.zeros(1, dtype=torch.int64)
    dist.broadcast(size, src=0, group=_MESSAGES)
    tensor = torch.empty(int(size), dtype=torch.uint8)
    dist.broadcast(tensor, src=0, group=_MESSAGES)
    return _unpack(tensor.numpy().tobytes())


@dataclass
class _Fit:
    """One call of the Trainer (fit or validate) as every rank runs it, with the random state
    and Lightning's seed variables of rank 0 at the call."""

    trainer: Any
    function: Any
    args: tuple
    kwargs: dict
    states: _GlobalStateSnapshot
    environ: dict[str, str]

    def run(self) -> dict[str, Any] | None:
        """Run on this rank; rank 0 gets back what the pipeline's own trainer needs."""
        os.environ.update(self.environ)
        self.states.restore()
        results = self.function(*self.args, **self.kwargs)
        if self.trainer is None:
            return {"results": results}
        fitted = self.trainer.state.fn == TrainerFn.FITTING
        weights = whole_state_dict(self.trainer.lightning_module) if fitted else None
        if not self.trainer.is_global_zero:
            return None
        metrics = {k: v.cpu() for k, v in self.trainer.callback_metrics.items()}
        state = self.trainer.state
        return {"results": results, "weights": weights, "state": state, "metrics": metrics}


class BroadcastLauncher(_Launcher):
    """The launcher of a strategy whose ranks a cluster launcher started: each Trainer call on
    rank 0 runs on every rank (the other ranks wait in `serve`)."""

    def __init__(self, strategy: Any) -> None:
        self._strategy = strategy

    @property
    def is_interactive_compatible(self) -> bool:
        return True

    def launch(self, function: Any, *args: Any, trainer: Any = None, **kwargs: Any) -> Any:
        environ = {k: v for k, v in os.environ.items() if k.startswith("PL_")}
        states = _GlobalStateSnapshot.capture()
        packed = _pack(_Fit(trainer, function, args, kwargs, states, environ))
        _send(packed)
        # Rank 0 runs a copy, as a spawned rank 0 does: the pipeline's module stays whole
        # (unsharded) for the stages after the fit, and takes the fitted weights back.
        output = _unpack(packed).run()
        if trainer is None:
            return output["results"]
        if output["weights"] is not None:
            trainer.lightning_module.load_state_dict(output["weights"], strict=False)
        trainer.state = output["state"]
        trainer.callback_metrics.update(output["metrics"])
        return output["results"]

    def kill(self, signum: Any) -> None:
        """The ranks are the cluster launcher's: it stops them when one fails."""


def serve() -> None:
    """A rank other than 0: run rank 0's Trainer calls until it sends the end of its run."""
    environment = launched_environment()
    assert environment is not None and environment.global_rank() > 0
    connect(environment)
    try:
        while (call := _receive()) is not None:
            call.run()
    finally:
        disconnect()


def serves_fits() -> bool:
    """Whether this process is a rank other than 0 of a launcher's ranks (then train.py only
    serves fits: rank 0 runs the pipeline and writes the run directory)."""
    environment = launched_environment()
    return environment is not None and environment.global_rank() > 0


@contextmanager
def pipeline_ranks(trainer: Mapping) -> Iterator[None]:
    """Around rank 0's pipeline: the launcher's ranks checked against the trainer settings and
    joined; at the end (also after an error) the other ranks are released."""
    environment = launched_environment()
    if environment is None:
        check_ranks(trainer, environment)
        yield
        return
    connect(environment)  # first: the other ranks wait there, also for a refusal's release
    try:
        check_ranks(trainer, environment)
        yield
    finally:
        _send(_pack(None))
        disconnect()

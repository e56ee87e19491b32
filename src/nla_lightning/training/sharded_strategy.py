"""`trainer.strategy=fsdp`: FSDP2 through Lightning's ModelParallelStrategy, for models that do
not fit one device.

Lightning's strategy is used as it is for the process group, the device mesh, sharded
(distributed) checkpoints and their loading; this subclass adds what the pipeline needs:
- every rank is data-parallel (a mesh of world size x 1: no tensor parallelism);
- on one machine without an external launcher the ranks are spawned for each fit (as
  `ddp_spawn`), so `python train.py trainer=fsdp` runs its other stages in the main process;
  the fitted weights come back to it whole (gathered from the shards), ready for export in
  the release's layout. Under torchrun or srun the processes exist already: rank 0 sends each
  fit to the others instead (training/launched.py), for this strategy and for DDP;
- a sharded checkpoint is a directory, written under a temporary name and renamed when every
  rank has written its shard, so a kill leaves the previous checkpoint whole."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import torch
from lightning.pytorch.strategies import DDPStrategy, ModelParallelStrategy
from lightning.pytorch.strategies.launchers.multiprocessing import _MultiProcessingLauncher

from nla_lightning.training.checkpointing import remove_checkpoint, swap_in
from nla_lightning.training.launched import BroadcastLauncher, is_launched
from nla_lightning.training.sharding import whole_state_dict

STRATEGY_NAME = "fsdp"
# trainer.strategy names -> how ranks start on one machine without an external launcher (as
# Lightning's ddp_spawn / ddp_fork): spawn is safe everywhere; fork skips each rank's imports
# (seconds on the CPU) but cannot follow an initialised CUDA.
START_METHODS = {"fsdp": "spawn", "fsdp_fork": "fork"}
DDP_NAMES = ("ddp", "ddp_spawn", "ddp_fork")


class _GatheringLauncher(_MultiProcessingLauncher):
    """Spawned ranks whose rank 0 hands the main process the full weights (Lightning's own
    launcher saves each rank's local state dict, which under FSDP2 holds shards)."""

    def _collect_rank_zero_results(self, trainer: Any, results: Any) -> Any:
        full = whole_state_dict(trainer.lightning_module)  # collective
        original = trainer.lightning_module.state_dict
        trainer.lightning_module.state_dict = lambda *a, **k: full
        try:
            return super()._collect_rank_zero_results(trainer, results)
        finally:
            trainer.lightning_module.state_dict = original


class ShardedStrategy(ModelParallelStrategy):
    """FSDP2 data parallelism over every rank; the LightningModule shards its models in
    `configure_model` (training/sharding.py)."""

    strategy_name = STRATEGY_NAME

    def __init__(self, start_method: str = "spawn", **kwargs: Any) -> None:
        """`start_method`: how ranks are started on one machine without an external launcher
        (spawn, as ddp_spawn; fork starts faster on the CPU, never after CUDA is initialised)."""
        super().__init__(save_distributed_checkpoint=True, **kwargs)
        self.start_method = start_method

    def setup_environment(self) -> None:
        self._data_parallel_size = self.num_nodes * self.num_processes
        self._tensor_parallel_size = 1
        super().setup_environment()

    def _configure_launcher(self) -> None:
        assert self.cluster_environment is not None
        if not self.cluster_environment.creates_processes_externally:
            self._launcher = _GatheringLauncher(self, start_method=self.start_method)
        elif is_launched():
            self._launcher = BroadcastLauncher(self)

    def save_checkpoint(self, checkpoint: dict[str, Any], filepath: Any, storage_options=None):
        path = Path(self.broadcast(str(filepath)))
        tmp = path.with_name(path.name + ".tmp")
        if self.global_rank == 0:
            remove_checkpoint(tmp)
        self.barrier("sharded checkpoint: temporary directory cleared")
        super().save_checkpoint(checkpoint, tmp, storage_options)
        self.barrier("sharded checkpoint: every shard written")
        if self.global_rank == 0:
            swap_in(tmp, path)
        self.barrier("sharded checkpoint: in place")


class LaunchedDDPStrategy(DDPStrategy):
    """`trainer=ddp` under torchrun or srun: Lightning's DDP over the launcher's ranks, each
    Trainer call sent from rank 0 (training/launched.py) instead of spawning ranks."""

    def _configure_launcher(self) -> None:
        self._launcher = BroadcastLauncher(self)


def resolve_strategy(options: dict[str, Any]) -> dict[str, Any]:
    """Trainer options with `strategy: fsdp` (or fsdp_fork) replaced by the ShardedStrategy
    object (every other strategy name is Lightning's own)."""
    strategy = options.get("strategy")
    if isinstance(strategy, str) and (strategy.endswith("spawn") or strategy == STRATEGY_NAME):
        # Spawned ranks receive the module through shared memory; file descriptors of empty
        # storages fail to map in some containers, files always work.
        torch.multiprocessing.set_sharing_strategy("file_system")
    if is_launched() and strategy in DDP_NAMES:
        return {**options, "strategy": LaunchedDDPStrategy()}
    if strategy not in START_METHODS:
        return options
    return {**options, "strategy": ShardedStrategy(start_method=START_METHODS[strategy])}

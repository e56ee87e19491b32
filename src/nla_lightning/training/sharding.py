"""Sharding the AV and AR with FSDP2 (`torch.distributed.fsdp.fully_shard`), and gathering
them whole for work that must not wait on other ranks.

Each transformer block is one FSDP unit and the rest of a model (embeddings, final norm, LM or
value head) the model's root unit: a forward all-gathers one unit's parameters at a time and a
backward reduce-scatters (averages) its gradients. Every rank must therefore run the same
sequence of forwards and backwards; where ranks do different amounts of work (sampling stops
when the rank's own responses are done, the held-out curve runs on rank 0 only) the models are
gathered whole first (`gathered`), so their forwards need no collective at all."""

from __future__ import annotations

from collections.abc import Iterable, Iterator
from contextlib import ExitStack, contextmanager
from typing import Any

from torch import nn

from nla_lightning.core.activations import decoder_layers
from nla_lightning.errors import NLAConfigError


def fsdp_units(model: nn.Module) -> list[Any]:
    """The FSDP2 units inside `model` (itself included), outermost first."""
    from torch.distributed.fsdp import FSDPModule

    return [m for m in model.modules() if isinstance(m, FSDPModule)]


def is_sharded(model: nn.Module) -> bool:
    return bool(fsdp_units(model))


def shard(model: nn.Module, mesh: Any, blocks_of: nn.Module | None = None) -> None:
    """Shard `model` over the data-parallel `mesh`: every decoder block of `blocks_of` (default
    `model`) a unit, then `model` itself. The root unit keeps its parameters gathered from its
    forward to its backward (they are needed again at once); the blocks free theirs."""
    from torch.distributed.fsdp import fully_shard

    quantised = [n for n, p in model.named_parameters() if type(p).__name__ == "Params4bit"]
    if quantised:
        raise NLAConfigError(
            f"trainer.strategy=fsdp cannot shard 4-bit weights ({quantised[0]}, ...): train in "
            "full precision (model.train.av_mode / ar_mode = full or lora) or use trainer=ddp"
        )
    for block in decoder_layers(blocks_of if blocks_of is not None else model):
        fully_shard(block, mesh=mesh, reshard_after_forward=True)
    fully_shard(model, mesh=mesh, reshard_after_forward=False)


@contextmanager
def _whole(model: nn.Module) -> Iterator[None]:
    units = fsdp_units(model)
    if not units:
        yield
        return
    for unit in units:
        unit.set_reshard_after_forward(False, recurse=False)
        unit.unshard()
    try:
        yield
    finally:
        for unit in units:
            unit.reshard()
        # Back to `shard`'s settings: blocks free their gathered parameters after a forward.
        units[0].set_reshard_after_forward(False, recurse=False)
        for unit in units[1:]:
            unit.set_reshard_after_forward(True, recurse=False)


@contextmanager
def gathered(models: Iterable[nn.Module]) -> Iterator[None]:
    """Inside: the sharded `models` hold every parameter whole on every rank and their forwards
    communicate with no other rank (entering and leaving are collective: every rank must).
    For no-grad work only: sampling, scoring, evaluation. A no-op for unsharded models."""
    with ExitStack() as stack:
        for model in models:
            stack.enter_context(_whole(model))
        yield


def shard_under_strategy(module: Any, model: nn.Module, blocks_of: nn.Module | None = None) -> None:
    """A LightningModule's `configure_model` step for one of its models: `shard` it over the
    data-parallel device mesh its strategy set up (`trainer.strategy=fsdp`); nothing without a
    mesh, or when an earlier call sharded it already."""
    mesh = getattr(module, "device_mesh", None)
    if mesh is not None and not is_sharded(model):
        shard(model, mesh["data_parallel"], blocks_of)


def whole_state_dict(model: nn.Module) -> dict[str, Any]:
    """`model`'s state dict with every tensor whole, on the CPU: gathered from the shards of a
    sharded model (collective: every rank calls it; the other ranks' copies are empty), as it
    is for an unsharded one."""
    if not is_sharded(model):
        return {k: v.detach().cpu() for k, v in model.state_dict().items()}
    from torch.distributed.checkpoint.state_dict import StateDictOptions, get_model_state_dict

    options = StateDictOptions(full_state_dict=True, cpu_offload=True)
    return get_model_state_dict(model, options=options)

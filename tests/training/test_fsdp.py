"""Sharded RL (`trainer.strategy=fsdp`: FSDP2 over 2 CPU processes with gloo) against the same
steps in one process on the same global batch, and resume from a sharded checkpoint."""

import json

import lightning as L
import pytest
import torch

from nla_lightning.core.padding import pad_right
from nla_lightning.core.verbalizer import Rollout
from nla_lightning.training import sharded_strategy
from nla_lightning.training.checkpointing import RLCheckpoint, swap_in
from nla_lightning.training.rl import NLARLModule
from nla_lightning.training.rl_schedule import seed_for
from nla_lightning.training.sharded_strategy import resolve_strategy
from tests.conftest import TINY_RUN, train_py
from tests.training.rl_by_hand import TRAINER
from tests.training.test_rl import make_module

RANKS = 2
# Per rank: 2 activations x a group of 3; one process takes the 4 of both ranks at once.
# AdamW's eps 1e-4 keeps its first steps smooth in the gradient (see the micro-batch test), so
# float-rounding differences between the two runs stay float-sized.
SETTINGS = {"steps": 2, "max_new_tokens": 16, "adam_eps": 1e-4, "seed": 5, "av_lr": 3e-3}


class RollsOutLikeTwoRanks(NLARLModule):
    """One process, the global batch of both ranks: its rollout sampled half by half with each
    rank's seed, as the two ranks sample theirs. Everything else is the module's own."""

    def rollout(self, activations: torch.Tensor) -> Rollout:
        parts = []
        for rank, half in enumerate(activations.chunk(RANKS)):
            torch.manual_seed(seed_for(self.hp.seed, "step", self.steps_done, rank))
            parts.append(super().rollout(half))
        # Each half padded to its own longest response: padded again to the longer one.
        ids = pad_right([r for p in parts for r in p.response_ids.tolist()], self.av.pad_id)[0]
        mask = pad_right([r for p in parts for r in p.response_mask.tolist()], 0)[0]
        texts = [t for p in parts for t in p.texts]
        return Rollout(
            ids,
            mask.to(parts[0].response_mask.dtype),
            texts,
            sum((p.explanations for p in parts), []),
        )


def sharded(checkpoints=None):
    """A Trainer of 2 ranks under trainer.strategy=fsdp, forked (no second import of torch)."""
    options = resolve_strategy({**TRAINER, "devices": RANKS, "strategy": "fsdp_fork"})
    return L.Trainer(callbacks=[checkpoints] if checkpoints else [], **options)


@pytest.fixture(scope="module")
def sharded_run(warm_nla, colour_mapping, tmp_path_factory):
    """2 RL steps on 2 ranks (a sharded checkpoint after each), the weights gathered back."""
    directory = tmp_path_factory.mktemp("fsdp")
    module = make_module(warm_nla, colour_mapping, batch_size=2, **SETTINGS)
    torch.multiprocessing.set_sharing_strategy("file_system")
    swaps = directory / "swaps.txt"

    def recorded_swap_in(tmp, path):  # the forked ranks inherit it; rank 0 swaps
        with swaps.open("a") as log:
            log.write(f"{tmp.name} -> {path.name}\n")
        swap_in(tmp, path)

    with pytest.MonkeyPatch.context() as patch:
        patch.setattr(sharded_strategy, "swap_in", recorded_swap_in)
        sharded(RLCheckpoint(directory, every=1)).fit(module)
    return module, directory


def parameters(module):
    return {n: p.detach().clone() for n, p in module.named_parameters()}


def test_sharded_steps_equal_one_process_on_the_same_global_batch(
    sharded_run, warm_nla, colour_mapping
):
    two_ranks, _ = sharded_run
    assert two_ranks.steps_done == 2  # the step count and the gathered weights came back
    one = make_module(
        warm_nla, colour_mapping, module_class=RollsOutLikeTwoRanks, batch_size=4, **SETTINGS
    )
    start = parameters(one)
    L.Trainer(**TRAINER).fit(one)
    sharded_weights, single = parameters(two_ranks), parameters(one)
    assert sharded_weights.keys() == single.keys() == start.keys()
    for name in single:
        moved = (single[name] - start[name]).abs().max()
        differ = (sharded_weights[name] - single[name]).abs().max()
        if moved > 0:
            # The runs moved each weight the same way: by ~lr per step, equal to float rounding.
            assert differ <= 1e-4 * moved + 1e-6, (name, float(differ), float(moved))
        else:
            assert differ == 0, name
    moved_av = max((single[n] - start[n]).abs().max() for n in single if n.startswith("av."))
    moved_ar = max((single[n] - start[n]).abs().max() for n in single if n.startswith("ar."))
    assert moved_av > 1e-3 and moved_ar > 1e-4


def test_sharded_checkpoint_resumes_to_the_same_weights(sharded_run, warm_nla, colour_mapping):
    straight, directory = sharded_run
    step_1 = directory / "step-1.ckpt"
    assert step_1.is_dir() and len(list(step_1.glob("*.distcp"))) == RANKS  # one shard a rank
    # Each written whole under a temporary name first, then swapped in (a kill mid-write
    # leaves the previous checkpoint whole).
    swapped = (directory / "swaps.txt").read_text().splitlines()
    assert swapped == [f"step-{n}.ckpt.tmp -> step-{n}.ckpt" for n in (1, 2)]
    assert not list(directory.glob("*.tmp")) and not list(directory.glob("*.old"))
    assert (directory / "last.ckpt").resolve() == (directory / "step-2.ckpt").resolve()
    resumed = make_module(warm_nla, colour_mapping, batch_size=2, **SETTINGS)
    sharded().fit(resumed, ckpt_path=str(step_1))
    assert resumed.steps_done == 2
    for name, value in parameters(straight).items():
        torch.testing.assert_close(parameters(resumed)[name], value, rtol=0, atol=1e-6)


def max_difference(a_dir, b_dir) -> float:
    from safetensors.torch import load_file

    a, b = load_file(a_dir / "model.safetensors"), load_file(b_dir / "model.safetensors")
    assert a.keys() == b.keys()
    return max(float((a[k].float() - b[k].float()).abs().max()) for k in a)


def test_train_py_with_trainer_fsdp_equals_the_single_process_run(tiny_run, tmp_path):
    """`python train.py trainer=fsdp` (2 ranks, half the batch each) from the tiny run's target
    and data: warm starts equal to the single-process run's to float rounding (the ranks'
    batches together are its batches); RL runs its steps (its rollouts are the ranks' own
    samples, so it is compared in distribution: the exact RL comparison is the test above)."""
    summary, single = tiny_run
    args = [
        *TINY_RUN,
        "trainer=fsdp",
        "trainer.strategy=fsdp_fork",
        "stage.run=[av_sft,ar_sft,rl]",
        f"from_run={single}",
        "sft.av.batch_size=16",  # the smoke run's 32, over 2 ranks
        "sft.ar.batch_size=16",
        "rl.batch_size=1",
        "rl.steps=3",
        f"hydra.run.dir={tmp_path}",
    ]
    done = train_py(args, tmp_path)
    assert done.returncode == 0, done.stderr[-3000:]
    sharded = json.loads((tmp_path / "summary.json").read_text())["stages"]
    for side in ("av", "ar"):
        assert max_difference(single / "checkpoints" / side, tmp_path / "checkpoints" / side) < 1e-5
    # The held-out loss: the same weights on the same rows, batched 16 (not 32) a forward, and
    # a batch's token mean weighted by its rows: equal to ~1e-5.
    assert sharded["av_sft"]["loss"] == pytest.approx(summary["stages"]["av_sft"]["loss"], rel=1e-4)
    assert sharded["rl"]["steps"] == 3
    assert max_difference(single / "checkpoints/rl/av", tmp_path / "checkpoints/rl/av") < 1e-2


def test_a_sharded_warm_start_continues_from_its_mid_fit_checkpoint(
    target_dir, toy_tokenizer, meta, colour_mapping, tmp_path
):
    """AR warm start on 2 ranks with a sharded checkpoint at step 3 of 6; a second fit from
    that checkpoint (from other starting weights, which it replaces; each rank skipping the
    batches it had done) ends on the same weights."""
    from nla_lightning.core.reconstructor import ActivationReconstructor
    from nla_lightning.data.datasets import ActivationTokens
    from nla_lightning.settings.sft import SFTSettings
    from nla_lightning.training.sft import ARSFTModule
    from nla_lightning.training.trainer import fit_and_validate

    activations, texts = colour_mapping
    # 20 rows a rank, 4 a batch: the checkpoint at step 3 falls inside the first epoch.
    hp = SFTSettings(max_steps=6, batch_size=4, lr=3e-3, warmup_steps=1, checkpoint_every=3)
    cfg = {"accelerator": "cpu", "devices": RANKS, "strategy": "fsdp_fork"}
    checkpoint = tmp_path / "ar_sft.ckpt"
    fits = []
    for attempt in ("straight", "resumed"):
        torch.manual_seed(0)
        ar = ActivationReconstructor.from_target(str(target_dir), toy_tokenizer, meta)
        data = ActivationTokens(activations[:40], ar.encode(texts[:40]))
        held_out = ActivationTokens(activations[40:56], ar.encode(texts[40:56]))
        module = ARSFTModule(ar, **hp.optimiser())
        if attempt == "resumed":  # weights the checkpoint must replace, or the test fails
            with torch.no_grad():
                ar.head.weight.add_(0.1)
        pad = toy_tokenizer.pad_token_id
        fit_and_validate(
            module, data, held_out, pad, hp, {**cfg, "enable_progress_bar": False},
            tmp_path / attempt, None, seed=4, checkpoint=checkpoint,
        )  # fmt: skip
        fits.append(parameters(module))
        if attempt == "straight":
            assert checkpoint.is_dir() and len(list(checkpoint.glob("*.distcp"))) == RANKS
    start = parameters(
        ARSFTModule(ActivationReconstructor.from_target(str(target_dir), toy_tokenizer, meta))
    )
    for name, value in fits[0].items():
        assert torch.equal(fits[1][name], value), name
    assert any(not torch.equal(fits[0][n], start[n]) for n in start)

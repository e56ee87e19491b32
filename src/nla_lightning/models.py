"""Loading tokenizers and models from a local directory or the Hugging Face Hub, with errors
that say what to do when the weights are not here."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import torch

from nla_lightning.errors import NLAConfigError

DTYPES = {"float32": torch.float32, "bfloat16": torch.bfloat16, "float16": torch.float16}


def resolve_dtype(dtype: str | torch.dtype) -> torch.dtype:
    if isinstance(dtype, torch.dtype):
        return dtype
    if dtype not in DTYPES:
        raise NLAConfigError(f"unknown dtype {dtype!r}: choose one of {sorted(DTYPES)}")
    return DTYPES[dtype]


def _not_available(name_or_path: str, err: Exception) -> NLAConfigError:
    if Path(name_or_path).exists():
        return NLAConfigError(f"could not load {name_or_path}: {type(err).__name__}: {err}")
    return NLAConfigError(
        f"could not load {name_or_path!r}: its weights are not on this machine and could not be "
        "downloaded from the Hugging Face Hub (no network, or access not granted). Download it "
        f"where there is a network (`hf download {name_or_path}`) and point HF_HOME at that "
        f"cache, or set model.path=/local/dir/of/{name_or_path.split('/')[-1]}. "
        f"[{type(err).__name__}: {str(err).splitlines()[0] if str(err) else ''}]"
    )


def _is_generic_fast_tokenizer(name_or_path: str) -> bool:
    """True for a directory holding a plain tokenizer.json tokenizer (the toy world's)."""
    config = Path(name_or_path) / "tokenizer_config.json"
    if not config.exists():
        return False
    saved_class = json.loads(config.read_text(encoding="utf-8")).get("tokenizer_class")
    return saved_class in ("TokenizersBackend", "PreTrainedTokenizerFast")


def load_tokenizer(name_or_path: str) -> Any:
    from transformers import AutoTokenizer, PreTrainedTokenizerFast

    # AutoTokenizer would rebuild a generic tokenizer as the model type's own class (for a
    # Qwen2 config: Qwen2Tokenizer, with another pre-tokenizer), silently changing the ids.
    loader = PreTrainedTokenizerFast if _is_generic_fast_tokenizer(name_or_path) else AutoTokenizer
    try:
        tokenizer = loader.from_pretrained(name_or_path)
    except (OSError, ValueError) as err:
        raise _not_available(name_or_path, err) from err
    if tokenizer.pad_token_id is None:
        tokenizer.pad_token = tokenizer.eos_token
    return tokenizer


def load_config(name_or_path: str, **overrides: Any) -> Any:
    from transformers import AutoConfig

    try:
        return AutoConfig.from_pretrained(name_or_path, **overrides)
    except (OSError, ValueError) as err:
        raise _not_available(name_or_path, err) from err


def _load_kwargs(dtype: str | torch.dtype, quantize_4bit: bool, device: str) -> dict[str, Any]:
    kwargs: dict[str, Any] = {"dtype": resolve_dtype(dtype)}
    if quantize_4bit:
        from transformers import BitsAndBytesConfig

        kwargs["quantization_config"] = BitsAndBytesConfig(
            load_in_4bit=True,
            bnb_4bit_quant_type="nf4",
            bnb_4bit_compute_dtype=resolve_dtype(dtype),
        )
        kwargs["device_map"] = {"": device}
    return kwargs


def load_causal_lm(
    name_or_path: str,
    dtype: str | torch.dtype = "float32",
    quantize_4bit: bool = False,
    device: str = "cpu",
) -> Any:
    """A transformers causal LM (optionally NF4 4-bit through bitsandbytes)."""
    from transformers import AutoModelForCausalLM

    try:
        model = AutoModelForCausalLM.from_pretrained(
            name_or_path, **_load_kwargs(dtype, quantize_4bit, device)
        )
    except (OSError, ValueError) as err:
        raise _not_available(name_or_path, err) from err
    return model if quantize_4bit else model.to(device)


def load_backbone(
    name_or_path: str,
    num_hidden_layers: int,
    dtype: str | torch.dtype = "float32",
    quantize_4bit: bool = False,
    device: str = "cpu",
) -> Any:
    """The base model (no LM head) with only its first `num_hidden_layers` blocks loaded."""
    from transformers import AutoModel

    config = load_config(name_or_path)
    if num_hidden_layers > config.num_hidden_layers:
        raise NLAConfigError(
            f"asked for {num_hidden_layers} blocks of {name_or_path}, which has "
            f"{config.num_hidden_layers}"
        )
    config.num_hidden_layers = num_hidden_layers
    if getattr(config, "layer_types", None) is not None:
        config.layer_types = config.layer_types[:num_hidden_layers]
    from transformers.utils import logging as hf_logging

    # The blocks above `num_hidden_layers` are skipped on purpose; do not list them as warnings.
    verbosity = hf_logging.get_verbosity()
    hf_logging.set_verbosity_error()
    try:
        model = AutoModel.from_pretrained(
            name_or_path, config=config, **_load_kwargs(dtype, quantize_4bit, device)
        )
    except (OSError, ValueError) as err:
        raise _not_available(name_or_path, err) from err
    finally:
        hf_logging.set_verbosity(verbosity)
    return model if quantize_4bit else model.to(device)

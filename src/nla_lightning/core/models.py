"""Loading tokenizers and models from a local directory or the Hugging Face Hub, with errors
that say what to do when the weights are not here."""

from __future__ import annotations

import copy
import json
from pathlib import Path
from typing import Any

import torch

from nla_lightning.core.families import text_config, text_weight_key_mapping
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


def _quiet_load(load: Any, name_or_path: str, **kwargs: Any) -> tuple[Any, dict[str, Any]]:
    """`load(name_or_path, output_loading_info=True, **kwargs)` with transformers' load report
    silenced: callers skip weights on purpose (a vision tower, blocks above the layer) and check
    what matters themselves from the returned loading info."""
    from transformers.utils import logging as hf_logging

    verbosity = hf_logging.get_verbosity()
    hf_logging.set_verbosity_error()
    try:
        return load(name_or_path, output_loading_info=True, **kwargs)
    except (OSError, ValueError) as err:
        raise _not_available(name_or_path, err) from err
    finally:
        hf_logging.set_verbosity(verbosity)


def _check_loaded(
    name_or_path: str, info: dict[str, Any], what: str, may_miss: tuple[str, ...] = ()
) -> None:
    """Fail when weights the model needs were not in the checkpoint (transformers would leave
    them randomly initialised and only warn)."""
    missing = sorted(k for k in info.get("missing_keys", ()) if not k.startswith(may_miss))
    if missing:
        raise NLAConfigError(
            f"{name_or_path}: {len(missing)} weights of the {what} are not in the checkpoint "
            f"(e.g. {missing[:4]}); expected a checkpoint of this architecture with all of them. "
            "The directory is incomplete or holds another model: re-download or re-export it"
        )


def load_causal_lm(
    name_or_path: str,
    dtype: str | torch.dtype = "float32",
    quantize_4bit: bool = False,
    device: str = "cpu",
) -> Any:
    """A transformers causal LM (optionally NF4 4-bit through bitsandbytes).

    For a multimodal checkpoint whose text side loads alone (Gemma-3: `Gemma3Config`), the
    text-only causal LM (`Gemma3ForCausalLM`) with the checkpoint's text weights: ids in,
    logits out, as the full model on text, without paying for the vision tower."""
    from transformers import AutoModelForCausalLM

    config = load_config(name_or_path)
    mapping = text_weight_key_mapping(config)
    kwargs = _load_kwargs(dtype, quantize_4bit, device)
    if mapping is None:
        try:
            model = AutoModelForCausalLM.from_pretrained(name_or_path, **kwargs)
        except (OSError, ValueError) as err:
            raise _not_available(name_or_path, err) from err
    else:
        model, info = _quiet_load(
            AutoModelForCausalLM.from_pretrained,
            name_or_path,
            config=copy.deepcopy(text_config(config)),
            key_mapping=mapping,
            **kwargs,
        )
        _check_loaded(name_or_path, info, "text model")
    return model if quantize_4bit else model.to(device)


def load_backbone(
    name_or_path: str,
    num_hidden_layers: int,
    dtype: str | torch.dtype = "float32",
    quantize_4bit: bool = False,
    device: str = "cpu",
) -> Any:
    """The TEXT base model (no LM head) with only its first `num_hidden_layers` blocks loaded
    (for a Gemma-3 multimodal checkpoint: `Gemma3TextModel`, no vision tower). Its final norm
    may be absent from the checkpoint (a released AR has none): the caller replaces it."""
    from transformers import AutoModel

    full = load_config(name_or_path)
    # A copy: the truncation must not leak into a config object the caller still holds.
    config = copy.deepcopy(text_config(full))
    if not 1 <= num_hidden_layers <= config.num_hidden_layers:
        raise NLAConfigError(
            f"asked for {num_hidden_layers} blocks of {name_or_path}, which has "
            f"{config.num_hidden_layers}: pass 1..{config.num_hidden_layers} (layer + 1)"
        )
    config.num_hidden_layers = num_hidden_layers
    if getattr(config, "layer_types", None) is not None:
        config.layer_types = config.layer_types[:num_hidden_layers]
    mapping = text_weight_key_mapping(full)
    if mapping is None and text_config(full) is not full:
        raise NLAConfigError(
            f"{name_or_path} is a multimodal {full.model_type!r} checkpoint whose text model "
            "this package cannot load alone (known: gemma3): expected a text-only causal LM or "
            "a Gemma-3 checkpoint; export the text model (save_pretrained of its language "
            "model with its text config) and point at that"
        )
    extra = {} if mapping is None else {"key_mapping": mapping}
    model, info = _quiet_load(
        AutoModel.from_pretrained,
        name_or_path,
        config=config,
        **extra,
        **_load_kwargs(dtype, quantize_4bit, device),
    )
    _check_loaded(name_or_path, info, f"first {num_hidden_layers} blocks", may_miss=("norm.",))
    return model if quantize_4bit else model.to(device)

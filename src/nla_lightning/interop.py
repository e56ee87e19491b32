"""Conversion between our checkpoint layout and the official NLA release layout.

The official AV is already an HF causal LM plus nla_meta.yaml; the official AR is the truncated
target saved as a *causal LM* (with lm_head and final norm), whereas ours saves the base model.
"""

from __future__ import annotations

import shutil
from pathlib import Path
from typing import Any

import torch
import yaml

from nla_lightning.errors import NLAConfigError
from nla_lightning.lora import is_adapter_dir
from nla_lightning.meta import META_FILENAME, NLAMeta, read_meta_yaml
from nla_lightning.reconstructor import (
    VALUE_HEAD_FILENAME,
    ActivationReconstructor,
    read_value_head,
)

__all__ = ["export_official", "import_official", "read_official_meta"]

# Spellings of the AV prompt's injection-token neighbours seen in nla_meta.yaml files.
_NEIGHBOUR_KEYS = (
    ("left_neighbour_id", "right_neighbour_id"),
    ("left_neighbor_id", "right_neighbor_id"),
)


def _read_yaml(path: str | Path) -> tuple[dict[str, Any], Path]:
    """The mapping in an official meta file (or a directory's nla_meta.yaml) and its path."""
    return read_meta_yaml(
        path,
        f"an official NLA checkpoint directory must contain {META_FILENAME}; point at the "
        "AV/AR directory of the release",
    )


def _section(data: dict[str, Any], name: str, source: Path) -> dict[str, Any]:
    """A nested mapping of the meta, {} when absent."""
    value = data.get(name)
    if value is None:
        return {}
    if not isinstance(value, dict):
        raise NLAConfigError(f"{source}: '{name}' must be a mapping, got {type(value).__name__}")
    return dict(value)


def _neighbours(tokens: dict[str, Any], source: Path) -> tuple[Any, Any]:
    """(left, right) neighbour ids from any of the known spellings, None where absent."""
    pair = tokens.get("neighbour_ids", tokens.get("neighbor_ids"))
    if pair is not None:
        if not isinstance(pair, (list, tuple)) or len(pair) != 2:
            raise NLAConfigError(
                f"{source}: tokens.neighbour_ids must be a list [left_id, right_id], got {pair!r}"
            )
        return pair[0], pair[1]
    for left_key, right_key in _NEIGHBOUR_KEYS:
        if left_key in tokens or right_key in tokens:
            return tokens.get(left_key), tokens.get(right_key)
    return None, None


def _normalise(data: dict[str, Any], source: Path) -> dict[str, Any]:
    """Rewrite an official-style meta mapping into the exact layout NLAMeta.from_dict reads."""
    extraction = _section(data, "extraction", source)
    tokens = _section(data, "tokens", source)
    templates = _section(data, "prompt_templates", source)
    critic = _section(data, "critic", source)

    layer = extraction.get("layer_index")
    critic_layer = critic.get("extraction_layer_index")
    if layer is not None and critic_layer is not None and int(layer) != int(critic_layer):
        raise NLAConfigError(
            f"{source}: extraction.layer_index={layer} but critic.extraction_layer_index="
            f"{critic_layer}; the file is inconsistent, fix one of them"
        )
    layer = layer if layer is not None else critic_layer
    d_model = extraction.get("d_model", data.get("d_model"))
    base_model = extraction.get("base_model") or data.get("base_model") or "unknown"
    left, right = _neighbours(tokens, source)

    required = {
        "extraction.layer_index (or critic.extraction_layer_index)": layer,
        "d_model (top level or extraction.d_model)": d_model,
        "extraction.injection_scale": extraction.get("injection_scale"),
        "extraction.mse_scale": extraction.get("mse_scale"),
        "tokens.injection_char": tokens.get("injection_char"),
        "tokens.injection_token_id": tokens.get("injection_token_id"),
        "tokens.left_neighbour_id (or tokens.neighbour_ids[0])": left,
        "tokens.right_neighbour_id (or tokens.neighbour_ids[1])": right,
        "tokens.critic_suffix_ids": tokens.get("critic_suffix_ids"),
        "prompt_templates.actor": templates.get("actor"),
        "prompt_templates.critic": templates.get("critic"),
    }
    missing = [name for name, value in required.items() if value is None]
    if missing:
        raise NLAConfigError(
            f"{source} is missing required NLA metadata: {', '.join(missing)}; add these "
            "fields (see the nla_meta.yaml of an AV/AR exported by nla_lightning for the layout)"
        )

    normalised: dict[str, Any] = {
        "base_model": base_model,
        "d_model": d_model,
        "extraction": {
            "base_model": base_model,
            "d_model": d_model,
            "layer_index": layer,
            "injection_scale": extraction["injection_scale"],
            "mse_scale": extraction["mse_scale"],
        },
        "tokens": {
            "injection_char": tokens["injection_char"],
            "injection_token_id": tokens["injection_token_id"],
            "left_neighbour_id": left,
            "right_neighbour_id": right,
            "critic_suffix_ids": tokens["critic_suffix_ids"],
            "vocab_size": tokens.get("vocab_size"),
        },
        "prompt_templates": {"actor": templates["actor"], "critic": templates["critic"]},
        "extra": data.get("extra") or {},
    }
    if data.get("num_layers") is not None:
        normalised["num_layers"] = data["num_layers"]
    return normalised


def read_official_meta(path: str | Path) -> NLAMeta:
    """Read an official-release nla_meta.yaml (file or directory), tolerating known variants."""
    data, source = _read_yaml(path)
    return NLAMeta.from_dict(_normalise(data, source), source=str(source))


def _official_dict(meta: NLAMeta, role: str) -> dict[str, Any]:
    """Our meta in the official layout, with the neighbour pair spelt as the release reads it."""
    data = meta.to_dict(kind="nla_model", role=role)
    data["tokens"]["neighbour_ids"] = [meta.left_neighbour_id, meta.right_neighbour_id]
    return data


def _write_yaml(data: dict[str, Any], directory: Path) -> Path:
    """Write a meta mapping as the directory's nla_meta.yaml."""
    path = directory / META_FILENAME
    path.write_text(yaml.safe_dump(data, sort_keys=False, allow_unicode=True), encoding="utf-8")
    return path


def _check_role(directory: Path, expected: str) -> None:
    """Fail early when an AR directory is passed as the AV or the other way round."""
    data, source = _read_yaml(directory)
    role = data.get("role")
    if role is not None and role != expected:
        raise NLAConfigError(
            f"{source} has role {role!r} but was passed as the {expected.upper()}; pass the AV "
            "directory first and the AR directory second"
        )


def _check_full_weights(directory: Path, what: str) -> None:
    """Refuse LoRA checkpoints: they would need their base model, which the other side lacks."""
    if is_adapter_dir(directory):
        raise NLAConfigError(
            f"the {what} at {directory} is a LoRA adapter checkpoint, which interop does not "
            "convert: merge the adapter into its base first (peft's merge_and_unload, then "
            "save_pretrained together with nla_meta.yaml) and convert the merged directory"
        )


def _check_pair(av: NLAMeta, ar: NLAMeta) -> None:
    """Fail if the AV and the AR were not made for the same target, layer and tokens."""
    av.check_compatible(ar, what="the AR checkpoint")
    for name in ("injection_token_id", "critic_suffix_ids", "mse_scale"):
        if getattr(av, name) != getattr(ar, name):
            raise NLAConfigError(
                f"the AV and AR metadata disagree on {name}: {getattr(av, name)!r} vs "
                f"{getattr(ar, name)!r}; convert an AV and an AR from the same release"
            )


def _copy_av_files(src: Path, dst: Path) -> None:
    """Copy an AV's HF files (weights, config, tokenizer) without its meta, rewritten after."""
    if src.resolve() == dst.resolve():
        raise NLAConfigError(f"the output AV directory {dst} is the input; choose another out_dir")
    shutil.copytree(src, dst, dirs_exist_ok=True, ignore=shutil.ignore_patterns(META_FILENAME))


def _checkpoint_dtype(directory: Path) -> torch.dtype:
    """The dtype the checkpoint's config records (float32 if none), so conversion keeps size."""
    from nla_lightning.models import load_config, resolve_dtype

    config = load_config(str(directory))
    dtype = getattr(config, "dtype", None) or getattr(config, "torch_dtype", None)
    return resolve_dtype(dtype) if dtype is not None else torch.float32


def _load_tokenizer(*directories: Path) -> Any:
    """The tokenizer of the first directory that has one (the official AR may ship none)."""
    from nla_lightning.models import load_tokenizer

    for directory in directories:
        if any((directory / f).exists() for f in ("tokenizer.json", "tokenizer_config.json")):
            return load_tokenizer(str(directory))
    raise NLAConfigError(
        f"no tokenizer in {', '.join(str(d) for d in directories)}: save the target's "
        "tokenizer into the AV directory"
    )


def _check_directories(av_dir: Path, ar_dir: Path) -> None:
    """Both hold full weights (not LoRA adapters) and the role their name says."""
    for directory, role in ((av_dir, "av"), (ar_dir, "ar")):
        _check_full_weights(directory, role.upper())
        _check_role(directory, role)


def import_official(
    av_dir: str | Path, ar_dir: str | Path, out_dir: str | Path
) -> tuple[Path, Path]:
    """Convert an official AV/AR pair into our layout under out_dir/av and out_dir/ar."""
    av_dir, ar_dir, out_dir = Path(av_dir), Path(ar_dir), Path(out_dir)
    _check_directories(av_dir, ar_dir)
    av_meta = read_official_meta(av_dir)
    ar_meta = read_official_meta(ar_dir)
    _check_pair(av_meta, ar_meta)
    # An official AR meta may omit num_layers (its config only has layer+1 blocks); the AV
    # holds the full target, so take the count from there.
    base_model = av_meta.base_model if ar_meta.base_model == "unknown" else ar_meta.base_model
    ar_meta = ar_meta.with_updates(
        num_layers=max(ar_meta.num_layers, av_meta.num_layers), base_model=base_model
    )

    av_out, ar_out = out_dir / "av", out_dir / "ar"
    _copy_av_files(av_dir, av_out)
    av_meta.save(av_out, kind="nla_model", role="av")

    tokenizer = _load_tokenizer(ar_dir, av_dir)
    # AutoModel drops the causal LM's `model.` prefix and its lm_head; the AR constructor
    # replaces the final norm by identity, as the official loader does.
    ar = ActivationReconstructor.from_target(
        str(ar_dir), tokenizer, ar_meta, dtype=_checkpoint_dtype(ar_dir)
    )
    with torch.no_grad():
        ar.head.weight.copy_(read_value_head(ar_dir, ar_meta.d_model))
    ar_out.mkdir(parents=True, exist_ok=True)
    ar.save(ar_out)
    return av_out, ar_out


def _truncated_causal_lm(ar: ActivationReconstructor) -> Any:
    """A causal LM with layer+1 blocks whose base model holds the AR backbone's weights."""
    from transformers import AutoModelForCausalLM

    config = type(ar.backbone.config).from_dict(ar.backbone.config.to_dict())
    config.num_hidden_layers = ar.meta.layer + 1
    if getattr(config, "layer_types", None) is not None:
        config.layer_types = config.layer_types[: config.num_hidden_layers]
    first = next(ar.backbone.parameters())
    model = AutoModelForCausalLM.from_config(config, dtype=first.dtype)
    base = getattr(model, model.base_model_prefix)
    state = ar.backbone.state_dict()
    missing, unexpected = base.load_state_dict(state, strict=False)
    # Our AR saves no final norm (it is identity); the official loader drops it anyway, so the
    # freshly initialised one may stay. Anything else missing means the weights did not fit.
    missing = [k for k in missing if not k.startswith("norm.")]
    if missing or unexpected:
        raise NLAConfigError(
            f"the AR backbone does not fit a {type(model).__name__} with "
            f"{config.num_hidden_layers} blocks (missing {missing[:5]}, unexpected "
            f"{unexpected[:5]}); export an AR saved by nla_lightning without LoRA"
        )
    return model


def export_official(
    av_dir: str | Path, ar_dir: str | Path, out_dir: str | Path
) -> tuple[Path, Path]:
    """Convert our AV/AR pair into the official layout under out_dir/av and out_dir/ar."""
    av_dir, ar_dir, out_dir = Path(av_dir), Path(ar_dir), Path(out_dir)
    _check_directories(av_dir, ar_dir)
    av_meta = NLAMeta.load(av_dir)
    ar_meta = NLAMeta.load(ar_dir)
    _check_pair(av_meta, ar_meta)

    av_out, ar_out = out_dir / "av", out_dir / "ar"
    _copy_av_files(av_dir, av_out)
    _write_yaml(_official_dict(av_meta, "av"), av_out)

    ar = ActivationReconstructor.load(ar_dir, dtype=_checkpoint_dtype(ar_dir))
    model = _truncated_causal_lm(ar)
    ar_out.mkdir(parents=True, exist_ok=True)
    model.save_pretrained(ar_out)
    ar.tokenizer.save_pretrained(ar_out)
    # Copy the head as stored rather than re-saving it, so its bytes and dtype are untouched.
    head = ar_dir / VALUE_HEAD_FILENAME
    shutil.copyfile(head, ar_out / VALUE_HEAD_FILENAME)
    _write_yaml(_official_dict(ar_meta, "ar"), ar_out)
    return av_out, ar_out

"""NLA checkpoints to and from the release's layout.

nla_lightning writes its own checkpoints in the release's layout (sidecar spelling, the AR as a
truncated causal LM without lm_head and final norm), so both directions are one conversion:
read a pair in any spelling (the release's, the official trainer's actor/critic, older
nla_lightning files), complete each sidecar from its partner, load the AR to prove its weights
fit, and write both the way the release does.
"""

from __future__ import annotations

import shutil
from pathlib import Path
from typing import Any

import torch

from nla_lightning.core.lora import is_adapter_dir
from nla_lightning.core.meta import META_FILENAME, NLAMeta
from nla_lightning.core.reconstructor import ActivationReconstructor
from nla_lightning.core.sidecar import read_pair
from nla_lightning.errors import NLAConfigError

__all__ = ["export_official", "import_official", "read_official_meta"]


def read_official_meta(path: str | Path, partner: str | Path | None = None) -> NLAMeta:
    """An nla_meta.yaml in any known spelling, completed from its partner's file."""
    return NLAMeta.load(path, partner=partner)


def _check_full_weights(directory: Path, what: str) -> None:
    """Refuse LoRA checkpoints: they would need their base model, which the other side lacks."""
    if is_adapter_dir(directory):
        raise NLAConfigError(
            f"the {what} at {directory} is a LoRA adapter checkpoint, which interop does not "
            "convert: merge the adapter into its base first (peft's merge_and_unload, then "
            "save_pretrained together with nla_meta.yaml) and convert the merged directory"
        )


def _checkpoint_dtype(directory: Path) -> torch.dtype:
    """The dtype the checkpoint's config records (float32 if none), so conversion keeps size."""
    from nla_lightning.core.families import text_config
    from nla_lightning.core.models import load_config, resolve_dtype

    config = load_config(str(directory))
    for candidate in (config, text_config(config)):
        dtype = getattr(candidate, "dtype", None) or getattr(candidate, "torch_dtype", None)
        if dtype is not None:
            return resolve_dtype(dtype)
    return torch.float32


def _has_tokenizer(directory: Path) -> bool:
    return any((directory / f).exists() for f in ("tokenizer.json", "tokenizer_config.json"))


def _tokenizer(ar_dir: Path, av_dir: Path) -> Any:
    """The AR's tokenizer, or the AV's where the AR ships none."""
    from nla_lightning.core.models import load_tokenizer

    for directory in (ar_dir, av_dir):
        if _has_tokenizer(directory):
            return load_tokenizer(str(directory))
    raise NLAConfigError(
        f"no tokenizer in {ar_dir} or {av_dir}: save the target's tokenizer into the AV directory"
    )


def convert_pair(av_dir: str | Path, ar_dir: str | Path, out_dir: str | Path) -> tuple[Path, Path]:
    """Write the pair at av_dir/ar_dir to out_dir/av and out_dir/ar in the release's layout."""
    av_dir, ar_dir, out_dir = Path(av_dir), Path(ar_dir), Path(out_dir)
    for directory, what in ((av_dir, "AV"), (ar_dir, "AR")):
        _check_full_weights(directory, what)
    av_meta, ar_meta = read_pair(av_dir, ar_dir)
    av_out, ar_out = out_dir / "av", out_dir / "ar"
    for src, dst in ((av_dir, av_out), (ar_dir, ar_out)):
        if dst.exists() and src.resolve() == dst.resolve():
            raise NLAConfigError(f"the output {dst} is the input; choose another out_dir")

    # The AV's files are already a plain causal LM: copy them, then write its sidecar.
    keep = shutil.ignore_patterns(META_FILENAME)
    shutil.copytree(av_dir, av_out, dirs_exist_ok=True, ignore=keep)
    av_meta.save(av_out, kind="nla_model", role="av")

    # The AR is loaded (its weights must fit l+1 blocks and a d x d head) and saved again.
    ar = ActivationReconstructor.load(
        ar_dir, dtype=_checkpoint_dtype(ar_dir), tokenizer=_tokenizer(ar_dir, av_dir), meta=ar_meta
    )
    ar_out.mkdir(parents=True, exist_ok=True)
    ar.save(ar_out, stage=ar_meta.extra.get("stage", "sl"))
    return av_out, ar_out


def import_official(
    av_dir: str | Path, ar_dir: str | Path, out_dir: str | Path
) -> tuple[Path, Path]:
    """A released (or officially trained) AV/AR pair, ready for nla_lightning under out_dir."""
    return convert_pair(av_dir, ar_dir, out_dir)


def export_official(
    av_dir: str | Path, ar_dir: str | Path, out_dir: str | Path
) -> tuple[Path, Path]:
    """Our AV/AR pair in the release's layout under out_dir, for the official client."""
    return convert_pair(av_dir, ar_dir, out_dir)

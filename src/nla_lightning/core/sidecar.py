"""`nla_meta.yaml` files: every spelling that exists is read, the release's is written.

Spellings met in the wild (see method.md, "Official checkpoint layout"):
- the release: role av/ar, `prompt_templates.av/.ar`, `tokens.injection_{left,right}_neighbor_id`,
  top-level `d_model`, `base_checkpoint` and `extraction_layer_index`, the AR's layer also under
  `critic.extraction_layer_index`, the AR's `extraction.injection_scale: null`;
- the official trainer's own checkpoints: role actor/critic, `prompt_templates.actor/.critic`,
  an AV with no layer at all, `critic.num_hidden_layers` in schema 1;
- dataset sidecars (kind nla_dataset): `extraction.{base_model, d_model, layer_index}`, no
  injection_scale, mse_scale absent meaning sqrt(d_model);
- earlier nla_lightning files: `tokens.left_neighbour_id`, the full critic suffix.
"""

from __future__ import annotations

import datetime
import math
from pathlib import Path
from typing import Any

import yaml

from nla_lightning.core.files import write_text_atomically
from nla_lightning.core.meta import META_FILENAME, NLAMeta
from nla_lightning.core.templates import REFERENCE_CRITIC_TEMPLATE
from nla_lightning.errors import NLAConfigError

DATASET_SUFFIX = ".nla_meta.yaml"
SQRT_D = "sqrt_d_model"
ROLES = {"av": "av", "actor": "av", "ar": "ar", "critic": "ar"}
# Keys of a model sidecar that describe its history; carried over when the file is rewritten.
HISTORY_KEYS = ("stage", "training", "trained_on", "parent_checkpoints")

# Where each field may sit, in order of preference: (section or None for top level, key).
LAYER_KEYS = (
    (None, "extraction_layer_index"),
    ("extraction", "layer_index"),
    ("critic", "extraction_layer_index"),
    ("critic", "num_hidden_layers"),  # schema 1 stored the layer index under this name
    ("ar", "extraction_layer_index"),
    ("ar", "num_hidden_layers"),
)
D_MODEL_KEYS = ((None, "d_model"), ("extraction", "d_model"))
BASE_KEYS = ((None, "base_checkpoint"), ("extraction", "base_model"), (None, "base_model"))
LEFT_KEYS = ("injection_left_neighbor_id", "left_neighbour_id", "left_neighbor_id")
RIGHT_KEYS = ("injection_right_neighbor_id", "right_neighbour_id", "right_neighbor_id")


# ---- reading ------------------------------------------------------------------------------
def read_yaml(path: str | Path, missing_hint: str) -> tuple[dict[str, Any], Path]:
    """The mapping in a meta file (or a directory's nla_meta.yaml) and the file's path."""
    path = Path(path)
    if path.is_dir():
        path = path / META_FILENAME
    if not path.exists():
        raise NLAConfigError(f"no NLA metadata at {path}: {missing_hint}")
    try:
        data = yaml.safe_load(path.read_text(encoding="utf-8"))
    except (yaml.YAMLError, UnicodeDecodeError) as err:
        raise NLAConfigError(f"{path} is not valid YAML: {err}") from err
    if not isinstance(data, dict):
        raise NLAConfigError(f"{path} does not hold a mapping of NLA metadata")
    return data, path


def _section(data: dict[str, Any], name: str | None, source: Path) -> dict[str, Any]:
    if name is None:
        return data
    value = data.get(name)
    if value is None:
        return {}
    if not isinstance(value, dict):
        raise NLAConfigError(f"{source}: '{name}' must be a mapping, got {type(value).__name__}")
    return value


def _agreeing(data: dict, keys: tuple, source: Path, what: str) -> Any:
    """The value of `what` from every spelling present; they must agree."""
    found = {}
    for section, key in keys:
        value = _section(data, section, source).get(key)
        if value is not None:
            found[key if section is None else f"{section}.{key}"] = value
    if len({str(v) for v in found.values()}) > 1:
        listed = ", ".join(f"{k}={v!r}" for k, v in found.items())
        raise NLAConfigError(
            f"{source} records {what} in several places that disagree ({listed}); fix the file "
            "so they are equal"
        )
    return next(iter(found.values()), None)


def _first(mapping: dict[str, Any], keys: tuple[str, ...]) -> Any:
    return next((mapping[k] for k in keys if mapping.get(k) is not None), None)


def _scale(raw: Any, d_model: Any, name: str, source: Path) -> float | None:
    """A scale as written: a number, 'sqrt_d_model', or null/'raw' (None)."""
    if raw is None or raw in ("raw", "none"):
        return None
    if raw == SQRT_D:
        return math.sqrt(int(d_model))
    try:
        return float(raw)
    except (TypeError, ValueError) as err:
        raise NLAConfigError(
            f"{source}: extraction.{name} must be a number or '{SQRT_D}', got {raw!r}"
        ) from err


def sidecar_fields(data: dict[str, Any], source: Path) -> dict[str, Any]:
    """Every field of NLAMeta that the file records, whatever its spelling (None: absent)."""
    extraction = _section(data, "extraction", source)
    tokens = _section(data, "tokens", source)
    templates = _section(data, "prompt_templates", source)
    role = ROLES.get(str(data.get("role"))) if data.get("role") is not None else None
    if data.get("role") is not None and role is None:
        raise NLAConfigError(
            f"{source}: role {data['role']!r} is not one of av, ar (or actor, critic)"
        )
    d_model = _agreeing(data, D_MODEL_KEYS, source, "d_model")
    pair = tokens.get("neighbour_ids", tokens.get("neighbor_ids"))
    if pair is not None and (not isinstance(pair, (list, tuple)) or len(pair) != 2):
        raise NLAConfigError(f"{source}: tokens.neighbour_ids must be [left_id, right_id]")
    suffix = tokens.get("critic_suffix_ids")
    if suffix is not None and "left_neighbour_id" in tokens and len(suffix) > 1:
        # Files of earlier nla_lightning versions kept the suffix's unstable first id too.
        suffix = suffix[1:]
    has_mse = "mse_scale" in extraction
    if has_mse and extraction["mse_scale"] in (None, "raw", "none"):
        raise NLAConfigError(
            f"{source}: extraction.mse_scale is null (an NLA trained on raw, unnormalised MSE), "
            "which nla_lightning does not support: it compares directions at a fixed norm"
        )
    return {
        "role": role,
        "kind": data.get("kind"),
        "base_model": _agreeing(data, BASE_KEYS, source, "the base model"),
        "d_model": d_model,
        "layer": _agreeing(data, LAYER_KEYS, source, "the layer"),
        "injection_scale": None
        if d_model is None
        else _scale(extraction.get("injection_scale"), d_model, "injection_scale", source),
        # Absent means sqrt(d_model), as in the release.
        "mse_scale": None
        if d_model is None
        else _scale(extraction.get("mse_scale", SQRT_D), d_model, "mse_scale", source),
        "injection_char": tokens.get("injection_char"),
        "injection_token_id": tokens.get("injection_token_id"),
        "left_neighbour_id": _first(tokens, LEFT_KEYS) if pair is None else pair[0],
        "right_neighbour_id": _first(tokens, RIGHT_KEYS) if pair is None else pair[1],
        "critic_suffix_ids": None if suffix is None else tuple(int(i) for i in suffix),
        "actor_template": templates.get("av") or templates.get("actor"),
        "critic_template": templates.get("ar") or templates.get("critic"),
        "num_layers": data.get("num_layers"),
        "extra": {k: data[k] for k in HISTORY_KEYS if data.get(k) is not None},
    }


REQUIRED = {
    "d_model": "d_model (top level) or extraction.d_model",
    "layer": "extraction_layer_index (top level), critic.extraction_layer_index or "
    "extraction.layer_index",
    "injection_char": "tokens.injection_char",
    "injection_token_id": "tokens.injection_token_id",
    "left_neighbour_id": "tokens.injection_left_neighbor_id",
    "right_neighbour_id": "tokens.injection_right_neighbor_id",
    "actor_template": "prompt_templates.av (or .actor)",
}
# What a partner's file may supply: the AV's layer, the AR's injection scale, and so on.
FILLED_FROM_PARTNER = (
    "base_model",
    "d_model",
    "layer",
    "injection_scale",
    "critic_suffix_ids",
    "actor_template",
    "critic_template",
    "num_layers",
)


def meta_from_fields(fields: dict[str, Any], source: Path) -> NLAMeta:
    """NLAMeta from sidecar fields; a clear error names each missing field and its spellings."""
    missing = [spelling for name, spelling in REQUIRED.items() if fields.get(name) is None]
    if fields.get("role") == "ar" and fields.get("critic_template") is None:
        missing.append("prompt_templates.ar (or .critic)")
    if missing:
        hint = ""
        if fields.get("layer") is None:
            hint = (
                " (an AV saved by the official trainer records no layer: load it together with "
                "its AR, e.g. NLAMeta.load(av_dir, partner=ar_dir) or NLA.load(av_dir, ar_dir))"
            )
        raise NLAConfigError(
            f"{source} is missing required NLA metadata: {'; '.join(missing)}{hint}. Every NLA "
            "sidecar records these (see the release's nla_meta.yaml layout)"
        )
    try:
        return NLAMeta(
            base_model=str(fields.get("base_model") or "unknown"),
            d_model=int(fields["d_model"]),
            layer=int(fields["layer"]),
            injection_scale=fields.get("injection_scale"),
            mse_scale=float(fields["mse_scale"]),
            injection_char=str(fields["injection_char"]),
            injection_token_id=int(fields["injection_token_id"]),
            left_neighbour_id=int(fields["left_neighbour_id"]),
            right_neighbour_id=int(fields["right_neighbour_id"]),
            critic_suffix_ids=fields.get("critic_suffix_ids"),
            actor_template=str(fields["actor_template"]),
            critic_template=str(fields.get("critic_template") or REFERENCE_CRITIC_TEMPLATE),
            num_layers=None if fields.get("num_layers") is None else int(fields["num_layers"]),
            extra=dict(fields.get("extra") or {}),
        )
    except (TypeError, ValueError) as err:
        if isinstance(err, NLAConfigError):
            raise
        raise NLAConfigError(
            f"{source} is not a valid nla_meta file ({type(err).__name__}: {err})"
        ) from err


def _read_fields(path: str | Path) -> tuple[dict[str, Any], Path]:
    data, source = read_yaml(
        path,
        f"every NLA dataset and checkpoint needs its {META_FILENAME} sidecar (for a dataset "
        f"file: FILE{DATASET_SUFFIX}); copy it from where the files came from",
    )
    return sidecar_fields(data, source), source


def fill_from_partner(fields: dict[str, Any], partner: dict[str, Any]) -> dict[str, Any]:
    """`fields` with what it lacks taken from its partner's file."""
    filled = dict(fields)
    for name in FILLED_FROM_PARTNER:
        if filled.get(name) is None or (name == "base_model" and filled[name] == "unknown"):
            filled[name] = partner.get(name)
    return filled


def read_meta(path: str | Path, partner: str | Path | None = None) -> NLAMeta:
    """NLAMeta from a file in any spelling, completed from `partner`'s file if given."""
    fields, source = _read_fields(path)
    if partner is not None:
        fields = fill_from_partner(fields, _read_fields(partner)[0])
    return meta_from_fields(fields, source)


def read_pair(av_path: str | Path, ar_path: str | Path) -> tuple[NLAMeta, NLAMeta]:
    """The AV's and the AR's metadata, each completed from the other and checked to agree."""
    av, av_source = _read_fields(av_path)
    ar, ar_source = _read_fields(ar_path)
    for fields, source, expected in ((av, av_source, "av"), (ar, ar_source, "ar")):
        if fields["role"] not in (None, expected):
            raise NLAConfigError(
                f"{source} has role {fields['role']!r} but was passed as the {expected.upper()}; "
                "pass the AV directory first and the AR directory second"
            )
    for name in ("d_model", "layer", "injection_char", "injection_token_id", "mse_scale"):
        if av[name] is not None and ar[name] is not None and av[name] != ar[name]:
            raise NLAConfigError(
                f"the AV and the AR disagree on {name}: {av[name]!r} in {av_source} but "
                f"{ar[name]!r} in {ar_source}; use an AV and an AR trained together"
            )
    for name, spelling in (("actor_template", "av"), ("critic_template", "ar")):
        if av[name] is not None and ar[name] is not None and av[name] != ar[name]:
            raise NLAConfigError(
                f"the AV and the AR disagree on prompt_templates.{spelling}: {av_source} and "
                f"{ar_source} hold different templates; use an AV and an AR trained together"
            )
    av_meta = meta_from_fields(fill_from_partner(av, ar), av_source)
    ar_meta = meta_from_fields(fill_from_partner(ar, av), ar_source)
    av_meta.check_compatible(ar_meta, what=f"the AR ({ar_source})")
    return av_meta, ar_meta


# ---- writing ------------------------------------------------------------------------------
def _now() -> str:
    return datetime.datetime.now(tz=datetime.timezone.utc).isoformat()


def _created_by() -> str:
    from nla_lightning import __version__

    return f"nla_lightning {__version__}"


def _tokens(meta: NLAMeta) -> dict[str, Any]:
    return {
        "injection_char": meta.injection_char,
        "injection_token_id": meta.injection_token_id,
        "injection_left_neighbor_id": meta.left_neighbour_id,
        "injection_right_neighbor_id": meta.right_neighbour_id,
        "critic_suffix_ids": None
        if meta.critic_suffix_ids is None
        else list(meta.critic_suffix_ids),
    }


def model_sidecar(
    meta: NLAMeta,
    role: str,
    stage: str | None = None,
    trained_on: list[str] | None = None,
    training: dict[str, Any] | None = None,
) -> dict[str, Any]:
    """A checkpoint's nla_meta.yaml in the release's spelling (role av or ar; stage init, sl or
    rl). The AR records no injection scale (it never injects), as in the release."""
    injection = meta.injection_scale if role == "av" else None
    data: dict[str, Any] = {
        "kind": "nla_model",
        "schema_version": 2,
        "role": role,
        "stage": stage or meta.extra.get("stage") or "sl",
        "base_checkpoint": meta.base_model,
        "d_model": meta.d_model,
        "extraction": {
            "injection_scale": None if injection is None else float(injection),
            "mse_scale": float(meta.mse_scale),
        },
        "tokens": _tokens(meta),
        "prompt_templates": {"av": meta.actor_template, "ar": meta.critic_template},
    }
    if role == "ar":
        data["critic"] = {"extraction_layer_index": meta.layer}
    training = training or meta.extra.get("training")
    if training:
        data["training"] = dict(training)
    data["extraction_layer_index"] = meta.layer
    data["trained_on"] = list(trained_on or meta.extra.get("trained_on") or [])
    data["parent_checkpoints"] = list(meta.extra.get("parent_checkpoints") or [meta.base_model])
    data["created_at"] = _now()
    data["created_by"] = _created_by()
    return data


def dataset_sidecar(
    meta: NLAMeta,
    stage: str = "base",
    row_count: int | None = None,
    dataset_id: str | None = None,
    corpus: str = "",
    positions_per_doc: int = 0,
) -> dict[str, Any]:
    """A Parquet file's sidecar in the release's dataset spelling: raw vectors (norm none), no
    injection scale (a training setting), mse_scale only where it is not sqrt(d_model)."""
    extraction: dict[str, Any] = {
        "base_model": meta.base_model,
        "d_model": meta.d_model,
        "layer_index": meta.layer,
        "norm": "none",
        "corpus": corpus,
        "corpus_slice": {},
        "positions_per_doc": int(positions_per_doc),
    }
    if not math.isclose(meta.mse_scale, math.sqrt(meta.d_model), rel_tol=1e-9):
        extraction["mse_scale"] = float(meta.mse_scale)
    slug = meta.base_model.replace("/", "_")
    return {
        "dataset_id": dataset_id or f"{stage}_{slug}_L{meta.layer}",
        "stage": stage,
        "row_count": None if row_count is None else int(row_count),
        "extraction": extraction,
        "kind": "nla_dataset",
        "schema_version": 1,
        "keep_debug_metadata": True,
        "tokens": _tokens(meta),
        "prompt_templates": {"actor": meta.actor_template, "critic": meta.critic_template},
        "parent_datasets": [],
        "created_at": _now(),
        "created_by": _created_by(),
        "git_commit": "",
    }


def write_yaml(data: dict[str, Any], path: Path) -> Path:
    """Write a sidecar mapping atomically (the file is whole or absent)."""
    return write_text_atomically(path, yaml.safe_dump(data, sort_keys=False, allow_unicode=True))

"""One-line checks of single settings: the key, the value and what is allowed."""

from __future__ import annotations

import math
from collections.abc import Iterable, Mapping
from dataclasses import MISSING, fields
from typing import Any

from nla_lightning.errors import NLAConfigError


def _number(key: str, value: Any) -> float:
    if isinstance(value, bool) or not isinstance(value, (int, float)) or not math.isfinite(value):
        raise NLAConfigError(f"{key}={value!r}: expected a finite number")
    return float(value)


def positive(key: str, value: Any) -> None:
    if _number(key, value) <= 0:
        raise NLAConfigError(f"{key}={value!r}: must be > 0")


def non_negative(key: str, value: Any) -> None:
    if _number(key, value) < 0:
        raise NLAConfigError(f"{key}={value!r}: must be >= 0")


def integer(key: str, value: Any, minimum: int) -> None:
    """A whole number (a count, an index) of at least `minimum`."""
    if isinstance(value, bool) or not isinstance(value, int):
        raise NLAConfigError(f"{key}={value!r}: expected a whole number >= {minimum}")
    if value < minimum:
        raise NLAConfigError(f"{key}={value!r}: must be >= {minimum}")


def text(key: str, value: Any) -> None:
    """A non-empty string (a name, a path, a URL)."""
    if not isinstance(value, str) or not value.strip():
        raise NLAConfigError(f"{key}={value!r}: expected a non-empty string")


def optional_text(key: str, value: Any) -> None:
    if value is not None:
        text(key, value)


def between(key: str, value: Any, low: float, high: float) -> None:
    if not low <= _number(key, value) <= high:
        raise NLAConfigError(f"{key}={value!r}: must be in [{low}, {high}]")


def one_of(key: str, value: Any, allowed: Iterable[Any]) -> None:
    allowed = list(allowed)
    if value not in allowed:
        raise NLAConfigError(f"{key}={value!r}: choose one of {allowed}")


def optional_positive(key: str, value: Any) -> None:
    if value is not None:
        positive(key, value)


def fractions(key: str, values: Mapping[str, float], names: Iterable[str]) -> None:
    """Split fractions: known names, each in [0, 1], an `eval` part, summing to 1."""
    names = list(names)
    unknown = [k for k in values if k not in names]
    if unknown:
        raise NLAConfigError(f"{key} has unknown splits {unknown}: the splits are {names}")
    for name, value in values.items():
        between(f"{key}.{name}", value, 0.0, 1.0)
    if not values.get("eval"):
        raise NLAConfigError(f"{key}.eval is missing or 0: evaluation needs a held-out part")
    total = sum(values.values())
    if abs(total - 1.0) > 1e-6:
        raise NLAConfigError(f"{key} sums to {total:g}: the fractions must sum to 1")


def betas(key: str, value: Any) -> list[float]:
    """AdamW's (beta1, beta2): two numbers in [0, 1)."""
    if isinstance(value, (str, bytes)) or not hasattr(value, "__len__") or len(value) != 2:
        raise NLAConfigError(f"{key}={value!r}: expected two numbers, e.g. {key}=[0.9,0.95]")
    for i, beta in enumerate(value):
        if not 0.0 <= _number(f"{key}[{i}]", beta) < 1.0:
            raise NLAConfigError(f"{key}[{i}]={beta!r}: must be in [0, 1)")
    return [float(value[0]), float(value[1])]


def boolean(key: str, value: Any) -> bool:
    if not isinstance(value, bool):
        raise NLAConfigError(f"{key}={value!r}: expected true or false")
    return value


def block(kind: type, values: Mapping[str, Any] | None, key: str, label: str = "") -> Any:
    """A settings dataclass from the config block at `key` (called `label` in messages): an
    unknown key is refused naming the block's keys, a missing required one by name; the
    dataclass checks the values."""
    label = label or key
    if values is not None and not isinstance(values, Mapping):
        raise NLAConfigError(f"{key}={values!r}: expected a block of keys, e.g. {key}.KEY=...")
    values = dict(values or {})
    known = [f.name for f in fields(kind)]
    unknown = sorted(set(values) - set(known))
    if unknown:
        raise NLAConfigError(f"{label} has unknown keys {unknown}: the keys are {sorted(known)}")
    missing = [
        f.name
        for f in fields(kind)
        if f.default is MISSING and f.default_factory is MISSING and f.name not in values
    ]
    if missing:
        raise NLAConfigError(
            f"{label} lacks the keys {missing}: set them, e.g. +{key}.{missing[0]}=..."
        )
    return kind(**values)

"""The check table's rows, a check's failure, and the progress lines on stdout."""

from __future__ import annotations

import time
from dataclasses import dataclass, field
from typing import Any

STARTED = time.perf_counter()


def progress(message: str) -> None:
    print(f"[{time.perf_counter() - STARTED:6.1f} s] {message}", flush=True)


@dataclass
class Row:
    """One line of the table; `values` holds the numbers the JSON keeps."""

    check: str
    shape: str
    seconds: float
    measured_gib: float | None
    estimate_gib: float | None
    status: str
    detail: str
    values: dict[str, Any] = field(default_factory=dict)

    def cells(self) -> list[Any]:
        measured = "n/a" if self.measured_gib is None else self.measured_gib
        estimate = "-" if self.estimate_gib is None else self.estimate_gib
        return [self.check, self.shape, self.seconds, measured, estimate, self.status, self.detail]


HEADERS = ["check", "shape", "s", "measured GiB", "estimate GiB", "status", "detail"]


class CheckFailed(Exception):
    """A check ran but its result is wrong: the message is the table's detail, `values` what
    it measured (kept in the JSON)."""

    def __init__(self, message: str, values: dict[str, Any] | None = None) -> None:
        super().__init__(message)
        self.values = values or {}


def require(condition: bool, message: str, values: dict[str, Any] | None = None) -> None:
    if not condition:
        raise CheckFailed(message, values)


def short(err: BaseException) -> str:
    text = str(err).strip().splitlines()
    return f"{type(err).__name__}: {text[0] if text else ''}"[:200]

"""What a run directory remembers between starts: the settings it was started with, the
command that continues it, and each finished stage's result.

Starting the same command again (`python train.py ... hydra.run.dir=<run>`, written to
<run>/command.txt) skips the finished stages and continues the one that was cut off from its
own checkpoint. A directory started with other settings is refused: resuming it would mix two
runs."""

from __future__ import annotations

import json
import os
import time
from pathlib import Path
from typing import Any

from nla_lightning.core.files import write_text_atomically
from nla_lightning.errors import NLAConfigError
from nla_lightning.stages.run_dir import RunDir
from nla_lightning.training.checkpointing import remove_checkpoint

# Keys that do not change what a run computes: they may differ between starts of one run.
NOT_COMPARED = (
    "paths",
    "verbose",
    "optimized_metric",
    "stage",
    "logger",
    "trainer.enable_progress_bar",
)


def write_json_atomically(path: Path, value: Any) -> None:
    """Whole or absent: a kill while writing leaves the previous file (or none)."""
    path.parent.mkdir(parents=True, exist_ok=True)
    write_text_atomically(path, json.dumps(value, indent=2, default=str))


def comparable(cfg: dict[str, Any]) -> dict[str, Any]:
    """The settings that decide the run's results, as JSON values."""
    kept = json.loads(json.dumps(cfg, default=str))
    for dotted in NOT_COMPARED:
        *parents, last = dotted.split(".")
        block = kept
        for key in parents:
            block = block.get(key) if isinstance(block, dict) else None
        if isinstance(block, dict):
            block.pop(last, None)
    return kept


def differences(old: Any, new: Any, prefix: str = "") -> list[str]:
    """`key: old -> new` for every setting that differs."""
    if isinstance(old, dict) and isinstance(new, dict):
        return [
            line
            for key in sorted(set(old) | set(new))
            for line in differences(old.get(key), new.get(key), f"{prefix}{key}.")
        ]
    return [] if old == new else [f"{prefix.rstrip('.')}: {old!r} -> {new!r}"]


class RunState:
    """The run directory's memory of earlier starts (see the module's docstring)."""

    def __init__(self, run: RunDir) -> None:
        self.run = run

    def start(self, cfg: dict[str, Any], command: str | None) -> None:
        """Refuse a directory that holds a run with other settings; else record this start."""
        settings = comparable(cfg)
        path = self.run.settings_json
        if path.is_file():
            changed = differences(json.loads(path.read_text()), settings)
            if changed:
                shown = "; ".join(changed[:4]) + ("; ..." if len(changed) > 4 else "")
                as_it_was = self.run.command_txt
                as_it_was = as_it_was if as_it_was.is_file() else "the same overrides"
                raise NLAConfigError(
                    f"{self.run.root} holds a run started with other settings ({shown}): to "
                    f"continue it, start it as it was ({as_it_was}); for new settings choose "
                    f"another directory (from_run={self.run.root} reuses what it made)"
                )
        else:
            write_json_atomically(path, settings)
        if command is not None:
            self.run.command_txt.write_text(command + "\n")

    def finished(self, stage: str) -> dict[str, Any] | None:
        """The result of `stage` from an earlier start, or None where it did not finish."""
        path = self.run.stage_result(stage)
        return json.loads(path.read_text()) if path.is_file() else None

    def begin(self, stage: str) -> None:
        """Mark `stage` as under way (when, by which process), for whoever watches the run."""
        marker = {"started": time.time(), "pid": os.getpid()}
        write_json_atomically(self.run.stage_started(stage), marker)

    def finish(self, stage: str, result: dict[str, Any]) -> None:
        """Record `stage` as done; its mid-stage checkpoint is no longer needed."""
        write_json_atomically(self.run.stage_result(stage), result)
        remove_checkpoint(self.run.stage_checkpoint(stage))
        self.run.stage_started(stage).unlink(missing_ok=True)

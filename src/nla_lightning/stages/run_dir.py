"""`RunDir`: every path inside a run directory, named once."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

from nla_lightning.settings.data import SPLITS

# The NLAs a run can hold, by condition: (AV, AR) directories under checkpoints/.
CONDITIONS = {"warm_start": ("av", "ar"), "rl": ("rl/av", "rl/ar")}


@dataclass(frozen=True)
class RunDir:
    """One run's directory: what each stage writes and the next one reads."""

    root: Path

    @property
    def target(self) -> Path:
        """The toy world's pretrained target (a real target stays where the config says)."""
        return self.root / "target"

    @property
    def data(self) -> Path:
        return self.root / "data"

    def split(self, name: str) -> Path:
        """data/<split>.parquet (+ its sidecar) for av_sft, ar_sft, rl or eval."""
        return self.data / f"{name}.parquet"

    def splits(self) -> dict[str, Path]:
        return {name: self.split(name) for name in SPLITS if self.split(name).exists()}

    @property
    def extraction(self) -> Path:
        """Corpus extraction's resumable shards."""
        return self.root / "extract"

    def nla(self, condition: str) -> tuple[Path, Path]:
        """(AV, AR) checkpoint directories of `warm_start` or `rl`."""
        av, ar = CONDITIONS[condition]
        return self.root / "checkpoints" / av, self.root / "checkpoints" / ar

    def pairs(self) -> dict[str, tuple[Path, Path]]:
        """The (AV, AR) pairs this run holds, by condition."""
        return {
            condition: (av, ar)
            for condition in CONDITIONS
            for av, ar in [self.nla(condition)]
            if av.exists() and ar.exists()
        }

    @property
    def settings_json(self) -> Path:
        """The settings the run was started with (a later start must match them)."""
        return self.root / "run_settings.json"

    @property
    def command_txt(self) -> Path:
        """The command that started the run; starting it again continues the run."""
        return self.root / "command.txt"

    def stage_result(self, stage: str) -> Path:
        """A finished stage's part of summary.json: a later start skips the stage."""
        return self.root / "stages" / f"{stage}.json"

    def stage_started(self, stage: str) -> Path:
        """Present while `stage` runs (or where a start was cut off in it)."""
        return self.root / "stages" / f"{stage}.started"

    def stage_checkpoint(self, stage: str) -> Path:
        """The mid-stage checkpoint of the target's pretraining and the warm starts (RL keeps
        its own, rl_checkpoints/)."""
        return self.root / "stages" / f"{stage}.ckpt"

    @property
    def rl_checkpoints(self) -> Path:
        """Lightning checkpoints of the RL stage (last.ckpt resumes it)."""
        return self.root / "rl_checkpoints"

    @property
    def rl_exports(self) -> Path:
        return self.root / "rl_exports"

    @property
    def rl_examples(self) -> Path:
        return self.root / "rl_examples.jsonl"

    @property
    def eval_json(self) -> Path:
        return self.root / "eval.json"

    @property
    def summary_json(self) -> Path:
        return self.root / "summary.json"

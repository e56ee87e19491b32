"""Train an NLA: `python train.py` (toy world on CPU) or `python train.py model=qwen layer=18`."""

import errno
import os
import shlex
import sys

import hydra
from omegaconf import DictConfig, OmegaConf

from nla_lightning.settings import register_configs

# The typed schemas (and defaults) of the sft/, rl/, eval/ and data/ groups.
register_configs()

# This script as it was started (`python train.py ...`: train.py), for command.txt. Read here,
# not in main(): a submitit launcher (hydra/launcher=local or slurm) runs main() in a process
# of its own, whose sys.argv[0] is submitit's entry point; main() travels there pickled by
# value, with this string.
SCRIPT = sys.argv[0]


@hydra.main(version_base="1.3", config_path="conf", config_name="train")
def main(cfg: DictConfig) -> float | None:
    from nla_lightning.errors import NLAConfigError, RunInterrupted
    from nla_lightning.pipeline import run

    check_metric_stage(cfg.get("optimized_metric"), list(cfg.stage.run))
    try:
        summary = run(OmegaConf.to_container(cfg, resolve=True), command=continue_command())
    except NLAConfigError as err:
        print(f"\nerror: {err}", file=sys.stderr)
        raise SystemExit(2) from None
    except RunInterrupted as err:
        print(f"\n{err}", file=sys.stderr)
        raise SystemExit(130) from None  # the shell's status for a run stopped by SIGINT
    except Exception as err:
        problem = disk_problem(err)
        if problem is None:
            raise
        print(f"\nerror: {disk_error_message(problem, err)}", file=sys.stderr)
        raise SystemExit(3) from None
    return objective(summary, cfg.get("optimized_metric"))


def continue_command() -> str:
    """This run's command line, pinned to its directory: started again, it continues the run
    (finished stages are kept, a cut-off one resumes from its checkpoint)."""
    from hydra.core.hydra_config import HydraConfig

    hydra_cfg = HydraConfig.get()
    overrides = [o for o in hydra_cfg.overrides.task if not o.startswith("hydra.run.dir=")]
    pinned = [*overrides, f"hydra.run.dir={hydra_cfg.runtime.output_dir}"]
    return " ".join(["python", shlex.quote(SCRIPT), *map(shlex.quote, pinned)])


# A full disk or a read-only / quota-limited file system: the user's to fix, not a bug.
DISK_ERRORS = {errno.ENOSPC, errno.EROFS, errno.EDQUOT, errno.EACCES}


def disk_problem(err: BaseException) -> str | None:
    """The file-system problem behind `err` (also where a library re-raised it as its own
    error, e.g. safetensors), or None for any other error."""
    seen: BaseException | None = err
    while seen is not None:
        if isinstance(seen, OSError) and seen.errno in DISK_ERRORS:
            return seen.strerror
        for code in DISK_ERRORS:
            if os.strerror(code) in str(seen):
                return os.strerror(code)
        seen = seen.__cause__ or seen.__context__
    return None


def disk_error_message(problem: str, err: BaseException) -> str:
    filename = getattr(err, "filename", None)
    where = f" while writing {filename}" if filename else ""
    return (
        f"{problem}{where}. Files are written whole or not at all, so none is torn: free "
        "space (or fix the permissions), then start the run again with the command in its "
        "command.txt: finished stages are kept and the one cut off continues from its "
        "checkpoint"
    )


def _refuse_metric(path: str, stages: list[str]) -> None:
    print(
        f"\nerror: optimized_metric={path} is not in this run's summary.json (stages "
        f"run: {stages}); pick a number it holds, e.g. stages.rl.fve or stages.ar_sft.fve",
        file=sys.stderr,
    )
    raise SystemExit(2)


def check_metric_stage(path: str | None, stages: list[str]) -> None:
    """Refuse, before anything runs, a metric of a stage this run does not run."""
    parts = (path or "").split(".")
    if parts[0] == "stages" and (len(parts) < 3 or parts[1] not in stages):
        _refuse_metric(path, sorted(stages))


def objective(summary: dict, path: str | None) -> float | None:
    """The number a sweeper optimises: summary.json at the dotted `path` (None without one)."""
    if not path:
        return None
    value = summary
    for key in path.split("."):
        if not isinstance(value, dict) or key not in value:
            _refuse_metric(path, sorted(summary.get("stages", {})))
        value = value[key]
    return float(value)


if __name__ == "__main__":
    from nla_lightning.training.launched import serve, serves_fits

    # Under torchrun or srun every rank starts here: rank 0 runs the pipeline (main), the
    # others serve its fits, reading no config and writing no run directory of their own.
    if serves_fits():
        serve()
    else:
        main()

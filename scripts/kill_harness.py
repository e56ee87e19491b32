"""Kill a real training run (SIGKILL) at random moments of every stage, start it again each time
with the command it wrote to <run>/command.txt, and check that it ends where an uninterrupted
run ends.

  python scripts/kill_harness.py                  # toy world, 3 kills per stage
  python scripts/kill_harness.py --corpus         # text files, summaries over HTTP (127.0.0.1):
                                                  # kills in extraction and summary writing too
  python scripts/kill_harness.py --quick --kills 1 --report r.json   # the test suite's form

Every output of the two runs is compared: the toy target, the data splits (activations and
explanations), the warm-start and RL checkpoints, eval.json and summary.json's numbers. On the
CPU every stage promises bit-exact results; the last line says how many kills the run survived
and whether every output matched. Exit status 1 when a start failed or an output differed.

Each run is a child process (`--spawn`: a fresh `python train.py`, ~10 s of imports a start;
default: a fork of this process, which has imported everything once, running train.py's
main with the command's arguments)."""

from __future__ import annotations

import argparse
import json
import os
import random
import shlex
import signal
import subprocess
import sys
import time
from collections.abc import Callable
from dataclasses import asdict, dataclass, field
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
TRAIN = REPO / "train.py"
STAGES = ("target", "data", "av_sft", "ar_sft", "rl", "eval")
# Every stage long enough to be cut mid-way, checkpointing often (the quick form: seconds).
QUICK = [
    "debug=smoke",
    "model.pretrain.steps=24",
    "model.pretrain.checkpoint_every=3",
    "sft.av.max_steps=12",
    "sft.av.checkpoint_every=2",
    "sft.ar.max_steps=12",
    "sft.ar.checkpoint_every=2",
    "rl.steps=4",
    "logger=none",
]
FULL = [
    "debug=smoke",
    "model.pretrain.steps=150",
    "model.pretrain.checkpoint_every=10",
    "data.n_docs=300",
    "sft.av.max_steps=120",
    "sft.av.checkpoint_every=10",
    "sft.ar.max_steps=120",
    "sft.ar.checkpoint_every=10",
    "rl.steps=16",
    "rl.checkpoint_every=2",
    "eval.rows=64",
]


@dataclass
class Kill:
    aimed_at: str  # the stage the kill was meant for
    landed_in: str  # the stage running when it came ("finished": the run had ended)
    after_s: float  # seconds into the attempt
    checkpoint: bool  # the stage had a mid-stage checkpoint to continue from


@dataclass
class Report:
    kills: list[Kill] = field(default_factory=list)
    starts: int = 0
    finished: bool = False
    outputs: dict[str, str] = field(default_factory=dict)  # output -> "equal" or the difference

    @property
    def matched(self) -> bool:
        return bool(self.outputs) and all(v == "equal" for v in self.outputs.values())


# --- starting and killing a run ----------------------------------------------------------


class Launcher:
    """Starts train.py with given arguments: forked from this process or as a new one."""

    def __init__(self, spawn: bool, workdir: Path, env: dict[str, str]) -> None:
        self.spawn, self.workdir, self.env = spawn, workdir, env
        if not spawn:
            sys.path.insert(0, str(REPO))
            import train  # noqa: F401  (imports once what every forked start needs)
            from nla_lightning import pipeline  # noqa: F401
            from nla_lightning.stages import stage

            for name in STAGES:
                stage(name)

    def start(self, args: list[str], log: Path) -> int:
        """The child's pid."""
        if self.spawn:
            with open(log, "w") as out:
                process = subprocess.Popen(
                    [sys.executable, str(TRAIN), *args],
                    cwd=self.workdir,
                    env=self.env,
                    stdout=out,
                    stderr=subprocess.STDOUT,
                )
            return process.pid
        pid = os.fork()
        if pid:
            return pid
        code = 1
        try:  # the child: train.py's main with these arguments, output to the log
            os.chdir(self.workdir)
            os.environ.update(self.env)
            fd = os.open(log, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o644)
            os.dup2(fd, 1)
            os.dup2(fd, 2)
            sys.argv = [str(TRAIN), *args]
            import runpy

            try:  # as `python train.py` runs it (Hydra finds conf/ beside the file)
                runpy.run_path(str(TRAIN), run_name="__main__")
                code = 0
            except SystemExit as done:
                code = done.code if isinstance(done.code, int) else 1
        except BaseException:
            import traceback

            traceback.print_exc()
        finally:
            sys.stdout.flush()
            sys.stderr.flush()
            os._exit(code)


def exit_code(pid: int, block: bool) -> int | None:
    """The child's exit status (negative: killed by that signal), None while it runs."""
    done, status = os.waitpid(pid, 0 if block else os.WNOHANG)
    if done == 0:
        return None
    return os.waitstatus_to_exitcode(status)


def current_stage(run: Path) -> str:
    """The first stage without a result in the run directory ("finished" when all have)."""
    return next((s for s in STAGES if not finished(run, s)), "finished")


def checkpoint_of(run: Path, stage: str) -> Path:
    """The file a cut-off stage continues from (data and eval have none: they start again;
    corpus extraction continues from its shards, summary writing from the answer cache)."""
    if stage == "rl":
        return run / "rl_checkpoints" / "last.ckpt"
    return run / "stages" / f"{stage}.ckpt"


def written_since(path: Path, moment: float) -> bool:
    try:
        return path.stat().st_mtime >= moment
    except FileNotFoundError:
        return False


def started_by(run: Path, stage: str, pid: int | None) -> bool:
    """`stage` was begun by process `pid` (any process: None); stages/<stage>.started."""
    try:
        marker = json.loads((run / "stages" / f"{stage}.started").read_text())
    except (FileNotFoundError, json.JSONDecodeError):
        return False
    return pid is None or marker["pid"] == pid


def finished(run: Path, stage: str) -> bool:
    return (run / "stages" / f"{stage}.json").exists()


@dataclass
class Attempt:
    """One start of the killed run, as the kill points see it."""

    run: Path
    pid: int
    began: float
    requests_before: int  # the writer server's request count when it started


@dataclass
class KillPoint:
    """A kill aimed at `stage`: from the moment `ready(attempt)` holds, after a delay drawn
    uniformly from [0, window] seconds."""

    name: str
    stage: str
    ready: Callable[[Attempt], bool]
    window: float


def kill_points(
    durations: dict[str, float], kills: int, requests: Callable[[], int] | None
) -> list[KillPoint]:
    """`kills` per stage, alternating: after a checkpoint this start wrote (stages that keep
    one), then at any moment of the stage. With an HTTP writer each of the data stage's kills
    is two: one in extraction, one in summary writing."""
    points = []
    for stage in STAGES:
        took = durations.get(stage, 1.0)
        for i in range(kills):
            if requests is not None and stage == "data":
                points.append(
                    KillPoint(
                        "data (extraction)",
                        stage,
                        lambda a: started_by(a.run, "data", a.pid),
                        0.7 * (took - durations.get("writing", 0.0)),
                    )
                )
                points.append(
                    KillPoint(
                        "data (summary writing)",
                        stage,
                        lambda a: requests() > a.requests_before,
                        0.7 * durations.get("writing", 1.0),
                    )
                )
            elif stage in ("target", "av_sft", "ar_sft", "rl") and i % 2 == 0:
                points.append(
                    KillPoint(
                        f"{stage} (after a checkpoint)",
                        stage,
                        lambda a, s=stage: written_since(checkpoint_of(a.run, s), a.began),
                        0.3 * took,
                    )
                )
            else:
                points.append(
                    KillPoint(
                        stage, stage, lambda a, s=stage: started_by(a.run, s, a.pid), 0.7 * took
                    )
                )
    return points


def straight_run(
    launcher: Launcher, args: list[str], run: Path, requests: Callable[[], int] | None
) -> dict[str, float]:
    """The uninterrupted run; returns how long each stage took (seconds, start to result),
    and with an HTTP writer how long summary writing took ("writing")."""
    pid = launcher.start([*args, f"hydra.run.dir={run}"], run.with_suffix(".log"))
    began: dict[str, float] = {}
    durations: dict[str, float] = {}
    first_request = None
    while (code := exit_code(pid, block=False)) is None:
        now = current_stage(run)
        for stage in STAGES[: STAGES.index(now) if now in STAGES else len(STAGES)]:
            if stage not in durations:
                durations[stage] = time.time() - began.get(stage, time.time())
                if stage == "data" and first_request is not None:
                    durations["writing"] = time.time() - first_request
        if now in STAGES and now not in began and started_by(run, now, None):
            began[now] = time.time()
        if first_request is None and requests is not None and requests() > 0:
            first_request = time.time()
        time.sleep(0.005)
    if code != 0:
        raise SystemExit(f"the uninterrupted run failed ({code}): see {run.with_suffix('.log')}")
    return durations


def killed_run(
    launcher: Launcher,
    args: list[str],
    run: Path,
    points: list[KillPoint],
    rng: random.Random,
    report: Report,
    requests: Callable[[], int] | None,
) -> None:
    """SIGKILL the run at each kill point, starting it again each time with the command in
    command.txt; then let it finish."""
    first = [*args, f"hydra.run.dir={run}"]

    def start() -> Attempt:
        command = run / "command.txt"
        argv = shlex.split(command.read_text())[2:] if command.exists() else first
        report.starts += 1
        count = requests() if requests is not None else 0
        pid = launcher.start(argv, run.parent / f"killed-{report.starts}.log")
        return Attempt(run, pid, time.time(), count)

    for point in points:
        if finished(run, point.stage):
            continue  # an earlier kill came after this stage had finished
        attempt = start()
        while not point.ready(attempt):
            if exit_code(attempt.pid, block=False) is not None:
                raise SystemExit(f"start {report.starts} ended early: see its log")
            if finished(run, point.stage):
                break  # the stage ended before the moment came: kill in what follows
            time.sleep(0.002)
        deadline = time.time() + rng.uniform(0.0, point.window)
        while time.time() < deadline and exit_code(attempt.pid, block=False) is None:
            time.sleep(0.002)
        landed = current_stage(run)
        kept = landed != "finished" and checkpoint_of(run, landed).exists()
        try:
            os.kill(attempt.pid, signal.SIGKILL)
        except ProcessLookupError:
            pass
        code = exit_code(attempt.pid, block=True)
        if code not in (0, -signal.SIGKILL):
            raise SystemExit(f"start {report.starts} failed ({code}): see its log")
        after = round(time.time() - attempt.began, 2)
        report.kills.append(Kill(point.name, landed, after, kept))
    attempt = start()
    code = exit_code(attempt.pid, block=True)
    report.finished = code == 0
    if not report.finished:
        raise SystemExit(f"the last start failed ({code}): see killed-{report.starts}.log")


# --- comparing the two runs ---------------------------------------------------------------


def tensors(directory: Path) -> dict[str, object]:
    from safetensors.numpy import load_file

    return {
        f"{path.name}/{name}": array
        for path in sorted(directory.glob("*.safetensors"))
        for name, array in load_file(str(path)).items()
    }


def compare_tensors(a: Path, b: Path) -> str:
    import numpy as np

    left, right = tensors(a), tensors(b)
    if not left or left.keys() != right.keys():
        return f"different tensors ({len(left)} vs {len(right)})"
    worst = max(float(np.max(np.abs(left[k] - right[k]), initial=0.0)) for k in left)
    return "equal" if worst == 0.0 else f"max |difference| {worst:.3g}"


def compare_tables(a: Path, b: Path) -> str:
    import pyarrow.parquet as pq

    left, right = pq.read_table(a), pq.read_table(b)
    if left.equals(right):
        return "equal"
    differing = [c for c in left.column_names if not left.column(c).equals(right.column(c))]
    return f"columns differ: {differing}"


# How the work went (timings, shards resumed, answers from the cache), not what it produced.
LOG_KEYS = ("wall_s", "extraction", "writer")


def numbers(value: object, run: Path) -> object:
    """summary.json / eval.json without LOG_KEYS and with the run's own path neutralised."""
    if isinstance(value, dict):
        return {k: numbers(v, run) for k, v in value.items() if k not in LOG_KEYS}
    if isinstance(value, list):
        return [numbers(v, run) for v in value]
    if isinstance(value, str):
        return value.replace(str(run), "<run>")
    return value


def compare_json(a: Path, b: Path, run_a: Path, run_b: Path) -> str:
    left = numbers(json.loads(a.read_text()), run_a)
    right = numbers(json.loads(b.read_text()), run_b)
    return "equal" if left == right else "different values"


def compare_runs(straight: Path, killed: Path) -> dict[str, str]:
    outputs: dict[str, str] = {}
    for relative in (
        "target",
        "checkpoints/av",
        "checkpoints/ar",
        "checkpoints/rl/av",
        "checkpoints/rl/ar",
    ):
        if (straight / relative).exists():
            outputs[relative] = compare_tensors(straight / relative, killed / relative)
    for split in sorted((straight / "data").glob("*.parquet")):
        outputs[f"data/{split.name}"] = compare_tables(split, killed / "data" / split.name)
    for name in ("eval.json", "summary.json"):
        outputs[name] = compare_json(straight / name, killed / name, straight, killed)
    return outputs


# --- the corpus form: text files and an HTTP writer ---------------------------------------


def corpus_setup(out: Path) -> tuple[list[str], object]:
    """Text files and a real OpenAI-compatible server on 127.0.0.1 that writes summaries."""
    import threading

    sys.path.insert(0, str(REPO))
    from nla_lightning.toy.world import generate_documents
    from tests.writers.fake_server import FakeLLM, QuietServer, make_handler

    docs = out / "docs"
    docs.mkdir(parents=True, exist_ok=True)
    for d in generate_documents(60, seed=5):
        (docs / f"doc-{d.doc_id:03d}.txt").write_text(d.text, encoding="utf-8")
    state = FakeLLM(delay_s=0.02)
    server = QuietServer(("127.0.0.1", 0), make_handler(state))
    server.requests_seen = lambda: len(state.requests)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    overrides = [
        "data=corpus",
        f"data.files=[{docs}]",
        "data.min_tokens=3",
        "data.max_tokens=40",
        "data.shard_rows=16",
        "writer=openai",
        f"writer.base_url=http://127.0.0.1:{server.server_address[1]}/v1",
        "writer.model=test-model",
        "writer.concurrency=2",
    ]
    return overrides, server


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--kills", type=int, default=3, help="kills aimed at each stage")
    parser.add_argument("--quick", action="store_true", help="the test suite's small run")
    parser.add_argument("--corpus", action="store_true", help="text files + HTTP writer")
    parser.add_argument("--spawn", action="store_true", help="a new interpreter per start")
    parser.add_argument("--seed", type=int, default=None, help="when the kills come")
    parser.add_argument("--out", type=Path, default=Path("kill_harness"))
    parser.add_argument("--report", type=Path, help="also write the report as JSON")
    parser.add_argument("overrides", nargs="*", help="more train.py overrides for both runs")
    options = parser.parse_args()

    out = options.out.resolve()
    out.mkdir(parents=True, exist_ok=True)
    args = list(QUICK if options.quick else FULL)
    server = requests = None
    if options.corpus:
        corpus, server = corpus_setup(out)
        args = [a for a in args if not a.startswith("data.n_docs")] + corpus
        requests = server.requests_seen
    args += options.overrides
    seed = options.seed if options.seed is not None else random.SystemRandom().randrange(10**6)
    env = {**os.environ, "HF_HUB_OFFLINE": "1", "NO_PROXY": "127.0.0.1", "no_proxy": "127.0.0.1"}
    launcher = Launcher(options.spawn, out, env)

    print(f"kill harness: {' '.join(args)}  (seed {seed})", flush=True)
    # Each run its own writer cache: the killed run must write its summaries itself.
    straight = [*args, f"paths.cache_dir={out / 'cache-straight'}"]
    durations = straight_run(launcher, straight, out / "straight", requests)
    print("uninterrupted: " + ", ".join(f"{s} {t:.1f}s" for s, t in durations.items()))
    report = Report()
    points = kill_points(durations, options.kills, requests)
    killed = [*args, f"paths.cache_dir={out / 'cache-killed'}"]
    killed_run(launcher, killed, out / "killed", points, random.Random(seed), report, requests)
    report.outputs = compare_runs(out / "straight", out / "killed")
    if server is not None:
        server.shutdown()

    print(f"\n{'aimed at':28} {'landed in':10} {'after':>7}  checkpoint kept")
    for kill in report.kills:
        print(f"{kill.aimed_at:28} {kill.landed_in:10} {kill.after_s:6.1f}s  {kill.checkpoint}")
    print(f"\n{'output':24} vs uninterrupted")
    for name, verdict in report.outputs.items():
        print(f"{name:24} {verdict}")
    survived = sum(k.landed_in != "finished" for k in report.kills)
    print(
        f"\nsurvived {survived} kills in {report.starts} starts; "
        f"outputs {'all equal' if report.matched else 'DIFFER'}"
    )
    if options.report:
        options.report.write_text(
            json.dumps({**asdict(report), "matched": report.matched, "seed": seed}, indent=2)
        )
    raise SystemExit(0 if report.finished and report.matched else 1)


if __name__ == "__main__":
    main()

"""Start `python SCRIPT ARGS` as a real child process in a fraction of a second.

Most of a fresh interpreter's start here is importing torch, Lightning, transformers and Hydra
(~8 s on this machine's CPUs). A zygote process imports them once, never runs a tensor
operation (so forking it is safe), and forks a child per request that runs the script as
`python SCRIPT` would (`runpy`, `__main__`, its own argv, working directory, environment,
stdout and stderr). The child is a real process: it has its own pid, exit status and signal
handling, so tests can SIGINT or SIGKILL it. Tests that check what a fresh interpreter prints
on import (the quiet-console test) still start one with `subprocess`."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import tempfile
import threading
import time
from dataclasses import dataclass
from pathlib import Path

# What the zygote imports before forking: everything a script here spends its start-up on.
PRELOAD = (
    "torch",
    "lightning",
    "transformers",
    "hydra",
    "omegaconf",
    "pyarrow.parquet",
    "nla_lightning.pipeline",
    "nla_lightning.stages.target",
    "nla_lightning.stages.data",
    "nla_lightning.stages.av_sft",
    "nla_lightning.stages.ar_sft",
    "nla_lightning.stages.rl",
    "nla_lightning.stages.eval",
)

ZYGOTE = r"""
import importlib, json, os, runpy, sys
for name in json.loads(sys.argv[1]):
    importlib.import_module(name)
print("ready", flush=True)
for line in sys.stdin:
    request = json.loads(line)
    if request["op"] == "poll":
        done, status = os.waitpid(request["pid"], os.WNOHANG)
        code = None if done == 0 else os.waitstatus_to_exitcode(status)
        print(json.dumps({"code": code}), flush=True)
        continue
    pid = os.fork()
    if pid:
        print(json.dumps({"pid": pid}), flush=True)
        continue
    code = 1
    try:
        os.setpgid(0, 0)
        os.chdir(request["cwd"])
        os.environ.clear()
        os.environ.update(request["env"])
        for fd, path in ((1, request["stdout"]), (2, request["stderr"])):
            target = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o644)
            os.dup2(target, fd)
        os.dup2(os.open(os.devnull, os.O_RDONLY), 0)  # not the zygote's request pipe
        sys.stdin = open(os.devnull)
        sys.argv = request["argv"]
        try:
            if sys.argv[0] == "-m":  # `python -m MODULE ARGS`
                sys.argv = sys.argv[1:]
                sys.path[0] = os.getcwd()  # as `python -m` does
                runpy.run_module(sys.argv[0], run_name="__main__", alter_sys=True)
            else:
                sys.path[0] = os.path.dirname(os.path.abspath(sys.argv[0]))  # as `python SCRIPT`
                runpy.run_path(sys.argv[0], run_name="__main__")
            code = 0
        except SystemExit as done:
            code = done.code if isinstance(done.code, int) else (0 if done.code is None else 1)
    except BaseException:
        import traceback
        traceback.print_exc()
    finally:
        sys.stdout.flush()
        sys.stderr.flush()
        os._exit(code)
"""


class Zygote:
    """One preloaded interpreter that forks children on request (thread-safe)."""

    def __init__(self) -> None:
        self._process = subprocess.Popen(
            [sys.executable, "-c", ZYGOTE, json.dumps(PRELOAD)],
            stdin=subprocess.PIPE,
            stdout=subprocess.PIPE,
            text=True,
            env={**os.environ, "HF_HUB_OFFLINE": "1"},
        )
        self._lock = threading.Lock()
        assert self._process.stdout.readline().strip() == "ready", "the zygote failed to start"

    def _ask(self, request: dict) -> dict:
        with self._lock:
            self._process.stdin.write(json.dumps(request) + "\n")
            self._process.stdin.flush()
            return json.loads(self._process.stdout.readline())

    def start(self, argv: list[str], cwd: Path, env: dict[str, str]) -> Child:
        out = tempfile.mkdtemp(prefix="zygote-")
        stdout, stderr = f"{out}/stdout", f"{out}/stderr"
        request = {"op": "run", "argv": argv, "cwd": str(cwd), "env": env}
        reply = self._ask({**request, "stdout": stdout, "stderr": stderr})
        return Child(self, reply["pid"], Path(stdout), Path(stderr))

    def poll(self, pid: int) -> int | None:
        """The child's exit status (negative: the signal that ended it), None while it runs."""
        return self._ask({"op": "poll", "pid": pid})["code"]

    def close(self) -> None:
        self._process.stdin.close()
        self._process.wait(timeout=30)


@dataclass
class Child:
    """A forked run, with the parts of `subprocess.Popen` the tests use."""

    zygote: Zygote
    pid: int
    stdout_path: Path
    stderr_path: Path
    returncode: int | None = None

    def poll(self) -> int | None:
        if self.returncode is None:
            self.returncode = self.zygote.poll(self.pid)
        return self.returncode

    def wait(self, timeout: float = 600) -> int:
        """Polled, so a hung child neither blocks the zygote nor the session: it is killed."""
        deadline = time.monotonic() + timeout
        while self.poll() is None:
            if time.monotonic() > deadline:
                self.kill()
                self.wait(30)
                raise TimeoutError(f"child {self.pid} still ran after {timeout} s")
            time.sleep(0.05)
        return self.returncode

    def send_signal(self, signum: int) -> None:
        os.kill(self.pid, signum)

    def kill(self) -> None:
        os.killpg(self.pid, 9)

    def communicate(self, timeout: float = 600) -> tuple[str, str]:
        self.wait(timeout)
        return self.stdout_path.read_text(), self.stderr_path.read_text()


@dataclass
class Completed:
    """What `subprocess.run(..., capture_output=True, text=True)` returns."""

    args: list[str]
    returncode: int
    stdout: str
    stderr: str


_zygote: Zygote | None = None


def zygote() -> Zygote:
    """The session's zygote, started on first use."""
    global _zygote
    if _zygote is None:
        _zygote = Zygote()
    return _zygote


def run_python(argv: list[str], cwd: Path, env: dict[str, str] | None = None) -> Completed:
    """`python *argv` to completion (argv[0]: the script, or "-m" and a module), as
    subprocess.run would."""
    child = zygote().start(argv, cwd, dict(env if env is not None else os.environ))
    child.wait()
    out, err = child.communicate()
    return Completed(argv, child.returncode, out, err)


def start_python(argv: list[str], cwd: Path, env: dict[str, str] | None = None) -> Child:
    """`python *argv` started, as subprocess.Popen would (stdout/stderr to files)."""
    return zygote().start(argv, cwd, dict(env if env is not None else os.environ))


def close() -> None:
    """End the session's zygote (its children are the tests' to wait for)."""
    global _zygote
    if _zygote is not None:
        _zygote.close()
        _zygote = None

"""A full disk or a read-only output directory: one clear line, exit status, no torn file.

Real file systems: a tmpfs of a few hundred KB (full) and a read-only tmpfs, mounted where this
machine allows it (root in a VM or container with mount rights); skipped elsewhere."""

import json
import subprocess

import pytest

from tests.conftest import TINY_RUN, train_py


@pytest.fixture
def mounted(tmp_path):
    mounts = []

    def mount(size: str, read_only: bool = False):
        where = tmp_path / f"fs{len(mounts)}"
        where.mkdir()
        options = f"size={size}" + (",ro" if read_only else "")
        done = subprocess.run(
            ["mount", "-t", "tmpfs", "-o", options, "tmpfs", str(where)], capture_output=True
        )
        if done.returncode != 0:
            pytest.skip(f"cannot mount a tmpfs here: {done.stderr.decode().strip()}")
        mounts.append(where)
        return where

    yield mount
    for where in mounts:
        subprocess.run(["umount", str(where)], capture_output=True)


def test_a_full_disk_stops_with_one_line_and_no_torn_file(mounted, tmp_path):
    disk = mounted("400k")
    done = train_py([*TINY_RUN, f"hydra.run.dir={disk}/run"], tmp_path)
    assert done.returncode == 3, done.stderr[-3000:]
    last = done.stderr.strip().splitlines()[-1]
    assert last.startswith("error: No space left on device") and "command.txt" in last
    assert "Traceback" not in done.stderr
    # Whatever was written is whole: no temporary file or directory left, every JSON parses,
    # every tensor of every safetensors file reads.
    paths = list((disk / "run").rglob("*"))
    assert not [p for p in paths if p.name.endswith(".tmp") or ".write-check-" in p.name]
    files = [p for p in paths if p.is_file()]
    for path in files:
        if path.suffix == ".json":
            json.loads(path.read_text())
        if path.suffix == ".safetensors":
            from safetensors import safe_open

            with safe_open(str(path), "pt") as handle:
                for key in handle.keys():
                    handle.get_tensor(key)


def test_a_read_only_output_directory_is_refused_before_any_work(mounted, tmp_path):
    disk = mounted("1m", read_only=True)
    # Hydra's own directory elsewhere: the run's outputs go to the read-only one.
    args = [*TINY_RUN, f"hydra.run.dir={tmp_path}/hydra", f"paths.output_dir={disk}/run"]
    done = train_py(args, tmp_path)
    assert done.returncode == 2, done.stderr[-3000:]
    assert "cannot be written" in done.stderr and "Traceback" not in done.stderr

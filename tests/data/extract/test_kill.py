"""The kill test: SIGKILL a real CLI run part-way, resume it, get the uninterrupted rows."""

from __future__ import annotations

import os
import signal
import time
from pathlib import Path

import torch

from nla_lightning.data.extract import read_split
from nla_lightning.data.extract.cli import SLEEP_ENV, main
from nla_lightning.data.extract.manifest import MANIFEST_NAME, Manifest
from tests.conftest import LAYER
from tests.data.extract.conftest import FRACTIONS
from tests.launcher import Child, start_python


def cli_args(target_dir, docs_dir, out) -> list[str]:
    return [
        "--model", str(target_dir), "--layer", str(LAYER), "--out", str(out),
        "--files", str(docs_dir), "--shard-rows", "8", "--batch-size", "4",
        "--min-tokens", "4", "--max-tokens", "40", "--templates", "toy", "--no-progress",
    ]  # fmt: skip


def run_cli(args: list[str], cwd: Path, sleep: float = 0.0) -> Child:
    """`python -m nla_lightning.data.extract.cli ARGS`, a real process (tests/launcher.py)."""
    env = {**os.environ, SLEEP_ENV: str(sleep)}
    return start_python(["-m", "nla_lightning.data.extract.cli", *args], cwd, env)


def test_killed_run_resumes_to_the_same_rows(target_dir, docs_dir, toy_docs, meta, tmp_path):
    killed, clean = tmp_path / "killed", tmp_path / "clean"
    args = cli_args(target_dir, docs_dir, killed)
    process = run_cli(args, tmp_path, sleep=0.1)
    deadline = time.monotonic() + 60
    while not (killed / MANIFEST_NAME).exists():
        assert process.poll() is None, process.communicate()[1][-2000:]
        assert time.monotonic() < deadline, "no progress.json within 60 s"
        time.sleep(0.01)
    process.send_signal(signal.SIGKILL)
    process.wait()
    at_kill = Manifest.load(killed)
    assert process.returncode == -signal.SIGKILL
    assert 0 < at_kill.docs_done < len(toy_docs) and not at_kill.complete

    resumed = run_cli(args, tmp_path)
    out, err = resumed.communicate(timeout=120)
    assert resumed.returncode == 0, err[-2000:]
    assert f"resumed after {at_kill.docs_done} docs" in out
    assert main(cli_args(target_dir, docs_dir, clean)) == 0

    final = Manifest.load(killed)
    assert final.complete and final.docs_done == len(toy_docs)
    assert final.totals == Manifest.load(clean).totals
    for split in FRACTIONS:
        vectors, columns = read_split(clean, split, expect=meta)
        got_vectors, got_columns = read_split(killed, split, expect=meta)
        assert len(columns["doc_id"]) > 0
        assert got_columns["doc_id"] == columns["doc_id"]
        assert got_columns["n_raw_tokens"] == columns["n_raw_tokens"]
        assert got_columns["text"] == columns["text"]
        assert torch.equal(got_vectors, vectors)


def test_cli_config_error_exits_2(target_dir, docs_dir, tmp_path, capsys):
    args = cli_args(target_dir, docs_dir, tmp_path)
    assert main([*args, "--fractions", "av_sft:0.5"]) == 2
    assert "name=fraction pairs" in capsys.readouterr().err

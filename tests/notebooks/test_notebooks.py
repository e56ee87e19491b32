"""Execute the notebooks end to end on a tiny untrained NLA (tests/inference/conftest.py)."""

from __future__ import annotations

import shutil
import sys
from pathlib import Path

import pytest

from tests.inference.conftest import quick_nla_dirs  # noqa: F401

nbclient = pytest.importorskip("nbclient")
nbformat = pytest.importorskip("nbformat")
pytest.importorskip("ipykernel")

NOTEBOOKS = Path(__file__).resolve().parents[2] / "notebooks"
KERNEL = "python3"


def ensure_kernel() -> None:
    """Install the python3 kernel spec into this venv if Jupyter cannot find one."""
    from jupyter_client.kernelspec import KernelSpecManager

    if KERNEL not in KernelSpecManager().find_kernel_specs():
        from ipykernel.kernelspec import install

        install(prefix=sys.prefix, kernel_name=KERNEL)


@pytest.fixture
def nla_env(quick_nla_dirs, target_dir, monkeypatch):  # noqa: F811
    av, ar = quick_nla_dirs
    monkeypatch.setenv("NLA_AV_DIR", str(av))
    monkeypatch.setenv("NLA_AR_DIR", str(ar))
    monkeypatch.setenv("NLA_TARGET_DIR", str(target_dir))
    monkeypatch.delenv("NLA_RUN_DIR", raising=False)


def execute(name: str, tmp_path: Path):
    """Run a tmp copy of notebooks/<name> (raises CellExecutionError if a cell fails)."""
    ensure_kernel()
    path = tmp_path / name
    shutil.copy(NOTEBOOKS / name, path)
    nb = nbformat.read(path, as_version=4)
    client = nbclient.NotebookClient(
        nb, timeout=120, kernel_name=KERNEL, resources={"metadata": {"path": str(tmp_path)}}
    )
    client.execute()
    return nb


def outputs(nb, mime: str) -> list[str]:
    """Every output of `mime` (stream text for "stream"), over all code cells."""
    found = []
    for cell in nb.cells:
        for out in cell.get("outputs", []):
            if mime == "stream" and out.output_type == "stream":
                found.append(out.text)
            elif mime in out.get("data", {}):
                found.append(out.data[mime])
    return found


@pytest.mark.parametrize("name", ["explore_explanations.ipynb", "steering_demo.ipynb"])
def test_notebook_is_clean_json(name):
    nb = nbformat.read(NOTEBOOKS / name, as_version=4)
    nbformat.validate(nb)
    assert nb.nbformat == 4
    assert all(not c.get("outputs") for c in nb.cells if c.cell_type == "code")


def test_explore_explanations(nla_env, tmp_path):
    nb = execute("explore_explanations.ipynb", tmp_path)
    tables = outputs(nb, "text/markdown")
    assert len(tables) == 2
    assert all("|" in t and "---" in t for t in tables)
    assert "best explanation" in tables[1]
    assert "explanations each" in "".join(outputs(nb, "stream"))


def test_steering_demo(nla_env, tmp_path):
    nb = execute("steering_demo.ipynb", tmp_path)
    printed = "".join(outputs(nb, "stream"))
    assert "baseline" in printed and "steered" in printed
    (table,) = outputs(nb, "text/markdown")
    assert "| colour | baseline | steered |" in table

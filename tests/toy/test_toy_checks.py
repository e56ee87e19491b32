"""scripts/toy_checks.py on the session's tiny run: the explain and steering tables print."""

from pathlib import Path

from tests.launcher import run_python

ROOT = Path(__file__).resolve().parents[2]


def test_toy_checks_prints_explanations_and_steering_counts(tiny_run):
    _, run = tiny_run
    args = ["--texts", "4", "--prompts", "3", "--alpha", "0", "2", "--attribute", "colour"]
    done = run_python([str(ROOT / "scripts" / "toy_checks.py"), str(run), *args], ROOT)
    assert done.returncode == 0, done.stderr[-3000:]
    out = done.stdout
    assert "| text (end) | attributes revealed | best explanation | FVE |" in out
    assert "over 4 held-out texts" in out
    rows = [line for line in out.splitlines() if line.startswith("| 0.0 |")]
    # alpha 0 is no steering at all: the steered completions equal the baseline ones.
    original, edited = (cell.split(" -> ") for cell in rows[0].strip("|").split("|")[2:4])
    assert original[0].strip() == original[1].strip() and edited[0].strip() == edited[1].strip()

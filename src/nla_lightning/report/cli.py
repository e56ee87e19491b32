"""nla-report: training run directories -> PNG plots, report.md and report.json.

examples:
  one run:           nla-report outputs/2025-01-01/12-00-00 --out report
  a sweep, overlaid: nla-report multirun/2025-01-01/12-00-00/* --out sweep_report
"""

from __future__ import annotations

import argparse
from pathlib import Path

from nla_lightning.errors import NLAConfigError

PROG = "nla-report"


def parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(
        prog=PROG,
        description=__doc__,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    p.add_argument(
        "runs",
        nargs="+",
        metavar="RUN_DIR",
        type=Path,
        help="output directory of a training run (holds summary.json); several are overlaid",
    )
    p.add_argument(
        "--out",
        required=True,
        type=Path,
        metavar="DIR",
        help="where report.md, report.json and the PNGs go (created if needed)",
    )
    return p


def main(argv: list[str] | None = None) -> int:
    """Entry point of nla-report; returns the exit code (2 for input the user must fix)."""
    from nla_lightning.report.page import write_report
    from nla_lightning.report.runs import load_runs

    p = parser()
    try:
        args = p.parse_args(argv)
        if args.out.exists() and not args.out.is_dir():
            p.error(f"--out {args.out} is a file: pass a directory for the report")
        try:
            runs = load_runs(args.runs)
        except NLAConfigError as err:
            p.error(str(err))
    except SystemExit as exit_:
        # argparse exits (2 on bad input, 0 for --help); main returns so tests and callers can.
        return exit_.code if isinstance(exit_.code, int) else 1
    plots = write_report(runs, args.out)
    drawn = sum(plots.values())
    print(f"{PROG}: {len(runs)} run(s), {drawn} plot(s) -> {args.out / 'report.md'}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())

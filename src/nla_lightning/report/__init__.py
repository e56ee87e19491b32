"""Reports on training runs: `runs` reads run directories into plain data, `plots` and `page`
turn them into PNGs and a Markdown page, `cli` is the nla-report command."""

from nla_lightning.report.runs import Results, Run, Series, load_run, load_runs, results

__all__ = ["Results", "Run", "Series", "load_run", "load_runs", "results"]

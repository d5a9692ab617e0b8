"""Run folder -> ``report.md`` + a self-contained ``report.html`` with PNG plots (also saved in ``RUN/plots/``).

``iterit train`` and ``iterit demo`` call :func:`write_report` at their end; ``iterit report RUN`` calls it on
any run folder. The report is read from files only, never from memory, so it can be rebuilt at any time and
shows what a run really wrote. Every file is optional: a missing or unreadable one skips its section with a
note in the report, so a run that was killed half-way still gets a report of what it finished.

Folders it understands:

- a train run: ``config.yaml``, ``summary.json``, ``epochs/<e>/{scores,selection}.{parquet,jsonl}``,
  ``epochs/<e>/{metrics,dynamics}.json`` and the Trainer's ``checkpoints/*/trainer_state.json``;
- a demo: ``comparison.json`` (held-out quality of each strategy) and one train run per strategy in
  ``runs/<strategy>/``. Each strategy run gets its own report; the demo's page compares them, shows the
  ``iterit`` run in full and the others' dynamics briefly, with links to their pages.

Plots are drawn with matplotlib's Agg canvas on ``Figure`` objects (no pyplot, so no global state and no
display is touched) and need the ``plot`` extra.

The package's modules follow the data: ``rundir`` (folder -> :class:`TrainRun`), ``plots`` (run -> figures),
``document`` (blocks -> Markdown/HTML), ``pages`` (run folder -> the written report).
"""

from iterit.report.document import render_html, render_markdown
from iterit.report.pages import ReportPaths, write_report
from iterit.report.rundir import EpochRecord, TrainRun, read_train_run

__all__ = [
    "EpochRecord",
    "ReportPaths",
    "TrainRun",
    "read_train_run",
    "render_html",
    "render_markdown",
    "write_report",
]

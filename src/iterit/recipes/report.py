"""``iterit report``: Markdown + HTML with plots for a run folder."""

from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path

from iterit.config import ReportConfig
from iterit.errors import IterITError


@dataclass
class ReportResult:
    """What the report step wrote, or why it wrote nothing (``error``)."""

    markdown: Path | None = None
    html: Path | None = None
    error: str | None = None

    def format(self) -> str:
        """The line ``iterit report`` prints."""
        return f"wrote {self.markdown} and {self.html}"

    def line(self) -> str:
        """The line ``train`` and ``demo`` print after their own output."""
        return f"report not written: {self.error}" if self.error else f"report: {self.html}" if self.html else ""


def run(config: ReportConfig) -> ReportResult:
    """Write ``report.md``, ``report.html`` and ``plots/`` into ``config.run``."""
    from iterit.report import write_report

    paths = write_report(config.run)
    return ReportResult(paths.markdown, paths.html)


def report_after_run(run_dir: str | Path) -> ReportResult:
    """The report at the end of ``train`` or ``demo``: a missing plotting extra costs the report, never the
    finished run. Written on the main process only (under torchrun every rank runs the command)."""
    if os.environ.get("RANK", "0") != "0":
        return ReportResult()
    try:
        return run(ReportConfig(run=str(run_dir)))
    except IterITError as err:
        return ReportResult(error=str(err))

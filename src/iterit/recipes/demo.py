"""``iterit demo``: the whole method on built-in known-answer data with a tiny model, then the report."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from iterit.config import DemoConfig
from iterit.recipes.report import ReportResult, report_after_run


@dataclass
class DemoResult:
    """What ``comparison.json`` holds, and the report."""

    comparison: dict[str, Any]
    report: ReportResult

    def format(self) -> str:
        """The comparison table, then the report line."""
        from iterit.demo.compare import format_comparison

        return "\n" + format_comparison(self.comparison) + "\n" + self.report.line()


def run(config: DemoConfig) -> DemoResult:
    """Run the comparison into ``config.out`` (:func:`iterit.demo.compare.run_demo`) and write its report."""
    from iterit.demo.compare import run_demo

    comparison = run_demo(
        config.out, quick=config.quick, seed=config.seed, strategies=config.strategies, epochs=config.epochs,
        ratio=config.ratio, pool=config.pool, cache=config.cache, overwrite=config.overwrite,
    )
    return DemoResult(comparison, report_after_run(config.out))

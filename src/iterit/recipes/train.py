"""``iterit train``: fine-tune on a subset re-selected every epoch, then write the run's report.

The training itself is :func:`iterit.training.train` (a Python user's entry point); the command adds the
report at the end.
"""

from __future__ import annotations

from dataclasses import dataclass

from iterit.recipes.report import ReportResult, report_after_run
from iterit.training import RunResult, TrainConfig, train


@dataclass
class TrainResult:
    """The finished run and its report."""

    run: RunResult
    report: ReportResult

    def format(self) -> str:
        """The lines the CLI prints: budget, per-epoch loss and overlap, where the model and report are."""
        result = self.run
        lines = [f"budget {result.budget} samples per epoch, pool {result.pool_size}, {result.max_steps} optimizer steps"]
        for number, epoch in enumerate(result.epochs):
            loss = epoch.get("mean_train_loss")
            overlap = epoch.get("overlap_with_previous")
            lines.append(
                f"  epoch {number}: train loss {loss:.4f}" if isinstance(loss, float) else f"  epoch {number}:"
            )
            if isinstance(overlap, float):
                lines[-1] += f", overlap with previous selection {overlap:.0%}"
        lines.append(f"model saved to {result.model_dir}")
        lines.append(self.report.line())
        return "\n".join(lines)


def run(config: TrainConfig) -> TrainResult:
    """Train with ``config`` (:func:`iterit.training.train`), then write the run folder's report."""
    result = train(config)
    return TrainResult(result, report_after_run(result.run_dir))

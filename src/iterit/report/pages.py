"""Run folder -> blocks -> ``report.md``, ``report.html`` and ``plots/*.png``, for a train run or a demo."""

from __future__ import annotations

import json
import logging
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from iterit.errors import IterITError
from iterit.outputs import check_output
from iterit.report.document import Block, Code, Heading, Link, Plot, Table, Text, render_html, render_markdown
from iterit.report.plots import (
    FULL_DEMO_STRATEGY,
    plot_loss_by_strategy,
    plot_strategy_comparison,
    png_bytes,
    require_matplotlib,
    train_plots,
)
from iterit.report.rundir import TrainRun, read_json, read_train_run, read_yaml, selected_ids
from iterit.runfolder import RunFolder
from iterit.storage import atomic_open, atomic_path, check_writable

logger = logging.getLogger(__name__)

# Settings shown at the top of a train report; the whole resolved file follows below them.
KEY_SETTINGS = (
    "model",
    "data",
    "strategy",
    "ratio",
    "update_ratio",
    "pool",
    "decay",
    "threshold",
    "token_budget",
    "drop_top_ifd",
    "diversity_norm",
    "preset",
    "num_train_epochs",
    "learning_rate",
    "lr_scheduler_type",
    "warmup_steps",
    "per_device_train_batch_size",
    "gradient_accumulation_steps",
    "bf16",
    "lora_r",
    "max_length",
    "seed",
)
COMPARISON_COLUMNS = (
    "exact",
    "contains",
    "loss",
    "defective_share",
    "duplicates_selected",
    "picks",
    "train_tokens",
    "wall_s",
)


@dataclass
class ReportPaths:
    """What :func:`write_report` wrote.

    Attributes:
        markdown: ``RUN/report.md`` (plots linked as ``plots/<name>.png``).
        html: ``RUN/report.html`` (plots embedded as data URIs: one file to send or open offline).
        plots: the PNG files under ``RUN/plots/``.
        notes: sections that were skipped and why (also written into the report).
        sub_reports: for a demo, the report of each strategy run (``RUN/runs/<strategy>/report.html``).
    """

    markdown: Path
    html: Path
    plots: list[Path] = field(default_factory=list)
    notes: list[str] = field(default_factory=list)
    sub_reports: list[Path] = field(default_factory=list)


def write_report(run_dir: str | Path) -> ReportPaths:
    """Write ``report.md``, ``report.html`` and ``plots/*.png`` into the run folder ``run_dir``.

    Args:
        run_dir: a folder written by ``iterit train`` or ``iterit demo``.

    Returns:
        The paths written and the notes about skipped sections.

    Raises:
        IterITError: the folder does not exist or holds no run files, or matplotlib is missing.
    """
    run = Path(run_dir)
    if not run.is_dir():
        raise IterITError(
            f"{run}: no such run folder; give the --out folder of `iterit train` or `iterit demo`"
        )
    check_output(run, {}, flag="the report in", writes=("report.md", "report.html", "plots"))
    check_writable(run / "plots")
    require_matplotlib()
    if (run / "comparison.json").exists() or (run / "runs").is_dir():
        return _write_demo_report(run)
    if not RunFolder(run).is_train_run():
        raise IterITError(
            f"{run}: not a run folder (no config.yaml, summary.json, epochs/ or comparison.json); "
            "give the --out folder of `iterit train` or `iterit demo`"
        )
    train_run = read_train_run(run)
    blocks = [Heading(1, f"iterit report: {run.resolve().name}")]
    blocks += train_run_blocks(train_run, prefix="", level=2, full=True)
    return _write_pages(run, blocks, train_run.notes)


# ---------------------------------------------------------------- sections of a train run


def train_run_blocks(run: TrainRun, *, prefix: str, level: int, full: bool,
                     defective: dict[str, bool] | None = None) -> list[Block]:
    """The report sections of one train run; ``full=False`` gives the settings line and dynamics table only.

    ``defective`` (id -> whether the response is known to be bad, as the demo's ``truth.jsonl`` says) adds the
    defect share of each epoch's picks, and of the picks the epoch-0 selection did not hold.
    """
    blocks: list[Block] = []
    blocks += _settings_blocks(run, level, full)
    blocks += [Heading(level, "Selection dynamics per epoch"), *_dynamics_blocks(run, defective)]
    if not full:
        return blocks
    blocks += [Heading(level, "Summary"), *_summary_blocks(run)]
    blocks.append(Heading(level, "Plots"))
    for name, caption, draw in train_plots():
        figure = draw(run)
        if isinstance(figure, str):
            blocks.append(Text(f"{caption}: skipped ({figure})."))
            run.notes.append(f"plot '{name}' skipped: {figure}")
        else:
            blocks.append(Plot(prefix + name, caption, png_bytes(figure)))
    if run.config_text:
        blocks.append(
            Code(run.config_text, "The resolved config (config.yaml): rerun with it to repeat the run")
        )
    return blocks


def _settings_blocks(run: TrainRun, level: int, full: bool) -> list[Block]:
    if not run.config:
        return [Text("No config.yaml in this run folder: the settings are unknown.")]
    rows = [[key, format_value(run.config[key])] for key in KEY_SETTINGS if key in run.config]
    if not full:
        return [Text(", ".join(f"{k} = {v}" for k, v in rows))]
    return [Heading(level, "Settings"), Table(["setting", "value"], rows)]


def _dynamics_blocks(run: TrainRun, defective: dict[str, bool] | None = None) -> list[Block]:
    if not run.epochs:
        return [Text("No epochs/ folder: the run did not finish its first selection.")]
    headers = [
        "epoch",
        "selected",
        "scored",
        "overlap with previous",
        "not in epoch-0 top-B",
        "mean IFD selected",
        "train loss",
        "steps",
        "tokens",
        "score s",
        "select s",
        "train s",
        "source mix",
    ]
    if defective is not None:
        headers[5:5] = ["defective picks", "defective among those not in epoch-0 top-B"]
    first = selected_ids(run.epochs[0]) if run.epochs[0].epoch == 0 else set()
    rows = []
    for record in run.epochs:
        n = record.numbers
        chosen = selected_ids(record)
        outside = chosen - first
        ifd = [row.get("ifd") for row in record.selection or [] if isinstance(row.get("ifd"), (int, float))]
        rows.append(
            [
                str(record.epoch),
                format_value(n.get("budget", len(record.selection or []) or None)),
                format_value(n.get("scored", len(record.scores) if record.scores else None)),
                format_percent(n.get("overlap_with_previous")),
                _count_and_share(n.get("not_in_epoch0_top", len(outside) if first and chosen else None),
                                 n.get("share_not_in_epoch0_top")),
                format_value(float(np.nanmean(ifd)) if ifd and np.isfinite(ifd).any() else None),
                format_value(n.get("mean_train_loss")),
                format_value(n.get("steps")),
                format_value(n.get("tokens")),
                format_seconds(n.get("score_s")),
                format_seconds(n.get("select_s")),
                format_seconds(n.get("train_s")),
                _format_mix(n.get("source_mix")),
            ]
        )
        if defective is not None:
            rows[-1][5:5] = [_defect_share(chosen, defective), _defect_share(outside, defective)]
    note = Text(
        "Overlap: share of this epoch's picks also picked in the epoch before. Not in epoch-0 top-B: "
        "share of picks the base model did not rank in its first selection (the paper's motivating "
        "statistic: what the model finds hard changes as it learns)."
        + (" Defective: responses known to be wrong, swapped, truncated, filler or empty (truth.jsonl); among "
           "the picks outside the epoch-0 top-B it says whether re-selection brings in better or worse data."
           if defective is not None else "")
    )
    return [Table(headers, rows), note]


def _count_and_share(count: Any, share: Any) -> str:
    """``12 (25%)``; just the share where the count is unknown (a run of an older version)."""
    if isinstance(count, int) and isinstance(share, (int, float)):
        return f"{count} ({format_percent(share)})"
    return format_percent(share)


def _defect_share(ids: set[str], defective: dict[str, bool]) -> str:
    known = [defective[i] for i in ids if i in defective]
    return format_percent(sum(known) / len(known)) if known else "-"


def demo_defects(run: Path) -> dict[str, bool] | None:
    """id -> whether the demo's ``data/truth.jsonl`` marks the response defective (duplicates are not)."""
    from iterit.demo.tasks import DEFECT_KINDS

    path = run / "data" / "truth.jsonl"
    if not path.exists():
        return None
    rows = [json.loads(line) for line in path.read_text(encoding="utf-8").splitlines() if line.strip()]
    return {str(row["id"]): row.get("defect") in DEFECT_KINDS for row in rows}


def _summary_blocks(run: TrainRun) -> list[Block]:
    if not run.summary:
        return [Text("No summary.json: the run did not finish (or was written by an older version).")]
    flat = _flatten({k: v for k, v in run.summary.items() if k != "epochs"})
    return [Table(["field", "value"], [[k, format_value(v)] for k, v in flat.items()])]


def _flatten(values: dict[str, Any], prefix: str = "") -> dict[str, Any]:
    out: dict[str, Any] = {}
    for key, value in values.items():
        if isinstance(value, dict):
            out.update(_flatten(value, f"{prefix}{key}."))
        else:
            out[f"{prefix}{key}"] = value
    return out


def format_value(value: Any) -> str:
    if value is None:
        return "–"
    if isinstance(value, bool):
        return str(value).lower()
    if isinstance(value, float):
        if not np.isfinite(value):
            return str(value)
        return f"{value:.4g}" if abs(value) < 1e5 else f"{value:.3e}"
    if isinstance(value, (list, tuple)):
        return ", ".join(format_value(v) for v in value)
    return str(value)


def format_percent(value: Any) -> str:
    return f"{100 * value:.1f}%" if isinstance(value, (int, float)) and np.isfinite(value) else "–"


def format_seconds(value: Any) -> str:
    return f"{value:.2f}" if isinstance(value, (int, float)) and np.isfinite(value) else "–"


def _format_mix(mix: Any) -> str:
    if not isinstance(mix, dict) or not mix:
        return "–"
    ordered = sorted(mix.items(), key=lambda item: (-float(item[1]), item[0]))
    return ", ".join(f"{source} {100 * float(share):.0f}%" for source, share in ordered)


# ---------------------------------------------------------------- a demo folder


def _write_demo_report(run: Path) -> ReportPaths:
    notes: list[str] = []
    comparison = read_json(run / "comparison.json", notes)
    strategies = comparison.get("strategies") if isinstance(comparison, dict) else None
    strategies = {k: v for k, v in (strategies or {}).items() if isinstance(v, dict)}
    runs_dir = run / "runs"
    names = (
        list(strategies)
        + sorted(p.name for p in runs_dir.iterdir() if p.is_dir() and p.name not in strategies)
        if runs_dir.is_dir()
        else list(strategies)
    )
    train_runs = {name: read_train_run(runs_dir / name) for name in names if (runs_dir / name).is_dir()}
    sub_reports = []
    for name in train_runs:
        try:
            sub_reports.append(write_report(runs_dir / name).html)
        except IterITError as err:  # an empty strategy folder (a demo killed early): report the rest
            notes.append(f"runs/{name}: no report ({err})")

    blocks: list[Block] = [Heading(1, f"iterit demo report: {run.resolve().name}")]
    if (
        run / "config.yaml"
    ).exists():  # the demo's settings are also in comparison.json, so no note when absent
        config, _ = read_yaml(run / "config.yaml", notes)
        blocks.append(
            Text(", ".join(f"{k} = {format_value(v)}" for k, v in config.items() if not isinstance(v, dict)))
        )
    blocks += [
        Heading(2, "Strategy comparison (held-out test)"),
        *_comparison_blocks(strategies, comparison, notes),
    ]
    loss_plot = plot_loss_by_strategy(train_runs)
    if not isinstance(loss_plot, str):
        blocks.append(Plot("loss_by_strategy", "Training loss of each strategy", png_bytes(loss_plot)))
    with_epochs = [name for name, train_run in train_runs.items() if train_run.epochs]
    defective = demo_defects(run)
    full = FULL_DEMO_STRATEGY if FULL_DEMO_STRATEGY in with_epochs else next(iter(with_epochs), None)
    for name, train_run in train_runs.items():
        blocks += [
            Heading(2, f"Strategy {name}" + (" (in full)" if name == full else "")),
            Link(f"the {name} run's own report", f"runs/{name}/report.html"),
        ]
        blocks += train_run_blocks(train_run, prefix=f"{name}-", level=3, full=name == full, defective=defective)
        notes += [f"runs/{name}: {note}" for note in train_run.notes]
    if not train_runs:
        notes.append("runs/: no strategy run folders")
    paths = _write_pages(run, blocks, notes)
    paths.sub_reports = sub_reports
    return paths


def _comparison_blocks(
    strategies: dict[str, dict[str, Any]], comparison: Any, notes: list[str]
) -> list[Block]:
    if not strategies:
        notes.append("comparison.json: absent or without strategies; the comparison is skipped")
        return [Text("No comparison.json with strategies: the held-out evaluation did not run or finish.")]
    rows = [
        [name] + [_format_column(column, values.get(column)) for column in COMPARISON_COLUMNS]
        for name, values in strategies.items()
    ]
    blocks: list[Block] = [
        Table(["strategy", *COMPARISON_COLUMNS], rows),
        Text(
            "exact / contains: share of held-out questions answered exactly / containing the answer; loss: mean "
            "held-out response loss; defective_share: share of the picks whose response is wrong, swapped, "
            "truncated or filler; duplicates_selected: picks repeating one already picked in the same epoch."
        ),
    ]
    settings = comparison.get("settings") if isinstance(comparison.get("settings"), dict) else {}
    known = [f for f in settings.get("families") or [] if isinstance(f, str)]
    found = {f for values in strategies.values() for f in (values.get("per_family") or {})}
    families = [f for f in known if f in found] + sorted(found - set(known))
    if families:
        family_rows = [
            [f]
            + [_format_column("exact", (strategies[n].get("per_family") or {}).get(f)) for n in strategies]
            for f in families
        ]
        blocks += [Text("Exact match per task family:"), Table(["family", *strategies], family_rows)]
    extra = {k: v for k, v in comparison.items() if k != "strategies" and not isinstance(v, (dict, list))}
    extra.update(_flatten({k: v for k, v in settings.items() if k != "families"}, "settings."))
    if extra:
        blocks.append(Table(["field", "value"], [[k, format_value(v)] for k, v in extra.items()]))
    blocks.append(
        Plot(
            "strategy_comparison",
            "Held-out exact match, containment and loss per strategy",
            png_bytes(plot_strategy_comparison(strategies)),
        )
    )
    return blocks


def _format_column(column: str, value: Any) -> str:
    if column == "defective_share":
        return format_percent(value)
    if column in ("exact", "contains", "loss") and isinstance(value, float):
        return f"{value:.3f}"
    if column == "wall_s":
        return format_seconds(value)
    return format_value(value)


# ---------------------------------------------------------------- writing the pages


def _write_pages(run: Path, blocks: list[Block], notes: list[str]) -> ReportPaths:
    if notes:
        blocks = [*blocks, Heading(2, "Notes (skipped or missing)"), Text("\n".join(f"- {n}" for n in notes))]
    plots = []
    for block in blocks:
        if isinstance(block, Plot):
            path = run / "plots" / f"{block.name}.png"
            with atomic_path(path) as tmp:
                tmp.write_bytes(block.png)
            plots.append(path)
    markdown, page = run / "report.md", run / "report.html"
    with atomic_open(markdown) as handle:
        handle.write(render_markdown(blocks))
    with atomic_open(page) as handle:
        handle.write(render_html(blocks, title=f"iterit report: {run.resolve().name}"))
    logger.info("report written to %s and %s (%d plots)", markdown, page, len(plots))
    return ReportPaths(markdown, page, plots, list(notes))

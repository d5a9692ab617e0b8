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
"""

from __future__ import annotations

import base64
import html
import io
import json
import logging
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from iterit.errors import IterITError, missing_extra
from iterit.storage import atomic_open, atomic_path, check_writable, read_table

logger = logging.getLogger(__name__)

# Settings shown at the top of a train report; the whole resolved file follows below them.
KEY_SETTINGS = (
    "model", "data", "strategy", "ratio", "update_ratio", "pool", "decay", "threshold", "num_train_epochs",
    "learning_rate", "lr_scheduler_type", "warmup_steps", "per_device_train_batch_size",
    "gradient_accumulation_steps", "bf16", "lora_r", "max_length", "seed",
)
# Older or other writers used these names for the same per-epoch numbers.
METRIC_ALIASES = {
    "overlap_prev": "overlap_with_previous",
    "share_new_vs_epoch0": "share_not_in_epoch0_top",
    "train_loss": "mean_train_loss",
}
# Scatter plots draw at most this many unselected points (a fixed-seed sample); the picks are always drawn.
MAX_SCATTER_POINTS = 20000
FULL_DEMO_STRATEGY = "iterit"
COMPARISON_COLUMNS = ("exact", "contains", "loss", "defective_share", "duplicates_selected", "picks", "train_tokens",
                      "wall_s")
COLORS = ("#1f77b4", "#ff7f0e", "#2ca02c", "#d62728", "#9467bd", "#8c564b", "#e377c2", "#7f7f7f")


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
        raise IterITError(f"{run}: no such run folder; give the --out folder of `iterit train` or `iterit demo`")
    check_writable(run / "plots")
    _require_matplotlib()
    if (run / "comparison.json").exists() or (run / "runs").is_dir():
        return _write_demo_report(run)
    if not any((run / name).exists() for name in ("config.yaml", "summary.json", "epochs")):
        raise IterITError(f"{run}: not a run folder (no config.yaml, summary.json, epochs/ or comparison.json); "
                          "give the --out folder of `iterit train` or `iterit demo`")
    train_run = read_train_run(run)
    blocks = [Heading(1, f"iterit report: {run.resolve().name}")]
    blocks += train_run_blocks(train_run, prefix="", level=2, full=True)
    return _write_pages(run, blocks, train_run.notes)


# ---------------------------------------------------------------- reading a run folder


@dataclass
class EpochRecord:
    """One ``epochs/<e>/`` folder: its tables (``None`` when absent) and its numbers (metrics + dynamics)."""

    epoch: int
    scores: list[dict[str, Any]] | None = None
    selection: list[dict[str, Any]] | None = None
    numbers: dict[str, Any] = field(default_factory=dict)


@dataclass
class TrainRun:
    """Everything a train run folder holds that the report shows; ``notes`` says what could not be read."""

    path: Path
    config: dict[str, Any]
    config_text: str | None
    summary: dict[str, Any]
    epochs: list[EpochRecord]
    loss_steps: np.ndarray
    losses: np.ndarray
    loss_source: str
    notes: list[str]


def read_train_run(run: Path) -> TrainRun:
    """Read a train run folder defensively: every missing or broken file becomes a note, never an error."""
    notes: list[str] = []
    config, config_text = _read_yaml(run / "config.yaml", notes)
    summary = _read_json(run / "summary.json", notes)
    summary = summary if isinstance(summary, dict) else {}
    epochs = [_read_epoch(run, folder, notes) for folder in _epoch_folders(run)]
    _merge_summary_epochs(epochs, summary)
    _fill_missing_dynamics(epochs)
    steps, losses, source = _read_loss_history(run, config, epochs, notes)
    return TrainRun(run, config, config_text, summary, epochs, steps, losses, source, notes)


def _read_json(path: Path, notes: list[str]) -> Any:
    if not path.exists():
        notes.append(f"{path.name}: absent")
        return None
    try:
        return json.loads(path.read_text(encoding="utf-8"))
    except (OSError, ValueError) as err:
        notes.append(f"{path}: unreadable ({err}); skipped")
        return None


def _read_yaml(path: Path, notes: list[str]) -> tuple[dict[str, Any], str | None]:
    import yaml

    if not path.exists():
        notes.append(f"{path.name}: absent, so the settings are not shown")
        return {}, None
    try:
        text = path.read_text(encoding="utf-8")
        values = yaml.safe_load(text) or {}
    except (OSError, ValueError, yaml.YAMLError) as err:
        notes.append(f"{path}: unreadable ({str(err).splitlines()[0]}); skipped")
        return {}, None
    return (values if isinstance(values, dict) else {}), text


def _read_rows(folder: Path, stem: str, notes: list[str]) -> list[dict[str, Any]] | None:
    for suffix in (".parquet", ".jsonl"):
        path = folder / f"{stem}{suffix}"
        if path.exists():
            try:
                return read_table(path)[0]
            except (OSError, ValueError) as err:  # pyarrow's ArrowInvalid is a ValueError
                notes.append(f"{path}: unreadable ({str(err).splitlines()[0]}); skipped")
                return None
    return None


def _epoch_folders(run: Path) -> list[Path]:
    folder = run / "epochs"
    if not folder.is_dir():
        return []
    return sorted((p for p in folder.iterdir() if p.is_dir() and p.name.isdigit()), key=lambda p: int(p.name))


def _read_epoch(run: Path, folder: Path, notes: list[str]) -> EpochRecord:
    record = EpochRecord(int(folder.name), _read_rows(folder, "scores", notes), _read_rows(folder, "selection", notes))
    for name in ("dynamics.json", "metrics.json"):
        if (folder / name).exists():
            values = _read_json(folder / name, notes)
            if isinstance(values, dict):
                record.numbers.update({METRIC_ALIASES.get(k, k): v for k, v in values.items()})
    return record


def _merge_summary_epochs(epochs: list[EpochRecord], summary: dict[str, Any]) -> None:
    """``summary.json`` repeats the per-epoch numbers; use them where an epoch's own files are missing."""
    by_epoch = {record.epoch: record for record in epochs}
    for entry in summary.get("epochs") or []:
        if not isinstance(entry, dict) or not isinstance(entry.get("epoch"), int):
            continue
        record = by_epoch.setdefault(entry["epoch"], EpochRecord(entry["epoch"]))
        for key, value in entry.items():
            record.numbers.setdefault(METRIC_ALIASES.get(key, key), value)
    epochs[:] = sorted(by_epoch.values(), key=lambda r: r.epoch)


def _fill_missing_dynamics(epochs: list[EpochRecord]) -> None:
    """Overlap, the share new vs epoch 0 and the source mix, from the selections when no file gave them."""
    first = _selected_ids(epochs[0]) if epochs and epochs[0].epoch == 0 else None
    previous: set[str] | None = None
    for record in epochs:
        chosen = _selected_ids(record)
        if chosen:
            numbers = record.numbers
            if previous and numbers.get("overlap_with_previous") is None:
                numbers["overlap_with_previous"] = len(chosen & previous) / len(chosen)
            if first and numbers.get("share_not_in_epoch0_top") is None:
                numbers["share_not_in_epoch0_top"] = 1.0 - len(chosen & first) / len(chosen)
            if not numbers.get("source_mix"):
                numbers["source_mix"] = _shares([row.get("source", "?") for row in record.selection or []])
        previous = chosen


def _selected_ids(record: EpochRecord) -> set[str]:
    return {str(row["id"]) for row in record.selection or [] if "id" in row}


def _shares(labels: list[str]) -> dict[str, float]:
    values, counts = np.unique(np.array(labels, dtype=object).astype(str), return_counts=True)
    total = max(1, int(counts.sum()))
    return {str(v): int(c) / total for v, c in zip(values, counts)}


def _read_loss_history(run: Path, config: dict[str, Any], epochs: list[EpochRecord],
                       notes: list[str]) -> tuple[np.ndarray, np.ndarray, str]:
    """Training loss per logged step: ``log_history.json``, else the newest checkpoint's Trainer state,
    else the per-epoch losses in ``metrics.json`` (placed evenly over each epoch's steps)."""
    candidates = [run / "log_history.json"]
    output_dir = Path(str(config.get("output_dir") or run / "checkpoints"))
    for folder in (output_dir, run / "checkpoints"):
        if folder.is_dir():
            states = sorted(folder.glob("checkpoint-*/trainer_state.json"), key=_checkpoint_step, reverse=True)
            candidates += states
    for path in candidates:
        if path.exists():
            history = _read_json(path, notes)
            history = history.get("log_history") if isinstance(history, dict) else history
            points = [(e["step"], e["loss"]) for e in history or [] if isinstance(e, dict) and "loss" in e and "step" in e]
            if points:
                steps, losses = zip(*points)
                return np.array(steps, dtype=float), np.array(losses, dtype=float), str(path.relative_to(run)) if path.is_relative_to(run) else str(path)
    steps_list: list[float] = []
    loss_list: list[float] = []
    for record in epochs:
        losses = [x for x in record.numbers.get("losses") or [] if isinstance(x, (int, float))]
        end = record.numbers.get("global_step")
        count = record.numbers.get("steps") or len(losses)
        if losses and isinstance(end, (int, float)):
            steps_list += np.linspace(end - count + 1, end, len(losses)).tolist()
            loss_list += losses
    return np.array(steps_list, dtype=float), np.array(loss_list, dtype=float), "epochs/<e>/metrics.json"


def _checkpoint_step(path: Path) -> int:
    tail = path.parent.name.rsplit("-", 1)[-1]
    return int(tail) if tail.isdigit() else -1


# ---------------------------------------------------------------- the document model


@dataclass
class Heading:
    level: int
    text: str


@dataclass
class Text:
    text: str


@dataclass
class Table:
    headers: list[str]
    rows: list[list[str]]


@dataclass
class Code:
    text: str
    summary: str  # the HTML shows it folded under this line


@dataclass
class Link:
    text: str
    href: str


@dataclass
class Plot:
    """A drawn figure: saved to ``plots/<name>.png`` and embedded in the HTML."""

    name: str
    caption: str
    png: bytes


Block = Heading | Text | Table | Code | Link | Plot


# ---------------------------------------------------------------- sections of a train run


def train_run_blocks(run: TrainRun, *, prefix: str, level: int, full: bool) -> list[Block]:
    """The report sections of one train run; ``full=False`` gives the settings line and dynamics table only."""
    blocks: list[Block] = []
    blocks += _settings_blocks(run, level, full)
    blocks += [Heading(level, "Selection dynamics per epoch"), *_dynamics_blocks(run)]
    if not full:
        return blocks
    blocks += [Heading(level, "Summary"), *_summary_blocks(run)]
    blocks.append(Heading(level, "Plots"))
    for name, caption, draw in _train_plots():
        figure = draw(run)
        if isinstance(figure, str):
            blocks.append(Text(f"{caption}: skipped ({figure})."))
            run.notes.append(f"plot '{name}' skipped: {figure}")
        else:
            blocks.append(Plot(prefix + name, caption, _png_bytes(figure)))
    if run.config_text:
        blocks.append(Code(run.config_text, "The resolved config (config.yaml): rerun with it to repeat the run"))
    return blocks


def _settings_blocks(run: TrainRun, level: int, full: bool) -> list[Block]:
    if not run.config:
        return [Text("No config.yaml in this run folder: the settings are unknown.")]
    rows = [[key, _format_value(run.config[key])] for key in KEY_SETTINGS if key in run.config]
    if not full:
        return [Text(", ".join(f"{k} = {v}" for k, v in rows))]
    return [Heading(level, "Settings"), Table(["setting", "value"], rows)]


def _dynamics_blocks(run: TrainRun) -> list[Block]:
    if not run.epochs:
        return [Text("No epochs/ folder: the run did not finish its first selection.")]
    headers = ["epoch", "selected", "scored", "overlap with previous", "not in epoch-0 top-B", "mean IFD selected",
               "train loss", "steps", "tokens", "score s", "select s", "train s", "source mix"]
    rows = []
    for record in run.epochs:
        n = record.numbers
        ifd = [row.get("ifd") for row in record.selection or [] if isinstance(row.get("ifd"), (int, float))]
        rows.append([
            str(record.epoch), _format_value(n.get("budget", len(record.selection or []) or None)),
            _format_value(n.get("scored", len(record.scores) if record.scores else None)),
            _percent(n.get("overlap_with_previous")), _percent(n.get("share_not_in_epoch0_top")),
            _format_value(float(np.nanmean(ifd)) if ifd and np.isfinite(ifd).any() else None),
            _format_value(n.get("mean_train_loss")), _format_value(n.get("steps")), _format_value(n.get("tokens")),
            _seconds(n.get("score_s")), _seconds(n.get("select_s")), _seconds(n.get("train_s")),
            _format_mix(n.get("source_mix")),
        ])
    note = Text("Overlap: share of this epoch's picks also picked in the epoch before. Not in epoch-0 top-B: "
                "share of picks the base model did not rank in its first selection (the paper's motivating "
                "statistic: what the model finds hard changes as it learns).")
    return [Table(headers, rows), note]


def _summary_blocks(run: TrainRun) -> list[Block]:
    if not run.summary:
        return [Text("No summary.json: the run did not finish (or was written by an older version).")]
    flat = _flatten({k: v for k, v in run.summary.items() if k != "epochs"})
    return [Table(["field", "value"], [[k, _format_value(v)] for k, v in flat.items()])]


def _flatten(values: dict[str, Any], prefix: str = "") -> dict[str, Any]:
    out: dict[str, Any] = {}
    for key, value in values.items():
        if isinstance(value, dict):
            out.update(_flatten(value, f"{prefix}{key}."))
        else:
            out[f"{prefix}{key}"] = value
    return out


def _format_value(value: Any) -> str:
    if value is None:
        return "–"
    if isinstance(value, bool):
        return str(value).lower()
    if isinstance(value, float):
        if not np.isfinite(value):
            return str(value)
        return f"{value:.4g}" if abs(value) < 1e5 else f"{value:.3e}"
    if isinstance(value, (list, tuple)):
        return ", ".join(_format_value(v) for v in value)
    return str(value)


def _percent(value: Any) -> str:
    return f"{100 * value:.1f}%" if isinstance(value, (int, float)) and np.isfinite(value) else "–"


def _seconds(value: Any) -> str:
    return f"{value:.2f}" if isinstance(value, (int, float)) and np.isfinite(value) else "–"


def _format_mix(mix: Any) -> str:
    if not isinstance(mix, dict) or not mix:
        return "–"
    ordered = sorted(mix.items(), key=lambda item: (-float(item[1]), item[0]))
    return ", ".join(f"{source} {100 * float(share):.0f}%" for source, share in ordered)


# ---------------------------------------------------------------- plots


def _require_matplotlib() -> None:
    try:
        import matplotlib  # noqa: F401
    except ImportError:
        raise missing_extra("matplotlib", "plot") from None


def _figure(width: float, height: float) -> Any:
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.figure import Figure

    figure = Figure(figsize=(width, height), dpi=100, layout="constrained")
    FigureCanvasAgg(figure)
    return figure


def _png_bytes(figure: Any) -> bytes:
    buffer = io.BytesIO()
    # No "Software" stamp: the same run gives the same bytes whatever matplotlib version drew it.
    figure.savefig(buffer, format="png", metadata={"Software": None})
    return buffer.getvalue()


def _train_plots() -> list[tuple[str, str, Any]]:
    return [
        ("ifd_distribution", "IFD per epoch: every scored sample (left) and the picks (right)", plot_ifd_distribution),
        ("ifd_vs_length", "IFD against response length; picks highlighted", plot_ifd_vs_length),
        ("selection_overlap", "Selection overlap between epochs (Jaccard)", plot_selection_overlap),
        ("source_share", "Share of each source: the data vs each epoch's selection", plot_source_share),
        ("training_loss", "Training loss per logged step; dashed lines end each epoch", plot_training_loss),
    ]


def _finite(values: list[Any]) -> np.ndarray:
    array = np.array([v for v in values if isinstance(v, (int, float))], dtype=float)
    return array[np.isfinite(array)]


def plot_ifd_distribution(run: TrainRun) -> Any:
    """Overlaid IFD histograms per epoch, for the scored samples and for the selected ones; a reason if no data."""
    scored = {r.epoch: _finite([row.get("ifd") for row in r.scores or []]) for r in run.epochs}
    picked = {r.epoch: _finite([row.get("ifd") for row in r.selection or []]) for r in run.epochs}
    everything = np.concatenate([*scored.values(), *picked.values(), np.zeros(0)])
    if not everything.size:
        return "no IFD values in epochs/<e>/scores or selection"
    # IFD is a ratio around 1 with a long tail above it: log-spaced bins show both sides of the threshold.
    positive = everything[everything > 0]
    if not positive.size:
        return "no positive IFD values to plot"
    low, high = np.percentile(positive, [0.5, 99.5])
    low, high = min(low, 0.9), max(high, 1.1)
    bins = np.geomspace(low, high, 41)
    figure = _figure(10, 3.8)
    for axis, values, title in zip(figure.subplots(1, 2), (scored, picked), ("scored samples", "selected samples")):
        for color, (epoch, data) in zip(_cycle(), values.items()):
            if data.size:
                axis.hist(np.clip(data, low, high), bins=bins, histtype="step", linewidth=1.6,
                          color=color, label=f"epoch {epoch} (n={data.size})")
        axis.axvline(1.0, color="black", linestyle=":", linewidth=1)
        axis.set_xscale("log")
        axis.set(title=title, xlabel="IFD (log scale; dotted line: 1, the threshold)",
                 ylabel="samples")
        if axis.has_data():
            axis.legend(fontsize=8)
    return figure


def plot_ifd_vs_length(run: TrainRun) -> Any:
    """One scatter per scored epoch: IFD against response tokens, picks in colour over the rest in grey."""
    panels = [r for r in run.epochs if r.scores]
    if not panels:
        return "no epochs/<e>/scores table"
    figure = _figure(min(4.2 * len(panels), 13), 3.8)
    axes = np.atleast_1d(figure.subplots(1, len(panels), sharey=True))
    for axis, record, color in zip(axes, panels, _cycle()):
        chosen = _selected_ids(record)
        rows = [r for r in record.scores if isinstance(r.get("ifd"), (int, float)) and np.isfinite(r["ifd"])
                and isinstance(r.get("n_response_tokens"), int) and r["n_response_tokens"] > 0]
        inside = [r for r in rows if str(r.get("id")) in chosen]
        outside = _thin([r for r in rows if str(r.get("id")) not in chosen])
        for group, style in ((outside, {"color": "#b0b0b0", "label": "not selected"}),
                             (inside, {"color": color, "label": "selected"})):
            axis.scatter([r["n_response_tokens"] for r in group], [r["ifd"] for r in group], s=6,
                         alpha=0.6, linewidths=0, **style)
        axis.set(title=f"epoch {record.epoch} ({len(rows)} scored)", xlabel="response tokens")
        lengths = [r["n_response_tokens"] for r in rows]
        if lengths and max(lengths) > 20 * min(lengths):  # Alpaca-like spreads (3 to 1,000 tokens) need a log axis
            axis.set_xscale("log")
        axis.legend(fontsize=8, markerscale=2)
    axes[0].set_ylabel("IFD")
    return figure


def _thin(rows: list[dict[str, Any]]) -> list[dict[str, Any]]:
    if len(rows) <= MAX_SCATTER_POINTS:
        return rows
    keep = np.random.default_rng(0).choice(len(rows), MAX_SCATTER_POINTS, replace=False)
    return [rows[i] for i in np.sort(keep)]


def plot_selection_overlap(run: TrainRun) -> Any:
    """Heatmap of the Jaccard index between every two epochs' selections, annotated with the shared count."""
    records = [r for r in run.epochs if r.selection]
    if len(records) < 2:
        return "fewer than two epochs with a selection"
    sets = [_selected_ids(r) for r in records]
    size = len(sets)
    shared = np.array([[len(a & b) for b in sets] for a in sets])
    union = np.array([[len(a | b) for b in sets] for a in sets])
    jaccard = shared / np.maximum(union, 1)
    figure = _figure(1.2 * size + 2.5, 1.0 * size + 1.8)
    axis = figure.subplots()
    image = axis.imshow(jaccard, vmin=0, vmax=1, cmap="viridis")
    labels = [str(r.epoch) for r in records]
    axis.set(xticks=range(size), yticks=range(size), xticklabels=labels, yticklabels=labels,
             xlabel="epoch", ylabel="epoch", title="Jaccard (shared picks)")
    for i in range(size):
        for j in range(size):
            axis.text(j, i, f"{jaccard[i, j]:.2f}\n({shared[i, j]})", ha="center", va="center", fontsize=8,
                      color="black" if jaccard[i, j] > 0.6 else "white")
    figure.colorbar(image, ax=axis, shrink=0.8)
    return figure


def plot_source_share(run: TrainRun) -> Any:
    """Grouped bars per source: its share of the data (epoch-0 scores) and of each epoch's selection."""
    groups: list[tuple[str, dict[str, float]]] = []
    first = next((r for r in run.epochs if r.epoch == 0 and r.scores), None)
    if first is not None:
        groups.append(("data", _shares([str(row.get("source", "?")) for row in first.scores])))
    for record in run.epochs:
        mix = record.numbers.get("source_mix")
        if isinstance(mix, dict) and mix:
            groups.append((f"epoch {record.epoch}", {str(k): float(v) for k, v in mix.items()}))
    if not groups:
        return "no sources in the scores or selections"
    sources = sorted({source for _, shares in groups for source in shares})
    figure = _figure(max(6.0, 0.9 * len(sources) * max(1, len(groups)) / 2 + 3), 4.0)
    axis = figure.subplots()
    width = 0.8 / len(groups)
    positions = np.arange(len(sources))
    for k, ((label, shares), color) in enumerate(zip(groups, _cycle(gray_first=first is not None))):
        axis.bar(positions + k * width - 0.4 + width / 2, [shares.get(s, 0.0) for s in sources], width,
                 label=label, color=color)
    axis.set_xticks(positions, sources, rotation=30, ha="right", fontsize=8)
    axis.set(ylabel="share", title="per-source share")
    axis.legend(fontsize=8)
    return figure


def plot_training_loss(run: TrainRun) -> Any:
    """The logged training loss against the optimizer step, with each epoch's last step marked."""
    if not run.losses.size:
        return "no logged loss (no checkpoints/*/trainer_state.json, log_history.json or metrics.json losses)"
    figure = _figure(8, 3.5)
    axis = figure.subplots()
    axis.plot(run.loss_steps, run.losses, marker="." if run.losses.size < 50 else None, color=COLORS[0])
    for record in run.epochs:
        end = record.numbers.get("global_step")
        if isinstance(end, (int, float)):
            axis.axvline(end, color="#999999", linestyle="--", linewidth=0.8)
    axis.set(xlabel="optimizer step", ylabel="loss (response tokens)", title=f"training loss (from {run.loss_source})")
    return figure


def plot_strategy_comparison(strategies: dict[str, dict[str, Any]]) -> Any:
    """Bars per strategy: held-out exact match (and containment) on the left, held-out loss on the right."""
    names = list(strategies)
    figure = _figure(max(7.0, 1.3 * len(names) + 3), 3.8)
    left, right = figure.subplots(1, 2)
    width = 0.4
    positions = np.arange(len(names))
    for offset, metric, color in ((-width / 2, "exact", COLORS[0]), (width / 2, "contains", COLORS[1])):
        values = [_number(strategies[n].get(metric)) for n in names]
        left.bar(positions + offset, values, width, label=metric, color=color)
    left.set(ylabel="share of held-out questions", title="held-out answers", ylim=(0, 1))
    left.legend(fontsize=8)
    colors = [COLORS[3] if n == FULL_DEMO_STRATEGY else COLORS[7] for n in names]
    right.bar(positions, [_number(strategies[n].get("loss")) for n in names], 0.6, color=colors)
    right.set(ylabel="mean response loss", title="held-out loss (lower is better)")
    for axis in (left, right):
        axis.set_xticks(positions, names, rotation=20, ha="right")
    return figure


def plot_loss_by_strategy(runs: dict[str, TrainRun]) -> Any:
    """Each strategy's training loss curve on one axis."""
    curves = {name: run for name, run in runs.items() if run.losses.size}
    if not curves:
        return "no strategy run logged a loss"
    figure = _figure(8, 3.5)
    axis = figure.subplots()
    for (name, run), color in zip(curves.items(), _cycle()):
        axis.plot(run.loss_steps, run.losses, label=name, color=color, linewidth=2.0 if name == FULL_DEMO_STRATEGY else 1.0)
    axis.set(xlabel="optimizer step", ylabel="training loss", title="training loss by strategy")
    axis.legend(fontsize=8)
    return figure


def _number(value: Any) -> float:
    return float(value) if isinstance(value, (int, float)) and not isinstance(value, bool) else float("nan")


def _cycle(gray_first: bool = False) -> list[str]:
    colors = list(COLORS) * 4
    return ["#7f7f7f", *[c for c in colors if c != "#7f7f7f"]] if gray_first else colors


# ---------------------------------------------------------------- a demo folder


def _write_demo_report(run: Path) -> ReportPaths:
    notes: list[str] = []
    comparison = _read_json(run / "comparison.json", notes)
    strategies = comparison.get("strategies") if isinstance(comparison, dict) else None
    strategies = {k: v for k, v in (strategies or {}).items() if isinstance(v, dict)}
    runs_dir = run / "runs"
    names = list(strategies) + sorted(p.name for p in runs_dir.iterdir() if p.is_dir() and p.name not in strategies) \
        if runs_dir.is_dir() else list(strategies)
    train_runs = {name: read_train_run(runs_dir / name) for name in names if (runs_dir / name).is_dir()}
    sub_reports = []
    for name in train_runs:
        try:
            sub_reports.append(write_report(runs_dir / name).html)
        except IterITError as err:  # an empty strategy folder (a demo killed early): report the rest
            notes.append(f"runs/{name}: no report ({err})")

    blocks: list[Block] = [Heading(1, f"iterit demo report: {run.resolve().name}")]
    if (run / "config.yaml").exists():  # the demo's settings are also in comparison.json, so no note when absent
        config, _ = _read_yaml(run / "config.yaml", notes)
        blocks.append(Text(", ".join(f"{k} = {_format_value(v)}" for k, v in config.items() if not isinstance(v, dict))))
    blocks += [Heading(2, "Strategy comparison (held-out test)"), *_comparison_blocks(strategies, comparison, notes)]
    loss_plot = plot_loss_by_strategy(train_runs)
    if not isinstance(loss_plot, str):
        blocks.append(Plot("loss_by_strategy", "Training loss of each strategy", _png_bytes(loss_plot)))
    with_epochs = [name for name, train_run in train_runs.items() if train_run.epochs]
    full = FULL_DEMO_STRATEGY if FULL_DEMO_STRATEGY in with_epochs else next(iter(with_epochs), None)
    for name, train_run in train_runs.items():
        blocks += [Heading(2, f"Strategy {name}" + (" (in full)" if name == full else "")),
                   Link(f"the {name} run's own report", f"runs/{name}/report.html")]
        blocks += train_run_blocks(train_run, prefix=f"{name}-", level=3, full=name == full)
        notes += [f"runs/{name}: {note}" for note in train_run.notes]
    if not train_runs:
        notes.append("runs/: no strategy run folders")
    paths = _write_pages(run, blocks, notes)
    paths.sub_reports = sub_reports
    return paths


def _comparison_blocks(strategies: dict[str, dict[str, Any]], comparison: Any, notes: list[str]) -> list[Block]:
    if not strategies:
        notes.append("comparison.json: absent or without strategies; the comparison is skipped")
        return [Text("No comparison.json with strategies: the held-out evaluation did not run or finish.")]
    rows = [[name] + [_format_column(column, values.get(column)) for column in COMPARISON_COLUMNS]
            for name, values in strategies.items()]
    blocks: list[Block] = [Table(["strategy", *COMPARISON_COLUMNS], rows), Text(
        "exact / contains: share of held-out questions answered exactly / containing the answer; loss: mean "
        "held-out response loss; defective_share: share of the picks whose response is wrong, swapped, "
        "truncated or filler; duplicates_selected: picks repeating one already picked in the same epoch.")]
    settings = comparison.get("settings") if isinstance(comparison.get("settings"), dict) else {}
    known = [f for f in settings.get("families") or [] if isinstance(f, str)]
    found = {f for values in strategies.values() for f in (values.get("per_family") or {})}
    families = [f for f in known if f in found] + sorted(found - set(known))
    if families:
        family_rows = [[f] + [_format_column("exact", (strategies[n].get("per_family") or {}).get(f)) for n in strategies]
                       for f in families]
        blocks += [Text("Exact match per task family:"), Table(["family", *strategies], family_rows)]
    extra = {k: v for k, v in comparison.items() if k != "strategies" and not isinstance(v, (dict, list))}
    extra.update(_flatten({k: v for k, v in settings.items() if k != "families"}, "settings."))
    if extra:
        blocks.append(Table(["field", "value"], [[k, _format_value(v)] for k, v in extra.items()]))
    blocks.append(Plot("strategy_comparison", "Held-out exact match, containment and loss per strategy",
                       _png_bytes(plot_strategy_comparison(strategies))))
    return blocks


def _format_column(column: str, value: Any) -> str:
    if column == "defective_share":
        return _percent(value)
    if column in ("exact", "contains", "loss") and isinstance(value, float):
        return f"{value:.3f}"
    if column == "wall_s":
        return _seconds(value)
    return _format_value(value)


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


def render_markdown(blocks: list[Block]) -> str:
    """The blocks as GitHub-flavoured Markdown; plots as links to ``plots/<name>.png``."""
    parts = []
    for block in blocks:
        if isinstance(block, Heading):
            parts.append(f"{'#' * block.level} {block.text}")
        elif isinstance(block, Text):
            parts.append(block.text)
        elif isinstance(block, Table):
            cells = [block.headers, ["---"] * len(block.headers), *block.rows]
            parts.append("\n".join("| " + " | ".join(c.replace("|", "\\|") for c in row) + " |" for row in cells))
        elif isinstance(block, Code):
            parts.append(f"<details><summary>{html.escape(block.summary)}</summary>\n\n```yaml\n{block.text.rstrip()}\n```\n\n</details>")
        elif isinstance(block, Link):
            parts.append(f"[{block.text}]({block.href})")
        elif isinstance(block, Plot):
            parts.append(f"![{block.caption}](plots/{block.name}.png)\n\n*{block.caption}*")
    return "\n\n".join(parts) + "\n"


HTML_STYLE = """
body { font-family: system-ui, sans-serif; max-width: 1200px; margin: 2em auto; padding: 0 1em; color: #222; }
table { border-collapse: collapse; margin: 0.5em 0 1em; font-size: 0.9em; }
th, td { border: 1px solid #ccc; padding: 0.25em 0.6em; text-align: left; vertical-align: top; }
th { background: #f0f0f0; }
figure { margin: 1em 0; } figure img { max-width: 100%; border: 1px solid #eee; }
figcaption { color: #555; font-size: 0.9em; }
pre { background: #f7f7f7; padding: 0.8em; overflow-x: auto; font-size: 0.8em; }
"""


def render_html(blocks: list[Block], *, title: str) -> str:
    """The blocks as one HTML page with every plot inline (``data:image/png;base64``): no external file."""
    body = []
    for block in blocks:
        if isinstance(block, Heading):
            body.append(f"<h{block.level}>{html.escape(block.text)}</h{block.level}>")
        elif isinstance(block, Text):
            body.append(_html_text(block.text))
        elif isinstance(block, Table):
            head = "".join(f"<th>{html.escape(h)}</th>" for h in block.headers)
            rows = "".join("<tr>" + "".join(f"<td>{html.escape(c)}</td>" for c in row) + "</tr>" for row in block.rows)
            body.append(f"<table><thead><tr>{head}</tr></thead><tbody>{rows}</tbody></table>")
        elif isinstance(block, Code):
            body.append(f"<details><summary>{html.escape(block.summary)}</summary><pre>{html.escape(block.text)}</pre></details>")
        elif isinstance(block, Link):
            body.append(f'<p><a href="{html.escape(block.href)}">{html.escape(block.text)}</a></p>')
        elif isinstance(block, Plot):
            data = base64.b64encode(block.png).decode("ascii")
            body.append(f'<figure><img alt="{html.escape(block.caption)}" data-plot="{html.escape(block.name)}" '
                        f'src="data:image/png;base64,{data}"><figcaption>{html.escape(block.caption)} '
                        f'(file: plots/{html.escape(block.name)}.png)</figcaption></figure>')
    return (f'<!DOCTYPE html>\n<html lang="en"><head><meta charset="utf-8"><title>{html.escape(title)}</title>'
            f"<style>{HTML_STYLE}</style></head>\n<body>\n" + "\n".join(body) + "\n</body></html>\n")


def _html_text(text: str) -> str:
    lines = text.split("\n")
    if all(line.startswith("- ") for line in lines):
        return "<ul>" + "".join(f"<li>{html.escape(line[2:])}</li>" for line in lines) + "</ul>"
    return f"<p>{html.escape(text)}</p>"

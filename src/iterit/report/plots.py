"""The report's plots, drawn with matplotlib's Agg canvas on ``Figure`` objects (no pyplot, no display)."""

from __future__ import annotations

import io
import logging
from typing import Any

import numpy as np

from iterit.errors import missing_extra
from iterit.report.rundir import TrainRun, selected_ids, source_shares

logger = logging.getLogger(__name__)

# Scatter plots draw at most this many unselected points (a fixed-seed sample); the picks are always drawn.
MAX_SCATTER_POINTS = 20000
# The strategy a demo report shows in full (and plots in colour); the others appear briefly.
FULL_DEMO_STRATEGY = "iterit"
COLORS = ("#1f77b4", "#ff7f0e", "#2ca02c", "#d62728", "#9467bd", "#8c564b", "#e377c2", "#7f7f7f")


def require_matplotlib() -> None:
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


def png_bytes(figure: Any) -> bytes:
    buffer = io.BytesIO()
    # No "Software" stamp: the same run gives the same bytes whatever matplotlib version drew it.
    figure.savefig(buffer, format="png", metadata={"Software": None})
    return buffer.getvalue()


def train_plots() -> list[tuple[str, str, Any]]:
    return [
        (
            "ifd_distribution",
            "IFD per epoch: every scored sample (left) and the picks (right)",
            plot_ifd_distribution,
        ),
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
    for axis, values, title in zip(
        figure.subplots(1, 2), (scored, picked), ("scored samples", "selected samples")
    ):
        for color, (epoch, data) in zip(_cycle(), values.items()):
            if data.size:
                axis.hist(
                    np.clip(data, low, high),
                    bins=bins,
                    histtype="step",
                    linewidth=1.6,
                    color=color,
                    label=f"epoch {epoch} (n={data.size})",
                )
        axis.axvline(1.0, color="black", linestyle=":", linewidth=1)
        axis.set_xscale("log")
        axis.set(title=title, xlabel="IFD (log scale; dotted line: 1, the threshold)", ylabel="samples")
        if any(data.size for data in values.values()):
            axis.legend(fontsize=8)
        else:
            axis.text(0.5, 0.5, "none in this run", transform=axis.transAxes, ha="center", color="gray")
    return figure


def plot_ifd_vs_length(run: TrainRun) -> Any:
    """One scatter per scored epoch: IFD against response tokens, picks in colour over the rest in grey."""
    panels = [r for r in run.epochs if r.scores]
    if not panels:
        return "no epochs/<e>/scores table"
    figure = _figure(min(4.2 * len(panels), 13), 3.8)
    axes = np.atleast_1d(figure.subplots(1, len(panels), sharey=True))
    for axis, record, color in zip(axes, panels, _cycle()):
        chosen = selected_ids(record)
        rows = [
            r
            for r in record.scores
            if isinstance(r.get("ifd"), (int, float))
            and np.isfinite(r["ifd"])
            and isinstance(r.get("n_response_tokens"), int)
            and r["n_response_tokens"] > 0
        ]
        inside = [r for r in rows if str(r.get("id")) in chosen]
        outside = _thin([r for r in rows if str(r.get("id")) not in chosen])
        for group, style in (
            (outside, {"color": "#b0b0b0", "label": "not selected"}),
            (inside, {"color": color, "label": "selected"}),
        ):
            axis.scatter(
                [r["n_response_tokens"] for r in group],
                [r["ifd"] for r in group],
                s=6,
                alpha=0.6,
                linewidths=0,
                **style,
            )
        axis.set(title=f"epoch {record.epoch} ({len(rows)} scored)", xlabel="response tokens")
        lengths = [r["n_response_tokens"] for r in rows]
        if lengths and max(lengths) > 20 * min(
            lengths
        ):  # Alpaca-like spreads (3 to 1,000 tokens) need a log axis
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
    sets = [selected_ids(r) for r in records]
    size = len(sets)
    shared = np.array([[len(a & b) for b in sets] for a in sets])
    union = np.array([[len(a | b) for b in sets] for a in sets])
    jaccard = shared / np.maximum(union, 1)
    figure = _figure(1.2 * size + 2.5, 1.0 * size + 1.8)
    axis = figure.subplots()
    image = axis.imshow(jaccard, vmin=0, vmax=1, cmap="viridis")
    labels = [str(r.epoch) for r in records]
    axis.set(
        xticks=range(size),
        yticks=range(size),
        xticklabels=labels,
        yticklabels=labels,
        xlabel="epoch",
        ylabel="epoch",
        title="Jaccard (shared picks)",
    )
    for i in range(size):
        for j in range(size):
            axis.text(
                j,
                i,
                f"{jaccard[i, j]:.2f}\n({shared[i, j]})",
                ha="center",
                va="center",
                fontsize=8,
                color="black" if jaccard[i, j] > 0.6 else "white",
            )
    figure.colorbar(image, ax=axis, shrink=0.8)
    return figure


def plot_source_share(run: TrainRun) -> Any:
    """Grouped bars per source: its share of the data (epoch-0 scores) and of each epoch's selection."""
    groups: list[tuple[str, dict[str, float]]] = []
    first = next((r for r in run.epochs if r.epoch == 0 and r.scores), None)
    if first is not None:
        groups.append(("data", source_shares([str(row.get("source", "?")) for row in first.scores])))
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
        axis.bar(
            positions + k * width - 0.4 + width / 2,
            [shares.get(s, 0.0) for s in sources],
            width,
            label=label,
            color=color,
        )
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
    axis.set(
        xlabel="optimizer step",
        ylabel="loss (response tokens)",
        title=f"training loss (from {run.loss_source})",
    )
    return figure


def plot_strategy_comparison(strategies: dict[str, dict[str, Any]]) -> Any:
    """Bars per strategy: held-out exact match (and containment) on the left, held-out loss on the right."""
    names = list(strategies)
    figure = _figure(max(7.0, 1.3 * len(names) + 3), 3.8)
    left, right = figure.subplots(1, 2)
    width = 0.4
    positions = np.arange(len(names))
    for offset, metric, color in ((-width / 2, "exact", COLORS[0]), (width / 2, "contains", COLORS[1])):
        values = [as_number(strategies[n].get(metric)) for n in names]
        left.bar(positions + offset, values, width, label=metric, color=color)
    left.set(ylabel="share of held-out questions", title="held-out answers", ylim=(0, 1))
    left.legend(fontsize=8)
    colors = [COLORS[3] if n == FULL_DEMO_STRATEGY else COLORS[7] for n in names]
    right.bar(positions, [as_number(strategies[n].get("loss")) for n in names], 0.6, color=colors)
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
        axis.plot(
            run.loss_steps,
            run.losses,
            label=name,
            color=color,
            linewidth=2.0 if name == FULL_DEMO_STRATEGY else 1.0,
        )
    axis.set(xlabel="optimizer step", ylabel="training loss", title="training loss by strategy")
    axis.legend(fontsize=8)
    return figure


def as_number(value: Any) -> float:
    return float(value) if isinstance(value, (int, float)) and not isinstance(value, bool) else float("nan")


def _cycle(gray_first: bool = False) -> list[str]:
    colors = list(COLORS) * 4
    return ["#7f7f7f", *[c for c in colors if c != "#7f7f7f"]] if gray_first else colors

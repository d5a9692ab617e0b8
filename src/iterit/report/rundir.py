"""Read a train run folder into a :class:`TrainRun`; every file optional, each gap noted."""

from __future__ import annotations

import json
import logging
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from iterit.runfolder import TABLE_SUFFIXES, RunFolder
from iterit.storage import read_table

logger = logging.getLogger(__name__)

# Older or other writers used these names for the same per-epoch numbers.
METRIC_ALIASES = {
    "overlap_prev": "overlap_with_previous",
    "share_new_vs_epoch0": "share_not_in_epoch0_top",
    "train_loss": "mean_train_loss",
}


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
    layout = RunFolder(run)
    config, config_text = read_yaml(layout.config, notes)
    summary = read_json(layout.summary, notes)
    summary = summary if isinstance(summary, dict) else {}
    epochs = [_read_epoch(run, folder, notes) for folder in layout.epoch_folders()]
    _merge_summary_epochs(epochs, summary)
    _fill_missing_dynamics(epochs)
    steps, losses, source = _read_loss_history(run, config, epochs, notes)
    return TrainRun(run, config, config_text, summary, epochs, steps, losses, source, notes)


def read_json(path: Path, notes: list[str]) -> Any:
    if not path.exists():
        notes.append(f"{path.name}: absent")
        return None
    try:
        return json.loads(path.read_text(encoding="utf-8"))
    except (OSError, ValueError) as err:
        notes.append(f"{path}: unreadable ({err}); skipped")
        return None


def read_yaml(path: Path, notes: list[str]) -> tuple[dict[str, Any], str | None]:
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
    for suffix in TABLE_SUFFIXES:
        path = folder / f"{stem}{suffix}"
        if path.exists():
            try:
                return read_table(path)[0]
            except (OSError, ValueError) as err:  # pyarrow's ArrowInvalid is a ValueError
                notes.append(f"{path}: unreadable ({str(err).splitlines()[0]}); skipped")
                return None
    return None


def _read_epoch(run: Path, folder: Path, notes: list[str]) -> EpochRecord:
    record = EpochRecord(
        int(folder.name), _read_rows(folder, "scores", notes), _read_rows(folder, "selection", notes)
    )
    for name in ("dynamics.json", "metrics.json"):
        if (folder / name).exists():
            values = read_json(folder / name, notes)
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
    first = selected_ids(epochs[0]) if epochs and epochs[0].epoch == 0 else None
    previous: set[str] | None = None
    for record in epochs:
        chosen = selected_ids(record)
        if chosen:
            numbers = record.numbers
            if previous and numbers.get("overlap_with_previous") is None:
                numbers["overlap_with_previous"] = len(chosen & previous) / len(chosen)
            if first and numbers.get("share_not_in_epoch0_top") is None:
                numbers["share_not_in_epoch0_top"] = 1.0 - len(chosen & first) / len(chosen)
            if not numbers.get("source_mix"):
                numbers["source_mix"] = source_shares(
                    [row.get("source", "?") for row in record.selection or []]
                )
        previous = chosen


def selected_ids(record: EpochRecord) -> set[str]:
    return {str(row["id"]) for row in record.selection or [] if "id" in row}


def source_shares(labels: list[str]) -> dict[str, float]:
    values, counts = np.unique(np.array(labels, dtype=object).astype(str), return_counts=True)
    total = max(1, int(counts.sum()))
    return {str(v): int(c) / total for v, c in zip(values, counts)}


def _read_loss_history(
    run: Path, config: dict[str, Any], epochs: list[EpochRecord], notes: list[str]
) -> tuple[np.ndarray, np.ndarray, str]:
    """Training loss per logged step: ``log_history.json``, else the newest checkpoint's Trainer state,
    else the per-epoch losses in ``metrics.json`` (placed evenly over each epoch's steps)."""
    candidates = [run / "log_history.json"]
    output_dir = Path(str(config.get("output_dir") or run / "checkpoints"))
    for folder in (output_dir, run / "checkpoints"):
        if folder.is_dir():
            states = sorted(
                folder.glob("checkpoint-*/trainer_state.json"), key=_checkpoint_step, reverse=True
            )
            candidates += states
    for path in candidates:
        if path.exists():
            history = read_json(path, notes)
            history = history.get("log_history") if isinstance(history, dict) else history
            points = [
                (e["step"], e["loss"])
                for e in history or []
                if isinstance(e, dict) and "loss" in e and "step" in e
            ]
            if points:
                steps, losses = zip(*points)
                return (
                    np.array(steps, dtype=float),
                    np.array(losses, dtype=float),
                    str(path.relative_to(run)) if path.is_relative_to(run) else str(path),
                )
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

"""A run folder's layout (:class:`RunFolder`), and whose it is: the marker file that says so, and ``--overwrite``.

:class:`RunFolder` is the one place that names what a train run folder holds (``config.yaml``, ``summary.json``,
``epochs/<e>/{scores,selection}.<fmt>``, ``dynamics.json``, ``metrics.json``, ``model/``, ``adapter/``,
``checkpoints/``); training writes through it and the report reads through it.

``train`` and ``demo`` write into a folder the user names. :func:`claim_run_folder` writes ``.iterit-run`` (JSON:
the kind of run and the settings that define it) once the model and data have loaded, before anything else.
:func:`check_run_folder`, called before any work, then allows a missing or empty folder, an iterit run folder of
the same settings (a rerun or ``--resume``), and one where nothing finished yet (a failed start blocks nothing);
it refuses a folder of the user's own, or a run of other settings, naming what differs, unless ``--overwrite``.
With ``--overwrite`` only the entries iterit writes are replaced, and each one replaced is logged.
"""

from __future__ import annotations

import json
import logging
import shutil
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from iterit.errors import IterITError

logger = logging.getLogger(__name__)

MARKER = ".iterit-run"
# What a train run writes in its folder: all that --overwrite replaces, and where no input may lie.
RUN_ENTRIES = ("config.yaml", "epochs", "model", "adapter", ".model.partial", ".adapter.partial", "checkpoints",
               "summary.json", "report.md", "report.html", "plots")
TABLE_SUFFIXES = (".parquet", ".jsonl")


@dataclass(frozen=True)
class RunFolder:
    """The layout of a train run folder, read and written here only.

    Attributes:
        root: the folder (``iterit train --out``).
    """

    root: Path

    def __post_init__(self) -> None:
        object.__setattr__(self, "root", Path(self.root))

    @property
    def config(self) -> Path:
        """``config.yaml``: every resolved setting; ``iterit train RUN/config.yaml`` reruns it."""
        return self.root / "config.yaml"

    @property
    def summary(self) -> Path:
        """``summary.json``: budget, pool, per-epoch dynamics and timings; written last."""
        return self.root / "summary.json"

    @property
    def epochs(self) -> Path:
        """``epochs/``: one folder per trained epoch."""
        return self.root / "epochs"

    @property
    def model(self) -> Path:
        """``model/``: the trained (or merged) model and its tokenizer."""
        return self.root / "model"

    @property
    def adapter(self) -> Path:
        """``adapter/``: the LoRA adapter, when ``--merge-lora`` also writes a merged ``model/``."""
        return self.root / "adapter"

    def epoch(self, epoch: int) -> Path:
        """``epochs/<epoch>/``: that epoch's scores, selection, dynamics and metrics."""
        return self.epochs / str(epoch)

    def epoch_table(self, epoch: int, stem: str, suffix: str) -> Path:
        """``epochs/<epoch>/<stem><suffix>``: ``scores`` or ``selection``, ``.parquet`` or ``.jsonl``."""
        return self.epoch(epoch) / f"{stem}{suffix}"

    def epoch_folders(self) -> list[Path]:
        """The ``epochs/<e>/`` folders present, by epoch."""
        if not self.epochs.is_dir():
            return []
        return sorted((p for p in self.epochs.iterdir() if p.is_dir() and p.name.isdigit()), key=lambda p: int(p.name))

    def is_train_run(self) -> bool:
        """Whether the folder holds anything a train run writes first (its settings, summary or epochs)."""
        return any(path.exists() for path in (self.config, self.summary, self.epochs))

    def write_epoch_json(self, epoch: int, name: str, values: Any) -> None:
        """``epochs/<epoch>/<name>`` (``dynamics.json``, ``metrics.json``), atomically."""
        from iterit.storage import write_json

        write_json(self.epoch(epoch) / name, values)

    def write_epoch_table(self, epoch: int, stem: str, suffix: str, rows: list[dict[str, Any]],
                          metadata: dict[str, Any]) -> None:
        """``epochs/<epoch>/<stem><suffix>``, atomically, with ``metadata`` beside the rows."""
        from iterit.storage import write_table

        write_table(self.epoch_table(epoch, stem, suffix), rows, metadata=metadata)

    def write_summary(self, values: dict[str, Any]) -> None:
        """``summary.json``, atomically."""
        from iterit.storage import write_json

        write_json(self.summary, values)
# Entries whose presence means a run got past its start: results worth protecting.
FINISHED = ("epochs", "model", "checkpoints", "summary.json", "runs", "comparison.json")


def read_marker(folder: Path) -> dict[str, Any] | None:
    """The marker's content, or None where the folder has no (readable) marker."""
    try:
        content = json.loads((folder / MARKER).read_text(encoding="utf-8"))
    except (OSError, json.JSONDecodeError):
        return None
    return content if isinstance(content, dict) else None


def check_run_folder(folder: Path, settings: dict[str, Any], *, writes: Sequence[str], overwrite: bool = False) -> None:
    """Refuse ``folder`` unless it is missing, empty, unfinished, or an iterit run of the same ``settings``.

    Args:
        folder: the run folder (``--out``).
        settings: the settings that define the run, JSON values; compared key by key with the marker's.
        writes: the entries the run writes, named in the refusal so the user knows what ``--overwrite`` replaces.
        overwrite: ``--overwrite``: allow any folder (:func:`claim_run_folder` then replaces ``writes``).
    """
    folder = Path(folder)
    if overwrite or not folder.is_dir() or not any(folder.iterdir()):
        return
    marker = read_marker(folder)
    if marker is None:
        held = sorted(p.name for p in folder.iterdir())
        shown = ", ".join(held[:5]) + (f" and {len(held) - 5} more" if len(held) > 5 else "")
        raise IterITError(
            f"--out {folder}: not an iterit run folder and not empty (holds {shown}); choose a new or empty --out, "
            f"or pass --overwrite to replace only what iterit writes there ({', '.join(writes)})"
        )
    differing = settings_differ(marker.get("settings", {}), settings)
    if differing and _has_finished_work(folder):
        raise IterITError(
            f"--out {folder}: holds a run with other settings (differs in: {', '.join(differing)}); "
            "rerun with its settings to continue it, choose another --out, or pass --overwrite to replace it"
        )


def settings_differ(previous: dict[str, Any], current: dict[str, Any]) -> list[str]:
    """The keys whose values differ between two settings dicts, sorted."""
    return sorted(k for k in set(previous) | set(current) if previous.get(k) != current.get(k))


def _has_finished_work(folder: Path) -> bool:
    return any((folder / name).exists() for name in FINISHED)


def claim_run_folder(folder: Path, settings: dict[str, Any], *, writes: Sequence[str], overwrite: bool = False,
                     kind: str = "train") -> None:
    """Mark ``folder`` as this run's; with ``overwrite``, first remove the ``writes`` entries of another run.

    Entries of the same run (same settings: a rerun or a resume) are kept. Call after :func:`check_run_folder`
    and after the model and data have loaded, so a failed start leaves no marker behind.
    """
    from iterit.storage import write_json

    folder = Path(folder)
    marker = read_marker(folder) if folder.is_dir() else None
    same_run = marker is not None and not settings_differ(marker.get("settings", {}), settings)
    if overwrite and not same_run:
        replace_entries(folder, writes)
    folder.mkdir(parents=True, exist_ok=True)
    write_json(folder / MARKER, {"kind": kind, "settings": settings})


def replace_entries(folder: Path, writes: Sequence[str]) -> None:
    """Remove the entries iterit writes from ``folder`` (``--overwrite``), logging each; nothing else."""
    for name in writes:
        entry = folder / name
        if entry.is_dir() and not entry.is_symlink():
            shutil.rmtree(entry)
        elif entry.exists() or entry.is_symlink():
            entry.unlink()
        else:
            continue
        logger.warning("--overwrite: replaced %s", entry)

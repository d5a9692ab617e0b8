"""Atomic file writes and the two table formats (Parquet, JSON Lines) every output uses.

Nothing is ever half-written: each writer fills a temporary file beside the target and renames it,
so a killed run leaves either the old file or the new one.
"""

from __future__ import annotations

import json
import os
import tempfile
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from pathlib import Path
from typing import IO, Any

from iterit.errors import IterITError


@contextmanager
def atomic_path(path: str | os.PathLike) -> Iterator[Path]:
    """Yield a temporary path beside ``path``; on success it is renamed onto ``path``."""
    target = Path(path)
    target.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=f".{target.name}.", suffix=".tmp", dir=target.parent)
    os.close(fd)
    try:
        yield Path(tmp)
        os.replace(tmp, target)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise


@contextmanager
def atomic_open(path: str | os.PathLike, mode: str = "w", encoding: str | None = "utf-8") -> Iterator[IO]:
    """Open a temporary file for writing that replaces ``path`` only when the block succeeds."""
    with atomic_path(path) as tmp:
        with open(tmp, mode, encoding=None if "b" in mode else encoding) as handle:
            yield handle
            handle.flush()
            os.fsync(handle.fileno())


def write_json(path: str | os.PathLike, obj: Any) -> None:
    """Write one JSON document atomically."""
    with atomic_open(path) as handle:
        json.dump(obj, handle, indent=2, ensure_ascii=False, default=str)
        handle.write("\n")


def write_table(path: str | os.PathLike, rows: Sequence[dict[str, Any]], metadata: dict | None = None) -> None:
    """Write rows as Parquet or JSON Lines, by the file's suffix; ``metadata`` goes in the Parquet schema.

    JSON Lines has no header, so there ``metadata`` is written to ``<stem>.meta.json`` beside it.
    """
    target = Path(path)
    if target.suffix == ".parquet":
        import pyarrow as pa
        import pyarrow.parquet as pq

        table = pa.Table.from_pylist(list(rows))
        if metadata:
            table = table.replace_schema_metadata({"iterit": json.dumps(metadata, default=str)})
        with atomic_path(target) as tmp:
            pq.write_table(table, tmp)
        return
    if target.suffix != ".jsonl":
        raise IterITError(f"{target}: unknown table format '{target.suffix}'; use .parquet or .jsonl")
    with atomic_open(target) as handle:
        for row in rows:
            handle.write(json.dumps(row, ensure_ascii=False, default=str) + "\n")
    if metadata:
        write_json(target.with_suffix(".meta.json"), metadata)


def read_table(path: str | os.PathLike) -> tuple[list[dict[str, Any]], dict]:
    """Read a table written by :func:`write_table`: its rows and its metadata."""
    source = Path(path)
    if not source.exists():
        raise IterITError(f"{source}: no such file")
    if source.suffix == ".parquet":
        import pyarrow.parquet as pq

        table = pq.read_table(source)
        raw = (table.schema.metadata or {}).get(b"iterit")
        return table.to_pylist(), json.loads(raw) if raw else {}
    if source.suffix != ".jsonl":
        raise IterITError(f"{source}: unknown table format '{source.suffix}'; use .parquet or .jsonl")
    rows = []
    with open(source, encoding="utf-8") as handle:
        for number, line in enumerate(handle, start=1):
            if line.strip():
                try:
                    rows.append(json.loads(line))
                except json.JSONDecodeError as err:
                    raise IterITError(f"{source}:{number}: not valid JSON ({err.msg}); was the file cut short?") from None
    meta_path = source.with_suffix(".meta.json")
    meta = json.loads(meta_path.read_text()) if meta_path.exists() else {}
    return rows, meta


def check_writable(path: str | os.PathLike) -> None:
    """Fail early, before any long work, when an output cannot be written where the user asked."""
    target = Path(path)
    folder = target if target.suffix == "" else target.parent
    folder = folder.resolve()
    probe_dir = folder
    while not probe_dir.exists():
        probe_dir = probe_dir.parent
    if not probe_dir.is_dir():
        raise IterITError(f"{target}: '{probe_dir}' is a file, not a folder; choose another --out")
    if not os.access(probe_dir, os.W_OK):
        raise IterITError(f"{target}: cannot write to '{probe_dir}' (permission denied); choose another --out")
    free = _free_bytes(probe_dir)
    if free is not None and free < 16 * 1024 * 1024:
        raise IterITError(f"{target}: only {free // 1024} KiB free on the disk of '{probe_dir}'; free space or choose another --out")


def _free_bytes(folder: Path) -> int | None:
    try:
        stat = os.statvfs(folder)
    except OSError:
        return None
    return stat.f_bavail * stat.f_frsize

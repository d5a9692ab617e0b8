"""Read records out of files, each with the line (JSON, JSON Lines) or index (Parquet, datasets) it came from."""

from __future__ import annotations

import bisect
import gzip
import json
import logging
import re
from collections.abc import Iterator
from pathlib import Path
from typing import Any

from iterit.data.records import LoadSummary, note_invalid
from iterit.errors import IterITError

logger = logging.getLogger(__name__)


def has_lines(path: Path) -> bool:
    return path.is_file() and not path.name.endswith(".parquet")


def read_rows(path: Path, skip_invalid: bool, summary: LoadSummary, source: str) -> Iterator[tuple[int, Any]]:
    """Yield ``(origin, record)``: 1-based line for JSON Lines and JSON arrays, index for the rest.

    Python's JSON parser recurses once per nesting level, so a file of 100,000 ``[`` ends in a RecursionError;
    that is bad input like any other, told in one line.
    """
    try:
        yield from _read_rows(path, skip_invalid, summary, source)
    except RecursionError:
        raise IterITError(
            f"{path}: JSON nested too deeply to read (thousands of [ or {{ inside each other); "
            "fix or re-export the file"
        ) from None


def _read_rows(path: Path, skip_invalid: bool, summary: LoadSummary, source: str) -> Iterator[tuple[int, Any]]:
    if not path.exists():
        raise IterITError(f"{path}: no such file or folder; check --data")
    if path.is_dir():
        yield from _read_saved_dataset(path)
        return
    if path.name.endswith(".parquet"):
        yield from _read_parquet(path)
        return
    raw = _read_bytes(path)
    if not raw.strip():
        raise IterITError(f"{path}: the file is empty; give a file with at least one record")
    head = raw.lstrip(b"\xef\xbb\xbf \t\r\n")[:1]
    is_lines = path.name.endswith((".jsonl", ".jsonl.gz"))
    if head == b"[" and not is_lines:
        yield from _read_json_array(path, _decode(path, raw), skip_invalid, summary, source)
        return
    if head == b"{" and not is_lines:
        try:
            whole = json.loads(_decode(path, raw))
        except (json.JSONDecodeError, IterITError):
            whole = None  # more than one object: JSON Lines in a .json file
        if isinstance(whole, dict):
            raise IterITError(
                f"{path}: holds a single JSON object, not a list of records; wrap it in [ ] or use JSON Lines"
            )
    yield from _read_json_lines(path, raw, skip_invalid, summary, source)


def _read_bytes(path: Path) -> bytes:
    try:
        raw = gzip.open(path).read() if path.name.endswith(".gz") else path.read_bytes()
    except (OSError, EOFError) as err:
        raise IterITError(f"{path}: cannot be read ({err}); check the file") from None
    if b"\x00" in raw[:65536]:
        raise IterITError(
            f"{path}: binary content (NUL bytes), not a JSON/JSON Lines text file; check --data"
        )
    return raw


def _decode(path: Path, raw: bytes) -> str:
    try:
        text = raw.decode("utf-8")
    except UnicodeDecodeError as err:
        line = raw[: err.start].count(b"\n") + 1
        raise IterITError(
            f"{path}:{line}: invalid UTF-8 at byte {err.start}; re-encode the file as UTF-8"
        ) from None
    return text.removeprefix("\ufeff")


def _read_json_lines(
    path: Path, raw: bytes, skip_invalid: bool, summary: LoadSummary, source: str
) -> Iterator[tuple[int, Any]]:
    for number, line in enumerate(raw.removeprefix(b"\xef\xbb\xbf").split(b"\n"), start=1):
        if not line.strip():
            continue
        try:
            yield number, json.loads(line.decode("utf-8"))
        except (json.JSONDecodeError, UnicodeDecodeError) as err:
            detail = (
                f"invalid UTF-8 at byte {err.start}; re-encode the file as UTF-8"
                if isinstance(err, UnicodeDecodeError)
                else f"not valid JSON ({err.msg} at column {err.colno})"
            )
            if not skip_invalid:
                raise IterITError(f"{path}:{number}: {detail}; fix the line or pass --skip-invalid") from None
            note_invalid(
                summary,
                "not valid JSON" if isinstance(err, json.JSONDecodeError) else "invalid UTF-8",
                f"{path}:{number}: {detail}",
            )
            summary.invalid_reasons[f"_unparsed:{source}"] += 1


def _read_json_array(
    path: Path, text: str, skip_invalid: bool, summary: LoadSummary, source: str
) -> Iterator[tuple[int, Any]]:
    """Decode a JSON array element by element, so each record knows the line it starts on."""
    decoder = json.JSONDecoder()
    newlines = [m.start() for m in re.finditer("\n", text)]
    position = text.index("[") + 1
    expect_value = True
    while True:
        position = _skip_space(text, position)
        if position >= len(text):
            _array_cut_short(
                path, len(newlines) + 1, "the JSON array is not closed", skip_invalid, summary, source
            )
            return
        char = text[position]
        if char == "]":
            if _skip_space(text, position + 1) < len(text):
                line = bisect.bisect_left(newlines, position) + 1
                raise IterITError(
                    f"{path}:{line}: extra content after the JSON array; keep one array per file"
                )
            return
        if not expect_value:
            if char != ",":
                line = bisect.bisect_left(newlines, position) + 1
                raise IterITError(f"{path}:{line}: expected ',' or ']' between records; repair the JSON")
            position, expect_value = position + 1, True
            continue
        try:
            value, end = decoder.raw_decode(text, position)
        except json.JSONDecodeError as err:
            _array_cut_short(
                path,
                err.lineno,
                f"not valid JSON ({err.msg} at column {err.colno})",
                skip_invalid,
                summary,
                source,
            )
            return
        yield bisect.bisect_left(newlines, position) + 1, value
        position, expect_value = end, False


def _array_cut_short(
    path: Path, line: int, detail: str, skip_invalid: bool, summary: LoadSummary, source: str
) -> None:
    """A JSON array that breaks off: stop, or with skip_invalid keep the records before the break."""
    if not skip_invalid:
        raise IterITError(
            f"{path}:{line}: {detail} (file cut short?); repair or re-export the file, or pass --skip-invalid"
        )
    note_invalid(summary, "not valid JSON", f"{path}:{line}: {detail}; the rest of the file was not read")
    summary.invalid_reasons[f"_unparsed:{source}"] += 1


def _skip_space(text: str, position: int) -> int:
    while position < len(text) and text[position] in " \t\r\n":
        position += 1
    return position


def _read_parquet(path: Path) -> Iterator[tuple[int, Any]]:
    import pyarrow.parquet as pq

    try:
        table = pq.read_table(path)
    except Exception as err:  # pyarrow raises several types for a damaged file
        raise IterITError(f"{path}: not a readable Parquet file ({err}); re-export it") from None
    yield from enumerate(table.to_pylist())


def _read_saved_dataset(path: Path) -> Iterator[tuple[int, Any]]:
    if not (path / "dataset_info.json").exists() and not (path / "dataset_dict.json").exists():
        raise IterITError(
            f"{path}: a folder, but not one written by datasets' save_to_disk; pass a data file"
        )
    try:
        import datasets
    except ImportError:
        raise IterITError(
            "reading a save_to_disk folder needs the 'datasets' package: pip install datasets"
        ) from None
    dataset = datasets.load_from_disk(str(path))
    if isinstance(dataset, datasets.DatasetDict):
        if "train" not in dataset:
            raise IterITError(f"{path}: a DatasetDict without a 'train' split; save the split you want alone")
        dataset = dataset["train"]
    yield from enumerate(dataset)

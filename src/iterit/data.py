"""Read instruction data in the formats people have and normalise each record to one `Sample`.

Formats, detected from the content (``format=`` overrides):

- ``alpaca``: ``instruction``, optional ``input``, ``output`` (aliases: ``prompt``/``question``/``query`` for the
  instruction, ``context`` for the input, ``response``/``answer``/``completion`` for the output; Self-Instruct
  seed tasks with nested ``instances`` are flattened, one sample per instance).
- ``sharegpt``: ``conversations: [{from, value}]`` (``human``/``gpt``/``system``; ``function_call`` is an
  assistant turn and ``observation`` a tool turn, as in LLaMA-Factory's tool data).
- ``messages``: ``messages: [{role, content}]`` (OpenAI / Hugging Face chat format).
- ``hh``: Anthropic HH-RLHF transcripts (``chosen``: ``"\\n\\nHuman: ...\\n\\nAssistant: ..."``).

Files: ``.json`` (array), ``.jsonl`` (optionally ``.gz``), ``.parquet``, and folders written by
``datasets.Dataset.save_to_disk``. Every problem names the file and the line (JSON Lines, JSON arrays) or
record index (Parquet, datasets) and stops the load with :class:`IterITError`, unless ``skip_invalid`` is set,
in which case the bad rows are counted, with reasons, in the load summary. Nothing valid is dropped silently.
"""

from __future__ import annotations

import bisect
import gzip
import json
import logging
import re
from collections import Counter, defaultdict
from collections.abc import Iterator, Sequence
from dataclasses import dataclass, field
from itertools import combinations
from pathlib import Path
from typing import Any

import numpy as np

from iterit.errors import IterITError

logger = logging.getLogger(__name__)

FORMATS = ("alpaca", "sharegpt", "messages", "hh")

# Field names seen in public instruction data, in order of preference. A column mapping overrides them.
ALIASES: dict[str, tuple[str, ...]] = {
    "instruction": ("instruction", "prompt", "question", "query"),
    "input": ("input", "context"),
    "output": ("output", "response", "answer", "completion"),
    "system": ("system", "system_prompt"),
    "conversations": ("conversations",),
    "messages": ("messages",),
    "id": ("id",),
}
SHAREGPT_ROLES = {
    "human": "user",
    "user": "user",
    "gpt": "assistant",
    "assistant": "assistant",
    "model": "assistant",
    "chatgpt": "assistant",
    "bing": "assistant",
    "bard": "assistant",
    "function_call": "assistant",
    "observation": "tool",
    "tool": "tool",
    "function": "tool",
    "system": "system",
}
CHAT_ROLES = ("system", "user", "assistant", "tool", "function", "developer", "ipython")
GENERIC_STEMS = {"train", "test", "validation", "valid", "dev", "data", "dataset", "eval"}
HH_TURN = re.compile(r"\n\n(Human|Assistant):")


@dataclass(slots=True)
class Sample:
    """One training example, whatever file format it came from.

    Attributes:
        id: the record's own ``id`` if it has one, else ``<source>:<index>`` (0-based record number).
        messages: the conversation as ``{"role", "content"}`` dicts (HF chat format); the last is the
            assistant turn whose content is the response to score and train on.
        source: the file's stem (or the name the user gave it), so selections can be traced per source.
        format: ``alpaca``, ``sharegpt``, ``messages`` or ``hh``: how the record was read and is written back.
        origin: the 1-based line (JSON Lines) or 0-based index (JSON arrays, Parquet, datasets) in its file.
        record: the original record, unchanged, so a subset can be written in the user's own format.
    """

    id: str
    messages: list[dict[str, str]]
    source: str
    format: str
    origin: int
    record: dict[str, Any] = field(default_factory=dict)

    @property
    def response(self) -> str:
        """The text being scored: the last assistant turn."""
        return self.messages[-1]["content"]

    @property
    def prompt_messages(self) -> list[dict[str, str]]:
        """Everything before the response."""
        return self.messages[:-1]


@dataclass
class SourceSummary:
    """What was read from one file."""

    path: str
    source: str
    format: str
    records: int = 0
    samples: int = 0
    invalid: int = 0


@dataclass
class LoadSummary:
    """What a load found: per source counts, invalid rows and why, duplicates, response lengths."""

    sources: list[SourceSummary] = field(default_factory=list)
    invalid_reasons: Counter = field(default_factory=Counter)
    invalid_examples: list[str] = field(default_factory=list)
    duplicates: int = 0
    duplicates_removed: int = 0
    duplicate_pairs: dict[tuple[str, str], int] = field(default_factory=dict)
    prompt_overlap_pairs: dict[tuple[str, str], int] = field(default_factory=dict)
    response_chars: dict[str, float] = field(default_factory=dict)
    renamed_ids: int = 0

    @property
    def n_samples(self) -> int:
        return sum(s.samples for s in self.sources)

    @property
    def n_invalid(self) -> int:
        return sum(s.invalid for s in self.sources)

    def to_dict(self) -> dict[str, Any]:
        """A JSON-able view, for run folders and ``iterit inspect --json``."""
        return {
            "samples": self.n_samples,
            "invalid": self.n_invalid,
            "invalid_reasons": dict(self.invalid_reasons),
            "invalid_examples": self.invalid_examples,
            "duplicates": self.duplicates,
            "duplicates_removed": self.duplicates_removed,
            "duplicate_pairs": {f"{a} & {b}": n for (a, b), n in self.duplicate_pairs.items()},
            "prompt_overlap_pairs": {f"{a} & {b}": n for (a, b), n in self.prompt_overlap_pairs.items()},
            "response_chars": self.response_chars,
            "renamed_ids": self.renamed_ids,
            "sources": [vars(s) for s in self.sources],
        }

    def format(self) -> str:
        """The load summary as the CLI prints it."""
        lines = [f"{'source':<32} {'format':<9} {'records':>8} {'samples':>8} {'invalid':>8}"]
        for s in self.sources:
            lines.append(f"{s.source:<32} {s.format:<9} {s.records:>8} {s.samples:>8} {s.invalid:>8}")
        lines.append(f"{'total':<32} {'':<9} {sum(s.records for s in self.sources):>8} {self.n_samples:>8} {self.n_invalid:>8}")
        if self.n_invalid:
            why = ", ".join(f"{reason}: {n}" for reason, n in self.invalid_reasons.most_common())
            lines.append(f"skipped {self.n_invalid} invalid rows ({why}); first: " + "; ".join(self.invalid_examples[:3]))
        lines.append(
            f"exact duplicates (same conversation and response): {self.duplicates}"
            + (f", removed {self.duplicates_removed} (--dedup)" if self.duplicates_removed else " (kept; --dedup removes them)")
        )
        for (a, b), n in sorted(self.duplicate_pairs.items(), key=lambda kv: -kv[1]):
            lines.append(f"  shared exact samples  {a} & {b}: {n}")
        for (a, b), n in sorted(self.prompt_overlap_pairs.items(), key=lambda kv: -kv[1]):
            lines.append(f"  shared prompts        {a} & {b}: {n}")
        if self.response_chars:
            q = self.response_chars
            lines.append(
                "response length (chars): "
                + ", ".join(f"{k} {v:.0f}" for k, v in q.items())
            )
        if self.renamed_ids:
            lines.append(f"{self.renamed_ids} record ids repeated an earlier id and were prefixed with their source")
        return "\n".join(lines)


@dataclass
class LoadedData:
    """The samples of a load, in input order, and what the load found."""

    samples: list[Sample]
    summary: LoadSummary


class _RowError(Exception):
    """A problem with one row; becomes an IterITError with file:line, or a skipped row."""

    def __init__(self, reason: str, detail: str) -> None:
        super().__init__(detail)
        self.reason = reason
        self.detail = detail


def load_samples(
    paths: Sequence[str | Path],
    *,
    format: str | None = None,
    columns: dict[str, str] | str | None = None,
    system_prompt: str | None = None,
    skip_invalid: bool = False,
    dedup: bool = False,
    names: Sequence[str] | None = None,
) -> LoadedData:
    """Read every file, normalise each record to a :class:`Sample`, and summarise the load.

    Args:
        paths: data files (``.json``, ``.jsonl``, ``.jsonl.gz``, ``.parquet``) or ``save_to_disk`` folders.
        format: force ``alpaca``, ``sharegpt``, ``messages`` or ``hh`` instead of detecting it per file.
        columns: our field name -> the file's field name, e.g. ``{"instruction": "question"}`` or the
            string ``"instruction=question,output=answer"`` as typed on the command line.
        system_prompt: a system message added to every conversation that has none.
        skip_invalid: keep the valid rows and count the bad ones instead of stopping at the first.
        dedup: drop exact duplicates (same normalised conversation and response) after the first.
        names: source names for the files (default: each file's stem).
    """
    if not paths:
        raise IterITError("no data given; pass --data FILE (JSON, JSON Lines, Parquet or a save_to_disk folder)")
    if format is not None and format not in FORMATS:
        raise IterITError(f"--format {format!r} is not known; use one of {', '.join(FORMATS)}")
    mapping = parse_columns(columns)
    summary = LoadSummary()
    samples: list[Sample] = []
    taken_names: set[str] = set()
    for number, path in enumerate(paths):
        source = names[number] if names else _unique_name(source_name(Path(path)), taken_names)
        taken_names.add(source)
        samples.extend(_load_file(Path(path), source, format, mapping, system_prompt, skip_invalid, summary))
    summary.renamed_ids = _make_ids_unique(samples)
    samples = _count_duplicates(samples, summary, dedup)
    if samples:
        lengths = np.array([len(s.response) for s in samples])
        summary.response_chars = {f"p{q}": float(np.percentile(lengths, q)) for q in (5, 25, 50, 75, 95)}
        summary.response_chars["mean"] = float(lengths.mean())
    return LoadedData(samples, summary)


def parse_columns(columns: dict[str, str] | str | None) -> dict[str, str]:
    """Read a column mapping (``instruction=question,output=answer``), checking our side's names."""
    if not columns:
        return {}
    if isinstance(columns, str):
        pairs = [item.split("=", 1) for item in columns.split(",") if item.strip()]
        if any(len(pair) != 2 for pair in pairs):
            raise IterITError(f"--columns {columns!r}: expected ours=theirs pairs, e.g. instruction=question,output=answer")
        columns = {ours.strip(): theirs.strip() for ours, theirs in pairs}
    unknown = sorted(set(columns) - set(ALIASES))
    if unknown:
        raise IterITError(f"--columns: unknown field(s) {', '.join(unknown)}; map any of {', '.join(ALIASES)}")
    return dict(columns)


def source_name(path: Path) -> str:
    """A file's source tag: its name without data suffixes (``a.jsonl.gz`` -> ``a``)."""
    name = path.name
    for suffix in (".gz", ".jsonl", ".json", ".parquet"):
        name = name.removesuffix(suffix)
    if name.lower() in GENERIC_STEMS and path.resolve().parent.name:
        name = f"{path.resolve().parent.name}-{name}"  # gsm8k/train.jsonl -> gsm8k-train
    return name or path.name


def _unique_name(name: str, taken: set[str]) -> str:
    candidate, number = name, 2
    while candidate in taken:
        candidate, number = f"{name}-{number}", number + 1
    return candidate


def _load_file(
    path: Path,
    source: str,
    forced: str | None,
    mapping: dict[str, str],
    system_prompt: str | None,
    skip_invalid: bool,
    summary: LoadSummary,
) -> list[Sample]:
    rows = list(_read_rows(path, skip_invalid, summary, source))
    fmt = forced or _detect_format([row for _, row in rows if isinstance(row, dict)], mapping, path)
    stats = SourceSummary(path=str(path), source=source, format=fmt, records=len(rows))
    samples: list[Sample] = []
    for origin, row in rows:
        try:
            samples.extend(_normalise(row, fmt, mapping, source, origin, system_prompt))
        except _RowError as err:
            where = f"{path}:{origin}" if _has_lines(path) else f"{path}: record {origin}"
            if not skip_invalid:
                raise IterITError(f"{where}: {err.detail}; fix the row or pass --skip-invalid to skip bad rows") from None
            _note_invalid(summary, err.reason, f"{where}: {err.detail}")
            stats.invalid += 1
    stats.invalid += summary.invalid_reasons.get(f"_unparsed:{source}", 0)
    summary.invalid_reasons.pop(f"_unparsed:{source}", None)
    stats.samples = len(samples)
    summary.sources.append(stats)
    if not rows and stats.invalid == 0:
        raise IterITError(f"{path}: the file holds no records; check the path or remove it from --data")
    return samples


def _note_invalid(summary: LoadSummary, reason: str, example: str) -> None:
    summary.invalid_reasons[reason] += 1
    if len(summary.invalid_examples) < 5:
        summary.invalid_examples.append(example)


def _has_lines(path: Path) -> bool:
    return path.is_file() and not path.name.endswith(".parquet")


def _read_rows(path: Path, skip_invalid: bool, summary: LoadSummary, source: str) -> Iterator[tuple[int, Any]]:
    """Yield ``(origin, record)``: 1-based line for JSON Lines and JSON arrays, index for the rest."""
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
            raise IterITError(f"{path}: holds a single JSON object, not a list of records; wrap it in [ ] or use JSON Lines")
    yield from _read_json_lines(path, raw, skip_invalid, summary, source)


def _read_bytes(path: Path) -> bytes:
    try:
        raw = gzip.open(path).read() if path.name.endswith(".gz") else path.read_bytes()
    except (OSError, EOFError) as err:
        raise IterITError(f"{path}: cannot be read ({err}); check the file") from None
    if b"\x00" in raw[:65536]:
        raise IterITError(f"{path}: binary content (NUL bytes), not a JSON/JSON Lines text file; check --data")
    return raw


def _decode(path: Path, raw: bytes) -> str:
    try:
        text = raw.decode("utf-8")
    except UnicodeDecodeError as err:
        line = raw[: err.start].count(b"\n") + 1
        raise IterITError(f"{path}:{line}: invalid UTF-8 at byte {err.start}; re-encode the file as UTF-8") from None
    return text.removeprefix("\ufeff")


def _read_json_lines(path: Path, raw: bytes, skip_invalid: bool, summary: LoadSummary, source: str) -> Iterator[tuple[int, Any]]:
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
            _note_invalid(summary, "not valid JSON" if isinstance(err, json.JSONDecodeError) else "invalid UTF-8", f"{path}:{number}: {detail}")
            summary.invalid_reasons[f"_unparsed:{source}"] += 1


def _read_json_array(path: Path, text: str, skip_invalid: bool, summary: LoadSummary, source: str) -> Iterator[tuple[int, Any]]:
    """Decode a JSON array element by element, so each record knows the line it starts on."""
    decoder = json.JSONDecoder()
    newlines = [m.start() for m in re.finditer("\n", text)]
    position = text.index("[") + 1
    expect_value = True
    while True:
        position = _skip_space(text, position)
        if position >= len(text):
            _array_cut_short(path, len(newlines) + 1, "the JSON array is not closed", skip_invalid, summary, source)
            return
        char = text[position]
        if char == "]":
            if _skip_space(text, position + 1) < len(text):
                line = bisect.bisect_left(newlines, position) + 1
                raise IterITError(f"{path}:{line}: extra content after the JSON array; keep one array per file")
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
            _array_cut_short(path, err.lineno, f"not valid JSON ({err.msg} at column {err.colno})", skip_invalid, summary, source)
            return
        yield bisect.bisect_left(newlines, position) + 1, value
        position, expect_value = end, False


def _array_cut_short(path: Path, line: int, detail: str, skip_invalid: bool, summary: LoadSummary, source: str) -> None:
    """A JSON array that breaks off: stop, or with skip_invalid keep the records before the break."""
    if not skip_invalid:
        raise IterITError(f"{path}:{line}: {detail} (file cut short?); repair or re-export the file, or pass --skip-invalid")
    _note_invalid(summary, "not valid JSON", f"{path}:{line}: {detail}; the rest of the file was not read")
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
        raise IterITError(f"{path}: a folder, but not one written by datasets' save_to_disk; pass a data file")
    try:
        import datasets
    except ImportError:
        raise IterITError("reading a save_to_disk folder needs the 'datasets' package: pip install datasets") from None
    dataset = datasets.load_from_disk(str(path))
    if isinstance(dataset, datasets.DatasetDict):
        if "train" not in dataset:
            raise IterITError(f"{path}: a DatasetDict without a 'train' split; save the split you want alone")
        dataset = dataset["train"]
    yield from enumerate(dataset)


def _field(row: dict, name: str, mapping: dict[str, str]) -> str | None:
    """The file's key for one of our fields: the user's mapping first, then the known aliases."""
    if name in mapping:
        return mapping[name] if mapping[name] in row else None
    return next((key for key in ALIASES[name] if key in row), None)


def _detect_format(rows: list[dict], mapping: dict[str, str], path: Path) -> str:
    """The format most of the first records look like (a stray record of another kind is then invalid)."""
    votes = Counter(_guess_format(row, mapping) for row in rows[:1000])
    votes.pop(None, None)
    if not votes:
        keys = sorted({key for row in rows[:20] for key in row})[:8]
        raise IterITError(
            f"{path}: cannot tell the format from the fields {keys}; "
            "map them with --columns instruction=...,output=... or pass --format"
        )
    return votes.most_common(1)[0][0]


def _guess_format(row: dict, mapping: dict[str, str]) -> str | None:
    if _field(row, "messages", mapping):
        return "messages"
    if _field(row, "conversations", mapping):
        return "sharegpt"
    if "chosen" in row and isinstance(row.get("chosen"), str) and "\n\nAssistant:" in row["chosen"]:
        return "hh"
    if _field(row, "instruction", mapping) and (_field(row, "output", mapping) or "instances" in row):
        return "alpaca"
    return None


def _normalise(
    row: Any, fmt: str, mapping: dict[str, str], source: str, origin: int, system_prompt: str | None
) -> list[Sample]:
    if not isinstance(row, dict):
        raise _RowError("not an object", f"expected a JSON object, got {type(row).__name__}")
    guessed = _guess_format(row, mapping)
    if guessed is not None and guessed != fmt:
        raise _RowError("mixed formats", f"a {guessed} record in a file of {fmt} records; keep one format per file")
    if fmt == "alpaca" and "instances" in row and not _field(row, "output", mapping):
        return _self_instruct_samples(row, mapping, source, origin, system_prompt)
    messages = {"alpaca": _alpaca_messages, "sharegpt": _sharegpt_messages, "messages": _chat_messages, "hh": _hh_messages}[
        fmt
    ](row, mapping)
    _check_conversation(messages)
    if system_prompt and messages[0]["role"] != "system":
        messages.insert(0, {"role": "system", "content": system_prompt})
    own_id = row.get(_field(row, "id", mapping) or "id")
    sample_id = str(own_id) if isinstance(own_id, (str, int)) and str(own_id) else ""
    return [Sample(id=sample_id, messages=messages, source=source, format=fmt, origin=origin, record=row)]


def _text(row: dict, name: str, mapping: dict[str, str], *, required: bool) -> str:
    key = _field(row, name, mapping)
    if key is None:
        if required:
            raise _RowError(f"missing {name}", f"no '{name}' field (nor an alias: {', '.join(ALIASES[name])})")
        return ""
    value = row[key]
    if value is None:
        if required:
            raise _RowError(f"null {name}", f"'{key}' is null")
        return ""
    if not isinstance(value, str):
        raise _RowError(f"{name} not a string", f"'{key}' should be a string, got {type(value).__name__}")
    return value


def _alpaca_messages(row: dict, mapping: dict[str, str]) -> list[dict[str, str]]:
    instruction = _text(row, "instruction", mapping, required=True)
    extra = _text(row, "input", mapping, required=False)
    output = _text(row, "output", mapping, required=True)
    system = _text(row, "system", mapping, required=False)
    user = instruction if not extra.strip() else f"{instruction}\n\n{extra}"
    messages = [{"role": "system", "content": system}] if system.strip() else []
    return messages + [{"role": "user", "content": user}, {"role": "assistant", "content": output}]


def _self_instruct_samples(
    row: dict, mapping: dict[str, str], source: str, origin: int, system_prompt: str | None
) -> list[Sample]:
    """Self-Instruct seed tasks: one sample per instance, ids ``<task id>#<k>`` after the first."""
    instances = row["instances"]
    if not isinstance(instances, list) or not instances:
        raise _RowError("bad instances", "'instances' should be a non-empty list of {input, output}")
    samples = []
    for k, instance in enumerate(instances):
        if not isinstance(instance, dict):
            raise _RowError("bad instances", f"instance {k} is not an object")
        flat = {"instruction": row.get(_field(row, "instruction", mapping) or "instruction"), **instance}
        if "id" in row:
            flat["id"] = f"{row['id']}#{k}" if k else row["id"]
        samples.extend(_normalise(flat, "alpaca", {}, source, origin, system_prompt))
    return samples


def _sharegpt_messages(row: dict, mapping: dict[str, str]) -> list[dict[str, str]]:
    turns = row[_field(row, "conversations", mapping)]
    if not isinstance(turns, list) or not turns:
        raise _RowError("bad conversations", "'conversations' should be a non-empty list of {from, value}")
    messages = []
    for k, turn in enumerate(turns):
        if not isinstance(turn, dict) or "from" not in turn or "value" not in turn:
            raise _RowError("bad conversations", f"turn {k} should be an object with 'from' and 'value'")
        role = SHAREGPT_ROLES.get(str(turn["from"]).lower())
        if role is None:
            raise _RowError("unknown role", f"turn {k} has an unknown speaker {turn['from']!r}")
        if not isinstance(turn["value"], str):
            raise _RowError("content not a string", f"turn {k}'s 'value' should be a string")
        messages.append({"role": role, "content": turn["value"]})
    if isinstance(row.get("system"), str) and row["system"].strip() and messages[0]["role"] != "system":
        messages.insert(0, {"role": "system", "content": row["system"]})
    return messages


def _chat_messages(row: dict, mapping: dict[str, str]) -> list[dict[str, str]]:
    turns = row[_field(row, "messages", mapping)]
    if not isinstance(turns, list) or not turns:
        raise _RowError("bad messages", "'messages' should be a non-empty list of {role, content}")
    messages = []
    for k, turn in enumerate(turns):
        if not isinstance(turn, dict) or "role" not in turn or "content" not in turn:
            raise _RowError("bad messages", f"message {k} should be an object with 'role' and 'content'")
        if turn["role"] not in CHAT_ROLES:
            raise _RowError("unknown role", f"message {k} has an unknown role {turn['role']!r}")
        if not isinstance(turn["content"], str):
            raise _RowError("content not a string", f"message {k}'s 'content' should be a string")
        messages.append({"role": turn["role"], "content": turn["content"]})
    return messages


def _hh_messages(row: dict, mapping: dict[str, str]) -> list[dict[str, str]]:
    transcript = row.get("chosen")
    if not isinstance(transcript, str):
        raise _RowError("bad transcript", "'chosen' should be a Human/Assistant transcript string")
    parts = HH_TURN.split(transcript)
    messages = [
        {"role": "user" if speaker == "Human" else "assistant", "content": text.strip()}
        for speaker, text in zip(parts[1::2], parts[2::2])
    ]
    if not messages:
        raise _RowError("bad transcript", "no '\\n\\nHuman:' / '\\n\\nAssistant:' turns in 'chosen'")
    return messages


def _check_conversation(messages: list[dict[str, str]]) -> None:
    if messages[-1]["role"] != "assistant":
        raise _RowError("does not end with the assistant", "the conversation does not end with an assistant turn")
    if not messages[-1]["content"].strip():
        raise _RowError("empty response", "the response (last assistant turn) is empty")
    if not any(m["role"] == "user" for m in messages[:-1]):
        raise _RowError("no user turn", "no user turn before the response")


def _make_ids_unique(samples: list[Sample]) -> int:
    """Give records without an id ``<source>:<index>``; prefix repeated ids with their source."""
    seen: set[str] = set()
    index_in_source: Counter = Counter()
    renamed = 0
    for sample in samples:
        index = index_in_source[sample.source]
        index_in_source[sample.source] += 1
        if not sample.id:
            sample.id = f"{sample.source}:{index}"
        if sample.id in seen:
            renamed += 1
            sample.id = f"{sample.source}:{sample.id}"
            if sample.id in seen:
                sample.id = f"{sample.source}:{index}"
        seen.add(sample.id)
    return renamed


def conversation_key(messages: Sequence[dict[str, str]]) -> str:
    """The normalised conversation used to detect exact duplicates: roles and whitespace-folded text."""
    return "\x1e".join(f"{m['role']}\x1f{' '.join(m['content'].split())}" for m in messages)


def _count_duplicates(samples: list[Sample], summary: LoadSummary, dedup: bool) -> list[Sample]:
    first_source: dict[str, str] = {}
    kept: list[Sample] = []
    pairs: Counter = Counter()
    prompt_sources: dict[str, set[str]] = defaultdict(set)
    for sample in samples:
        key = conversation_key(sample.messages)
        prompt_sources[conversation_key(sample.prompt_messages)].add(sample.source)
        if key in first_source:
            summary.duplicates += 1
            if first_source[key] != sample.source:
                pairs[tuple(sorted((first_source[key], sample.source)))] += 1
            if dedup:
                summary.duplicates_removed += 1
                continue
        else:
            first_source[key] = sample.source
        kept.append(sample)
    summary.duplicate_pairs = dict(pairs)
    overlaps: Counter = Counter()
    for sources in prompt_sources.values():
        for a, b in combinations(sorted(sources), 2):
            overlaps[(a, b)] += 1
    summary.prompt_overlap_pairs = dict(overlaps)
    return kept


def sample_to_messages_record(sample: Sample) -> dict[str, Any]:
    """A record in the chat-messages format, which every format converts to without loss."""
    return {"id": sample.id, "messages": sample.messages}


def write_samples(samples: Sequence[Sample], path: str | Path) -> None:
    """Write samples back as their original records, in the file type of ``path`` (atomically).

    Samples of one format keep their records unchanged, so a subset can be trained on with the tools the
    user already has. Samples merged from several formats are written as chat ``messages`` records.
    """
    from iterit.storage import atomic_open, atomic_path

    target = Path(path)
    formats = {s.format for s in samples}
    same = len(formats) <= 1 and not any("instances" in s.record for s in samples)
    if not same:
        logger.warning("samples come from several formats (%s); writing chat 'messages' records", ", ".join(sorted(formats)))
    records = [dict(s.record) if same else sample_to_messages_record(s) for s in samples]
    if target.name.endswith(".parquet"):
        import pyarrow as pa
        import pyarrow.parquet as pq

        with atomic_path(target) as tmp:
            pq.write_table(pa.Table.from_pylist(records), tmp)
    elif target.name.endswith(".jsonl"):
        with atomic_open(target) as handle:
            for record in records:
                handle.write(json.dumps(record, ensure_ascii=False) + "\n")
    elif target.name.endswith(".json"):
        with atomic_open(target) as handle:
            json.dump(records, handle, ensure_ascii=False, indent=1)
            handle.write("\n")
    else:
        raise IterITError(f"{target}: unknown output type; use .jsonl, .json or .parquet")

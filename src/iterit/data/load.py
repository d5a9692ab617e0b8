"""Load data files into samples (ids made unique, duplicates counted) and write subsets back in the user's format."""

from __future__ import annotations

import json
import logging
from collections import Counter, defaultdict
from collections.abc import Sequence
from itertools import combinations
from pathlib import Path
from typing import Any

import numpy as np

from iterit.data.files import has_lines, read_rows
from iterit.data.formats import ALIASES, FORMATS, INPUT_JOINS, detect_format, normalise
from iterit.data.records import LoadedData, LoadSummary, RowError, Sample, SourceSummary, note_invalid
from iterit.errors import IterITError

logger = logging.getLogger(__name__)

GENERIC_STEMS = {"train", "test", "validation", "valid", "dev", "data", "dataset", "eval"}


def load_samples(
    paths: Sequence[str | Path | Any],
    *,
    format: str | None = None,
    columns: dict[str, str] | str | None = None,
    system_prompt: str | None = None,
    skip_invalid: bool = False,
    dedup: bool = False,
    names: Sequence[str] | None = None,
    input_join: str = "blank-line",
) -> LoadedData:
    """Read every file, normalise each record to a :class:`Sample`, and summarise the load.

    Args:
        paths: data files (``.json``, ``.jsonl``, ``.jsonl.gz``, ``.parquet``), ``save_to_disk`` folders, or
            ``datasets.Dataset`` objects (source name: the dataset's own name, else ``dataset``).
        format: force ``alpaca``, ``sharegpt``, ``messages`` or ``hh`` instead of detecting it per file.
        columns: our field name -> the file's field name, e.g. ``{"instruction": "question"}`` or the
            string ``"instruction=question,output=answer"`` as typed on the command line.
        system_prompt: a system message added to every conversation that has none.
        skip_invalid: keep the valid rows and count the bad ones instead of stopping at the first.
        dedup: drop exact duplicates (same normalised conversation and response) after the first.
        names: source names for the files (default: each file's stem).
        input_join: how an Alpaca record's input follows its instruction in the user turn: ``blank-line``
            (``instruction\n\ninput``) or ``reference`` (``instruction\nInput: input``, as the IterIT code does).
    """
    if not paths:
        raise IterITError(
            "no data given; pass --data FILE (JSON, JSON Lines, Parquet or a save_to_disk folder)"
        )
    if format is not None and format not in FORMATS:
        raise IterITError(f"--format {format!r} is not known; use one of {', '.join(FORMATS)}")
    if input_join not in INPUT_JOINS:
        raise IterITError(f"--input-join {input_join!r}: not one of {', '.join(INPUT_JOINS)}")
    mapping = parse_columns(columns)
    summary = LoadSummary()
    samples: list[Sample] = []
    taken_names: set[str] = set()
    for number, path in enumerate(paths):
        where = path if _is_dataset(path) else Path(path)
        source = names[number] if names else _unique_name(_source_of(where), taken_names)
        taken_names.add(source)
        samples.extend(_load_file(where, source, format, mapping, system_prompt, skip_invalid, summary,
                                  input_join))
    summary.renamed_ids = _make_ids_unique(samples)
    samples = _count_duplicates(samples, summary, dedup)
    if samples:
        lengths = np.array([len(s.response) for s in samples])
        summary.response_chars = {f"p{q}": float(np.percentile(lengths, q)) for q in (5, 25, 50, 75, 95)}
        summary.response_chars["mean"] = float(lengths.mean())
    return LoadedData(samples, summary)


def as_samples(data: Sequence[Sample] | Any, columns: dict[str, str] | str | None = None) -> list[Sample]:
    """``data`` as samples: a ``datasets.Dataset`` is read row by row (``columns`` maps its field names, as
    ``--columns`` does), anything else is taken to be samples already. Row ``i`` becomes ``samples[i]``."""
    if _is_dataset(data):
        return load_samples([data], columns=columns).samples
    if columns:
        raise IterITError("columns= maps the fields of a datasets.Dataset; these are samples already")
    return list(data)


def _is_dataset(data: Any) -> bool:
    """A ``datasets.Dataset`` (checked by name, so that files-only users never import datasets)."""
    return any(cls.__name__ == "Dataset" and cls.__module__.startswith("datasets") for cls in type(data).__mro__)


def _source_of(where: Path | Any) -> str:
    if isinstance(where, Path):
        return source_name(where)
    return getattr(where.info, "dataset_name", None) or "dataset"


def parse_columns(columns: dict[str, str] | str | None) -> dict[str, str]:
    """Read a column mapping (``instruction=question,output=answer``), checking our side's names."""
    if not columns:
        return {}
    if isinstance(columns, str):
        pairs = [item.split("=", 1) for item in columns.split(",") if item.strip()]
        if any(len(pair) != 2 for pair in pairs):
            raise IterITError(
                f"--columns {columns!r}: expected ours=theirs pairs, e.g. instruction=question,output=answer"
            )
        columns = {ours.strip(): theirs.strip() for ours, theirs in pairs}
    unknown = sorted(set(columns) - set(ALIASES))
    if unknown:
        raise IterITError(
            f"--columns: unknown field(s) {', '.join(unknown)}; map any of {', '.join(ALIASES)}"
        )
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
    path: Path | Any,
    source: str,
    forced: str | None,
    mapping: dict[str, str],
    system_prompt: str | None,
    skip_invalid: bool,
    summary: LoadSummary,
    input_join: str = "blank-line",
) -> list[Sample]:
    from_file = isinstance(path, Path)
    rows = list(read_rows(path, skip_invalid, summary, source) if from_file else enumerate(path))
    if not from_file:
        path = f"the datasets.Dataset '{source}'"
    fmt = forced or detect_format([row for _, row in rows if isinstance(row, dict)], mapping, path)
    stats = SourceSummary(path=str(path), source=source, format=fmt, records=len(rows))
    samples: list[Sample] = []
    for origin, row in rows:
        try:
            samples.extend(normalise(row, fmt, mapping, source, origin, system_prompt, input_join))
        except RowError as err:
            where = f"{path}:{origin}" if from_file and has_lines(path) else f"{path}: record {origin}"
            if not skip_invalid:
                raise IterITError(
                    f"{where}: {err.detail}; fix the row or pass --skip-invalid to skip bad rows"
                ) from None
            note_invalid(summary, err.reason, f"{where}: {err.detail}")
            stats.invalid += 1
    stats.invalid += summary.invalid_reasons.get(f"_unparsed:{source}", 0)
    summary.invalid_reasons.pop(f"_unparsed:{source}", None)
    stats.samples = len(samples)
    summary.sources.append(stats)
    if not rows and stats.invalid == 0:
        raise IterITError(f"{path}: the file holds no records; check the path or remove it from --data")
    return samples


def _make_ids_unique(samples: list[Sample]) -> int:
    """Give records without an id ``<source>:<index>``; prefix repeated ids with their source.

    Every explicit id is reserved first, so a generated id never takes one that a later record names
    itself; a generated id that is taken gets the first free suffix ``~2``, ``~3``, ... Returns how many
    repeated explicit ids were renamed.
    """
    reserved = {sample.id for sample in samples if sample.id}
    seen: set[str] = set()
    index_in_source: Counter = Counter()
    renamed = 0
    for sample in samples:
        index = index_in_source[sample.source]
        index_in_source[sample.source] += 1
        if sample.id and sample.id not in seen:
            seen.add(sample.id)
            continue
        renamed += bool(sample.id)
        base = f"{sample.source}:{sample.id}" if sample.id else f"{sample.source}:{index}"
        sample.id = _free_id(base, seen, reserved)
        seen.add(sample.id)
    return renamed


def _free_id(base: str, seen: set[str], reserved: set[str]) -> str:
    """``base``, or ``base~2``, ``base~3``, ...: the first that no record has or names."""
    candidate, number = base, 2
    while candidate in seen or candidate in reserved:
        candidate, number = f"{base}~{number}", number + 1
    return candidate


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


def samples_to_records(samples: Sequence[Sample]) -> list[dict[str, Any]]:
    """The samples' original records when they share one format, else chat ``messages`` records."""
    formats = {s.format for s in samples}
    same = len(formats) <= 1 and not any("instances" in s.record for s in samples)
    if not same:
        logger.warning(
            "samples come from several formats (%s); writing chat 'messages' records",
            ", ".join(sorted(formats)),
        )
    return [dict(s.record) if same else sample_to_messages_record(s) for s in samples]


def samples_to_dataset(samples: Sequence[Sample]) -> Any:
    """The samples' records (:func:`samples_to_records`) as a ``datasets.Dataset``, in order."""
    import datasets

    return datasets.Dataset.from_list(samples_to_records(samples))


def write_samples(samples: Sequence[Sample], path: str | Path) -> None:
    """Write samples back as their original records, in the file type of ``path`` (atomically).

    Samples of one format keep their records unchanged, so a subset can be trained on with the tools the
    user already has. Samples merged from several formats are written as chat ``messages`` records. A path
    without a suffix is a ``datasets`` ``save_to_disk`` folder (``datasets.load_from_disk`` reads it).
    """
    from iterit.storage import atomic_open, atomic_path

    target = Path(path)
    records = samples_to_records(samples)
    if target.suffix == "":
        _save_to_disk(records, target)
    elif target.name.endswith(".parquet"):
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
        raise IterITError(f"{target}: unknown output type; use .jsonl, .json, .parquet or a folder name (save_to_disk)")


def _save_to_disk(records: list[dict[str, Any]], folder: Path) -> None:
    """``save_to_disk`` into a temporary folder beside ``folder``, then swap it in (never half-written)."""
    import shutil
    import tempfile

    import datasets

    if folder.exists() and not (folder / "dataset_info.json").exists():
        raise IterITError(f"{folder}: exists and is not a save_to_disk folder; choose another --out")
    folder.parent.mkdir(parents=True, exist_ok=True)
    scratch = Path(tempfile.mkdtemp(prefix=f".{folder.name}.", dir=folder.parent))
    try:
        datasets.Dataset.from_list(records).save_to_disk(str(scratch / "dataset"))
        if folder.exists():
            shutil.rmtree(folder)
        (scratch / "dataset").rename(folder)
    finally:
        shutil.rmtree(scratch, ignore_errors=True)

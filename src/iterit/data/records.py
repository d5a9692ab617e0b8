"""What a load produces: `Sample` (one normalised training example) and the load's summary."""

from __future__ import annotations

import logging
from collections import Counter
from dataclasses import dataclass, field
from typing import Any

logger = logging.getLogger(__name__)


@dataclass(slots=True)
class Sample:
    """One training example, whatever file format it came from.

    Attributes:
        id: the record's own ``id`` if it has one, else ``<source>:<index>`` (0-based record number), with a
            ``~2``, ``~3``... suffix where another record already has or names that id.
        messages: the conversation as ``{"role", "content"}`` dicts (HF chat format); the last is the
            assistant turn whose content is the response to score and train on.
        source: the file's stem (or the name the user gave it), so selections can be traced per source.
        format: ``alpaca``, ``sharegpt``, ``messages`` or ``hh``: how the record was read and is written back.
        origin: the 1-based line (JSON Lines) or 0-based index (JSON arrays, Parquet, datasets) in its file.
        record: the original record, unchanged, so a subset can be written in the user's own format.
        alpaca_fields: ``(instruction, input)`` of an Alpaca record with a non-empty input, so the built-in
            Alpaca prompt can render its canonical ``### Input:`` block; ``None`` otherwise.
    """

    id: str
    messages: list[dict[str, str]]
    source: str
    format: str
    origin: int
    record: dict[str, Any] = field(default_factory=dict)
    alpaca_fields: tuple[str, str] | None = None

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
        lines.append(
            f"{'total':<32} {'':<9} {sum(s.records for s in self.sources):>8} {self.n_samples:>8} {self.n_invalid:>8}"
        )
        if self.n_invalid:
            why = ", ".join(f"{reason}: {n}" for reason, n in self.invalid_reasons.most_common())
            lines.append(
                f"skipped {self.n_invalid} invalid rows ({why}); first: "
                + "; ".join(self.invalid_examples[:3])
            )
        lines.append(
            f"exact duplicates (same conversation and response): {self.duplicates}"
            + (
                f", removed {self.duplicates_removed} (--dedup)"
                if self.duplicates_removed
                else " (kept; --dedup removes them)"
            )
        )
        for (a, b), n in sorted(self.duplicate_pairs.items(), key=lambda kv: -kv[1]):
            lines.append(f"  shared exact samples  {a} & {b}: {n}")
        for (a, b), n in sorted(self.prompt_overlap_pairs.items(), key=lambda kv: -kv[1]):
            lines.append(f"  shared prompts        {a} & {b}: {n}")
        if self.response_chars:
            q = self.response_chars
            lines.append("response length (chars): " + ", ".join(f"{k} {v:.0f}" for k, v in q.items()))
        if self.renamed_ids:
            lines.append(
                f"{self.renamed_ids} record ids repeated an earlier id and were prefixed with their source"
            )
        return "\n".join(lines)


@dataclass
class LoadedData:
    """The samples of a load, in input order, and what the load found."""

    samples: list[Sample]
    summary: LoadSummary


class RowError(Exception):
    """A problem with one row; becomes an IterITError with file:line, or a skipped row."""

    def __init__(self, reason: str, detail: str) -> None:
        super().__init__(detail)
        self.reason = reason
        self.detail = detail


def note_invalid(summary: LoadSummary, reason: str, example: str) -> None:
    summary.invalid_reasons[reason] += 1
    if len(summary.invalid_examples) < 5:
        summary.invalid_examples.append(example)

"""The IFD score table: one row per sample, its summary, and its files (Parquet or JSON Lines)."""

from __future__ import annotations

import math
import os
import re
from collections import Counter
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from iterit.errors import IterITError

# When most prompts do not help the model predict their responses, IFD < 1 keeps mostly the samples whose long
# responses barely depend on the prompt (the demo shows this on a base model that never saw the chat format).
MOSTLY_UNHELPFUL = 0.5
UNHELPFUL_PROMPTS_HINT = (
    "warning: for most samples the prompt makes the response harder to predict, so the IFD < 1 filter would drop "
    "most of the data; this model may not know the chat template yet: check --template, fine-tune an epoch on a "
    "random subset first, or raise --threshold"
)


@dataclass
class ScoreTable:
    """IFD scores, one row per sample, in input order. Missing scores are NaN with a ``reason``.

    ``ifd = exp(loss_cond - loss_prior)`` = PPL(response | prompt) / PPL(response). Stored as float64
    (never bf16: the reference's bf16 storage tied rankings and rounded values near 1 up to 1).
    ``stats`` (added, defaults empty) holds how the table was computed: seconds, tokens, padding share.
    """

    ids: list[str]
    sources: list[str]
    ifd: np.ndarray  # float64, NaN = no score
    loss_cond: np.ndarray  # float64
    loss_prior: np.ndarray  # float64
    n_response_tokens: np.ndarray  # int64
    truncated: np.ndarray  # bool
    reasons: list[str | None]
    stats: dict = field(default_factory=dict)

    def __len__(self) -> int:
        return len(self.ids)

    def take(self, rows: Sequence[int] | np.ndarray) -> ScoreTable:
        """A new table of the rows ``rows``, in that order (arrays copied)."""
        rows = np.asarray(rows, dtype=np.int64)
        return ScoreTable(
            ids=[self.ids[i] for i in rows],
            sources=[self.sources[i] for i in rows],
            ifd=self.ifd[rows].copy(),
            loss_cond=self.loss_cond[rows].copy(),
            loss_prior=self.loss_prior[rows].copy(),
            n_response_tokens=self.n_response_tokens[rows].copy(),
            truncated=self.truncated[rows].copy(),
            reasons=[self.reasons[i] for i in rows],
            stats=dict(self.stats),
        )

    def aligned_to(self, ids: Sequence[str], flag: str = "--scores") -> ScoreTable:
        """This table with row ``i`` holding ``ids[i]``'s score: the one rule matching scores to samples.

        Rows are matched by id, never by position, so a table in any row order works (``select --scores``,
        ``train --scores`` and ``install_reselection(..., scores=table)`` all come here). Returns ``self``
        when the order already matches.

        Raises:
            IterITError: an id without a score, a scored id not in ``ids``, or repeated ids; ``flag`` names
                where the table came from.
        """
        ids = list(ids)
        if self.ids == ids:
            return self
        position = {sample_id: row for row, sample_id in enumerate(self.ids)}
        known = set(ids)
        missing = [i for i in ids if i not in position]
        unknown = [i for i in self.ids if i not in known]
        if missing or unknown or len(position) != len(self.ids) or len(known) != len(ids):
            raise IterITError(f"{flag}: the scores do not match the data: {_mismatch(missing, unknown)}; "
                              "run `iterit score` on the same --data (and the same --format/--columns/--dedup)")
        return self.take([position[i] for i in ids])

    def to_rows(self) -> list[dict[str, Any]]:
        """One dict per sample in the output column order; NaN becomes ``None`` (null in Parquet/JSON)."""
        return [
            {
                "id": self.ids[i],
                "source": self.sources[i],
                "ifd": _float_or_none(self.ifd[i]),
                "loss_cond": _float_or_none(self.loss_cond[i]),
                "loss_prior": _float_or_none(self.loss_prior[i]),
                "n_response_tokens": int(self.n_response_tokens[i]),
                "truncated": bool(self.truncated[i]),
                "reason": self.reasons[i],
            }
            for i in range(len(self.ids))
        ]

    @classmethod
    def from_rows(cls, rows: Sequence[dict[str, Any]], stats: dict | None = None) -> ScoreTable:
        """Inverse of :meth:`to_rows`: ``None`` scores come back as NaN."""

        def floats(key: str) -> np.ndarray:
            return np.array([np.nan if row[key] is None else row[key] for row in rows], dtype=np.float64)

        return cls(
            ids=[str(row["id"]) for row in rows],
            sources=[str(row["source"]) for row in rows],
            ifd=floats("ifd"),
            loss_cond=floats("loss_cond"),
            loss_prior=floats("loss_prior"),
            n_response_tokens=np.array([row["n_response_tokens"] for row in rows], dtype=np.int64),
            truncated=np.array([bool(row["truncated"]) for row in rows], dtype=bool),
            reasons=[row["reason"] for row in rows],
            stats=dict(stats or {}),
        )


def _mismatch(missing: list[str], unknown: list[str]) -> str:
    problems = []
    if missing:
        problems.append(f"{len(missing)} sample id(s) have no score (e.g. {', '.join(missing[:3])})")
    if unknown:
        problems.append(f"{len(unknown)} scored id(s) are not in the data (e.g. {', '.join(unknown[:3])})")
    return "; ".join(problems) or "ids repeat"


def _float_or_none(value: float) -> float | None:
    return float(value) if math.isfinite(value) else None


# A reason's per-sample detail, "(11 prompt tokens)": dropped to group the reasons by kind.
_REASON_DETAIL = re.compile(r"\s*\([^)]*\d[^)]*\)")
EXAMPLES_PER_REASON = 3


def reason_kind(reason: str) -> str:
    """``"response does not fit max_length (11 prompt tokens)"`` -> ``"response does not fit max_length"``."""
    return _REASON_DETAIL.sub("", reason).strip() or reason


def missing_by_kind(table: ScoreTable) -> tuple[dict[str, int], dict[str, list[str]]]:
    """Unscored samples grouped by the kind of reason: the count of each, most common first, and a few ids."""
    kinds = [(reason_kind(reason), sample_id) for reason, sample_id in zip(table.reasons, table.ids) if reason]
    counts = dict(Counter(kind for kind, _ in kinds).most_common())
    examples: dict[str, list[str]] = {kind: [] for kind in counts}
    for kind, sample_id in kinds:
        if len(examples[kind]) < EXAMPLES_PER_REASON:
            examples[kind].append(str(sample_id))
    return counts, examples


def summarize_scores(table: ScoreTable) -> dict[str, Any]:
    """Counts, missing scores by kind of reason (with example ids), IFD quantiles, share >= 1, throughput."""
    missing, examples = missing_by_kind(table)
    scored = np.isfinite(table.ifd)
    values = table.ifd[scored]
    quantiles = {
        f"p{int(q * 100)}": float(np.quantile(values, q)) if values.size else None
        for q in (0.05, 0.25, 0.5, 0.75, 0.95)
    }
    seconds = float(table.stats.get("seconds", 0.0)) or float("nan")
    return {
        "samples": len(table),
        "scored": int(scored.sum()),
        "missing": missing,
        "missing_examples": examples,
        "truncated": int(table.truncated.sum()),
        "ifd_quantiles": quantiles,
        "share_ifd_ge_1": float((values >= 1.0).mean()) if values.size else None,
        "seconds": table.stats.get("seconds"),
        "samples_per_s": len(table) / seconds if math.isfinite(seconds) else None,
        "tokens_per_s": table.stats.get("tokens", 0) / seconds if math.isfinite(seconds) else None,
        "padding_share": table.stats.get("padding_share"),
    }


def format_summary(summary: dict[str, Any]) -> str:
    """The summary as the few lines the CLI prints."""
    lines = [f"scored {summary['scored']} of {summary['samples']} samples ({summary['truncated']} truncated)"]
    for kind, count in summary["missing"].items():
        shown = summary.get("missing_examples", {}).get(kind, [])
        more = ", ..." if count > len(shown) else ""
        lines.append(f"  no score for {count}: {kind}" + (f" (e.g. {', '.join(shown)}{more})" if shown else ""))
    quantiles = summary["ifd_quantiles"]
    if quantiles["p50"] is not None:
        lines.append("IFD quantiles: " + "  ".join(f"{k}={v:.4f}" for k, v in quantiles.items()))
        lines.append(f"IFD >= 1 (prompt does not help): {summary['share_ifd_ge_1']:.1%}")
        if summary["share_ifd_ge_1"] > MOSTLY_UNHELPFUL:
            lines.append(UNHELPFUL_PROMPTS_HINT)
    if summary.get("tokens_per_s"):
        padding = summary.get("padding_share") or 0.0
        lines.append(
            f"{summary['seconds']:.1f} s, {summary['samples_per_s']:.1f} samples/s, "
            f"{summary['tokens_per_s']:.0f} tokens/s, padding {padding:.1%}"
        )
    return "\n".join(lines)


def write_scores(table: ScoreTable, path: str | os.PathLike, metadata: dict | None = None) -> None:
    """Write a score table (``.parquet`` or ``.jsonl``) atomically; floats stay float64."""
    from iterit.storage import write_table

    write_table(path, table.to_rows(), metadata={"stats": table.stats, **(metadata or {})})


def read_scores(path: str | os.PathLike) -> ScoreTable:
    """Read a table written by :func:`write_scores` or ``iterit score``."""
    from iterit.storage import read_table

    rows, metadata = read_table(path)
    missing = {"id", "source", "ifd", "loss_cond", "loss_prior", "n_response_tokens", "truncated", "reason"}
    if rows:
        missing -= set(rows[0])
        if missing:
            raise IterITError(
                f"{path}: not a score table (no column {', '.join(sorted(missing))}); run 'iterit score'"
            )
    return ScoreTable.from_rows(rows, stats=metadata.get("stats"))

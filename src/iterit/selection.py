"""Strategies over a score table (iterit, ifd, random, longest, full; per-source quotas).

Who is a candidate:

* ``iterit`` and ``ifd`` need an IFD: a candidate has a finite IFD below ``threshold`` (default 1.0: an
  instruction that does not help predict its response is not a useful instruction-following example).
* ``random``, ``longest`` and ``full`` do not use IFD, so every sample is a candidate, except, when scores
  are given, those the scorer could not score (their ``reason`` says why, e.g. the prompt fills
  ``max_length``): they could not be trained on with the same settings either. The IFD threshold does not
  apply, so these baselines see the data as a user would without IterIT.
* ``candidates`` (an index array) restricts any strategy to a pool, as the training loop does with the
  pool it re-scored.

Budgets: ``0 < x < 1`` is a share of all samples, ``x >= 1`` a count. A budget above the number of
candidates selects them all (``summary["budget_exceeds_candidates"]``). A token budget (``token_budget=N``)
replaces the count: the strategy ranks as usual and the subset is the prefix of its ranking whose response
tokens (the score table's ``n_response_tokens``) come closest to N, so two strategies can be compared at
equal training compute (``random`` at iterit's tokens is the baseline a reviewer asks for first).

Beyond the paper (each an option; the published method stays the default):

* ``drop_top_ifd=q`` drops the highest q share of the IFD < threshold scores as well: generic filler sits
  just under IFD 1, survives the threshold and ranks first under IFD x diversity (:func:`effective_threshold`).
* ``tfidf_options={"norm": "l1"}`` (``--diversity-norm l1``) makes diversity length-normalised: a row's sum
  is then the share of its TF-IDF mass not yet covered by earlier picks (1 before any pick), where the
  paper's L2 rows sum to about the square root of the number of distinct n-grams and favour long responses.

Per-source quotas (``source_budget={"code_alpaca": 0.2, "gsm8k": 100}``): each listed source gets exactly
its quota (a share of the budget, rounded down, or a count), or all its candidates where it has fewer;
the unlisted sources together share the rest of the budget. The strategy's rule runs once over the whole
pool with these caps: for ``iterit`` a pick from one source still decays its n-grams in every other source.
"""

from __future__ import annotations

import logging
import math
import os
from collections import Counter
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from iterit.data import Sample, as_samples
from iterit.errors import IterITError
from iterit.scoring import ScoreTable

logger = logging.getLogger(__name__)

STRATEGY_NAMES = ("iterit", "ifd", "random", "longest", "full")
NEEDS_IFD = ("iterit", "ifd")
ROUNDINGS = ("half-up", "floor")
OTHER_SOURCES = "(other sources)"


@dataclass
class Selection:
    """The picks of one strategy, in pick order.

    Attributes:
        indices: positions in the input sample list, rank 0 first; never repeated.
        ifd: each pick's IFD (NaN where the strategy did not use one).
        diversity: each pick's diversity at the time it was picked (NaN where not used).
        score: the value the strategy ranked by at that time (ifd x diversity for iterit).
        params: the strategy and its parameters, written beside the subset.
        summary: counts for the printed summary (candidates, excluded and why, per source before/after).
    """

    indices: np.ndarray
    ifd: np.ndarray
    diversity: np.ndarray
    score: np.ndarray
    params: dict = field(default_factory=dict)
    summary: dict = field(default_factory=dict)


def resolve_budget(budget: float | int, n: int, flag: str = "--budget", rounding: str = "half-up") -> int:
    """A budget as a count: ``0 < x < 1`` is a share of ``n`` (at least 1), ``x >= 1`` a count.

    ``rounding`` turns a share into a count: ``half-up`` (iterit's default: Dolly's 15,011 x 0.05 gives 751)
    or ``floor`` (the reference's ``math.floor(N * ratio)``: 750). ``floor`` ignores the last 1e-9, so a
    share that is exact in decimal (0.29 x 100) is not cut by its binary rounding error.
    """
    if rounding not in ROUNDINGS:
        raise IterITError(f"--budget-rounding {rounding!r}: not one of {', '.join(ROUNDINGS)}")
    if isinstance(budget, bool) or not isinstance(budget, (int, float, np.integer, np.floating)):
        raise IterITError(f"{flag}: {budget!r} is not a number; give a share (0.05) or a count (2600)")
    if not math.isfinite(budget) or budget <= 0:
        raise IterITError(f"{flag}: {budget} must be above 0; give a share (0.05) or a count (2600)")
    if budget < 1:
        return max(1, int(math.floor(budget * n + (0.5 if rounding == "half-up" else 1e-9))))
    if budget != int(budget):
        raise IterITError(f"{flag}: {budget} is neither a share below 1 nor a whole count; e.g. 0.05 or 2600")
    return int(budget)


def parse_budget(text: str | float | int) -> float | int:
    """``"0.05"`` -> 0.05, ``"2600"`` -> 2600, as typed after ``--budget``."""
    if not isinstance(text, str):
        return text
    try:
        return int(text) if text.strip().isdigit() else float(text)
    except ValueError:
        raise IterITError(f"--budget: {text!r} is not a number; give a share (0.05) or a count (2600)") from None


def parse_source_budget(spec: str | dict[str, float] | None) -> dict[str, float]:
    """``"code_alpaca=0.2,gsm8k=100"`` (as typed after ``--source-budget``) or a dict -> ``{source: value}``."""
    if spec is None or isinstance(spec, dict):
        return dict(spec or {})
    quotas: dict[str, float] = {}
    for part in filter(None, (p.strip() for p in spec.split(","))):
        name, sep, value = part.rpartition("=")
        if not sep or not name:
            raise IterITError(f"--source-budget: {part!r} is not SOURCE=VALUE; e.g. code_alpaca=0.2,gsm8k=100")
        quotas[name.strip()] = parse_budget(value)
    return quotas


# ---------------------------------------------------------------- matching scores to samples


def align_scores(samples: Sequence[Sample], scores: ScoreTable) -> ScoreTable:
    """The score table reordered to the samples' order, matched by id (:meth:`ScoreTable.aligned_to`)."""
    return scores.aligned_to([s.id for s in samples])


# ---------------------------------------------------------------- the candidate pool


def effective_threshold(scores: ScoreTable, threshold: float, drop_top_ifd: float) -> float:
    """The IFD bound after also dropping the top ``drop_top_ifd`` share of the scores under ``threshold``.

    ``0`` gives ``threshold`` itself (the paper). With ``q > 0`` the bound is the ``1 - q`` quantile of the
    finite IFDs under ``threshold`` (lower interpolation, so it is an observed score and the share dropped
    is at least ``q``). Computed once on the table given, so a training run fixes it from the base model's
    scores and every epoch uses the same bound.
    """
    if not 0.0 <= drop_top_ifd < 1.0:
        raise IterITError(f"--drop-top-ifd {drop_top_ifd}: must be in [0, 1), the share of IFD < threshold "
                          "scores to drop from the top (e.g. 0.1)")
    if drop_top_ifd == 0.0:
        return threshold
    ifd = scores.ifd[np.isfinite(scores.ifd) & (scores.ifd < threshold)]
    if ifd.size == 0:
        return threshold
    return float(min(threshold, np.quantile(ifd, 1.0 - drop_top_ifd, method="lower")))


def candidate_threshold(strategy: str, threshold: float) -> float:
    """The IFD bound a strategy's candidates must stay under: ``threshold`` when it ranks by IFD, else none."""
    return threshold if strategy in NEEDS_IFD else math.inf


def candidate_mask(scores: ScoreTable, bound: float) -> np.ndarray:
    """Rows that may be picked: scored, with an IFD under ``bound`` (``math.inf`` for strategies not ranking by IFD)."""
    return np.isfinite(scores.ifd) & (scores.ifd < bound)


def find_candidates(
    n: int, scores: ScoreTable | None, strategy: str, threshold: float, candidates: np.ndarray | None
) -> tuple[np.ndarray, Counter]:
    """The candidate positions (ascending) and, for the summary, how many were excluded and why.

    The one candidate rule: a sample is a candidate when it has a score and, for a strategy that ranks by IFD,
    its IFD is under ``threshold``. ``train``'s budget checks and the re-selection pool sizes count with it too.
    """
    keep = np.zeros(n, dtype=bool)
    excluded: Counter = Counter()
    if candidates is None:
        keep[:] = True
    else:
        keep[np.asarray(candidates, dtype=np.int64)] = True
        excluded["not in the candidate pool"] = int(n - keep.sum())
    if scores is not None:
        no_score = keep & ~np.isfinite(scores.ifd)
        for row in np.flatnonzero(no_score):
            excluded[f"no score: {scores.reasons[row] or 'unknown'}"] += 1
        keep &= ~no_score
        qualified = candidate_mask(scores, candidate_threshold(strategy, threshold))
        excluded[f"ifd >= {threshold:g}"] = int((keep & ~qualified).sum())
        keep &= qualified
    return np.flatnonzero(keep), Counter({k: v for k, v in excluded.items() if v})


def quota_groups(
    sources: Sequence[str], quotas: dict[str, float], budget: int, known: set[str]
) -> tuple[np.ndarray | None, list[int] | None, dict[str, int]]:
    """Group label per pool row (one per listed source, then the rest) and each group's cap."""
    if not quotas:
        return None, None, {}
    unknown = sorted(set(quotas) - known)
    if unknown:
        raise IterITError(f"--source-budget: no source named {unknown}; the sources are {sorted(known)}")
    caps = {name: _quota_count(name, value, budget) for name, value in quotas.items()}
    if sum(caps.values()) > budget:
        raise IterITError(
            f"--source-budget: the quotas add up to {sum(caps.values())} samples, more than the budget of {budget}; "
            "lower them or raise --budget"
        )
    caps[OTHER_SOURCES] = budget - sum(caps.values())
    label = {name: number for number, name in enumerate(caps)}
    groups = np.array([label.get(source, label[OTHER_SOURCES]) for source in sources], dtype=np.intp)
    return groups, list(caps.values()), caps


def _quota_count(name: str, value: float, budget: int) -> int:
    if isinstance(value, (int, float)) and value == 0:
        return 0  # a quota of 0 leaves a source out
    if isinstance(value, (int, float)) and 0 < value < 1:
        return int(math.floor(value * budget))
    return resolve_budget(value, budget, flag=f"--source-budget {name}")


# ---------------------------------------------------------------- the strategies


def take_in_order(order: np.ndarray, budget: int, groups: np.ndarray | None, caps: list[int] | None) -> np.ndarray:
    """The first ``budget`` entries of a ranking, skipping those whose quota group is full."""
    if groups is None:
        return order[:budget]
    room = np.array(caps, dtype=np.int64)
    taken = []
    for row in order:
        if len(taken) == budget:
            break
        if room[groups[row]] > 0:
            room[groups[row]] -= 1
            taken.append(row)
    return np.array(taken, dtype=np.int64)


def _rank_by(values: np.ndarray) -> np.ndarray:
    """Positions by value, highest first; ties keep input order."""
    return np.lexsort((np.arange(len(values)), -values))


def _pick(
    strategy: str,
    samples: Sequence[Sample],
    pool: np.ndarray,
    ifd: np.ndarray,
    budget: int,
    groups: np.ndarray | None,
    caps: list[int] | None,
    decay: float,
    seed: int,
    tfidf_options: dict | None,
    tfidf_suffix: str = "",
    matrix: Any = None,
) -> tuple[np.ndarray, np.ndarray, np.ndarray, dict]:
    """Run one strategy on the pool: (pool rows picked, diversity, score, extra summary).

    ``matrix``: the pool's TF-IDF rows (:func:`pool_tfidf`) when the caller already has them; iterit fits them
    otherwise.
    """
    nan = np.full(budget, np.nan)
    if strategy == "iterit":
        from iterit.diversity import select_greedy

        if matrix is None:
            matrix = pool_tfidf(samples, pool, tfidf_options, tfidf_suffix)
        picks = select_greedy(matrix, ifd, budget, decay=decay, groups=groups, caps=caps)
        return picks.indices, picks.diversity, picks.score, {"n_greedy": picks.n_greedy, "tfidf_columns": matrix.shape[1]}
    if strategy == "ifd":
        rows = take_in_order(_rank_by(ifd), budget, groups, caps)
        return rows, nan[: len(rows)], ifd[rows], {}
    if strategy == "longest":
        chars = np.array([len(samples[i].response) for i in pool], dtype=np.float64)
        rows = take_in_order(_rank_by(chars), budget, groups, caps)
        return rows, nan[: len(rows)], chars[rows], {}
    if strategy == "random":
        rows = take_in_order(np.random.default_rng(seed).permutation(len(pool)), budget, groups, caps)
        return rows, nan[: len(rows)], nan[: len(rows)], {}
    rows = np.arange(len(pool))  # full: every candidate, in input order
    return rows, np.full(len(rows), np.nan), np.full(len(rows), np.nan), {}


def pool_tfidf(samples: Sequence[Sample], pool: np.ndarray, tfidf_options: dict | None, tfidf_suffix: str) -> Any:
    """TF-IDF rows of the pool's responses (each with ``tfidf_suffix``), in pool order."""
    from iterit.diversity import response_tfidf

    return response_tfidf([samples[i].response + tfidf_suffix for i in pool], tfidf_options)


def prefix_closest_to(tokens: np.ndarray, target: float) -> int:
    """How many leading entries of ``tokens`` sum closest to ``target`` (at least 1; ties: the shorter)."""
    total = np.cumsum(np.asarray(tokens, dtype=np.float64))
    return int(np.argmin(np.abs(total - target))) + 1 if total.size else 0


def _pick_tokens(strategy, samples, pool, ifd, tokens, token_budget, decay, seed, tfidf_options, tfidf_suffix):
    """Run a strategy and keep the prefix of its ranking closest to ``token_budget`` response tokens.

    The ranking is grown by doubling until it holds the target (or the whole pool): every strategy's picks
    are a prefix of its picks at a larger budget (the greedy included: a pick never depends on the budget).
    iterit's TF-IDF is fitted once; only the greedy reruns.
    """
    matrix = pool_tfidf(samples, pool, tfidf_options, tfidf_suffix) if strategy == "iterit" else None
    count = min(len(pool), max(1, int(math.ceil(1.25 * token_budget / max(1.0, float(np.mean(tokens)))))))
    while True:
        rows, diversity, score, extra = _pick(strategy, samples, pool, ifd, count, None, None, decay, seed,
                                              tfidf_options, tfidf_suffix, matrix=matrix)
        if count >= len(pool) or tokens[rows].sum() >= token_budget:
            break
        count = min(len(pool), 2 * count)
    keep = prefix_closest_to(tokens[rows], token_budget)
    if "n_greedy" in extra:
        extra["n_greedy"] = min(extra["n_greedy"], keep)
    return rows[:keep], diversity[:keep], score[:keep], extra


def select_samples(
    samples: Sequence[Sample] | Any,
    scores: ScoreTable | None,
    budget: float | int | None,
    *,
    strategy: str = "iterit",
    threshold: float = 1.0,
    decay: float = 0.1,
    seed: int = 0,
    candidates: np.ndarray | Sequence[int] | None = None,
    source_budget: dict[str, float] | str | None = None,
    tfidf_options: dict | None = None,
    columns: dict[str, str] | str | None = None,
    tfidf_suffix: str = "",
    budget_rounding: str = "half-up",
    token_budget: int | None = None,
    drop_top_ifd: float = 0.0,
) -> Selection:
    """Choose a subset of ``samples`` by ``strategy`` (see the module docstring for the rules).

    Args:
        samples: all samples, in input order, or a ``datasets.Dataset`` (its row ``i`` is index ``i``;
            ``dataset.select(selection.indices)`` is then the subset).
        scores: their scores (matched by id; any order); ``None`` only for random, longest and full.
        budget: a share of all samples (``0 < x < 1``) or a count; ignored by ``full``.
        strategy: ``iterit`` (greedy IFD x diversity), ``ifd`` (highest IFD below the threshold),
            ``random`` (seeded), ``longest`` (longest responses, in characters) or ``full``.
        threshold: iterit and ifd candidates need an IFD below this.
        decay: iterit's factor on a picked response's n-grams (0 removes them, 1 ignores them).
        seed: random's seed; the same seed gives the same picks.
        candidates: positions restricting the pool (the training loop passes its re-scored pool).
        source_budget: per-source quotas, ``{source: share or count}`` or ``"a=0.2,b=100"``.
        tfidf_options: :func:`iterit.diversity.response_tfidf` options (``TfidfVectorizer`` arguments).
        columns: for a ``datasets.Dataset``: our field name -> its column, as ``--columns``.
        tfidf_suffix: appended to every response before TF-IDF (the reference fits it on
            ``output + eos_token``: pass the tokenizer's eos string); "" fits the bare response.
        budget_rounding: ``half-up`` or ``floor`` (the reference's), for a budget given as a share.
        token_budget: response tokens instead of a sample count: the prefix of the strategy's ranking whose
            ``scores.n_response_tokens`` sum closest to it (``budget`` is then ignored; needs ``scores``).
        drop_top_ifd: for iterit and ifd, also drop this top share of the IFD < threshold scores
            (:func:`effective_threshold`); 0 is the paper.

    Returns:
        The picks, their IFD / diversity / score, the parameters and a summary (see :func:`format_summary`).
    """
    samples = as_samples(samples, columns)
    _check_strategy(strategy, scores is not None, decay)
    _check_token_budget(token_budget, strategy, scores is not None, source_budget)
    if scores is not None:
        scores = align_scores(samples, scores)
    asked_threshold = threshold
    if drop_top_ifd and strategy in NEEDS_IFD:
        threshold = effective_threshold(scores, threshold, drop_top_ifd)
    pool, excluded = find_candidates(len(samples), scores, strategy, threshold, candidates)
    if pool.size == 0:
        why = ", ".join(f"{reason}: {n}" for reason, n in excluded.most_common()) or "no samples"
        raise IterITError(f"no candidates to select from ({why}); check --scores, --threshold and the data")
    if strategy == "full" or token_budget is not None:
        requested = len(pool)  # a token budget sets the count below
    else:
        requested = resolve_budget(budget, len(samples), rounding=budget_rounding)
    quotas = parse_source_budget(source_budget)
    if quotas and strategy == "full":
        raise IterITError("--source-budget does not apply to --strategy full (it keeps every candidate)")
    effective = min(requested, len(pool))
    pool_sources = [samples[i].source for i in pool]
    groups, caps, quota_counts = quota_groups(pool_sources, quotas, effective, {s.source for s in samples})
    ifd = scores.ifd[pool] if scores is not None else np.full(len(pool), np.nan)
    if token_budget is None:
        rows, diversity, score, extra = _pick(
            strategy, samples, pool, ifd, effective, groups, caps, decay, seed, tfidf_options, tfidf_suffix
        )
    else:
        tokens = scores.n_response_tokens[pool]
        rows, diversity, score, extra = _pick_tokens(
            strategy, samples, pool, ifd, tokens, token_budget, decay, seed, tfidf_options, tfidf_suffix
        )
        requested = len(rows)
    indices = pool[rows]
    params = _params(strategy, requested, asked_threshold, decay, seed, quotas, tfidf_options)
    if tfidf_suffix and strategy == "iterit":
        params["tfidf_suffix"] = tfidf_suffix
    if token_budget is not None:
        params["token_budget"] = int(token_budget)
    if drop_top_ifd and strategy in NEEDS_IFD:
        params["drop_top_ifd"] = drop_top_ifd
        params["effective_threshold"] = threshold
    summary = _summary(samples, pool, indices, excluded, requested, quota_counts, strategy)
    if scores is not None:
        summary["n_response_tokens"] = int(scores.n_response_tokens[indices].sum())
    if token_budget is not None:
        summary["token_budget"] = int(token_budget)
    summary.update(extra)
    return Selection(indices.astype(np.int64), ifd[rows], diversity, score, params=params, summary=summary)


def _check_strategy(strategy: str, has_scores: bool, decay: float) -> None:
    if strategy not in STRATEGY_NAMES:
        raise IterITError(f"--strategy: {strategy!r} is not one of {', '.join(STRATEGY_NAMES)}")
    if strategy in NEEDS_IFD and not has_scores:
        raise IterITError(f"--strategy {strategy} needs IFD scores; pass --scores from `iterit score`")
    if not 0.0 <= decay <= 1.0:
        raise IterITError(f"--decay: {decay} is outside [0, 1]; 0 removes covered n-grams, 1 ignores them")


def _check_token_budget(token_budget: int | None, strategy: str, has_scores: bool, source_budget: Any) -> None:
    if token_budget is None:
        return
    if isinstance(token_budget, bool) or not isinstance(token_budget, (int, np.integer)) or token_budget < 1:
        raise IterITError(f"--token-budget: {token_budget!r} must be a whole number of response tokens >= 1")
    if strategy == "full":
        raise IterITError("--token-budget does not apply to --strategy full (it keeps every candidate)")
    if not has_scores:
        raise IterITError("--token-budget counts response tokens from the score table; pass --scores from `iterit score`")
    if source_budget:
        raise IterITError("--token-budget and --source-budget cannot be combined yet; use one of them")


def _params(strategy, budget, threshold, decay, seed, quotas, tfidf_options) -> dict[str, Any]:
    params: dict[str, Any] = {"strategy": strategy, "budget": budget}
    if strategy in NEEDS_IFD:
        params["threshold"] = threshold
    if strategy == "iterit":
        from iterit.diversity import resolve_tfidf_options

        params["decay"] = decay
        params["tfidf_options"] = {k: list(v) if isinstance(v, tuple) else v
                                   for k, v in resolve_tfidf_options(tfidf_options).items()}
    if strategy == "random":
        params["seed"] = seed
    if quotas:
        params["source_budget"] = quotas
    return params


def _summary(samples, pool, indices, excluded, requested, quota_counts, strategy) -> dict[str, Any]:
    everything = np.arange(len(samples))
    sources: dict[str, dict[str, int]] = {}
    for label, rows in (("samples", everything), ("candidates", pool), ("selected", indices)):
        for source, count in Counter(samples[i].source for i in rows).items():
            sources.setdefault(source, {"samples": 0, "candidates": 0, "selected": 0})[label] = count
    summary = {
        "strategy": strategy,
        "n_samples": len(samples),
        "n_candidates": int(len(pool)),
        "budget": int(requested),
        "n_selected": int(len(indices)),
        "budget_exceeds_candidates": bool(requested > len(pool)),
        "excluded": dict(excluded),
        "sources": sources,
        "mean_response_chars": {
            label: float(np.mean([len(samples[i].response) for i in rows])) if len(rows) else 0.0
            for label, rows in (("samples", everything), ("candidates", pool), ("selected", indices))
        },
    }
    if quota_counts:
        summary["quotas"] = quota_counts
        summary["unfilled"] = int(min(requested, len(pool)) - len(indices))
    return summary


def format_summary(summary: dict[str, Any]) -> str:
    """The selection summary as the CLI prints it."""
    lines = [
        f"strategy {summary['strategy']}: {summary['n_selected']} selected of {summary['n_candidates']} candidates "
        f"({summary['n_samples']} samples)"
    ]
    if summary["budget_exceeds_candidates"]:
        lines.append(
            f"the budget ({summary['budget']}) is larger than the candidates ({summary['n_candidates']}): selected them all"
        )
    for reason, count in summary["excluded"].items():
        lines.append(f"  excluded, {reason}: {count}")
    if "n_greedy" in summary and summary["n_greedy"] < summary["n_selected"]:
        lines.append(
            f"  {summary['n_greedy']} picked by IFD x diversity; the other {summary['n_selected'] - summary['n_greedy']} "
            "had no diversity left and were filled in IFD order"
        )
    lines.append(f"{'source':<32} {'samples':>8} {'candidates':>10} {'selected':>8}" + ("   quota" if "quotas" in summary else ""))
    for source, counts in summary["sources"].items():
        quota = summary.get("quotas", {}).get(source)
        lines.append(
            f"{source:<32} {counts['samples']:>8} {counts['candidates']:>10} {counts['selected']:>8}"
            + (f" {quota:>7}" if quota is not None else "")
        )
    if OTHER_SOURCES in summary.get("quotas", {}):
        lines.append(f"{OTHER_SOURCES:<32} share the remaining quota of {summary['quotas'][OTHER_SOURCES]}")
    if summary.get("unfilled"):
        lines.append(
            f"{summary['unfilled']} of the budget left unfilled: a quota's sources have too few candidates "
            "(unlisted sources get only what the listed quotas leave)"
        )
    if "token_budget" in summary:
        lines.append(f"response tokens selected: {summary['n_response_tokens']:,} (token budget {summary['token_budget']:,}: "
                     "the prefix of the ranking closest to it)")
    chars = summary["mean_response_chars"]
    lines.append(
        f"mean response length (chars): all {chars['samples']:.0f}, candidates {chars['candidates']:.0f}, "
        f"selected {chars['selected']:.0f}"
    )
    return "\n".join(lines)


# ---------------------------------------------------------------- writing the subset


def manifest_path(out_path: str | os.PathLike) -> Path:
    """``subset.jsonl`` -> ``subset.manifest.jsonl``; ``.parquet`` likewise; ``.json`` -> ``.manifest.jsonl``;
    a ``save_to_disk`` folder ``subset`` -> ``subset.manifest.jsonl`` beside it."""
    out = Path(out_path)
    if out.suffix == "":
        return out.with_name(out.name + ".manifest.jsonl")
    for suffix, manifest_suffix in ((".parquet", ".parquet"), (".jsonl", ".jsonl"), (".json", ".jsonl")):
        if out.name.endswith(suffix):
            return out.with_name(out.name[: -len(suffix)] + ".manifest" + manifest_suffix)
    raise IterITError(f"--out {out}: unknown output type; use .jsonl, .json, .parquet or a folder name (save_to_disk)")


def manifest_rows(samples: Sequence[Sample], selection: Selection) -> list[dict[str, Any]]:
    """One row per pick, rank 0 first; a value the strategy did not use (NaN) is written as null."""

    def number(value: float) -> float | None:
        return float(value) if math.isfinite(value) else None

    return [
        {
            "id": samples[index].id,
            "source": samples[index].source,
            "rank": rank,
            "ifd": number(selection.ifd[rank]),
            "diversity": number(selection.diversity[rank]),
            "score": number(selection.score[rank]),
        }
        for rank, index in enumerate(selection.indices.tolist())
    ]


def write_selection(samples: Sequence[Sample], selection: Selection, out_path: str | os.PathLike) -> Path:
    """Write the subset in the users' own format and its manifest beside it; returns the manifest's path.

    The subset keeps pick order (rank 0 first). The manifest carries the strategy's parameters and the
    summary as metadata (in the Parquet schema, or ``<manifest stem>.meta.json`` beside a JSON Lines one).
    """
    from iterit.data import write_samples
    from iterit.storage import write_table

    manifest = manifest_path(out_path)
    write_samples([samples[i] for i in selection.indices.tolist()], out_path)
    write_table(manifest, manifest_rows(samples, selection), metadata={"params": selection.params, "summary": selection.summary})
    return manifest

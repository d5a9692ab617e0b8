"""Response texts -> TF-IDF, and the IterIT greedy on complexity x diversity, exact and fast.

The rule (IterIT, Jia et al. 2024): a candidate's diversity is the sum of its TF-IDF row; its score is
IFD x diversity. Greedy for a budget B: pick the highest score (ties: the earliest row), then multiply the
weight of every n-gram of the picked response by ``decay`` in all remaining rows. When no remaining row
has a positive score, fill the rest of the budget in IFD order. A row is never picked twice.

Exact arithmetic shared by both algorithms, so their picks are bit-identical:

* each column (n-gram) j has a multiplier ``m[j]``, 1.0 at the start; each pick that covers j sets
  ``m[j] = m[j] * decay`` (so an n-gram shared with k picked responses keeps ``x * decay^k``, rounded
  as the repeated product);
* a row's diversity is ``np.add.reduceat`` over its products ``x_ij * m[j]`` in stored column order:
  the same numpy reduction on the same contiguous values, whether one row or all rows are summed;
* a row's score is ``ifd[i] * diversity[i]``; ties go to the lower row index.

:func:`select_greedy_naive` recomputes every row's diversity after each pick, as the reference does:
O(B x non-zeros). :func:`select_greedy` is the lazy-greedy equivalent; see its docstring for why it is exact.
"""

from __future__ import annotations

import heapq
import logging
from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np
from scipy import sparse

from iterit.errors import IterITError

logger = logging.getLogger(__name__)

# The reference's vectorizer: word 1- to 3-grams, L2-normalised rows, everything else scikit-learn's default. The
# reference fits it on output + eos_token; iterit on the bare response, unless ``--tfidf-text response+eos``.
DEFAULT_TFIDF_OPTIONS: dict = {"ngram_range": (1, 3)}
# --diversity-norm: l2 rows (the paper) sum to about the square root of a response's distinct n-grams; l1 rows
# sum to the share of its TF-IDF mass not yet covered, whatever its length.
DIVERSITY_NORMS = ("l2", "l1")


def diversity_norm_options(diversity_norm: str) -> dict:
    """The TF-IDF options ``--diversity-norm`` stands for: none for the paper's ``l2``, ``norm="l1"`` for ``l1``."""
    if diversity_norm not in DIVERSITY_NORMS:
        raise IterITError(f"--diversity-norm {diversity_norm!r}: use l2 (the paper) or l1 (length-normalised)")
    return {"norm": "l1"} if diversity_norm == "l1" else {}


@dataclass
class GreedyPicks:
    """The picks of one greedy run, in pick order.

    Attributes:
        indices: row positions, rank 0 first; never repeated.
        ifd: each pick's IFD.
        diversity: each pick's diversity at the time it was picked (with the decays of earlier picks).
        score: ``ifd * diversity`` at that time.
        n_greedy: how many leading picks came from the greedy; the rest filled the budget in IFD order.
    """

    indices: np.ndarray
    ifd: np.ndarray
    diversity: np.ndarray
    score: np.ndarray
    n_greedy: int


def response_tfidf(texts: Sequence[str], options: dict | None = None) -> sparse.csr_matrix:
    """Fit TF-IDF on response texts; one float64 CSR row per text, columns sorted within each row.

    Args:
        texts: the candidates' responses, in candidate order.
        options: keyword arguments for scikit-learn's ``TfidfVectorizer``, over :data:`DEFAULT_TFIDF_OPTIONS`
            (lists are accepted where it wants tuples, as YAML gives them). ``{"vectorizer": "hashing"}``
            swaps in ``HashingVectorizer`` (``n_features`` columns, default 2**22) + ``TfidfTransformer``
            for corpora whose n-gram vocabulary would not fit in memory (hundreds of thousands of
            responses): no vocabulary is kept, at the price of rare hash collisions.

    Returns:
        The TF-IDF matrix. When no text has a single term (all empty, or only stop words) every row is
        empty: nothing is diverse, and the greedy falls back to IFD order.
    """
    options = resolve_tfidf_options(options)
    try:
        matrix = _fit_transform(list(texts), options)
    except ValueError as err:
        if "empty vocabulary" not in str(err):
            raise
        logger.info("no response has a countable term; every diversity is 0")
        return sparse.csr_matrix((len(texts), 0), dtype=np.float64)
    matrix = sparse.csr_matrix(matrix, dtype=np.float64)
    matrix.sum_duplicates()
    matrix.sort_indices()
    return matrix


def _fit_transform(texts: list[str], options: dict):
    from sklearn.feature_extraction.text import HashingVectorizer, TfidfTransformer, TfidfVectorizer

    options = dict(options)
    if options.pop("vectorizer") == "tfidf":
        return TfidfVectorizer(**options).fit_transform(texts)
    weighting = {key: options.pop(key) for key in _TRANSFORMER_KEYS if key in options}
    options.setdefault("n_features", 2**22)
    counts = HashingVectorizer(alternate_sign=False, norm=None, **options).transform(texts)
    return TfidfTransformer(**weighting).fit_transform(counts)


_TRANSFORMER_KEYS = ("norm", "use_idf", "smooth_idf", "sublinear_tf")


def resolve_tfidf_options(options: dict | None) -> dict:
    """Merge user options over the defaults and check the names against the chosen vectorizer's."""
    from sklearn.feature_extraction.text import HashingVectorizer, TfidfVectorizer

    merged = {"vectorizer": "tfidf", **DEFAULT_TFIDF_OPTIONS}
    for key, value in (options or {}).items():
        merged[key] = tuple(value) if isinstance(value, list) else value
    if merged["vectorizer"] not in ("tfidf", "hashing"):
        raise IterITError(f"tfidf_options.vectorizer: '{merged['vectorizer']}' is not 'tfidf' or 'hashing'")
    if merged["vectorizer"] == "tfidf":
        allowed = set(TfidfVectorizer().get_params())
    else:
        allowed = (set(HashingVectorizer().get_params()) - {"alternate_sign"}) | set(_TRANSFORMER_KEYS)
    unknown = sorted(set(merged) - allowed - {"vectorizer"})
    if unknown:
        raise IterITError(
            f"tfidf_options: unknown option(s) {unknown} for vectorizer '{merged['vectorizer']}'; "
            f"allowed: {sorted(allowed)} (scikit-learn)"
        )
    return merged


def row_diversities(matrix: sparse.csr_matrix, multipliers: np.ndarray) -> np.ndarray:
    """Every row's diversity under the column multipliers: the reduction the naive greedy repeats."""
    products = matrix.data * multipliers[matrix.indices]
    starts = matrix.indptr[:-1]
    nonempty = np.diff(matrix.indptr) > 0
    diversity = np.zeros(matrix.shape[0], dtype=np.float64)
    if products.size:
        # Empty rows are left out of the segment starts, so each start's segment ends where its row ends.
        diversity[nonempty] = np.add.reduceat(products, starts[nonempty])
    return diversity


def _one_row_diversity(matrix: sparse.csr_matrix, multipliers: np.ndarray, row: int) -> float:
    """One row's diversity with exactly the arithmetic of :func:`row_diversities`."""
    start, end = matrix.indptr[row], matrix.indptr[row + 1]
    if start == end:
        return 0.0
    products = matrix.data[start:end] * multipliers[matrix.indices[start:end]]
    return float(np.add.reduceat(products, _ZERO)[0])


_ZERO = np.zeros(1, dtype=np.intp)


def _check_greedy_inputs(matrix: sparse.csr_matrix, ifd: np.ndarray, decay: float) -> None:
    if matrix.shape[0] != len(ifd):
        raise ValueError(f"{matrix.shape[0]} TF-IDF rows but {len(ifd)} IFD values")
    if not 0.0 <= decay <= 1.0:
        raise IterITError(f"--decay: {decay} is outside [0, 1]; 0 removes covered n-grams, 1 ignores them")
    if not np.all(np.isfinite(ifd)):
        raise ValueError("every candidate needs a finite IFD")
    if matrix.nnz and matrix.data.min() < 0:
        # Lazy evaluation is exact only because decaying a non-negative weight never raises a score.
        raise ValueError("TF-IDF weights must be non-negative")


def _group_caps(n: int, groups: np.ndarray | None, caps: Sequence[int] | None) -> tuple[np.ndarray, np.ndarray]:
    """Group labels (one group when none given) and each group's pick limit."""
    if groups is None:
        return np.zeros(n, dtype=np.intp), np.array([n], dtype=np.int64)
    return np.asarray(groups, dtype=np.intp), np.asarray(caps, dtype=np.int64).copy()


def _fill_by_ifd(ifd, picked, groups, room, budget, diversity_of) -> list[tuple[int, float]]:
    """The rest of the budget in IFD order (highest first, ties earliest), within each group's room."""
    fills: list[tuple[int, float]] = []
    if budget <= 0:
        return fills
    order = np.lexsort((np.arange(len(ifd)), -ifd))
    for row in order:
        if len(fills) >= budget:
            break
        if picked[row] or room[groups[row]] <= 0:
            continue
        room[groups[row]] -= 1
        fills.append((int(row), diversity_of(int(row))))
    return fills


def _assemble(ifd, greedy: list[tuple[int, float]], fills: list[tuple[int, float]]) -> GreedyPicks:
    rows = np.array([row for row, _ in greedy + fills], dtype=np.int64)
    diversity = np.array([div for _, div in greedy + fills], dtype=np.float64)
    chosen_ifd = ifd[rows] if rows.size else np.zeros(0)
    return GreedyPicks(rows, chosen_ifd, diversity, chosen_ifd * diversity, n_greedy=len(greedy))


def select_greedy_naive(
    matrix: sparse.csr_matrix,
    ifd: np.ndarray,
    budget: int,
    *,
    decay: float = 0.1,
    groups: np.ndarray | None = None,
    caps: Sequence[int] | None = None,
) -> GreedyPicks:
    """The straightforward greedy: recompute every row's diversity after each pick (O(B x non-zeros)).

    Kept as the reference the fast algorithm is tested and benchmarked against.

    Args:
        matrix: TF-IDF rows (from :func:`response_tfidf`), one per candidate.
        ifd: each candidate's IFD (finite).
        budget: how many rows to pick at most.
        decay: the factor applied to a picked response's n-grams in every row (0 removes them, 1 ignores them).
        groups: optional group label per row (0..G-1); with ``caps``, at most ``caps[g]`` picks from group g.
        caps: the pick limit per group.
    """
    ifd = np.asarray(ifd, dtype=np.float64)
    _check_greedy_inputs(matrix, ifd, decay)
    groups, room = _group_caps(len(ifd), groups, caps)
    budget = min(budget, len(ifd))
    multipliers = np.ones(matrix.shape[1], dtype=np.float64)
    picked = np.zeros(len(ifd), dtype=bool)
    greedy: list[tuple[int, float]] = []
    diversity = row_diversities(matrix, multipliers)
    while len(greedy) < budget:
        score = ifd * diversity
        score[picked | (room[groups] <= 0)] = -np.inf
        best = int(np.argmax(score))  # argmax returns the first maximum: ties go to the earliest row
        if not score[best] > 0:
            break
        greedy.append((best, float(diversity[best])))
        picked[best] = True
        room[groups[best]] -= 1
        columns = matrix.indices[matrix.indptr[best] : matrix.indptr[best + 1]]
        multipliers[columns] *= decay
        diversity = row_diversities(matrix, multipliers)
    fills = _fill_by_ifd(ifd, picked, groups, room, budget - len(greedy), lambda row: float(diversity[row]))
    return _assemble(ifd, greedy, fills)


def select_greedy(
    matrix: sparse.csr_matrix,
    ifd: np.ndarray,
    budget: int,
    *,
    decay: float = 0.1,
    groups: np.ndarray | None = None,
    caps: Sequence[int] | None = None,
) -> GreedyPicks:
    """The same picks as :func:`select_greedy_naive`, bit for bit, by lazy evaluation with a max-heap.

    Why lazy evaluation is exact: multipliers only shrink (``decay`` is in [0, 1]), each product
    ``x_ij * m[j]`` is a correctly rounded multiply and each step of the reduction a correctly rounded add,
    and rounding is monotone; so a row's computed diversity, and its score ``ifd * diversity`` (``ifd >= 0``
    for any row that can score above 0), never increase from pick to pick. A heap key computed earlier
    (``(-score, row)``, stale) is therefore a lower bound of that row's current key. Pop the smallest key,
    recompute that row's score exactly (same arithmetic as the naive loop); if its fresh key is still
    ``<=`` the next stale key in the heap, it is ``<=`` every other row's current key, so it is the row the
    naive loop's ``argmax`` picks (highest score, ties to the lower index). Otherwise push it back with its
    fresh key and pop again. A row whose score reaches 0 can never be positive again and leaves the heap.

    Each pick costs one multiplier update per n-gram of the picked response plus a few single-row
    recomputations, instead of a pass over every row: columns like "the" that occur in nearly every response
    are never walked. Arguments are those of :func:`select_greedy_naive`.
    """
    ifd = np.asarray(ifd, dtype=np.float64)
    _check_greedy_inputs(matrix, ifd, decay)
    groups, room = _group_caps(len(ifd), groups, caps)
    budget = min(budget, len(ifd))
    multipliers = np.ones(matrix.shape[1], dtype=np.float64)
    picked = np.zeros(len(ifd), dtype=bool)
    start_scores = ifd * row_diversities(matrix, multipliers)
    heap = [(-float(score), row) for row, score in enumerate(start_scores) if score > 0]
    heapq.heapify(heap)
    greedy: list[tuple[int, float]] = []
    while heap and len(greedy) < budget:
        _, row = heapq.heappop(heap)
        if room[groups[row]] <= 0:
            continue  # its group is full for good
        diversity = _one_row_diversity(matrix, multipliers, row)
        key = (-float(ifd[row] * diversity), row)
        if not key[0] < 0:
            continue  # score 0 now means score 0 forever
        if heap and key > heap[0]:
            heapq.heappush(heap, key)
            continue
        greedy.append((row, diversity))
        picked[row] = True
        room[groups[row]] -= 1
        multipliers[matrix.indices[matrix.indptr[row] : matrix.indptr[row + 1]]] *= decay
    fills = _fill_by_ifd(
        ifd, picked, groups, room, budget - len(greedy), lambda row: _one_row_diversity(matrix, multipliers, row)
    )
    return _assemble(ifd, greedy, fills)

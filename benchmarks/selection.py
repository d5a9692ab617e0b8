"""Race the naive IterIT greedy against the exact fast one, on real responses and on a 500k synthetic set.

    .venv/bin/python benchmarks/selection.py            # 52k real responses (B = 2,600) + 500k synthetic (B = 25k)
    .venv/bin/python benchmarks/selection.py --quick    # a smoke run in seconds

Part 1 runs both algorithms on the same TF-IDF matrix (responses from ../shared/data/train, repeated to
52k, IFD drawn uniformly in (0, 1) with a fixed seed) and asserts the picks are identical. Part 2 runs the
fast one alone on 500k synthetic responses (Zipf-distributed words, 50-150 per response) in a child process,
so its peak RSS is its own; there TF-IDF uses the ``{"vectorizer": "hashing"}`` option, because random
word sequences make tens of millions of distinct trigrams, a vocabulary scikit-learn's ``TfidfVectorizer``
keeps as a Python dict. TF-IDF fitting is timed apart from the greedy. Prints a Markdown table.
"""

from __future__ import annotations

import argparse
import json
import platform
import resource
import subprocess
import sys
import time
import tracemalloc
from pathlib import Path

import numpy as np

from iterit.diversity import response_tfidf, select_greedy, select_greedy_naive

SHARED_TRAIN = Path(__file__).resolve().parents[1].parent / "shared" / "data" / "train"


def real_responses(n: int) -> list[str]:
    """The train files' responses (output / response / answer fields), concatenated, repeated or cut to n."""
    texts: list[str] = []
    for path in sorted(SHARED_TRAIN.rglob("*.json*")):
        if path.suffix == ".json":
            records = json.loads(path.read_text(encoding="utf-8"))
        else:
            records = [json.loads(line) for line in path.read_text(encoding="utf-8").splitlines() if line.strip()]
        for record in records:
            texts.extend(_record_responses(record))
    if not texts:
        sys.exit(f"no responses found under {SHARED_TRAIN}; this benchmark needs ../shared/data")
    return [texts[i % len(texts)] for i in range(n)]


def _record_responses(record: dict) -> list[str]:
    for key in ("output", "response", "answer"):
        if isinstance(record.get(key), str):
            return [record[key]]
    return [instance["output"] for instance in record.get("instances", []) if instance.get("output")]


def synthetic_responses(n: int, seed: int = 0, vocabulary: int = 50_000) -> list[str]:
    """Plausible responses: 50-150 words each, drawn from a Zipf(1.1) law over a fixed vocabulary."""
    rng = np.random.default_rng(seed)
    letters = np.array(list("abcdefghijklmnopqrstuvwxyz"))
    words = np.array(["".join(rng.choice(letters, size=rng.integers(2, 9))) for _ in range(vocabulary)])
    lengths = rng.integers(50, 151, size=n)
    ranks = rng.zipf(1.1, size=int(lengths.sum())) - 1
    ranks = np.minimum(ranks, vocabulary - 1)  # the Zipf tail beyond the vocabulary folds onto its rarest word
    tokens = words[ranks]
    bounds = np.concatenate([[0], np.cumsum(lengths)])
    return [" ".join(tokens[bounds[i] : bounds[i + 1]]) for i in range(n)]


SYNTHETIC_TFIDF = {"vectorizer": "hashing", "n_features": 2**22}


def timed(function, *args, **kwargs):
    start = time.perf_counter()
    result = function(*args, **kwargs)
    return result, time.perf_counter() - start


def traced_peak_mib(function, *args, **kwargs) -> float:
    """Peak memory the call allocated (numpy buffers included), by tracemalloc."""
    tracemalloc.start()
    try:
        function(*args, **kwargs)
        return tracemalloc.get_traced_memory()[1] / 2**20
    finally:
        tracemalloc.stop()


def compare_on_real(n: int, budget: int, decay: float, seed: int) -> list[dict]:
    """Naive vs fast on n real responses; asserts identical picks; returns the table rows."""
    texts = real_responses(n)
    ifd = np.random.default_rng(seed).uniform(np.nextafter(0, 1), 1.0, size=n)
    matrix, fit_s = timed(response_tfidf, texts)
    naive, naive_s = timed(select_greedy_naive, matrix, ifd, budget, decay=decay)
    fast, fast_s = timed(select_greedy, matrix, ifd, budget, decay=decay)
    identical = (
        np.array_equal(naive.indices, fast.indices)
        and np.array_equal(naive.diversity, fast.diversity)
        and np.array_equal(naive.score, fast.score)
    )
    assert identical, "the fast greedy's picks differ from the naive greedy's"
    fast_mib = traced_peak_mib(select_greedy, matrix, ifd, budget, decay=decay)
    # The naive loop's peak is a few arrays of size nnz; a short traced run shows it without waiting again.
    naive_mib = traced_peak_mib(select_greedy_naive, matrix, ifd, min(budget, 20), decay=decay)
    shape = f"{n:,} x {matrix.shape[1]:,}, nnz {matrix.nnz:,}"
    return [
        {"case": f"real {n:,}", "algorithm": "TF-IDF fit", "budget": "", "seconds": fit_s, "memory": "", "note": shape},
        {"case": f"real {n:,}", "algorithm": "naive greedy", "budget": budget, "seconds": naive_s,
         "memory": f"{naive_mib:,.0f} MiB traced", "note": "recomputes every row sum per pick"},
        {"case": f"real {n:,}", "algorithm": "fast greedy", "budget": budget, "seconds": fast_s,
         "memory": f"{fast_mib:,.0f} MiB traced",
         "note": f"{naive_s / fast_s:,.0f}x faster; picks identical ({fast.n_greedy} greedy)"},
    ]


def run_synthetic(n: int, budget: int, decay: float, seed: int) -> list[dict]:
    """Fast greedy alone on n synthetic responses (meant to run in its own process)."""
    texts, make_s = timed(synthetic_responses, n, seed)
    ifd = np.random.default_rng(seed).uniform(np.nextafter(0, 1), 1.0, size=n)
    matrix, fit_s = timed(response_tfidf, texts, SYNTHETIC_TFIDF)
    del texts
    fit_rss = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 2**20
    picks, fast_s = timed(select_greedy, matrix, ifd, budget, decay=decay)
    assert len(set(picks.indices.tolist())) == len(picks.indices) == min(budget, n)
    rss = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 2**20
    shape = f"{n:,} x {matrix.shape[1]:,}, nnz {matrix.nnz:,}"
    return [
        {"case": f"synthetic {n:,}", "algorithm": "TF-IDF fit", "budget": "", "seconds": fit_s,
         "memory": f"{fit_rss:,.1f} GiB peak RSS", "note": f"hashing, {shape}; texts made in {make_s:.0f} s"},
        {"case": f"synthetic {n:,}", "algorithm": "fast greedy", "budget": budget, "seconds": fast_s,
         "memory": f"{rss:,.1f} GiB peak RSS (whole process)", "note": f"{picks.n_greedy} greedy picks"},
    ]


def markdown(rows: list[dict]) -> str:
    lines = ["| case | step | budget | seconds | memory | note |", "|---|---|---:|---:|---|---|"]
    for row in rows:
        lines.append(
            f"| {row['case']} | {row['algorithm']} | {row['budget']} | {row['seconds']:.2f} | {row['memory']} | {row['note']} |"
        )
    return "\n".join(lines)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--quick", action="store_true", help="a small smoke run (5k real / 20k synthetic)")
    parser.add_argument("--decay", type=float, default=0.1)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--synthetic-only", type=int, nargs=2, metavar=("N", "BUDGET"), help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.synthetic_only:
        print(json.dumps(run_synthetic(*args.synthetic_only, args.decay, args.seed)))
        return
    real_n, real_b, synth_n, synth_b = (5_000, 250, 20_000, 1_000) if args.quick else (52_000, 2_600, 500_000, 25_000)
    rows = compare_on_real(real_n, real_b, args.decay, args.seed)
    child = subprocess.run(
        [sys.executable, __file__, "--synthetic-only", str(synth_n), str(synth_b), "--decay", str(args.decay),
         "--seed", str(args.seed)],
        check=True, capture_output=True, text=True,
    )
    rows += json.loads(child.stdout.strip().splitlines()[-1])
    print(f"decay {args.decay}, seed {args.seed}; {platform.processor() or platform.machine()}, "
          f"numpy {np.__version__}, python {platform.python_version()}\n")
    print(markdown(rows))


if __name__ == "__main__":
    main()

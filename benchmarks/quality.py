"""Does the selection pay off? The demo comparison over several seeds, as mean +- std per strategy.

    python benchmarks/quality.py                      # 3 seeds, the demo's strategies, plus pool and decay variants
    python benchmarks/quality.py --seeds 0 --quick    # a smoke run

Each seed draws new known-answer data, a new base model and a new training order, then trains every strategy
at the same per-epoch budget and judges it on the clean held-out set (exact match, held-out loss) and on what
it selected (share of defective responses, duplicate picks). IterIT is also run with ``--pool greedy`` (the
paper's "top-ranked samples") and ``--pool reference`` (the reference code's epoch-0 window) against
``--pool rolling``, with ``decay`` 0.1 (the paper) against 0.0 (covered n-grams removed), with
``--preset reference`` (the reference code's rendering and selection choices end to end), with the options beyond
the paper (``--diversity-norm l1``, ``--drop-top-ifd 0.1``), and random at iterit's response tokens per epoch
(``--token-budget``: the equal-compute baseline).

What we expect, and what to investigate when it does not show: iterit >= static >= random on held-out exact
match; iterit and static pick far fewer defective and duplicate samples than random; iterit at 5-10% per epoch
comes within reach of full at a fraction of its training tokens. The table is printed as Markdown (for the
README) and written with every number to ``--out`` as JSON.
"""

from __future__ import annotations

import argparse
import logging
import re
import statistics
import sys
import time
from pathlib import Path

from iterit.demo.compare import run_demo
from iterit.storage import write_json

# Variants beside the main run (iterit with --pool rolling): (row, strategy, pool, decay, preset, options).
# "random at iterit's tokens" gets a --token-budget of the main iterit run's response tokens per epoch.
ITERIT_TOKENS = "iterit's tokens"
VARIANTS = (
    ("iterit, pool greedy", "iterit", "greedy", 0.1, None, {}),
    ("iterit, pool reference", "iterit", "reference", 0.1, None, {}),
    ("iterit, decay 0", "iterit", "rolling", 0.0, None, {}),
    # The reference code's rendering, TF-IDF text, budget rounding, pool and per-sample loss, at the demo's
    # model-size settings (learning rate, batch, length): iterit/presets.py lists each setting and its source.
    ("iterit, preset reference", "iterit", "reference", 0.1, "reference", {}),
    # Beyond the paper (README, "Strategies"): length-normalised diversity, and filler's IFD band dropped.
    ("iterit, l1 diversity", "iterit", "rolling", 0.1, None, {"diversity_norm": "l1"}),
    ("iterit, drop top 10% IFD", "iterit", "rolling", 0.1, None, {"drop_top_ifd": 0.1}),
    ("random at iterit's tokens", "random", "rolling", 0.1, None, {"token_budget": ITERIT_TOKENS}),
)

METRICS = (
    ("exact", "held-out exact", "{:.3f}"),
    ("contains", "contains", "{:.3f}"),
    ("loss", "held-out loss", "{:.3f}"),
    ("defective_share", "defective picks", "{:.1%}"),
    ("duplicates_selected", "dup picks", "{:.1f}"),
    ("train_tokens", "train tokens", "{:,.0f}"),
    ("response_tokens", "response tokens", "{:,.0f}"),
    ("wall_s", "wall s", "{:.0f}"),
)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--seeds", type=int, nargs="+", default=[0, 1, 2])
    parser.add_argument("--strategies", default="iterit,static,ifd,random,full")
    parser.add_argument("--ratio", type=float, default=0.08)
    parser.add_argument("--epochs", type=int, default=3)
    parser.add_argument("--quick", action="store_true", help="the demo's quick sizes (a smoke run)")
    parser.add_argument("--no-variants", action="store_true", help="skip the pool, decay and preset variants of iterit")
    parser.add_argument("--variants", default="all",
                        help="which variants, by the text after 'iterit, ' in their rows, comma separated "
                             "(e.g. 'pool reference,preset reference'); default all")
    parser.add_argument("--out", default="runs/quality")
    parser.add_argument("--cache", default=".cache/iterit")
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(message)s", stream=sys.stderr)
    logging.getLogger("iterit.training").setLevel(logging.WARNING)

    started = time.perf_counter()
    runs: dict[str, list[dict]] = {}
    for seed in args.seeds:
        base = dict(quick=args.quick, seed=seed, epochs=args.epochs, ratio=args.ratio, cache=args.cache)
        main_run = run_demo(Path(args.out) / f"seed{seed}", strategies=args.strategies, pool="rolling", **base)
        for name, row in main_run["strategies"].items():
            runs.setdefault(name, []).append(row)
        if args.no_variants:
            continue
        for label, strategy, pool, decay, preset, options in chosen_variants(args.variants):
            if options.get("token_budget") == ITERIT_TOKENS:
                if "iterit" not in main_run["strategies"]:
                    raise SystemExit(f"{label!r} needs iterit in --strategies")
                iterit = main_run["strategies"]["iterit"]
                options = {**options, "token_budget": round(iterit["response_tokens"] / main_run["settings"]["epochs"])}
            folder = f"seed{seed}-" + re.sub(r"\W+", "-", label).strip("-")
            variant = run_demo(Path(args.out) / folder, strategies=strategy, pool=pool, decay=decay, preset=preset,
                               options=options or None, **base)
            runs.setdefault(label, []).append(variant["strategies"][strategy])
    table = format_table(runs, args)
    print(table)
    write_json(Path(args.out) / "quality.json",
               {"settings": vars(args), "runs": runs, "wall_s": time.perf_counter() - started})
    (Path(args.out) / "quality.md").write_text(table + "\n", encoding="utf-8")
    return 0


def chosen_variants(spec: str) -> list[tuple]:
    """The rows of :data:`VARIANTS` named in ``spec`` (``all``: every one)."""
    if spec == "all":
        return list(VARIANTS)
    wanted = {name.strip() for name in spec.split(",") if name.strip()}
    known = {row[0].removeprefix("iterit, "): row for row in VARIANTS}
    unknown = wanted - set(known)
    if unknown:
        raise SystemExit(f"--variants: unknown {sorted(unknown)}; choose from {sorted(known)}")
    return [known[name] for name in known if name in wanted]


def format_table(runs: dict[str, list[dict]], args: argparse.Namespace) -> str:
    """Markdown: one row per strategy, mean +- std over the seeds for each metric."""
    header = "| strategy | " + " | ".join(title for _, title, _ in METRICS) + " |"
    lines = [
        f"Seeds {', '.join(map(str, args.seeds))}; {args.ratio:.0%} of the data per epoch, {args.epochs} epochs"
        f"{' (quick sizes)' if args.quick else ''}; mean ± std over seeds. iterit rows use --pool rolling "
        "unless named.",
        "",
        header,
        "|" + "---|" * (len(METRICS) + 1),
    ]
    for name, rows in runs.items():
        cells = []
        for key, _, fmt in METRICS:
            values = [row[key] for row in rows if row.get(key) is not None]
            if not values:
                cells.append("-")
                continue
            mean = statistics.fmean(values)
            spread = statistics.stdev(values) if len(values) > 1 else 0.0
            cells.append(f"{fmt.format(mean)} ± {fmt.format(spread)}")
        lines.append(f"| {name} | " + " | ".join(cells) + " |")
    return "\n".join(lines)


if __name__ == "__main__":
    sys.exit(main())

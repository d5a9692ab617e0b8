"""What re-scoring costs: the wall-time split of an ``iterit`` run against a ``static`` run on the same data.

    .venv/bin/python benchmarks/iteration_cost.py            # 3,000 demo samples, B = 5%, u = 3, 3 epochs
    .venv/bin/python benchmarks/iteration_cost.py --quick    # 400 samples, a smoke run

Both runs go through :func:`iterit.training.train` with the same tiny pretrained Llama, the same known-answer
demo data and the same settings; only ``--strategy`` differs. Each epoch's scoring, selection and training
time comes from the re-selection callback (epoch 0's scoring is the full data set under the base model,
which both strategies pay). The script checks that both runs trained the same epoch-0 selection, then
prints a Markdown table (CPU, one intra-op thread).
"""

from __future__ import annotations

import argparse
import logging
import platform
import tempfile
import time
from pathlib import Path

import torch

from iterit.demo.tasks import generate_demo_data
from iterit.demo.tiny_model import build_tiny_model
from iterit.training import RunResult, TrainConfig, train


def run(strategy: str, model: Path, data: list[str], out: Path, epochs: int, ratio: float) -> tuple[RunResult, float]:
    config = TrainConfig(model=str(model), data=data, out=str(out / strategy), strategy=strategy, ratio=ratio,
                         update_ratio=3, num_train_epochs=epochs, per_device_train_batch_size=8, learning_rate=1e-3,
                         max_length=256, max_batch_tokens=8192, use_cpu=True, quiet=True, seed=0,
                         save_strategy="no", logging_steps=10)
    started = time.perf_counter()
    result = train(config)
    return result, time.perf_counter() - started


def warm_up(data: list[str]) -> None:
    """Import and exercise the selection stack once, so neither timed run pays the first-call cost."""
    import numpy as np

    from iterit.data import load_samples
    from iterit.scoring import ScoreTable
    from iterit.selection import select_samples

    samples = load_samples(data).samples[:200]
    n = len(samples)
    table = ScoreTable([s.id for s in samples], [s.source for s in samples], np.linspace(0.1, 0.9, n), np.ones(n),
                       np.ones(n), np.ones(n, dtype=np.int64), np.zeros(n, dtype=bool), [None] * n)
    select_samples(samples, table, 10, strategy="iterit")


def split(result: RunResult) -> dict[str, float]:
    epochs = result.epochs
    return {
        "score0": epochs[0]["score_s"],
        "rescore": sum(e["score_s"] for e in epochs[1:]),
        "select": sum(e["select_s"] for e in epochs),
        "train": sum(e.get("train_s") or 0.0 for e in epochs),
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="400 samples: a smoke run")
    parser.add_argument("--epochs", type=int, default=3)
    args = parser.parse_args()
    logging.basicConfig(level=logging.WARNING)
    torch.set_num_threads(1)
    n_train = 400 if args.quick else 3000
    with tempfile.TemporaryDirectory() as scratch:
        root = Path(scratch)
        model = build_tiny_model(root / "model", steps=30 if args.quick else 200, seed=0)
        demo = generate_demo_data(root / "data", seed=0, n_train=n_train)
        data = [str(path) for path in demo.train_files]
        warm_up(data)
        results = {name: run(name, model, data, root / "runs", args.epochs, 0.05) for name in ("static", "iterit")}

    static, iterit = results["static"][0], results["iterit"][0]
    assert static.selections[0] == iterit.selections[0], "both strategies must start from the same selection"
    assert all(s == static.selections[0] for s in static.selections), "static must keep its selection"
    print(f"{len(static.selections)} epochs, 1 process, B = {iterit.budget}, "
          f"pool = {iterit.pool_size} (u = 3), {n_train} samples; {platform.processor() or platform.machine()}, "
          f"torch {torch.__version__}, 1 thread\n")
    print("| strategy | scoring, epoch 0 (s) | re-scoring (s) | selection (s) | training (s) | whole run (s) |")
    print("|---|---:|---:|---:|---:|---:|")
    for name, (result, wall) in results.items():
        parts = split(result)
        print(f"| {name} | {parts['score0']:.1f} | {parts['rescore']:.1f} | {parts['select']:.2f} | "
              f"{parts['train']:.1f} | {wall:.1f} |")
    extra = results["iterit"][1] - results["static"][1]
    parts = split(iterit)
    print(f"\nre-scoring adds {parts['rescore']:.1f} s ({parts['rescore'] / max(parts['train'], 1e-9):.2f}x the "
          f"training time) and the whole iterit run takes {extra:+.1f} s ({results['iterit'][1] / results['static'][1]:.2f}x) "
          "against static.")


if __name__ == "__main__":
    main()

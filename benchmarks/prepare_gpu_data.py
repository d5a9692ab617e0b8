"""Copy the few MB that ``benchmarks/gpu.py`` needs into ``.bench/``, which travels to the GPU machine.

The GPU machine gets a copy of the repository but not ``../shared``, and it cannot download anything. So,
here, before the GPU session:

    python3 benchmarks/prepare_gpu_data.py          # writes .bench/gpu_samples.jsonl and .bench/tokenizer/

and the ``run`` call names ``.bench`` in ``carry`` (it is git-ignored). What it writes:

- ``gpu_samples.jsonl``: a seeded random draw of real instruction samples from ``../shared/data/train``
  (every file, so Alpaca, GPT-4 answers, code, GSM8K and tool data are mixed as in real corpora), as chat
  ``messages`` records keeping each sample's id. Where the shared data is absent, the demo generator's
  known-answer data stands in, so the benchmark and its test never depend on it.
- ``tokenizer/``: the tiny model's tokenizer (:func:`iterit.demo.tiny_model.train_tokenizer`: byte-level BPE,
  chat template, end-of-turn token), trained here on those samples' texts with a vocabulary of 8192, so a
  real text costs a realistic number of tokens (about 3-4 characters each, Llama-3's tokenizer gives about
  4) and every id fits in the 128,256-entry vocabulary of the Llama-3 shapes the benchmark builds.
- ``gpu_samples.meta.json``: where the samples came from, for the benchmark's report.
"""

from __future__ import annotations

import argparse
import json
import random
import sys
import tempfile
import time
from collections import Counter
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
SHARED_TRAIN = REPO.parent / "shared" / "data" / "train"
TRAIN_SUFFIXES = (".json", ".jsonl", ".jsonl.gz", ".parquet")
# A few thousand samples: 2,000 for the 8B scoring, all of them as the data set of the 1B iteration.
DEFAULT_SAMPLES = 3000
TOKENIZER_VOCAB = 8192


def find_train_files(root: Path) -> list[Path]:
    """Every data file under ``root`` (sorted, so the draw is the same on every machine)."""
    return sorted(p for p in root.rglob("*") if p.is_file() and p.name.endswith(TRAIN_SUFFIXES))


def load_real_samples(root: Path) -> list:
    """All valid samples of the shared training files, each file its own source."""
    from iterit.data import load_samples

    return load_samples(find_train_files(root), skip_invalid=True).samples


def load_demo_samples(n: int, seed: int) -> list:
    """Known-answer demo samples, the stand-in where ``../shared/data`` is absent."""
    from iterit.data import load_samples
    from iterit.demo.tasks import generate_demo_data

    with tempfile.TemporaryDirectory() as folder:
        demo = generate_demo_data(folder, seed=seed, n_train=max(100, n))
        return load_samples(demo.train_files, skip_invalid=True).samples


def draw(samples: list, n: int, seed: int) -> list:
    """A seeded random draw of ``n`` samples; its order is the benchmark's 'dataset order'."""
    order = list(range(len(samples)))
    random.Random(seed).shuffle(order)
    return [samples[i] for i in order[:n]]


def write_samples_jsonl(samples: list, path: Path) -> None:
    """Chat ``messages`` records with their ids (atomically): the loader reads them back unchanged."""
    from iterit.storage import atomic_open

    with atomic_open(path) as handle:
        for sample in samples:
            record = {"id": sample.id, "messages": sample.messages}
            handle.write(json.dumps(record, ensure_ascii=False) + "\n")


def save_tokenizer(samples: list, out: Path, vocab_size: int) -> None:
    """Train the tiny model's tokenizer on the samples' texts (plus its built-in corpus) and save it."""
    from iterit.demo.tiny_model import builtin_corpus, train_tokenizer

    texts = [message["content"] for sample in samples for message in sample.messages] + builtin_corpus()
    train_tokenizer(texts, vocab_size).save_pretrained(out)


def prepare(out: Path, *, n: int = DEFAULT_SAMPLES, seed: int = 0, source: Path = SHARED_TRAIN,
            vocab_size: int = TOKENIZER_VOCAB) -> dict:
    """Write ``out/gpu_samples.jsonl``, ``out/tokenizer/`` and ``out/gpu_samples.meta.json``.

    Args:
        out: the folder (``.bench`` for the GPU run; a temporary one in tests).
        n: samples to draw.
        seed: the draw's seed.
        source: the training data folder; where it holds no data file, demo data is used instead.
        vocab_size: the tokenizer's vocabulary.

    Returns:
        The metadata written beside the samples.
    """
    from iterit.storage import write_json

    started = time.perf_counter()
    real = source.is_dir() and bool(find_train_files(source))
    pool = load_real_samples(source) if real else load_demo_samples(n, seed)
    chosen = draw(pool, n, seed)
    out.mkdir(parents=True, exist_ok=True)
    write_samples_jsonl(chosen, out / "gpu_samples.jsonl")
    save_tokenizer(chosen, out / "tokenizer", vocab_size)
    meta = {
        "origin": str(source) if real else "iterit.demo.tasks.generate_demo_data (../shared/data absent)",
        "samples": len(chosen),
        "drawn_from": len(pool),
        "seed": seed,
        "tokenizer_vocab": vocab_size,
        "per_source": dict(Counter(sample.source for sample in chosen).most_common()),
        "seconds": round(time.perf_counter() - started, 1),
    }
    write_json(out / "gpu_samples.meta.json", meta)
    return meta


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--out", type=Path, default=REPO / ".bench", help="folder to write (default: .bench)")
    parser.add_argument("--samples", type=int, default=DEFAULT_SAMPLES, help="samples to draw")
    parser.add_argument("--seed", type=int, default=0, help="the draw's seed")
    parser.add_argument("--source", type=Path, default=SHARED_TRAIN, help="training data folder (../shared/data/train)")
    parser.add_argument("--vocab-size", type=int, default=TOKENIZER_VOCAB, help="the tokenizer's vocabulary")
    args = parser.parse_args(argv)
    meta = prepare(args.out, n=args.samples, seed=args.seed, source=args.source, vocab_size=args.vocab_size)
    print(f"wrote {meta['samples']} samples (of {meta['drawn_from']}, from {meta['origin']}) and the tokenizer "
          f"to {args.out} in {meta['seconds']} s")
    for source, count in meta["per_source"].items():
        print(f"  {source:<40} {count:>6}")
    return 0


if __name__ == "__main__":
    sys.exit(main())

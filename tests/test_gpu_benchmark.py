"""benchmarks/gpu.py and benchmarks/prepare_gpu_data.py: every path runs on CPU with tiny shapes.

The GPU benchmark is first run on a machine that has no ``datasets`` package and transformers 5.17, with
``PYTHONPATH=src``; the slow test runs it the same way here (``datasets`` blocked), so a module that starts
importing ``datasets`` at import time, or a broken path, shows up before any GPU time is spent.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
import torch
from conftest import load_benchmark

REPO = Path(__file__).resolve().parents[1]
BENCHMARKS = REPO / "benchmarks"
SHARED_TRAIN = REPO.parent / "shared" / "data" / "train"

# As on the GPU machine: `import datasets` fails and importlib.util.find_spec("datasets") is None.
RUN_WITHOUT_DATASETS = (
    "import runpy, sys; sys.modules['datasets'] = None; sys.argv = sys.argv[1:]; "
    "runpy.run_path(sys.argv[0], run_name='__main__')"
)


gpu = load_benchmark("gpu")
prepare_gpu_data = load_benchmark("prepare_gpu_data")


@pytest.fixture(scope="module")
def bench_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """Prepared data as for the GPU run: real samples where ../shared/data exists, demo samples elsewhere."""
    out = tmp_path_factory.mktemp("bench")
    prepare_gpu_data.prepare(out, n=60, seed=0, source=SHARED_TRAIN)
    return out


def test_prepare_writes_samples_tokenizer_and_metadata(bench_dir: Path):
    from transformers import AutoTokenizer

    from iterit.data import load_samples

    samples = load_samples([bench_dir / "gpu_samples.jsonl"]).samples
    meta = json.loads((bench_dir / "gpu_samples.meta.json").read_text())
    tokenizer = AutoTokenizer.from_pretrained(bench_dir / "tokenizer")
    assert len(samples) == meta["samples"] == 60
    assert sum(meta["per_source"].values()) == 60
    assert len(tokenizer) <= gpu.TINY["vocab_size"] <= gpu.LLAMA3_8B["vocab_size"]
    assert tokenizer.chat_template and tokenizer.pad_token_id is not None
    if SHARED_TRAIN.is_dir():
        assert meta["origin"] == str(SHARED_TRAIN)
        assert len(meta["per_source"]) > 1  # a draw over every training file, not one source


def test_prepare_falls_back_to_demo_data_without_shared_data(tmp_path: Path):
    empty = tmp_path / "no-data"
    empty.mkdir()
    meta = prepare_gpu_data.prepare(tmp_path / "out", n=30, seed=1, source=empty)
    assert meta["origin"].startswith("iterit.demo")
    lines = (tmp_path / "out" / "gpu_samples.jsonl").read_text().splitlines()
    assert len(lines) == 30
    assert all(json.loads(line)["messages"][-1]["role"] == "assistant" for line in lines)


def test_prepare_draw_is_deterministic(tmp_path: Path):
    samples = list(range(100))
    assert prepare_gpu_data.draw(samples, 10, seed=3) == prepare_gpu_data.draw(samples, 10, seed=3)
    assert prepare_gpu_data.draw(samples, 10, seed=3) != prepare_gpu_data.draw(samples, 10, seed=4)


def test_limit_feeds_exactly_the_tokens_the_engine_scores(bench_dir: Path, tiny_model_dir: Path):
    """(a) must process the same token count that iterit's engine reports, without padding."""
    from transformers import AutoModelForCausalLM, AutoTokenizer

    from iterit.data import load_samples
    from iterit.render import render_samples
    from iterit.scoring import score_rendered

    tokenizer = AutoTokenizer.from_pretrained(tiny_model_dir)
    model = AutoModelForCausalLM.from_pretrained(tiny_model_dir)
    samples = load_samples([bench_dir / "gpu_samples.jsonl"]).samples[:12]
    rendered = render_samples(tokenizer, samples, max_length=256)
    sequences = gpu.needed_sequences(rendered)
    result = score_rendered(model, rendered, max_batch_tokens=1024, progress=False)
    assert sum(len(s) for s in sequences) == result.stats["tokens"]

    batches, computed = gpu.limit_batches(sequences, 1024, "cpu")
    assert sum(batch.numel() for batch in batches) == computed <= result.stats["tokens"]
    assert sum(batch.shape[0] for batch in batches) == len(sequences)  # every sequence, each once
    assert all(batch.numel() <= 1024 or batch.shape[0] == 1 for batch in batches)


def test_reference_losses_match_the_engine_in_float32(bench_dir: Path, tiny_model_dir: Path):
    from transformers import AutoModelForCausalLM, AutoTokenizer

    from iterit.data import load_samples
    from iterit.render import render_samples
    from iterit.scoring import score_rendered

    tokenizer = AutoTokenizer.from_pretrained(tiny_model_dir)
    model = AutoModelForCausalLM.from_pretrained(tiny_model_dir).eval()
    rendered = render_samples(tokenizer, load_samples([bench_dir / "gpu_samples.jsonl"]).samples[:10], max_length=256)
    cond, prior, fed = gpu.reference_losses(model, rendered, 4, tokenizer.pad_token_id)
    engine = score_rendered(model, rendered, progress=False)
    assert fed >= engine.stats["tokens"]  # padded batches feed at least the needed tokens
    agreement = gpu.ifd_agreement(engine.ifd, torch.tensor(cond - prior).exp().numpy())
    assert agreement["samples"] == int(sum(1 for r in rendered if r.reason is None))
    assert agreement["max_relative_difference"] < 1e-4


def test_out_of_memory_halves_the_batch_until_it_fits():
    def run(size: int) -> int:
        if size > 2:
            raise torch.cuda.OutOfMemoryError(f"CUDA out of memory at batch {size}")
        return size * 10

    assert gpu.with_oom_fallback(run, 8, "cpu") == (20, 2, [8, 4])


def test_out_of_memory_at_batch_one_gives_no_result():
    def run(size: int) -> int:
        raise torch.cuda.OutOfMemoryError("CUDA out of memory")

    assert gpu.with_oom_fallback(run, 2, "cpu") == (None, 0, [2, 1])


@pytest.mark.slow
def test_small_cpu_run_writes_every_row_without_datasets(bench_dir: Path, tmp_path: Path):
    out = tmp_path / "gpu"
    env = {**os.environ, "PYTHONPATH": str(REPO / "src"), "HF_HUB_OFFLINE": "1", "TOKENIZERS_PARALLELISM": "false"}
    command = [sys.executable, "-c", RUN_WITHOUT_DATASETS, str(BENCHMARKS / "gpu.py"), "--small", "--device", "cpu",
               "--out", str(out), "--data", str(bench_dir / "gpu_samples.jsonl"),
               "--tokenizer", str(bench_dir / "tokenizer")]
    finished = subprocess.run(command, env=env, capture_output=True, text=True, timeout=900)
    assert finished.returncode == 0, finished.stdout[-3000:] + finished.stderr[-3000:]

    report = json.loads((out / "gpu_benchmark.json").read_text())
    table = (out / "gpu_benchmark.md").read_text()
    assert table in finished.stdout  # the table is also printed
    assert report["environment"]["device"] == "cpu" and report["small"] is True
    assert report["scoring"]["model"]["attn_implementation"]

    ways = report["scoring"]["ways"]
    assert [way["name"][:3] for way in ways] == ["(a)", "(b)", "(c)"]
    assert all(way["seconds"] > 0 and way["tokens_per_s"] > 0 for way in ways)
    assert ways[0]["tokens"] == ways[1]["tokens"]  # the limit counts the same needed tokens as the engine
    assert report["scoring"]["agreement"]["max_relative_difference"] < 1e-4  # float32 on CPU

    plan = report["plan"]
    iterating = report["iterating"]
    split = iterating["split"]
    assert split["iterit"]["scored_samples"] == int(plan["update_ratio"] * plan["budget"])  # the pool, re-scored
    assert split["static"]["scoring_s"] == 0.0  # static never re-scores
    assert split["scoring_over_training_tokens_per_s"] > 0
    assert all(len(run["epochs"]) == 2 for run in iterating["runs"].values())

    for row in ("(a) limit", "(b) iterit engine", "(c) reference-style", "b/a tokens/s", "b/c samples/s",
                "b/c peak memory", "IFD agreement", "| iterit |", "| static |", "scoring tokens/s",
                "iterit epoch / static epoch"):
        assert row in table


def test_a_failing_part_is_reported_and_the_run_exits_nonzero(bench_dir: Path, tmp_path: Path, capsys):
    """A budget of 0 makes the selection refuse; the report names the failure instead of losing the run."""
    out = tmp_path / "gpu"
    status = gpu.main(["--small", "--device", "cpu", "--parts", "iterating", "--iterate-samples", "8", "--budget", "0",
                       "--out", str(out), "--data", str(bench_dir / "gpu_samples.jsonl"),
                       "--tokenizer", str(bench_dir / "tokenizer")])
    report = json.loads((out / "gpu_benchmark.json").read_text())
    assert status == 1
    assert "iterating" not in report and "budget" in report["errors"]["iterating"]
    assert "**iterating failed**" in (out / "gpu_benchmark.md").read_text()

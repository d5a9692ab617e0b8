"""One prepared GPU benchmark: IFD scoring at 8B scale against the limit and the reference, and the cost of
re-scoring between epochs at 1B scale. One process, about 3 minutes on one H100.

    python3 benchmarks/prepare_gpu_data.py                       # here, once: writes .bench/ (git-ignored)
    PYTHONPATH=src python3 benchmarks/gpu.py --out runs/gpu      # there, with .bench carried along
    .venv/bin/python benchmarks/gpu.py --small --device cpu --out /tmp/gpu   # every path, tiny shapes, CPU

Part 1, scoring on a Llama-3-8B-shaped model (random weights, built on the device in bf16; throughput does not
depend on trained weights), over the same rendered real samples, three ways:

(a) the limit: one bare forward of the backbone (no output head) over exactly the tokens scoring needs (each
    sample's conversation and its response alone, cut after the response). The sequences are sorted by length
    and batched under the same token budget as (b); each batch is cut to its shortest row, so rows have equal
    length, there is no padding and no attention mask, and SDPA runs its fastest (causal, flash) kernel. The
    time is then scaled by needed / computed tokens (the cut removes a few percent), which assumes a forward
    costs in proportion to its tokens: true within a few percent at these lengths, where attention is a small
    part of the work. No varlen kernel is used: flash-attn is not installed on the GPU machine.
(b) iterit's engine as users run it: :func:`iterit.scoring.score_rendered` (length-sorted batches under a token
    budget, the head only at response positions, float32 cross-entropy in chunks), default budget.
(c) reference-style: dataset order, a fixed batch of 8 padded to the longest, full-vocabulary logits cast to
    float32 over every position and copied shifted (as the IterIT reference's ``get_perplexity_part_text``
    does; its ``torch.cuda.empty_cache()`` after every forward is left out), on fewer samples. An
    out-of-memory error is reported with its batch size, and the batch is halved until it fits.

(b) and (c) must agree on IFD to 1e-2 relative (bf16) on the samples both scored. On random weights every IFD
is close to 1, so this shows both compute the same quantity in the same precision, not that rankings agree
(the CPU benchmark ``benchmarks/scoring.py`` holds the engine to 1e-4 against both baselines in float32).

Tokens/s count the same needed tokens for all three (padding and trimmed tokens excluded), so the ratios are
ratios of useful work. Model FLOP utilisation is 2 x N x tokens / seconds over the bf16 peak measured here with
one large matrix product, N being the parameters that take part in matrix products (all but the input
embedding table, which is a lookup); attention's own FLOPs are not counted. Peak memory is
``torch.cuda.max_memory_allocated`` (reset before each way); "working" memory is that peak less what was
allocated before the way started (the weights). On CPU it is the process's peak resident set (VmHWM).

Part 2, the cost of iterating on a Llama-3.2-1B-shaped model (random weights, bf16 weights and AdamW states,
i.e. pure bf16 training, the fastest training there is, so the comparison favours training): the data set of
a few thousand samples is scored once (epoch 0, shared), then two runs of 2 epochs each through the Hugging
Face ``Trainer`` with :func:`iterit.reselection.install_reselection`: ``iterit`` (after each epoch the pool of
update_ratio x B samples is re-scored with the model in training and B re-selected) and ``static`` (selected
once). The split of one steady-state epoch (epoch 1: warm kernels, no first-step set-up) into training,
re-scoring and selection is reported, with scoring's tokens/s against training's. The IFD threshold is off
(infinite) here: on random weights every IFD is about 1, and the usual IFD < 1 filter would drop an arbitrary
half of the pool.

``--small`` runs the same code with tiny shapes and few samples (in float32 on CPU, where bf16 matrix products
are slow or emulated): the figures mean nothing there; it proves every path runs before a GPU is at hand.
Writes ``gpu_benchmark.md`` and ``gpu_benchmark.json`` into ``--out`` (atomically) and prints the table.
"""

from __future__ import annotations

import argparse
import datetime
import functools
import gc
import math
import os
import platform
import sys
import tempfile
import time
import traceback
from collections.abc import Callable, Sequence
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F

REPO = Path(__file__).resolve().parents[1]
IGNORE_INDEX = -100

# Llama-3-8B and Llama-3.2-1B as published (the 1B ties its output head to the input embeddings).
LLAMA3_8B = dict(hidden_size=4096, num_hidden_layers=32, num_attention_heads=32, num_key_value_heads=8,
                 intermediate_size=14336, vocab_size=128256, rope_theta=500000.0, tie_word_embeddings=False)
LLAMA32_1B = dict(hidden_size=2048, num_hidden_layers=16, num_attention_heads=32, num_key_value_heads=8,
                  intermediate_size=8192, vocab_size=128256, rope_theta=500000.0, tie_word_embeddings=True)
# The same architecture, tiny; the vocabulary just holds the prepared tokenizer's 8192 ids.
TINY = dict(hidden_size=64, num_hidden_layers=2, num_attention_heads=4, num_key_value_heads=2,
            intermediate_size=256, vocab_size=8192, rope_theta=500000.0)


@dataclass
class Plan:
    """Sizes of one run. The defaults fit one H100 in about 3 minutes; :func:`small_plan` is the CPU check."""

    scoring_shape: dict = field(default_factory=lambda: dict(LLAMA3_8B))
    iterating_shape: dict = field(default_factory=lambda: dict(LLAMA32_1B))
    score_samples: int = 3000  # ~0.6M needed tokens with the prepared tokenizer: ~15 s per way at 8B
    reference_samples: int = 400  # 50 batches of 8: enough for a stable rate, short enough to afford
    reference_batch: int = 8
    max_batch_tokens: int = 16384  # iterit score's default budget; the limit uses the same
    max_length: int = 2048
    iterate_samples: int = 3000
    budget: int = 800  # B; the pool is update_ratio x B = 2400 of the 3000
    update_ratio: float = 3.0
    train_batch_size: int = 16  # x ~120 tokens: ~2k tokens a step, as common fine-tuning recipes use
    learning_rate: float = 1e-5
    matmul_size: int = 8192
    matmul_repeats: int = 50
    dtype: str = "bfloat16"


def small_plan() -> Plan:
    """Tiny shapes and few samples: every path of the full run, in well under a minute on two CPU cores."""
    return Plan(scoring_shape=dict(TINY), iterating_shape=dict(TINY, tie_word_embeddings=True),
                score_samples=32, reference_samples=16, max_batch_tokens=2048, max_length=512, iterate_samples=48,
                budget=8, train_batch_size=4, matmul_size=512, matmul_repeats=5, dtype="float32")


# ---------------------------------------------------------------------------------------------------------
# Device, memory, time


def log(message: str) -> None:
    """Progress on stdout with the time, flushed (the GPU tool returns only the end of the output)."""
    print(f"[{time.strftime('%H:%M:%S')}] {message}", flush=True)


def synchronize(device: str) -> None:
    if device.startswith("cuda"):
        torch.cuda.synchronize()


def free_memory(device: str) -> None:
    gc.collect()
    if device.startswith("cuda"):
        torch.cuda.empty_cache()


def _status_bytes(name: str) -> int | None:
    try:
        for line in Path("/proc/self/status").read_text().splitlines():
            if line.startswith(name + ":"):
                return int(line.split()[1]) * 1024
    except OSError:
        pass
    return None


class MemoryMeter:
    """Peak memory of a region: CUDA's allocator peak on a GPU, the resident-set peak (VmHWM) on CPU."""

    def __init__(self, device: str):
        self.device = device
        self.start: int | None = None

    def reset(self) -> None:
        if self.device.startswith("cuda"):
            torch.cuda.reset_peak_memory_stats()
            self.start = torch.cuda.memory_allocated()
            return
        try:  # writing 5 resets VmHWM to the current resident set (Linux); elsewhere no CPU figure
            Path("/proc/self/clear_refs").write_text("5")
            self.start = _status_bytes("VmRSS")
        except OSError:
            self.start = None

    def peak(self) -> tuple[int | None, int | None]:
        """(peak bytes, peak bytes above the start of the region)."""
        if self.device.startswith("cuda"):
            peak = torch.cuda.max_memory_allocated()
        else:
            peak = _status_bytes("VmHWM") if self.start is not None else None
        return peak, (peak - self.start) if peak is not None and self.start is not None else None


@dataclass
class Way:
    """One way of scoring (or one training epoch): what it computed, how fast, with how much memory."""

    name: str
    samples: int
    tokens: int  # needed tokens (what scoring must process), the same count for every way
    computed_tokens: int  # tokens actually fed (padding included; trimmed tokens excluded)
    seconds: float
    peak_bytes: int | None = None
    working_bytes: int | None = None
    note: str = ""

    def rates(self, flops_per_token: float, peak_flops: float) -> dict[str, float | None]:
        seconds = max(self.seconds, 1e-9)
        return {
            "tokens_per_s": self.tokens / seconds,
            "samples_per_s": self.samples / seconds,
            "mfu": flops_per_token * self.tokens / seconds / peak_flops if peak_flops else None,
            "padding_share": 1.0 - self.tokens / self.computed_tokens if self.computed_tokens else 0.0,
        }


def timed(device: str, meter: MemoryMeter, run: Callable[[], Any]) -> tuple[Any, float, int | None, int | None]:
    """``run()``'s result, wall seconds (device synchronised) and its peak / working memory."""
    free_memory(device)
    meter.reset()
    synchronize(device)
    started = time.perf_counter()
    result = run()
    synchronize(device)
    seconds = time.perf_counter() - started
    return (result, seconds, *meter.peak())


def measure_matmul_peak(device: str, dtype: torch.dtype, n: int, repeats: int) -> float:
    """FLOP/s of one large square matrix product, the ceiling MFU is measured against (random data, not zeros)."""
    generator = torch.Generator(device=device).manual_seed(0)
    a = torch.randn(n, n, device=device, dtype=dtype, generator=generator)
    b = torch.randn(n, n, device=device, dtype=dtype, generator=generator)
    out = torch.empty(n, n, device=device, dtype=dtype)
    for _ in range(3):
        torch.matmul(a, b, out=out)
    synchronize(device)
    started = time.perf_counter()
    for _ in range(repeats):
        torch.matmul(a, b, out=out)
    synchronize(device)
    seconds = time.perf_counter() - started
    del a, b, out
    free_memory(device)
    return 2 * n**3 * repeats / seconds


# ---------------------------------------------------------------------------------------------------------
# Models and data


def build_random_llama(shape: dict, device: str, dtype: torch.dtype, pad_token_id: int) -> Any:
    """A randomly initialised Llama created directly on ``device`` in ``dtype`` (no float32 copy, no download)."""
    from transformers import AutoModelForCausalLM, LlamaConfig

    config = LlamaConfig(**shape, max_position_embeddings=8192, pad_token_id=pad_token_id)
    torch.manual_seed(0)
    with torch.device(device):
        model = AutoModelForCausalLM.from_config(config, dtype=dtype)
    return model.eval()


def matmul_parameters(model: Any) -> int:
    """Parameters that take part in matrix products: all but the input embedding table (a lookup)."""
    total = sum(p.numel() for p in model.parameters())  # a tied head is counted once
    embedding = model.get_input_embeddings().weight
    return total if embedding is model.get_output_embeddings().weight else total - embedding.numel()


def load_inputs(data: Path, tokenizer_dir: Path, vocab_size: int) -> tuple[list, Any]:
    """The prepared samples and tokenizer; every token id must exist in the benchmark models' vocabulary."""
    from transformers import AutoTokenizer

    from iterit.data import load_samples

    for path in (data, tokenizer_dir):
        if not path.exists():
            sys.exit(f"{path} is missing: run `python3 benchmarks/prepare_gpu_data.py` first (and carry .bench)")
    tokenizer = AutoTokenizer.from_pretrained(tokenizer_dir)
    if len(tokenizer) > vocab_size:
        sys.exit(f"{tokenizer_dir}: {len(tokenizer)} token ids do not fit a vocabulary of {vocab_size}")
    return load_samples([data]).samples, tokenizer


def needed_sequences(rendered: Sequence) -> list[list[int]]:
    """What scoring must feed: per scorable sample its conversation and its response alone, each cut after the
    response (the last response token is only a target), as :mod:`iterit.scoring` does."""
    sequences = []
    for item in rendered:
        spans = ((item.input_ids, item.span), (item.prior_ids, item.prior_span))
        if item.reason is None and all(1 <= start < end <= len(ids) for ids, (start, end) in spans):
            sequences += [list(ids[: end - 1]) for ids, (_, end) in spans]
    return sequences


# ---------------------------------------------------------------------------------------------------------
# Part 1: the three ways of scoring


def limit_batches(sequences: Sequence[list[int]], max_batch_tokens: int, device: str) -> tuple[list, int]:
    """Length-sorted batches under the token budget, each cut to its shortest row (no padding, no mask)."""
    from iterit.scoring import plan_batches

    lengths = [len(s) for s in sequences]
    batches, computed = [], 0
    for batch in plan_batches(lengths, max_batch_tokens):
        width = min(lengths[k] for k in batch)
        batches.append(torch.tensor([sequences[k][:width] for k in batch], dtype=torch.long, device=device))
        computed += width * len(batch)
    return batches, computed


def run_limit(model: Any, sequences: Sequence[list[int]], n_samples: int, max_batch_tokens: int, device: str,
              meter: MemoryMeter) -> Way:
    """(a): the backbone alone over equal-length rows; time scaled from computed to needed tokens."""
    batches, computed = limit_batches(sequences, max_batch_tokens, device)
    backbone = model.base_model

    def forward_all() -> None:
        with torch.inference_mode():
            for input_ids in batches:
                backbone(input_ids=input_ids, use_cache=False)

    with torch.inference_mode():
        backbone(input_ids=batches[-1], use_cache=False)  # warm-up: kernels, handles, allocator
    _, seconds, peak, working = timed(device, meter, forward_all)
    needed = sum(len(s) for s in sequences)
    note = f"{1 - computed / needed:.1%} of tokens trimmed; time x {needed / computed:.3f}"
    return Way("(a) limit: backbone only, packed", n_samples, needed, needed, seconds * needed / computed,
               peak, working, note)


def run_engine(model: Any, rendered: Sequence, max_batch_tokens: int, pad_id: int, device: str,
               meter: MemoryMeter) -> tuple[Way, Any]:
    """(b): ``iterit.scoring.score_rendered`` exactly as ``iterit score`` calls it."""
    from iterit.scoring import score_rendered

    def score(items: Sequence) -> Any:
        return score_rendered(model, items, max_batch_tokens=max_batch_tokens, progress=False, pad_token_id=pad_id)

    score(rendered[:16])  # warm-up
    result, seconds, peak, working = timed(device, meter, lambda: score(rendered))
    stats = result.stats
    computed = round(stats["tokens"] / max(1e-12, 1 - stats["padding_share"]))
    note = f"{stats['batches']} batches, head only at response positions: {stats['head_only']}"
    return Way("(b) iterit engine", len(rendered), stats["tokens"], computed, seconds, peak, working, note), result


def reference_losses(model: Any, rendered: Sequence, batch_size: int,
                     pad_id: int) -> tuple[np.ndarray, np.ndarray, int]:
    """(c)'s computation: dataset order, fixed batches padded to the longest, float32 logits everywhere.

    Returns the conditioned and prior mean response losses per sample (NaN where unscorable) and the number
    of tokens fed (padding included).
    """
    n = len(rendered)
    losses = {False: np.full(n, np.nan), True: np.full(n, np.nan)}
    fed = 0
    scorable = [i for i in range(n) if rendered[i].reason is None and rendered[i].n_response_tokens > 0]
    with torch.no_grad():
        for begin in range(0, len(scorable), batch_size):
            rows = scorable[begin : begin + batch_size]
            for prior in (False, True):
                texts = [(rendered[i].prior_ids, rendered[i].prior_span) if prior else
                         (rendered[i].input_ids, rendered[i].span) for i in rows]
                means, width = _padded_batch_losses(model, texts, pad_id)
                losses[prior][rows] = means
                fed += width * len(rows)
    return losses[False], losses[True], fed


def _padded_batch_losses(model: Any, texts: Sequence[tuple[list[int], tuple[int, int]]],
                         pad_id: int) -> tuple[np.ndarray, int]:
    device = model.get_input_embeddings().weight.device
    width = max(len(ids) for ids, _ in texts)
    input_ids = torch.full((len(texts), width), pad_id, dtype=torch.long)
    mask = torch.zeros((len(texts), width), dtype=torch.long)
    labels = torch.full((len(texts), width), IGNORE_INDEX, dtype=torch.long)
    for row, (ids, (start, end)) in enumerate(texts):
        input_ids[row, : len(ids)] = torch.tensor(ids)
        mask[row, : len(ids)] = 1
        labels[row, start:end] = torch.tensor(ids[start:end])
    logits = model(input_ids=input_ids.to(device), attention_mask=mask.to(device), use_cache=False).logits.float()
    # As the reference does: a contiguous copy of the shifted float32 logits, then per-token cross-entropy.
    shifted = logits[:, :-1].contiguous().view(-1, logits.shape[-1])
    targets = labels[:, 1:].to(device)
    token_losses = F.cross_entropy(shifted, targets.reshape(-1), reduction="none", ignore_index=IGNORE_INDEX)
    counted = (targets != IGNORE_INDEX).sum(dim=1)
    means = (token_losses.view(len(texts), -1).double().sum(dim=1) / counted).cpu().numpy()
    return means, width


def with_oom_fallback(run: Callable[[int], Any], batch_size: int, device: str) -> tuple[Any, int, list[int]]:
    """``run(batch_size)``, halving the batch after each CUDA out-of-memory error: (result, batch, failed)."""
    failed: list[int] = []
    while batch_size >= 1:
        try:
            return run(batch_size), batch_size, failed
        except torch.cuda.OutOfMemoryError:
            failed.append(batch_size)  # the frames holding the tensors are released when this block ends
        free_memory(device)
        log(f"reference-style: out of memory at batch {failed[-1]}"
            + (f"; retrying with {batch_size // 2}" if batch_size > 1 else "; giving up"))
        batch_size //= 2
    return None, 0, failed


def run_reference(model: Any, rendered: Sequence, batch_size: int, pad_id: int, needed_tokens: int, device: str,
                  meter: MemoryMeter) -> tuple[Way, np.ndarray | None]:
    """(c), with its IFD (None when even a batch of one does not fit)."""
    def run(size: int) -> Any:
        reference_losses(model, rendered[:size], size, pad_id)  # warm-up (inside: it may run out of memory too)
        return timed(device, meter, lambda: reference_losses(model, rendered, size, pad_id))

    outcome, used, failed = with_oom_fallback(run, batch_size, device)
    note = f"batch {used}, dataset order, fp32 logits"
    if failed:
        note += f"; out of memory at batch {', '.join(map(str, failed))}"
    if outcome is None:
        return Way("(c) reference-style", len(rendered), needed_tokens, 0, float("nan"), note=note), None
    (cond, prior, fed), seconds, peak, working = outcome
    with np.errstate(invalid="ignore"):
        ifd = np.exp(cond - prior)
    return Way("(c) reference-style", len(rendered), needed_tokens, fed, seconds, peak, working, note), ifd


def ifd_agreement(engine_ifd: np.ndarray, reference_ifd: np.ndarray | None) -> dict[str, Any]:
    """Largest relative IFD difference between (b) and (c) on the samples both scored."""
    if reference_ifd is None:
        return {"samples": 0, "max_relative_difference": None}
    both = np.isfinite(engine_ifd) & np.isfinite(reference_ifd)
    difference = np.abs(engine_ifd[both] - reference_ifd[both]) / np.abs(reference_ifd[both])
    if not both.any():
        return {"samples": 0, "max_relative_difference": None}
    return {"samples": int(both.sum()), "max_relative_difference": float(difference.max()),
            "median_relative_difference": float(np.median(difference)),
            "share_within_1e-2": float((difference <= 1e-2).mean())}


def scoring_part(plan: Plan, samples: list, tokenizer: Any, device: str, dtype: torch.dtype, peak_flops: float,
                 meter: MemoryMeter) -> dict[str, Any]:
    """Part 1: build the 8B-shaped model, score the same samples three ways, compare."""
    from iterit.render import render_samples

    samples = samples[: plan.score_samples]
    started = time.perf_counter()
    rendered = render_samples(tokenizer, samples, max_length=plan.max_length)
    render_s = time.perf_counter() - started
    log(f"rendered {len(samples)} samples in {render_s:.1f} s; building the scoring model")
    started = time.perf_counter()
    model = build_random_llama(plan.scoring_shape, device, dtype, tokenizer.pad_token_id)
    build_s = time.perf_counter() - started
    weights = torch.cuda.memory_allocated() if device.startswith("cuda") else None
    n_matmul = matmul_parameters(model)
    log(f"built {_count(sum(p.numel() for p in model.parameters()))} parameters in {build_s:.1f} s "
        f"(attention: {model.config._attn_implementation})")
    sequences = needed_sequences(rendered)
    limit = run_limit(model, sequences, len(samples), plan.max_batch_tokens, device, meter)
    log(f"(a) limit: {limit.seconds:.1f} s")
    engine, scores = run_engine(model, rendered, plan.max_batch_tokens, tokenizer.pad_token_id, device, meter)
    log(f"(b) engine: {engine.seconds:.1f} s")
    subset = rendered[: plan.reference_samples]
    subset_tokens = sum(len(s) for s in needed_sequences(subset))
    reference, reference_ifd = run_reference(model, subset, plan.reference_batch, tokenizer.pad_token_id,
                                             subset_tokens, device, meter)
    log(f"(c) reference-style: {reference.seconds:.1f} s on {len(subset)} samples")
    result = {
        "model": {"shape": plan.scoring_shape, "parameters": sum(p.numel() for p in model.parameters()),
                  "matmul_parameters": n_matmul, "weights_bytes": weights, "build_s": build_s,
                  "attn_implementation": model.config._attn_implementation, "dtype": str(dtype)},
        "render_s": render_s,
        "ways": _ways_with_rates([limit, engine, reference], 2 * n_matmul, peak_flops),
        "agreement": ifd_agreement(scores.ifd[: len(subset)], reference_ifd),
        "reference_samples": len(subset),
        "max_batch_tokens": plan.max_batch_tokens,
    }
    del model, scores
    free_memory(device)
    return result


def _ways_with_rates(ways: Sequence[Way], flops_per_token: float, peak_flops: float) -> list[dict[str, Any]]:
    return [{**asdict(way), **way.rates(flops_per_token, peak_flops)} for way in ways]


# ---------------------------------------------------------------------------------------------------------
# Part 2: the cost of iterating


class RecordingScorer:
    """``score_fn(model, samples)`` for the re-selection (``iterit.scoring.score_samples``, as ``iterit train``
    binds it), keeping each call's engine statistics and wall time (rendering included)."""

    def __init__(self, tokenizer: Any, *, max_length: int, max_batch_tokens: int):
        self.tokenizer = tokenizer
        self.options = {"max_length": max_length, "max_batch_tokens": max_batch_tokens, "progress": False}
        self.calls: list[dict[str, Any]] = []

    def __call__(self, model: Any, samples: Sequence) -> Any:
        from iterit.scoring import score_samples

        started = time.perf_counter()
        table = score_samples(model, self.tokenizer, samples, **self.options)
        self.calls.append({**table.stats, "wall_s": time.perf_counter() - started})
        return table


def training_arguments(output_dir: str, plan: Plan, device: str) -> Any:
    from transformers import TrainingArguments

    return TrainingArguments(
        output_dir=output_dir, num_train_epochs=2, per_device_train_batch_size=plan.train_batch_size,
        learning_rate=plan.learning_rate, lr_scheduler_type="constant", warmup_steps=0, logging_steps=10,
        save_strategy="no", report_to="none", disable_tqdm=True, seed=0, use_cpu=not device.startswith("cuda"),
        dataloader_num_workers=0,
    )


def run_strategy(strategy: str, model: Any, samples: list, rendered: list, base: Any, scorer: RecordingScorer,
                 plan: Plan, pad_id: int, device: str, meter: MemoryMeter) -> dict[str, Any]:
    """Two epochs of ``strategy`` in a plain ``Trainer`` with the re-selection installed; per-epoch timings."""
    from transformers import Trainer

    from iterit.reselection import PaddingCollator, ResponseOnlyDataset, install_reselection

    tokens = np.array([len(item.input_ids) for item in rendered])
    with tempfile.TemporaryDirectory() as folder:
        trainer = Trainer(model=model, args=training_arguments(folder, plan, device),
                          train_dataset=ResponseOnlyDataset(rendered), data_collator=PaddingCollator(pad_id))
        started = time.perf_counter()
        callback = install_reselection(trainer, samples, budget=plan.budget, score_fn=scorer, strategy=strategy,
                                       update_ratio=plan.update_ratio, scores=base,
                                       select_options={"threshold": math.inf, "seed": 0})
        first_select_s = time.perf_counter() - started
        scorer.calls.clear()
        _, seconds, peak, working = timed(device, meter, trainer.train)
        picks = [callback.first.selection.indices, callback.current.selection.indices]
        epochs = [dict(entry, train_tokens=int(tokens[pick].sum())) for entry, pick in zip(callback.history, picks)]
        rescoring = list(scorer.calls)
        del trainer, callback
    free_memory(device)
    return {"strategy": strategy, "epochs": epochs, "rescoring": rescoring, "wall_s": seconds,
            "first_selection_s": first_select_s, "peak_bytes": peak, "working_bytes": working}


def iterating_part(plan: Plan, samples: list, tokenizer: Any, device: str, dtype: torch.dtype, peak_flops: float,
                   meter: MemoryMeter) -> dict[str, Any]:
    """Part 2: the 1B-shaped model; epoch-0 scoring, then an ``iterit`` and a ``static`` run of 2 epochs."""
    from iterit.render import render_samples
    from iterit.reselection import score_with

    samples = samples[: plan.iterate_samples]
    rendered = render_samples(tokenizer, samples, max_length=plan.max_length)
    model = build_random_llama(plan.iterating_shape, device, dtype, tokenizer.pad_token_id)
    n_matmul = matmul_parameters(model)
    log(f"built the {_count(sum(p.numel() for p in model.parameters()))}-parameter iterating model")
    scorer = RecordingScorer(tokenizer, max_length=plan.max_length, max_batch_tokens=plan.max_batch_tokens)
    base, epoch0_s, _, _ = timed(device, meter, functools.partial(score_with, model, scorer, samples))
    epoch0 = dict(scorer.calls[-1], wall_s=epoch0_s)
    log(f"epoch-0 scoring of {len(samples)} samples: {epoch0_s:.1f} s")
    runs = {}
    for strategy in ("iterit", "static"):
        runs[strategy] = run_strategy(strategy, model, samples, rendered, base, scorer, plan,
                                      tokenizer.pad_token_id, device, meter)
        log(f"{strategy}: 2 epochs in {runs[strategy]['wall_s']:.1f} s")
    del model
    free_memory(device)
    return {"model": {"shape": plan.iterating_shape, "matmul_parameters": n_matmul, "dtype": str(dtype)},
            "samples": len(samples), "budget": plan.budget, "update_ratio": plan.update_ratio,
            "train_batch_size": plan.train_batch_size, "epoch0_scoring": epoch0, "runs": runs,
            "split": epoch_split(runs, n_matmul, peak_flops)}


def epoch_split(runs: dict[str, dict], n_matmul: int, peak_flops: float) -> dict[str, Any]:
    """One steady-state epoch (epoch 1) of each strategy: training, re-scoring, selection; and the rates."""
    iterit, static = runs["iterit"]["epochs"][1], runs["static"]["epochs"][1]
    rescore = runs["iterit"]["rescoring"][0] if runs["iterit"]["rescoring"] else {}

    def training(epoch: dict) -> dict[str, float]:
        rate = epoch["train_tokens"] / epoch["train_s"]
        return {"seconds": epoch["train_s"], "tokens": epoch["train_tokens"], "tokens_per_s": rate,
                "mfu": 6 * n_matmul * rate / peak_flops if peak_flops else None}

    scoring_rate = rescore.get("tokens", 0) / rescore["seconds"] if rescore else None
    scoring_wall_rate = rescore.get("tokens", 0) / rescore["wall_s"] if rescore else None
    split = {
        "iterit": {"training": training(iterit), "scoring_s": iterit["score_s"], "selection_s": iterit["select_s"],
                   "scored_samples": iterit["scored"], "scoring_tokens": rescore.get("tokens"),
                   "scoring_engine_s": rescore.get("seconds"), "scoring_tokens_per_s": scoring_rate,
                   "scoring_tokens_per_s_with_rendering": scoring_wall_rate,
                   "scoring_mfu": 2 * n_matmul * scoring_rate / peak_flops if scoring_rate and peak_flops else None},
        "static": {"training": training(static), "scoring_s": static["score_s"], "selection_s": static["select_s"]},
    }
    for name in split:
        part = split[name]
        part["epoch_s"] = part["training"]["seconds"] + part["scoring_s"] + part["selection_s"]
    split["epoch_ratio_iterit_over_static"] = split["iterit"]["epoch_s"] / split["static"]["epoch_s"]
    train_rate = split["iterit"]["training"]["tokens_per_s"]
    split["scoring_over_training_tokens_per_s"] = scoring_rate / train_rate if scoring_rate else None
    split["scoring_with_rendering_over_training_tokens_per_s"] = (
        scoring_wall_rate / train_rate if scoring_wall_rate else None)
    return split


# ---------------------------------------------------------------------------------------------------------
# Report


def _count(n: int) -> str:
    return f"{n / 1e9:.2f}B" if n >= 1e8 else f"{n / 1e6:.2f}M"


def _gib(value: int | None) -> str:
    return "n/a" if value is None else f"{value / 2**30:.2f}"


def _num(value: float | None, digits: int = 1, suffix: str = "") -> str:
    if value is None or (isinstance(value, float) and not math.isfinite(value)):
        return "n/a"
    return f"{value:,.{digits}f}{suffix}"


def _check(value: float | None, target: float, at_least: bool) -> str:
    if value is None or not math.isfinite(value):
        return "n/a"
    return "yes" if (value >= target if at_least else value <= target) else "**no**"


def scoring_ratios(part: dict[str, Any]) -> list[tuple[str, float | None, str, str]]:
    """(name, value, target, met) rows for part 1."""
    a, b, c = part["ways"]

    def ratio(x: float | None, y: float | None) -> float | None:
        return x / y if x is not None and y and math.isfinite(x) and math.isfinite(y) else None

    agreement = part["agreement"]["max_relative_difference"]
    rows = [
        ("b/a tokens/s", ratio(b["tokens_per_s"], a["tokens_per_s"]), ">= 0.8", 0.8, True),
        ("b/c samples/s", ratio(b["samples_per_s"], c["samples_per_s"]), ">= 3", 3.0, True),
        ("b/c peak memory", ratio(b["peak_bytes"], c["peak_bytes"]), "<= 0.5", 0.5, False),
        ("b/c working memory (peak above the weights)", ratio(b["working_bytes"], c["working_bytes"]), "<= 0.5",
         0.5, False),
        (f"IFD agreement b vs c, max relative difference ({part['agreement']['samples']} samples)", agreement,
         "<= 1e-2", 1e-2, False),
    ]
    return [(name, value, text, _check(value, target, at_least)) for name, value, text, target, at_least in rows]


def markdown(report: dict[str, Any]) -> str:
    """The whole report as Markdown tables (also printed at the end of the run)."""
    env = report["environment"]
    lines = [
        f"# iterit GPU benchmark{' (--small: tiny shapes, figures mean nothing)' if report['small'] else ''}",
        "",
        f"{env['device_name']} · torch {env['torch']} · transformers {env['transformers']} · "
        f"{env['date']} · matmul peak {_num(env['peak_tflops'], 0 if env['peak_tflops'] >= 10 else 3)} TFLOP/s "
        f"({env['peak_note']}) · "
        f"total {report['total_s']:.0f} s",
        "",
    ]
    if "scoring" in report:
        lines += scoring_markdown(report["scoring"])
    if "iterating" in report:
        lines += iterating_markdown(report["iterating"])
    for name, error in report.get("errors", {}).items():
        lines += [f"**{name} failed**: `{error}` (traceback in the log)", ""]
    return "\n".join(lines)


def scoring_markdown(part: dict[str, Any]) -> list[str]:
    model = part["model"]
    lines = [
        f"## Scoring: Llama-3-8B shape ({_count(model['parameters'])} parameters, random {model['dtype']}, "
        f"attention {model['attn_implementation']})",
        "",
        f"{part['ways'][1]['samples']} real samples (render on CPU, once: {part['render_s']:.1f} s); "
        f"(c) on the first {part['reference_samples']}; token budget {part['max_batch_tokens']}.",
        "",
        "| way | samples | tokens | waste | seconds | tokens/s | samples/s | peak GiB | working GiB | MFU | notes |",
        "|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|---|",
    ]
    for way in part["ways"]:
        lines.append(
            f"| {way['name']} | {way['samples']} | {way['tokens']:,} | {way['padding_share']:.1%} | "
            f"{_num(way['seconds'], 2)} | {_num(way['tokens_per_s'], 0)} | {_num(way['samples_per_s'], 1)} | "
            f"{_gib(way['peak_bytes'])} | {_gib(way['working_bytes'])} | {_num(_pct(way['mfu']), 1, '%')} | "
            f"{way['note']} |")
    lines += ["", "tokens: what scoring needs (conditioned + response-alone, cut after the response), the same count "
              "for every way; waste: share of the fed tokens not needed (padding; for (c) also what follows each "
              "response); working: peak above what was allocated before (the weights).",
              "", "| ratio | value | target | met |", "|---|---:|---|---|"]
    for name, value, target, met in scoring_ratios(part):
        lines.append(f"| {name} | {_num(value, 4 if 'IFD' in name else 2)} | {target} | {met} |")
    return lines + [""]


def _pct(value: float | None) -> float | None:
    return None if value is None else 100 * value


def iterating_markdown(part: dict[str, Any]) -> list[str]:
    split = part["split"]
    iterit, static = split["iterit"], split["static"]
    epoch0 = part["epoch0_scoring"]
    lines = [
        f"## Iterating: Llama-3.2-1B shape ({_count(part['model']['matmul_parameters'])} matmul parameters, "
        f"random {part['model']['dtype']}, trained in that dtype: no float32 master weights)",
        "",
        f"{part['samples']} samples, B = {part['budget']}, pool = {part['update_ratio']:g} x B, "
        f"batch {part['train_batch_size']}; one steady-state epoch (epoch 1) of each run. Epoch-0 scoring of all "
        f"{part['samples']} (shared by both): {epoch0['wall_s']:.1f} s.",
        "",
        "| epoch | training s | re-scoring s | selection s | epoch s | training tokens/s | training MFU | peak GiB |",
        "|---|---:|---:|---:|---:|---:|---:|---:|",
    ]
    for name, row in (("iterit", iterit), ("static", static)):
        lines.append(
            f"| {name} | {row['training']['seconds']:.2f} | {row['scoring_s']:.2f} | {row['selection_s']:.2f} | "
            f"{row['epoch_s']:.2f} | {_num(row['training']['tokens_per_s'], 0)} | "
            f"{_num(_pct(row['training']['mfu']), 1, '%')} | {_gib(part['runs'][name]['peak_bytes'])} |")
    ratio = split["scoring_over_training_tokens_per_s"]
    lines += [
        "",
        "| ratio | value | target | met |",
        "|---|---:|---|---|",
        f"| iterit epoch / static epoch (wall) | {_num(split['epoch_ratio_iterit_over_static'], 2)} | | |",
        f"| scoring tokens/s ({_num(iterit['scoring_tokens_per_s'], 0)}, MFU "
        f"{_num(_pct(iterit['scoring_mfu']), 1, '%')}) / training tokens/s | {_num(ratio, 2)} | >= 2.5 | "
        f"{_check(ratio, 2.5, True)} |",
        f"| the same, scoring's rendering on CPU included | "
        f"{_num(split['scoring_with_rendering_over_training_tokens_per_s'], 2)} | | |",
        "",
    ]
    return lines


def environment(device: str, peak_flops: float, plan: Plan) -> dict[str, Any]:
    import transformers

    if device.startswith("cuda"):
        name = torch.cuda.get_device_name()
    else:
        name = f"CPU ({platform.processor() or platform.machine()}, {os.cpu_count()} cores)"
    return {
        "device": device, "device_name": name, "torch": torch.__version__, "transformers": transformers.__version__,
        "python": platform.python_version(), "date": datetime.datetime.now(datetime.timezone.utc).strftime(
            "%Y-%m-%d %H:%M UTC"),
        "peak_tflops": peak_flops / 1e12, "peak_note": f"{plan.matmul_size}^3 {plan.dtype} matmul",
    }


def write_report(out: Path, report: dict[str, Any]) -> str:
    """Write ``gpu_benchmark.json`` and ``gpu_benchmark.md`` atomically; returns the Markdown."""
    from iterit.storage import atomic_open, write_json

    text = markdown(report)
    out.mkdir(parents=True, exist_ok=True)
    write_json(out / "gpu_benchmark.json", report)
    with atomic_open(out / "gpu_benchmark.md") as handle:
        handle.write(text + "\n")
    return text


# ---------------------------------------------------------------------------------------------------------


def parse_args(argv: Sequence[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--out", type=Path, required=True, help="folder for gpu_benchmark.md and .json")
    parser.add_argument("--small", action="store_true", help="tiny shapes and few samples (a CPU check)")
    parser.add_argument("--device", default=None, help="cuda or cpu (default: cuda when there is one)")
    parser.add_argument("--data", type=Path, default=REPO / ".bench" / "gpu_samples.jsonl")
    parser.add_argument("--tokenizer", type=Path, default=REPO / ".bench" / "tokenizer")
    parser.add_argument("--parts", default="scoring,iterating", help="which parts to run (comma-separated)")
    sizes = parser.add_argument_group("sizes (default: the plan for --small or the full run)")
    for name in ("score_samples", "reference_samples", "iterate_samples", "budget", "max_batch_tokens",
                 "train_batch_size"):
        sizes.add_argument(f"--{name.replace('_', '-')}", type=int, default=None)
    return parser.parse_args(argv)


def resolve_plan(args: argparse.Namespace) -> Plan:
    """The plan for ``--small`` or the full run, with any size given on the command line."""
    plan = small_plan() if args.small else Plan()
    for name in ("score_samples", "reference_samples", "iterate_samples", "budget", "max_batch_tokens",
                 "train_batch_size"):
        if getattr(args, name) is not None:
            setattr(plan, name, getattr(args, name))
    return plan


def main(argv: Sequence[str] | None = None) -> int:
    args = parse_args(argv)
    started = time.perf_counter()
    plan = resolve_plan(args)
    device = args.device or ("cuda" if torch.cuda.is_available() else "cpu")
    if device.startswith("cuda") and not torch.cuda.is_available():
        sys.exit("--device cuda: no CUDA device is visible")
    dtype = getattr(torch, plan.dtype)
    parts = {p.strip() for p in args.parts.split(",") if p.strip()}
    if not parts or parts - {"scoring", "iterating"}:
        sys.exit(f"--parts {args.parts}: give scoring, iterating or both (comma-separated)")
    samples, tokenizer = load_inputs(args.data, args.tokenizer, plan.scoring_shape["vocab_size"])
    log(f"{len(samples)} samples from {args.data}; device {device}; measuring the {plan.dtype} matmul peak")
    peak_flops = measure_matmul_peak(device, dtype, plan.matmul_size, plan.matmul_repeats)
    meter = MemoryMeter(device)
    report: dict[str, Any] = {"small": args.small, "environment": environment(device, peak_flops, plan),
                              "plan": asdict(plan), "data": str(args.data)}
    steps = {"scoring": scoring_part, "iterating": iterating_part}
    for name in (n for n in steps if n in parts):
        try:
            report[name] = steps[name](plan, samples, tokenizer, device, dtype, peak_flops, meter)
        except Exception as error:  # one GPU session per task: record the failure, keep the other part's figures
            traceback.print_exc()
            report.setdefault("errors", {})[name] = f"{type(error).__name__}: {error}"
            log(f"{name} failed: {report['errors'][name]}")
        free_memory(device)
        report["total_s"] = time.perf_counter() - started
        text = write_report(args.out, report)  # after each part: a later failure or timeout keeps this one
    print(text, flush=True)
    log(f"wrote {args.out / 'gpu_benchmark.md'} and {args.out / 'gpu_benchmark.json'}")
    return 1 if report.get("errors") else 0


if __name__ == "__main__":
    sys.exit(main())

"""Race iterit's IFD engine against the two ways IFD is usually computed, on the same model, data and threads.

    .venv/bin/python benchmarks/scoring.py                      # tiny model + wide (32k vocabulary) model
    .venv/bin/python benchmarks/scoring.py --n 100 --models tiny

(a) Cherry-LLM as published: one sample at a time, full logits, the model's own loss, every layer's hidden
    states returned, and a per-token loss loop (`cherry_seletion/data_analysis.py --mod cherry`);
(a') the same arithmetic without those overheads: batch 1, full logits, one loss call per text;
(b) reference-style: dataset order, batches of 8 padded to the longest, full float32 logits of every position
    (how the IterIT reference computes it);
(c) iterit: ``score_rendered`` (length-sorted batches under a token budget, head applied only at response
    positions, chunked cross-entropy).

All methods score the same rendered token ids (rendering is shared and not timed), and must agree to a relative
IFD difference of 1e-4. Peak memory is the growth of the process's resident set (VmHWM in /proc/self/status,
reset before each method by writing 5 to /proc/self/clear_refs) over the resident set when the method starts:
torch's CPU tensors live outside Python's allocator, so tracemalloc cannot see them. The script re-executes
itself with ``MALLOC_MMAP_THRESHOLD_=131072`` so that glibc serves every block of 128 KiB or more (every
sizeable tensor) by mmap and returns it to the system when freed; otherwise memory freed by one method is
reused by the next without growing the resident set, and the later method's peak would be under-counted.
"""

from __future__ import annotations

import argparse
import gc
import os
import sys
import time
from collections.abc import Callable, Sequence
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F

from iterit.render import RenderedSample

REPO = Path(__file__).resolve().parents[1]
# A random sample of Alpaca-52k, the data Cherry-LLM and IterIT score.
DEFAULT_DATA = REPO.parent / "shared" / "data" / "train" / "alpaca_alpagasus" / "random_9k.json"
REFERENCE_BATCH = 8
DEFAULT_BUDGET = 16384  # score_rendered's default max_batch_tokens


# ---------------------------------------------------------------------------------------------------------
# Memory and timing


def _status_kib(field: str) -> int:
    for line in Path("/proc/self/status").read_text().splitlines():
        if line.startswith(field + ":"):
            return int(line.split()[1])
    raise RuntimeError(f"/proc/self/status has no {field}")


def measure(run: Callable[[], np.ndarray]) -> tuple[np.ndarray, float, float]:
    """(IFD values, seconds, peak resident-set growth in MiB) of one method."""
    gc.collect()
    Path("/proc/self/clear_refs").write_text("5")  # resets VmHWM (the peak RSS) to the current RSS
    start_rss = _status_kib("VmRSS")
    started = time.perf_counter()
    ifd = run()
    seconds = time.perf_counter() - started
    return ifd, seconds, (_status_kib("VmHWM") - start_rss) / 1024


# ---------------------------------------------------------------------------------------------------------
# The baselines


def _span_loss(logits: torch.Tensor, ids: Sequence[int], span: tuple[int, int]) -> float:
    start, end = span
    return float(F.cross_entropy(logits[start - 1 : end - 1].float(), torch.tensor(ids[start:end])))


def _cherry_text_loss(model, ids: Sequence[int], span: tuple[int, int]) -> float:
    """One text the way Cherry-LLM's ``data_analysis.py --mod cherry`` scores it.

    The model returns every layer's hidden states (Cherry-LLM loads it with ``output_hidden_states=True``),
    the response loss comes from the model's own ``labels=`` loss over full logits, and then a per-token loss
    list is built position by position (a full-vocabulary log-softmax and a ``.item()`` each), which
    Cherry-LLM saves beside the perplexities. Spans are iterit's, not Cherry-LLM's string search (that is a
    known bug, and all methods must score the same tokens).
    """
    input_ids = torch.tensor([ids])
    labels = input_ids.clone()
    labels[0, : span[0]] = -100
    labels[0, span[1] :] = -100
    out = model(input_ids, labels=labels, output_hidden_states=True)
    token_losses = []
    for i in range(1, len(ids)):
        log_probs = torch.log_softmax(out.logits[0, i - 1], dim=-1)
        token_losses.append(F.nll_loss(log_probs[None], input_ids[0, i : i + 1]).item())
    return float(out.loss)


def _lean_text_loss(model, ids: Sequence[int], span: tuple[int, int]) -> float:
    """One text at batch 1: full logits, one loss call over the response."""
    return _span_loss(model(torch.tensor([ids])).logits[0], ids, span)


def _per_sample_loop(
    model, rendered: Sequence[RenderedSample], text_loss: Callable[..., float]
) -> np.ndarray:
    """IFD of each sample from two forwards, conditioned text and response alone, one sample at a time."""
    ifd = np.empty(len(rendered))
    with torch.no_grad():
        for i, item in enumerate(rendered):
            cond = text_loss(model, item.input_ids, item.span)
            prior = text_loss(model, item.prior_ids, item.prior_span)
            ifd[i] = np.exp(cond - prior)
    return ifd


def cherry_loop(model, rendered: Sequence[RenderedSample]) -> np.ndarray:
    """(a) Cherry-LLM as published: one sample at a time, two forwards, full logits, a per-token loss loop."""
    return _per_sample_loop(model, rendered, _cherry_text_loss)


def naive_loop(model, rendered: Sequence[RenderedSample]) -> np.ndarray:
    """(a') Cherry-LLM's arithmetic without its overheads: batch 1, full logits, one loss call per text."""
    return _per_sample_loop(model, rendered, _lean_text_loss)


def _reference_batch_losses(
    model, texts: Sequence[tuple[list[int], tuple[int, int]]], pad_id: int
) -> np.ndarray:
    """Mean response loss per row, from full float32 logits of a right-padded batch."""
    width = max(len(ids) for ids, _ in texts)
    input_ids = torch.full((len(texts), width), pad_id, dtype=torch.long)
    mask = torch.zeros_like(input_ids)
    labels = torch.full_like(input_ids, -100)
    for row, (ids, (start, end)) in enumerate(texts):
        input_ids[row, : len(ids)] = torch.tensor(ids)
        mask[row, : len(ids)] = 1
        labels[row, start:end] = torch.tensor(ids[start:end])
    logits = model(input_ids=input_ids, attention_mask=mask).logits.float()
    per_token = F.cross_entropy(logits[:, :-1].transpose(1, 2), labels[:, 1:], reduction="none")
    counts = (labels[:, 1:] != -100).sum(1)
    return (per_token.sum(1) / counts).double().numpy()


def reference_batches(model, rendered: Sequence[RenderedSample], pad_id: int) -> tuple[np.ndarray, float]:
    """(b) IterIT-reference style: dataset order, fixed batches of 8 padded to the longest. Also its padding."""
    ifd = np.empty(len(rendered))
    real = padded = 0
    with torch.no_grad():
        for first in range(0, len(rendered), REFERENCE_BATCH):
            batch = rendered[first : first + REFERENCE_BATCH]
            cond = _reference_batch_losses(model, [(r.input_ids, r.span) for r in batch], pad_id)
            prior = _reference_batch_losses(model, [(r.prior_ids, r.prior_span) for r in batch], pad_id)
            ifd[first : first + len(batch)] = np.exp(cond - prior)
            for texts in ([r.input_ids for r in batch], [r.prior_ids for r in batch]):
                real += sum(map(len, texts))
                padded += max(map(len, texts)) * len(texts)
    return ifd, 1 - real / padded


# ---------------------------------------------------------------------------------------------------------
# The ceiling: how fast any exact method could be on this machine


def _best_seconds(run: Callable[[], object], repeats: int) -> float:
    run()
    best = float("inf")
    for _ in range(3):
        started = time.perf_counter()
        for _ in range(repeats):
            run()
        best = min(best, (time.perf_counter() - started) / repeats)
    return best


def matmul_peak_flops(size: int = 2048) -> float:
    """Float32 FLOP/s of a large square matmul at the current thread count, best of three: the CPU's roof."""
    from gpu import measure_matmul_peak  # the sibling script's measurement (benchmarks/ is on sys.path)

    return max(measure_matmul_peak("cpu", torch.float32, size, repeats=10) for _ in range(3))


def linear_flops_rate(in_features: int, out_features: int, rows: int = 8192) -> float:
    """Float32 FLOP/s this CPU reaches on one linear layer of this shape, alone and in cache-friendly
    conditions: narrow layers run far below the square-matmul peak, and no method can beat its own shapes."""
    x, w = torch.randn(rows, in_features), torch.randn(out_features, in_features)
    return 2 * rows * in_features * out_features / _best_seconds(lambda: F.linear(x, w), repeats=5)


def shared_prefix_length(rendered: Sequence[RenderedSample]) -> int:
    """Tokens that every conditioned text starts with (the template's preamble): a prefix cache could skip them."""
    first = rendered[0].input_ids
    length = min(len(item.input_ids) for item in rendered)
    for item in rendered:
        length = next((k for k in range(length) if item.input_ids[k] != first[k]), length)
    return length


def ceiling_of(model, rendered: Sequence[RenderedSample]) -> dict:
    """A lower bound on the time of any exact IFD method on this machine, hence an upper bound on its speed.

    It counts only the arithmetic no exact method can skip (every linear layer over both texts of each sample,
    minus the prefix all prompts share, which a prefix cache could reuse; the output head at response
    positions only; causal attention), runs each linear layer at the rate this CPU reaches for its shape,
    attention at the square-matmul peak, and everything else (norms, activations, softmax) for free.
    """
    config = model.config
    layers = [m for m in model.get_decoder().modules() if isinstance(m, torch.nn.Linear)]
    rates = {shape: linear_flops_rate(*shape) for shape in {(m.in_features, m.out_features) for m in layers}}
    seconds_per_token = sum(
        2 * m.in_features * m.out_features / rates[(m.in_features, m.out_features)] for m in layers
    )
    head_rate = linear_flops_rate(config.hidden_size, config.vocab_size)
    peak = matmul_peak_flops()
    width = config.num_attention_heads * getattr(
        config, "head_dim", config.hidden_size // config.num_attention_heads
    )
    prefix = shared_prefix_length(rendered)
    body_tokens = head_tokens = attention = 0
    for item in rendered:
        for ids, (start, end) in ((item.input_ids, item.span), (item.prior_ids, item.prior_span)):
            body_tokens += len(ids)
            head_tokens += end - start
            attention += config.num_hidden_layers * 2 * len(ids) ** 2 * width  # QK^T and AV, causal half
    body_tokens -= prefix * (len(rendered) - 1)  # computed once, reused by every other prompt
    seconds = (
        body_tokens * seconds_per_token
        + head_tokens * 2 * config.hidden_size * config.vocab_size / head_rate
        + attention / peak
    )
    return {
        "seconds": seconds,
        "samples_per_s": len(rendered) / seconds,
        "peak_gflops": peak / 1e9,
        "layer_gflops": (min(*rates.values(), head_rate) / 1e9, max(*rates.values(), head_rate) / 1e9),
        "prefix": prefix,
    }


# ---------------------------------------------------------------------------------------------------------
# Models and data


def build_models(cache: Path) -> dict[str, tuple]:
    """The demo tiny model (2k vocabulary) and a wider random Llama with a 32k vocabulary on its tokenizer."""
    from transformers import AutoModelForCausalLM, AutoTokenizer, LlamaConfig, LlamaForCausalLM

    from iterit.demo.tiny_model import build_tiny_model

    tiny_dir = cache / "tiny-model"
    if not (tiny_dir / "config.json").exists():
        build_tiny_model(tiny_dir, seed=0)
    tokenizer = AutoTokenizer.from_pretrained(tiny_dir)
    tiny = AutoModelForCausalLM.from_pretrained(tiny_dir, dtype=torch.float32).eval()
    torch.manual_seed(0)
    # The tiny tokenizer's ids (< 2048) are valid in a 32k vocabulary, so the same rendered ids feed both.
    wide_config = LlamaConfig(
        vocab_size=32000,
        hidden_size=256,
        intermediate_size=688,
        num_hidden_layers=4,
        num_attention_heads=4,
        num_key_value_heads=4,
        max_position_embeddings=4096,
        bos_token_id=tokenizer.bos_token_id,
        eos_token_id=tokenizer.eos_token_id,
        pad_token_id=tokenizer.pad_token_id,
    )
    wide = LlamaForCausalLM(wide_config).eval()
    return {"tiny": (tiny, tokenizer), "wide": (wide, tokenizer)}


def load_rendered(path: Path, n: int, tokenizer, max_length: int) -> list[RenderedSample]:
    """The first ``n`` scorable samples of ``path``, rendered by iterit's own renderer."""
    from iterit.data import load_samples
    from iterit.render import render_samples

    samples = load_samples([path], skip_invalid=True).samples[: n * 2]
    rendered = [r for r in render_samples(tokenizer, samples, max_length=max_length) if r.reason is None]
    return rendered[:n]


# ---------------------------------------------------------------------------------------------------------
# The race


def race(name: str, model, tokenizer, rendered: Sequence[RenderedSample], rounds: int) -> dict[str, dict]:
    """Run (a), (b), (c) on one model ``rounds`` times, interleaved; check they agree; return their rows.

    Each method's time is its best round (as ``timeit`` reports): other processes on a shared machine only
    ever add time, so the minimum is the least noisy estimate. Peak memory is the largest over the rounds.
    """
    from iterit.scoring import score_rendered

    pad_id = tokenizer.pad_token_id if tokenizer.pad_token_id is not None else 0
    tokens = sum(len(r.input_ids) + len(r.prior_ids) for r in rendered)
    # Equal batch for the memory comparison: iterit's budget = the reference's mean padded batch size.
    groups = [rendered[i : i + REFERENCE_BATCH] for i in range(0, len(rendered), REFERENCE_BATCH)]
    equal_budget = int(np.mean([max(len(r.input_ids) for r in group) * len(group) for group in groups]))
    padding: dict[str, float] = {}

    def run_b() -> np.ndarray:
        values, padding["b"] = reference_batches(model, rendered, pad_id)
        return values

    def run_c(key: str, budget: int) -> Callable[[], np.ndarray]:
        def run() -> np.ndarray:
            result = score_rendered(model, rendered, max_batch_tokens=budget, progress=False)
            padding[key] = result.stats["padding_share"]
            return result.ifd

        return run

    methods = {
        "a": ("(a) Cherry-LLM's per-sample loop", lambda: cherry_loop(model, rendered)),
        "lean": ("(a') per-sample loop, one loss call", lambda: naive_loop(model, rendered)),
        "b": ("(b) reference batches of 8", run_b),
        "c": (f"(c) iterit, default budget {DEFAULT_BUDGET} tokens", run_c("c", DEFAULT_BUDGET)),
        "c=": (f"(c) iterit at (b)'s batch size ({equal_budget} tokens)", run_c("c=", equal_budget)),
    }
    warm = rendered[:2]
    cherry_loop(model, warm), naive_loop(model, warm), reference_batches(model, warm, pad_id)
    score_rendered(model, warm, progress=False)
    rows = {
        key: {"method": label, "seconds": float("inf"), "memory": 0.0} for key, (label, _) in methods.items()
    }
    values: dict[str, np.ndarray] = {}
    for _ in range(rounds):
        for key, (_, run) in methods.items():
            values[key], seconds, memory = measure(run)
            rows[key]["seconds"] = min(rows[key]["seconds"], seconds)
            rows[key]["memory"] = max(rows[key]["memory"], memory)
    for key, row in rows.items():
        row["padding"] = padding.get(key, 0.0)
        row["difference"] = float(np.max(np.abs(values[key] - values["c"]) / np.abs(values["c"])))
        if not row["difference"] <= 1e-4:
            sys.exit(
                f"{name}: method {key} disagrees with iterit: max relative IFD difference {row['difference']:.2e}"
            )
        row["samples_per_s"] = len(rendered) / row["seconds"]
        row["tokens_per_s"] = tokens / row["seconds"]
    return rows


def markdown_table(name: str, vocab: int, n: int, rounds: int, rows: dict[str, dict], ceiling: dict) -> str:
    """The race's rows, its ratios, and the ceiling any exact method has on this machine."""
    lines = [
        f"**{name} model** (vocabulary {vocab}, {n} samples, {torch.get_num_threads()} threads, best of {rounds} rounds)",
        "",
        "| method | samples/s | tokens/s | padding | peak memory (MiB) | max rel. IFD diff vs (c) |",
        "|---|---:|---:|---:|---:|---:|",
    ]
    for row in rows.values():
        lines.append(
            f"| {row['method']} | {row['samples_per_s']:.1f} | {row['tokens_per_s']:.0f} | {row['padding']:.1%} "
            f"| {row['memory']:.0f} | {row['difference']:.1e} |"
        )
    speed = {key: row["samples_per_s"] for key, row in rows.items()}
    lines += [
        "",
        f"samples/s c/a: {speed['c'] / speed['a']:.1f}x, c/a': {speed['c'] / speed['lean']:.1f}x, "
        f"c/b: {speed['c'] / speed['b']:.1f}x (at (b)'s batch size: c/b {speed['c='] / speed['b']:.1f}x); "
        f"peak memory at (b)'s batch size: {rows['c=']['memory'] / max(rows['b']['memory'], 1e-9):.2f} of (b)",
        "",
        f"ceiling on this machine: with only the arithmetic no exact method can skip (the {ceiling['prefix']} "
        f"template tokens all prompts share counted once), each linear layer at the rate this CPU reaches for its "
        f"shape ({ceiling['layer_gflops'][0]:.0f}-{ceiling['layer_gflops'][1]:.0f} GFLOP/s; square-matmul peak "
        f"{ceiling['peak_gflops']:.0f}) and everything else free, any method needs at least "
        f"{ceiling['seconds']:.2f} s: at most {ceiling['samples_per_s']:.0f} samples/s = "
        f"{ceiling['samples_per_s'] / speed['a']:.1f}x (a), {ceiling['samples_per_s'] / speed['lean']:.1f}x (a'). "
        f"(c) reaches {speed['c'] / ceiling['samples_per_s']:.0%} of it.",
    ]
    return "\n".join(lines)


MMAP_THRESHOLD = "131072"


def main(argv: Sequence[str] | None = None) -> None:
    if os.environ.get("MALLOC_MMAP_THRESHOLD_") != MMAP_THRESHOLD:  # see the module docstring
        os.execve(
            sys.executable,
            [sys.executable, *sys.argv],
            {**os.environ, "MALLOC_MMAP_THRESHOLD_": MMAP_THRESHOLD},
        )
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument(
        "--data", type=Path, default=DEFAULT_DATA, help="a training data file (default: Cherry Alpaca 5%%)"
    )
    parser.add_argument("--n", type=int, default=300, help="samples to score")
    parser.add_argument("--max-length", type=int, default=1024, help="rendering limit in tokens")
    parser.add_argument("--models", default="tiny,wide", help="comma-separated: tiny, wide")
    parser.add_argument(
        "--threads", type=int, default=2, help="torch threads, the same for every method (this CPU has 2)"
    )
    parser.add_argument(
        "--rounds", type=int, default=3, help="interleaved repetitions; each method's best is kept"
    )
    parser.add_argument(
        "--cache", type=Path, default=REPO / ".bench", help="where the tiny model is built once"
    )
    args = parser.parse_args(argv)
    os.environ.setdefault("HF_HUB_OFFLINE", "1")
    os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")
    if not args.data.exists():
        sys.exit(f"{args.data}: not found; pass --data with a training file from ../shared/data/train")
    torch.set_num_threads(args.threads)
    args.cache.mkdir(parents=True, exist_ok=True)
    models = build_models(args.cache)
    for name in args.models.split(","):
        model, tokenizer = models[name]
        rendered = load_rendered(args.data, args.n, tokenizer, args.max_length)
        rows = race(name, model, tokenizer, rendered, args.rounds)
        ceiling = ceiling_of(model, rendered)
        print(
            markdown_table(name, model.config.vocab_size, len(rendered), args.rounds, rows, ceiling),
            flush=True,
        )
        print()


if __name__ == "__main__":
    main()

"""Held-out evaluation: response loss and perplexity, and exact match / containment of greedy answers.

Loss uses the very rendering training uses (:func:`iterit.render.render_samples`) and the scorer's
conditioned loss (:func:`iterit.scoring.score_rendered`), so an evaluation loss and a training loss on the
same sample are the same number. Generation starts from the same prompt tokens (everything before the
response span), decodes greedily, and stops at end-of-sequence or the template's end-of-turn token.

Answers are compared after SQuAD-style normalisation (lower case, punctuation and the articles a/an/the
dropped, whitespace collapsed): ``exact`` asks for equality, ``contains`` for the reference appearing as
whole words inside the prediction (so a correct answer wrapped in chatter still counts, but "1" is not
found in "10").

``evaluate_lm_eval`` hands the same in-memory model to lm-evaluation-harness (the optional ``lm-eval``
extra) for standard benchmarks or the user's own task YAMLs.
"""

from __future__ import annotations

import logging
import math
import re
import unicodedata
from collections.abc import Sequence
from dataclasses import asdict, dataclass, field
from typing import TYPE_CHECKING, Any

from iterit.config import EvalConfig
from iterit.errors import IterITError, missing_extra

if TYPE_CHECKING:
    from iterit.data import Sample
    from iterit.render import RenderedSample

logger = logging.getLogger(__name__)

METRICS = ("loss", "exact", "contains")
_ARTICLES = re.compile(r"\b(a|an|the)\b")


# ----------------------------------------------------------------------------------------------------------
# Answer comparison


def normalize_answer(text: str) -> str:
    """Lower case, drop punctuation and the articles a/an/the, collapse whitespace (SQuAD's normalisation)."""
    lowered = "".join(" " if unicodedata.category(ch).startswith("P") else ch for ch in text.lower())
    return " ".join(_ARTICLES.sub(" ", lowered).split())


def exact_match(prediction: str, reference: str) -> bool:
    """The prediction equals the reference after normalisation.

    A reference that normalises to nothing (only punctuation or articles) is compared stripped instead,
    so it cannot match every empty prediction.
    """
    ref = normalize_answer(reference)
    if not ref:
        return prediction.strip() == reference.strip()
    return normalize_answer(prediction) == ref


def contains_answer(prediction: str, reference: str) -> bool:
    """The normalised reference appears in the normalised prediction as whole words."""
    ref = normalize_answer(reference)
    if not ref:
        return reference.strip() != "" and reference.strip() in prediction
    return f" {ref} " in f" {normalize_answer(prediction)} "


# ----------------------------------------------------------------------------------------------------------
# Results


@dataclass
class GroupScores:
    """The metrics over one group of samples (all, one source, one family); ``None`` = not computed.

    ``loss`` is the token-weighted mean response cross-entropy (nats per token), so ``perplexity`` is the
    group's perplexity over all its response tokens, as a training loop would report it.
    """

    n: int
    n_tokens: int
    loss: float | None
    perplexity: float | None
    exact: float | None
    contains: float | None


@dataclass
class Prediction:
    """One evaluated sample: its reference, the model's greedy answer, and its own loss."""

    id: str
    source: str
    family: str | None
    reference: str
    prediction: str | None
    exact: bool | None
    contains: bool | None
    loss: float | None
    n_tokens: int


@dataclass
class EvalResult:
    """What `evaluate` measured: overall, per source, per family (when samples carry one), per sample.

    Attributes:
        overall: the metrics over every evaluated sample.
        by_source: the same per ``Sample.source``.
        by_family: the same per ``family`` key of the samples' records (empty when none has one).
        predictions: one row per evaluated sample, in input order.
        metrics: the metrics computed.
        skipped: samples left out, by reason (e.g. the response does not fit ``max_length``).
        settings: the arguments that shaped the numbers (template, lengths), saved with the results.
        lm_eval: lm-evaluation-harness results by task, when it was run.
    """

    overall: GroupScores
    by_source: dict[str, GroupScores]
    by_family: dict[str, GroupScores]
    predictions: list[Prediction]
    metrics: tuple[str, ...]
    skipped: dict[str, int] = field(default_factory=dict)
    settings: dict[str, Any] = field(default_factory=dict)
    lm_eval: dict[str, Any] | None = None

    def to_dict(self) -> dict[str, Any]:
        """Plain JSON-ready data (non-finite numbers become ``None``)."""
        return _finite(asdict(self))


def _finite(value: Any) -> Any:
    if isinstance(value, float):
        return value if math.isfinite(value) else None
    if isinstance(value, dict):
        return {key: _finite(item) for key, item in value.items()}
    if isinstance(value, list | tuple):
        return [_finite(item) for item in value]
    return value


def _group_scores(rows: Sequence[Prediction], metrics: Sequence[str]) -> GroupScores:
    scored = [row for row in rows if row.loss is not None and math.isfinite(row.loss)]
    tokens = sum(row.n_tokens for row in scored)
    loss = sum(row.loss * row.n_tokens for row in scored) / tokens if "loss" in metrics and tokens else None

    def share(name: str) -> float | None:
        values = [getattr(row, name) for row in rows if getattr(row, name) is not None]
        return sum(values) / len(values) if name in metrics and values else None

    perplexity = math.exp(min(loss, 700.0)) if loss is not None else None
    return GroupScores(len(rows), tokens, loss, perplexity, share("exact"), share("contains"))


def _grouped(rows: Sequence[Prediction], key: str, metrics: Sequence[str]) -> dict[str, GroupScores]:
    groups: dict[str, list[Prediction]] = {}
    for row in rows:
        name = getattr(row, key)
        if name is not None:
            groups.setdefault(name, []).append(row)
    return {name: _group_scores(groups[name], metrics) for name in sorted(groups)}


def format_table(result: EvalResult) -> str:
    """A fixed-width table: overall, then one row per source and per family."""

    def cell(value: float | None, width: int, digits: int) -> str:
        return f"{value:>{width}.{digits}f}" if value is not None else f"{'-':>{width}}"

    def line(name: str, g: GroupScores) -> str:
        return (f"{name[:32]:<32} {g.n:>6} {cell(g.loss, 8, 4)} {cell(g.perplexity, 9, 2)} "
                f"{cell(g.exact, 7, 3)} {cell(g.contains, 8, 3)}")

    lines = [f"{'group':<32} {'n':>6} {'loss':>8} {'ppl':>9} {'exact':>7} {'contains':>8}",
             line("all", result.overall)]
    lines += [line(f"source {name}", g) for name, g in result.by_source.items()]
    lines += [line(f"family {name}", g) for name, g in result.by_family.items()]
    if result.skipped:
        lines.append("skipped: " + ", ".join(f"{count} ({reason})" for reason, count in result.skipped.items()))
    return "\n".join(lines)


# ----------------------------------------------------------------------------------------------------------
# Loss and generation


def parse_metrics(metrics: str | Sequence[str]) -> tuple[str, ...]:
    """``"loss,exact"`` or a sequence -> a validated tuple, in the order given."""
    names = [m.strip() for m in metrics.split(",")] if isinstance(metrics, str) else [m.strip() for m in metrics]
    names = [m for m in names if m]
    unknown = [m for m in names if m not in METRICS]
    if unknown or not names:
        raise IterITError(f"--metrics {','.join(names) or '(empty)'}: unknown or none {unknown}; "
                          f"choose from {','.join(METRICS)}")
    return tuple(dict.fromkeys(names))


def _response_losses(model: Any, rendered: Sequence[RenderedSample], pad_id: int | None,
                     progress: bool) -> tuple[list[float], list[int]]:
    """Each sample's mean response loss and token count, by the scorer's conditioned-loss engine."""
    from iterit.scoring import score_rendered

    scores = score_rendered(model, rendered, progress=progress, desc="eval loss", pad_token_id=pad_id)
    return [float(v) for v in scores.loss_cond], [int(n) for n in scores.n_tokens]


def _stop_ids(model: Any, tokenizer: Any, rendered: Sequence[RenderedSample]) -> list[int]:
    """End-of-sequence ids plus the template's end-of-turn token (the last token of a response span)."""
    ids: set[int] = set()
    for source in (tokenizer.eos_token_id, getattr(getattr(model, "generation_config", None), "eos_token_id", None)):
        ids.update(source if isinstance(source, list) else [source] if source is not None else [])
    special = set(tokenizer.all_special_ids)
    ids.update(r.input_ids[r.span[1] - 1] for r in rendered if r.input_ids[r.span[1] - 1] in special)
    return sorted(ids)


def _left_padded(prompts: Sequence[list[int]], pad_id: int, device: Any) -> tuple[Any, Any]:
    """Batched prompts padded on the left, so every row's next token comes right after its prompt."""
    import torch

    width = max(len(p) for p in prompts)
    ids = torch.tensor([[pad_id] * (width - len(p)) + list(p) for p in prompts], device=device)
    mask = torch.tensor([[0] * (width - len(p)) + [1] * len(p) for p in prompts], device=device)
    return ids, mask


def _cut_at_stop(tokens: list[int], stop_ids: set[int]) -> list[int]:
    for index, token in enumerate(tokens):
        if token in stop_ids:
            return tokens[:index]
    return tokens


def generate_answers(model: Any, tokenizer: Any, prompts: Sequence[list[int]], *, stop_ids: Sequence[int],
                     max_new_tokens: int = EvalConfig.max_new_tokens, batch_size: int = EvalConfig.batch_size, progress: bool = True) -> list[str]:
    """Greedy answers to tokenised prompts, in input order, decoded without special tokens.

    Prompts are sorted by length and batched with left padding (little padding, and each row continues
    from its own last token); generation stops at any of ``stop_ids``.
    """
    import torch
    from tqdm.auto import tqdm

    pad_id = tokenizer.pad_token_id if tokenizer.pad_token_id is not None else stop_ids[0]
    generator = getattr(model, "module", model)  # DDP wraps the model; generate lives on the inner one
    device = next(generator.parameters()).device
    order = sorted(range(len(prompts)), key=lambda i: len(prompts[i]))
    answers: list[str] = [""] * len(prompts)
    stops = set(stop_ids)
    with torch.inference_mode(), tqdm(total=len(prompts), desc="eval generate", unit="sample",
                                      disable=None if progress else True) as bar:
        for start in range(0, len(order), batch_size):
            batch = order[start : start + batch_size]
            ids, mask = _left_padded([prompts[i] for i in batch], pad_id, device)
            out = generator.generate(input_ids=ids, attention_mask=mask, max_new_tokens=max_new_tokens,
                                     do_sample=False, eos_token_id=list(stop_ids), pad_token_id=pad_id)
            for row, index in enumerate(batch):
                new = _cut_at_stop(out[row, ids.shape[1] :].tolist(), stops)
                answers[index] = tokenizer.decode(new, skip_special_tokens=True).strip()
            bar.update(len(batch))
    return answers


def _family(sample: Sample) -> str | None:
    family = sample.record.get("family") if isinstance(sample.record, dict) else None
    return str(family) if family is not None else None


def evaluate(
    model: Any,
    tokenizer: Any,
    samples: Sequence[Sample],
    *,
    metrics: str | Sequence[str] = EvalConfig.metrics,
    template: str = EvalConfig.template,
    max_length: int = EvalConfig.max_length,
    max_new_tokens: int = EvalConfig.max_new_tokens,
    batch_size: int = EvalConfig.batch_size,
    system_prompt: str | None = None,
    progress: bool = True,
    response_end: str = EvalConfig.response_end,
) -> EvalResult:
    """Evaluate a causal LM on held-out samples whose last assistant turn is the reference answer.

    Works on a model in memory (its training mode is restored afterwards), so a training run can
    evaluate at the end without saving and reloading.

    Args:
        model: a transformers causal LM (optionally wrapped by peft or DDP).
        tokenizer: its tokenizer.
        samples: held-out samples; a ``family`` key in a sample's record adds a per-family breakdown.
        metrics: any of ``loss`` (response loss and perplexity), ``exact`` and ``contains`` (greedy answers).
        template: the rendering, as in training: ``auto``, ``chat``, ``alpaca`` or ``llama-3.1``.
        response_end: ``template`` or ``eos``, as in training.
        max_length: tokens per sequence, as in training.
        max_new_tokens: the longest greedy answer. The defaults are ``iterit eval``'s (:class:`EvalConfig`).
        batch_size: prompts per generation batch.
        system_prompt: the system message training added, if any.
        progress: show progress bars (only on a terminal).

    Returns:
        An :class:`EvalResult`; samples that cannot be rendered are counted in ``skipped`` by reason.
    """
    from iterit.render import render_samples

    chosen = parse_metrics(metrics)
    if not samples:
        raise IterITError("no samples to evaluate; pass held-out data with --data FILE")
    if max_new_tokens < 1 or batch_size < 1:
        raise IterITError(f"--max-new-tokens {max_new_tokens} / --batch-size {batch_size}: both must be at least 1")
    rendered_all = render_samples(tokenizer, list(samples), template=template, max_length=max_length,
                                  system_prompt=system_prompt, response_end=response_end)
    keep = [i for i, r in enumerate(rendered_all) if r.reason is None]
    skipped: dict[str, int] = {}
    for r in rendered_all:
        if r.reason is not None:
            skipped[r.reason] = skipped.get(r.reason, 0) + 1
    if skipped:
        logger.warning("evaluation skips %d samples: %s", len(rendered_all) - len(keep), skipped)
    kept = [samples[i] for i in keep]
    rendered = [rendered_all[i] for i in keep]
    n = len(kept)
    losses, n_tokens = [math.nan] * n, [r.n_response_tokens for r in rendered]
    if "loss" in chosen and rendered:
        losses, n_tokens = _response_losses(model, rendered, tokenizer.pad_token_id, progress)
    answers: list[str | None] = [None] * n
    if {"exact", "contains"} & set(chosen) and rendered:
        answers = _answers_in_eval_mode(model, tokenizer, rendered, max_new_tokens, batch_size, progress)
    rows = [_prediction(sample, answer, loss, tokens, chosen)
            for sample, answer, loss, tokens in zip(kept, answers, losses, n_tokens)]
    settings = {"template": template, "response_end": response_end, "max_length": max_length,
                "max_new_tokens": max_new_tokens,
                "system_prompt": system_prompt, "n_samples": len(samples)}
    return EvalResult(_group_scores(rows, chosen), _grouped(rows, "source", chosen), _grouped(rows, "family", chosen),
                      rows, chosen, skipped, settings)


def _answers_in_eval_mode(model: Any, tokenizer: Any, rendered: Sequence[RenderedSample], max_new_tokens: int,
                          batch_size: int, progress: bool) -> list[str]:
    """Greedy answers with dropout off; the model's training mode is put back afterwards."""
    from iterit.models import eval_mode

    with eval_mode(model):
        prompts = [r.input_ids[: r.span[0]] for r in rendered]
        return generate_answers(model, tokenizer, prompts, stop_ids=_stop_ids(model, tokenizer, rendered),
                                max_new_tokens=max_new_tokens, batch_size=batch_size, progress=progress)


def _prediction(sample: Sample, answer: str | None, loss: float, n_tokens: int, metrics: Sequence[str]) -> Prediction:
    reference = sample.response
    return Prediction(
        id=sample.id,
        source=sample.source,
        family=_family(sample),
        reference=reference,
        prediction=answer,
        exact=exact_match(answer, reference) if answer is not None and "exact" in metrics else None,
        contains=contains_answer(answer, reference) if answer is not None and "contains" in metrics else None,
        loss=loss if math.isfinite(loss) else None,
        n_tokens=n_tokens,
    )


# ----------------------------------------------------------------------------------------------------------
# lm-evaluation-harness and the command


def evaluate_lm_eval(model: Any, tokenizer: Any, tasks: str | Sequence[str], *, include_path: str | None = None,
                     limit: int | float | None = None, batch_size: int = 8,
                     num_fewshot: int | None = None) -> dict[str, Any]:
    """Run lm-evaluation-harness tasks on an in-memory model (offline; tasks may be your own YAMLs).

    Args:
        model: a transformers causal LM, already loaded.
        tokenizer: its tokenizer.
        tasks: task names, a list or a comma-separated string.
        include_path: a folder of task YAMLs to add to lm-eval's own.
        limit: examples per task (a count, or a share below 1), for quick checks.
        batch_size: lm-eval's batch size.
        num_fewshot: few-shot examples (default: each task's own).

    Returns:
        lm-eval's per-task results (its ``results`` dictionary).
    """
    try:
        import lm_eval
        from lm_eval.models.huggingface import HFLM
        from lm_eval.tasks import TaskManager
    except ImportError:
        raise missing_extra("lm_eval", "lm-eval") from None
    names = [t.strip() for t in tasks.split(",")] if isinstance(tasks, str) else list(tasks)
    if not [t for t in names if t]:
        raise IterITError("--lm-eval: no task given; name lm-eval tasks, e.g. --lm-eval arc_easy,hellaswag")
    wrapped = HFLM(pretrained=model, tokenizer=tokenizer, batch_size=batch_size)
    manager = TaskManager(include_path=include_path) if include_path else TaskManager()
    output = lm_eval.simple_evaluate(model=wrapped, tasks=[t for t in names if t], limit=limit,
                                     num_fewshot=num_fewshot, task_manager=manager)
    return dict(output["results"]) if output else {}

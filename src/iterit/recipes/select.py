"""``iterit select``: load the data and the scores, choose a subset, write it and its manifest.

``run(SelectConfig(...))`` is the command; the CLI only parses flags into the config and prints the result.
The strategies themselves are :func:`iterit.selection.select_samples`.
"""

from __future__ import annotations

import logging
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from iterit.config import SelectConfig
from iterit.errors import IterITError
from iterit.selection import (
    Selection,
    _check_strategy,
    format_summary,
    manifest_path,
    parse_budget,
    parse_source_budget,
    select_samples,
    write_selection,
)

logger = logging.getLogger(__name__)


@dataclass
class SelectResult:
    """What ``iterit select`` chose and wrote.

    Attributes:
        selection: the picks (indices into the loaded samples), their scores, parameters and summary.
        out: the subset file. manifest: the manifest beside it. text: the summary the CLI prints.
    """

    selection: Selection
    out: Path
    manifest: Path
    text: str

    def format(self) -> str:
        """The lines the CLI prints."""
        return self.text


def check_select_outputs(out: str, data: Sequence[str], scores_path: str | None) -> None:
    """Neither the subset nor its manifest (nor the manifest's ``.meta.json``) may land on an input."""
    from iterit.outputs import check_output

    inputs = {"--data": list(data), "--scores": scores_path}
    manifest = manifest_path(out)
    check_output(out, inputs)
    check_output(manifest, inputs, flag="--out (its manifest)")
    if manifest.suffix == ".jsonl":
        check_output(manifest.with_suffix(".meta.json"), inputs, flag="--out (its manifest's .meta.json)")


def tfidf_suffix(tfidf_text: str, eos_token: str | None) -> str:
    """What ``--tfidf-text`` appends to every response before TF-IDF."""
    if tfidf_text == "response":
        return ""
    if tfidf_text != "response+eos":
        raise IterITError(f"--tfidf-text {tfidf_text!r}: use response or response+eos")
    if not eos_token:
        raise IterITError("--tfidf-text response+eos needs --eos-token, the tokenizer's eos string "
                          "(Llama 3: '<|end_of_text|>')")
    return eos_token


def vectorizer_options(name: str, diversity_norm: str = "l2") -> dict[str, Any] | None:
    """The TF-IDF options ``--vectorizer`` and ``--diversity-norm`` stand for (``None``: the paper's)."""
    if name not in ("tfidf", "hashing"):
        raise IterITError(f"--vectorizer {name!r}: use tfidf or hashing")
    from iterit.diversity import diversity_norm_options

    options = {"vectorizer": "hashing"} if name == "hashing" else {}
    return {**options, **diversity_norm_options(diversity_norm)} or None


def run(config: SelectConfig) -> SelectResult:
    """``iterit select``: load ``config.data`` and ``config.scores``, select, write the subset and manifest.

    The data is read with the same options as ``iterit score`` (format, columns, system_prompt, skip_invalid,
    dedup, input_join), so the scores' ids match; the subset keeps the input's own format.
    """
    from iterit.data import load_samples
    from iterit.scoring import read_scores
    from iterit.storage import check_writable

    data, scores_path, out, budget, strategy = list(config.data), config.scores, config.out, config.budget, config.strategy
    ngram_max = config.ngram_max
    suffix = tfidf_suffix(config.tfidf_text, config.eos_token)
    tfidf_options = vectorizer_options(config.vectorizer, config.diversity_norm)
    check_select_outputs(out, data, scores_path)
    check_writable(out)
    _check_strategy(strategy, scores_path is not None, config.decay)
    if not isinstance(ngram_max, int) or ngram_max < 1:
        raise IterITError(f"--ngram-max: {ngram_max!r} must be a whole number >= 1 (the reference uses 3)")
    budget_value = parse_budget(budget)
    quotas = parse_source_budget(config.source_budget)
    loaded = load_samples(data, format=config.format, columns=config.columns, system_prompt=config.system_prompt,
                          skip_invalid=config.skip_invalid, dedup=config.dedup, input_join=config.input_join)
    scores = read_scores(scores_path) if scores_path else None
    options = {"ngram_range": (1, ngram_max), **(tfidf_options or {})}
    selection = select_samples(
        loaded.samples, scores, budget_value, strategy=strategy, threshold=config.threshold, decay=config.decay,
        seed=config.seed, source_budget=quotas, tfidf_options=options, tfidf_suffix=suffix,
        budget_rounding=config.budget_rounding, token_budget=config.token_budget, drop_top_ifd=config.drop_top_ifd,
    )
    if selection.summary["budget_exceeds_candidates"]:
        logger.warning("--budget %s: asks for %d samples but only %d of the %d are candidates; selecting all %d",
                       budget, selection.summary["budget"], selection.summary["n_candidates"],
                       selection.summary["n_samples"], selection.summary["n_candidates"])
    found, removed = loaded.summary.duplicates, loaded.summary.duplicates_removed
    selection.summary["duplicates"] = {"found": found, "removed": removed}
    manifest = write_selection(loaded.samples, selection, out)
    duplicates = (
        f"exact duplicates in the data: {found}"
        + (f", removed before selection (--dedup): {removed}" if removed else " (kept; --dedup removes them)")
    )
    lines = [format_summary(selection.summary), duplicates]
    if loaded.summary.n_invalid:
        lines.append(f"invalid rows skipped while loading (--skip-invalid): {loaded.summary.n_invalid}")
    text = "\n".join([*lines, f"wrote {out} and {manifest}"])
    return SelectResult(selection, Path(out), manifest, text)

"""``iterit eval``: load a model folder and held-out data, evaluate, and write the results as JSON.

``run(EvalConfig(...))`` is the command; the CLI only parses flags into the config and prints the result.
The metrics themselves are :func:`iterit.evaluation.evaluate` (a model in memory) and
:func:`iterit.evaluation.evaluate_lm_eval`.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

from iterit.config import EvalConfig
from iterit.errors import IterITError
from iterit.evaluation import EvalResult, evaluate, evaluate_lm_eval, format_table, parse_metrics


@dataclass
class EvalRun:
    """What ``iterit eval`` measured (``evaluation``), and where it wrote it (``out``, or ``None``)."""

    evaluation: EvalResult
    out: str | None = None

    def format(self) -> str:
        """The table the CLI prints, then where the JSON went."""
        return format_table(self.evaluation) + (f"\nwrote {self.out}" if self.out else "")


def run(config: EvalConfig) -> EvalRun:
    """``iterit eval``: evaluate ``config.model`` on ``config.data``; write ``config.out`` when given.

    ``lm_eval`` (comma list of tasks) also runs lm-evaluation-harness on the same model, with
    ``lm_eval_include`` a folder of your own task YAMLs. The output is checked for writability before the
    model loads, and written atomically.
    """
    from iterit.data import load_samples
    from iterit.models import load_model
    from iterit.outputs import check_output
    from iterit.storage import check_writable, write_json

    model, data, out, lm_eval_include = config.model, list(config.data), config.out, config.lm_eval_include
    chosen = parse_metrics(config.metrics)
    if out:
        check_output(out, {"--data": list(data), "--model": model, "--lm-eval-include": lm_eval_include})
        check_writable(out)
    if lm_eval_include and not Path(lm_eval_include).is_dir():
        raise IterITError(f"--lm-eval-include {lm_eval_include}: no such folder; give a folder of lm-eval task YAMLs")
    samples = load_samples(data, format=config.format, columns=config.columns, system_prompt=config.system_prompt,
                           skip_invalid=config.skip_invalid, dedup=config.dedup, input_join=config.input_join).samples
    loaded, tokenizer = load_model(model, dtype=config.dtype, device=config.device)
    result = evaluate(loaded, tokenizer, samples, metrics=chosen, template=config.template,
                      max_length=config.max_length, max_new_tokens=config.max_new_tokens,
                      batch_size=config.batch_size, system_prompt=config.system_prompt,
                      response_end=config.response_end, progress=not config.quiet)
    result.settings.update({"model": model, "data": [str(d) for d in data]})
    if config.lm_eval:
        result.lm_eval = evaluate_lm_eval(loaded, tokenizer, config.lm_eval, include_path=lm_eval_include,
                                          limit=config.lm_eval_limit)
    if out:
        write_json(out, result.to_dict())
    return EvalRun(result, out)

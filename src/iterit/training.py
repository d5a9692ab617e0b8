"""``iterit train``: fine-tune with the Hugging Face ``Trainer`` on a subset re-selected every epoch.

The recipe, top to bottom (each step a small function below):

1. validate the config (all problems in one message) and write ``RUN/config.yaml``;
2. load the data and the model (optionally wrapped in a LoRA adapter); render every sample;
3. score every sample with the base model (or read ``--scores``) and select the first B;
4. train with :class:`~iterit.reselection.IterITTrainer`: the sampler yields the current B samples, the
   callback re-scores the pool at each epoch end and writes ``RUN/epochs/<e>/``;
5. save ``RUN/model/`` (and the merged model for LoRA when asked) and ``RUN/summary.json``.

The re-selection parts are assembled by :func:`iterit.reselection.install.build_reselection`, the builder
``install_reselection`` uses for a user's own ``Trainer``; this module adds files, settings and the run folder.
"""

from __future__ import annotations

import json
import logging
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
from transformers import (
    PrinterCallback,
    ProgressCallback,
    TrainerCallback,
    TrainerControl,
    TrainerState,
    TrainingArguments,
)

from iterit.config import (
    BUDGET_ROUNDING_HELP,
    DIVERSITY_NORM_HELP,
    DROP_TOP_IFD_HELP,
    TFIDF_TEXT_HELP,
    TOKEN_BUDGET_HELP,
    DataArgs,
    PresetArgs,
    RenderArgs,
)
from iterit.data import Sample
from iterit.diversity import DIVERSITY_NORMS, diversity_norm_options
from iterit.errors import IterITError, missing_extra
from iterit.reselection.callback import STATE_FILE, ReselectionCallback
from iterit.reselection.install import build_reselection
from iterit.reselection.rule import POOL_HELP, POOLS, STRATEGIES, resolve_pool, valid_count
from iterit.reselection.sampler import PaddingCollator, ResponseOnlyDataset
from iterit.reselection.scorers import score_with, scorer_for_rendered
from iterit.reselection.trainer import IterITTrainer
from iterit.runfolder import MARKER, RUN_ENTRIES, RunFolder, check_run_folder, claim_run_folder
from iterit.scoring import DTYPES, ScoreTable, close_distributed_at_exit
from iterit.selection import effective_threshold
from iterit.storage import check_writable, read_table

logger = logging.getLogger(__name__)

TABLE_FORMATS = ("parquet", "jsonl")
# The settings that define a run: another value of one of these makes another run, so its folder is refused.
# (Not: --resume, --quiet, --overwrite, batching for memory, where logs go.)
RUN_SETTINGS = (
    "model", "data", "scores", "format", "columns", "system_prompt", "skip_invalid", "dedup", "template",
    "max_length", "strategy", "ratio", "update_ratio", "pool", "decay", "threshold", "lora_r", "lora_alpha",
    "lora_dropout", "lora_target_modules", "merge_lora", "dtype", "table_format", "seed", "data_seed",
    "num_train_epochs", "learning_rate", "lr_scheduler_type", "warmup_steps", "weight_decay",
    "per_device_train_batch_size", "gradient_accumulation_steps", "bf16", "fp16",
)


def _help(text: str, **extra: Any) -> dict:
    return {"help": text, **extra}


@dataclass
class TrainConfig(TrainingArguments, DataArgs, RenderArgs, PresetArgs):
    """``iterit train``: every Hugging Face ``TrainingArguments`` field plus the selection settings.

    ``output_dir`` (the Trainer's checkpoints) defaults to ``<out>/checkpoints``; ``--epochs`` is
    ``num_train_epochs``. Defaults that differ from ``TrainingArguments`` say why.
    """

    model: str = field(default="", metadata=_help("a local model folder or a cached Hugging Face id (required)"))
    out: str = field(default="", metadata=_help("the run folder: model/, config.yaml, epochs/<e>/, summary.json (required)"))
    strategy: str = field(
        default="iterit",
        metadata=_help("iterit (re-scored IFD x diversity) | ifd-iterative (re-scored IFD) | static (iterit once) "
                       "| ifd (once) | random | longest | full"),
    )
    ratio: float = field(default=0.05, metadata=_help("samples per epoch: a share of the data (below 1; the paper: 0.05) or a count (2600)"))
    update_ratio: float = field(default=3.0, metadata=_help("the re-scored pool holds update_ratio x budget samples (the paper: 3)"))
    pool: str = field(default="greedy", metadata=_help(POOL_HELP))
    decay: float = field(default=0.1, metadata=_help("weight kept by an n-gram per picked response that covers it (the paper: 0.1)"))
    threshold: float = field(default=1.0, metadata=_help("candidates need IFD below this (>= 1: the instruction does not help)"))
    tfidf_text: str = field(default="response", metadata=_help(TFIDF_TEXT_HELP))
    budget_rounding: str = field(default="half-up", metadata=_help(BUDGET_ROUNDING_HELP))
    token_budget: int | None = field(
        default=None, metadata=_help(TOKEN_BUDGET_HELP + "; for the strategies that keep their epoch-0 picks "
                                     "(static, ifd, random, longest): B is the count that reaches it")
    )
    drop_top_ifd: float = field(default=0.0, metadata=_help(DROP_TOP_IFD_HELP + "; fixed from the base model's scores"))
    diversity_norm: str = field(default="l2", metadata=_help(DIVERSITY_NORM_HELP))
    loss_weighting: str = field(
        default="token",
        metadata=_help("token (default: the model's loss, averaged over every response token of the accumulated "
                       "batch, so long responses weigh more) | sample (each sample's mean token loss, averaged over "
                       "samples: equal weights under any batch shape, as the reference's batch 1 x 32 on transformers 4)"),
    )
    scores: str | None = field(default=None, metadata=_help("epoch-0 scores from `iterit score` for this model and data (skips scoring)"))
    lora_r: int = field(default=0, metadata=_help("LoRA rank; 0 trains all weights (needs iterit[lora] when > 0)"))
    lora_alpha: int = field(default=16, metadata=_help("LoRA scaling numerator (peft's default)"))
    lora_dropout: float = field(default=0.05, metadata=_help("dropout on the LoRA branch"))
    lora_target_modules: str = field(default="all-linear", metadata=_help("comma list of module names, or all-linear"))
    merge_lora: bool = field(default=False, metadata=_help("also save the adapter merged into the base weights as model/"))
    max_batch_tokens: int = field(default=16384, metadata=_help("tokens per scoring batch (padding included); lower it on out-of-memory"))
    dtype: str = field(default="auto", metadata=_help("weights dtype: auto (bfloat16 for LoRA with --bf16, else float32 master weights) | float32 | bfloat16 | float16"))
    table_format: str = field(default="parquet", metadata=_help("parquet | jsonl for the per-epoch scores and selections"))
    resume: bool = field(default=False, metadata=_help("continue a killed run from its last finished checkpoint"))
    overwrite: bool = field(default=False, metadata=_help("write into a folder that is not this run's, replacing only what iterit writes there"))
    quiet: bool = field(default=False, metadata=_help("no progress bars (for logs)"))
    # Overridden TrainingArguments defaults.
    output_dir: str | None = field(default=None, metadata=_help("the Trainer's checkpoints (default: <out>/checkpoints)"))
    learning_rate: float = field(default=2e-5, metadata=_help("peak learning rate (the paper: 2e-5 for full fine-tuning)"))
    save_strategy: str = field(default="epoch", metadata=_help("checkpoint at each epoch end, so --resume continues from the last finished epoch"))
    save_total_limit: int | None = field(default=2, metadata=_help("checkpoints kept (2: the last and the one before, in case the last was cut)"))
    logging_steps: float = field(default=1, metadata=_help("log the loss every step (the per-epoch train loss is their mean)"))
    remove_unused_columns: bool = field(default=False, metadata=_help("keep the collator's columns (our dataset has only model inputs)"))

    @classmethod
    def from_preset(cls, name: str, **overrides: Any) -> TrainConfig:
        """A config with the preset's settings (:mod:`iterit.presets`), then ``overrides`` on top."""
        from iterit.presets import preset_settings

        return cls(**{**preset_settings(name, cls), **overrides, "preset": name})

    def __post_init__(self) -> None:
        if self.pool == "frozen":
            self.pool = resolve_pool(self.pool)  # the old name, with a warning
        if not self.output_dir and self.out:
            self.output_dir = str(Path(self.out) / "checkpoints")
        if self.quiet:
            self.disable_tqdm = True
        if self.dataloader_pin_memory and not _has_accelerator():
            self.dataloader_pin_memory = False  # pinning needs an accelerator; on a CPU it only warns
        super().__post_init__()


def warn_if_prompts_unhelpful(table: ScoreTable) -> None:
    """Log the scorer's warning when most samples score IFD >= 1 under the base model."""
    from iterit.scoring import MOSTLY_UNHELPFUL, UNHELPFUL_PROMPTS_HINT

    scored = table.ifd[np.isfinite(table.ifd)]
    if scored.size and float(np.mean(scored >= 1.0)) > MOSTLY_UNHELPFUL:
        logger.warning("%.0f%% of samples have IFD >= 1 under the base model; %s",
                       100 * float(np.mean(scored >= 1.0)), UNHELPFUL_PROMPTS_HINT.removeprefix("warning: "))


def _has_accelerator() -> bool:
    import torch

    return torch.cuda.is_available() or (hasattr(torch, "xpu") and torch.xpu.is_available())


@dataclass
class RunResult:
    """What a finished run produced.

    Attributes:
        run_dir: the run folder. model_dir: the saved model (load with ``AutoModelForCausalLM``).
        budget: B. pool_size: u x B after clamping. epochs: per-epoch dynamics, loss and timings.
        max_steps: optimizer steps of the one learning-rate schedule.
        selections / selected_ids: each epoch's picks, as positions in the loaded samples and as ids.
        model / tokenizer: the trained model and its tokenizer, in memory (what ``model_dir`` holds).
    """

    run_dir: Path
    model_dir: Path
    budget: int
    pool_size: int
    epochs: list[dict[str, Any]]
    max_steps: int
    selections: list[list[int]] = field(default_factory=list)
    selected_ids: list[list[str]] = field(default_factory=list)
    model: Any = field(default=None, repr=False, compare=False)
    tokenizer: Any = field(default=None, repr=False, compare=False)


def train(config: TrainConfig) -> RunResult:
    """Fine-tune ``config.model`` on ``config.data`` with ``config.strategy``; see the module docstring."""
    validate_config(config)
    run = Path(config.out)
    check_run_outputs(config, run)
    check_writable(run)
    settings = run_settings(config)
    check_run_folder(run, settings, writes=RUN_ENTRIES, overwrite=config.overwrite)

    samples = load_data(config)  # before the model: data errors are cheaper to find
    model, tokenizer = load_model(config)
    if config.process_index == 0:  # the folder is claimed only once model and data have loaded
        claim_run_folder(run, settings, writes=RUN_ENTRIES, overwrite=config.overwrite)
    write_resolved_config(config, RunFolder(run).config)
    rendered = render_all(config, tokenizer, samples)
    checkpoint = find_resume_checkpoint(config) if config.resume else None

    started = time.perf_counter()
    base = epoch0_scores(config, model, tokenizer, samples, rendered, run)
    base_score_s = time.perf_counter() - started
    threshold = effective_threshold(base, config.threshold, config.drop_top_ifd)
    options = select_options(config, tokenizer, threshold)
    budget = resolve_budget(config, samples, base, options)
    warn_if_prompts_unhelpful(base)
    lengths = (np.array([len(r.input_ids) for r in rendered]), np.array([r.n_response_tokens for r in rendered]))
    built = build_reselection(
        samples, base, budget=budget, score_fn=scoring_function(config, tokenizer, samples, rendered),
        select_fn=selection_function(), strategy=config.strategy, pool=config.pool,
        update_ratio=config.update_ratio,
        select_options=options,
        seed=config.data_seed if config.data_seed is not None else config.seed,
        run_dir=run, table_suffix=f".{config.table_format}", lengths=lengths,
    )
    built.first.score_s = base_score_s
    sampler, callback, pool_size = built.sampler, built.callback, built.pool_size
    logger.info("budget %d of %d samples (%d candidates); pool %d", budget, len(samples),
                candidate_count(config, base, threshold), pool_size)
    if checkpoint is not None:
        callback.load_state_dict(json.loads((checkpoint / STATE_FILE).read_text()))

    trainer = IterITTrainer(
        model=model, args=config, train_dataset=ResponseOnlyDataset(rendered),
        data_collator=PaddingCollator(pad_token_id(tokenizer)), processing_class=tokenizer,
        callbacks=[callback], selection_sampler=sampler, loss_weighting=config.loss_weighting,
    )
    close_distributed_at_exit()  # the Trainer brought the group up under torchrun; see close_distributed
    trainer.remove_callback(PrinterCallback)  # both print every log dict; the epoch lines say what matters
    trainer.remove_callback(ProgressCallback)
    trainer.add_callback(EpochProgressCallback(enabled=not config.quiet))
    trainer.train(resume_from_checkpoint=str(checkpoint) if checkpoint else None)

    model_dir = save_final_model(config, trainer, tokenizer, run)
    selections = selections_by_epoch(callback)
    result = RunResult(run, model_dir, budget, pool_size, callback.history, trainer.state.max_steps,
                       selections=selections, selected_ids=[[samples[i].id for i in epoch] for epoch in selections],
                       model=trainer.model, tokenizer=tokenizer)
    if trainer.is_world_process_zero():
        write_summary(config, result, samples, base, RunFolder(run), options["threshold"])
    return result


# ---------------------------------------------------------------- settings


def validate_config(config: TrainConfig) -> None:
    """Every problem with the settings, in one message."""
    problems = []
    if not config.model:
        problems.append("--model is required")
    if not config.data:
        problems.append("--data is required (one or more files)")
    if not config.out:
        problems.append("--out is required (the run folder)")
    if config.strategy not in STRATEGIES:
        problems.append(f"--strategy '{config.strategy}' is not one of {', '.join(STRATEGIES)}")
    if config.pool not in POOLS:
        problems.append(f"--pool '{config.pool}' is not one of {', '.join(POOLS)}")
    if config.tfidf_text not in ("response", "response+eos"):
        problems.append(f"--tfidf-text '{config.tfidf_text}' is not one of response, response+eos")
    if config.budget_rounding not in ("half-up", "floor"):
        problems.append(f"--budget-rounding '{config.budget_rounding}' is not one of half-up, floor")
    if config.loss_weighting not in ("token", "sample"):
        problems.append(f"--loss-weighting '{config.loss_weighting}' is not one of token, sample")
    if config.table_format not in TABLE_FORMATS:
        problems.append(f"--table-format '{config.table_format}' is not one of {', '.join(TABLE_FORMATS)}")
    if config.dtype not in DTYPES:
        problems.append(f"--dtype '{config.dtype}' is not one of {', '.join(DTYPES)}")
    if not config.ratio > 0 or (config.ratio >= 1 and config.ratio != int(config.ratio)):
        problems.append(f"--ratio {config.ratio}: give a share below 1 (0.05) or a whole count (2600)")
    if config.update_ratio < 1:
        problems.append(f"--update-ratio {config.update_ratio}: the pool must hold at least the budget (>= 1)")
    if config.lora_r < 0:
        problems.append(f"--lora-r {config.lora_r}: must be >= 0 (0 = no LoRA)")
    if config.max_steps > 0:
        problems.append("--max-steps: the schedule is sized from the budget and --epochs; leave --max-steps unset")
    if config.token_budget is not None and config.token_budget < 1:
        problems.append(f"--token-budget {config.token_budget}: give a whole number of response tokens >= 1")
    if config.token_budget is not None and config.strategy in STRATEGIES and (
            STRATEGIES[config.strategy].rescore or config.strategy == "full"):
        problems.append(f"--token-budget applies to static, ifd, random and longest, not --strategy {config.strategy} "
                        "(a re-scoring strategy keeps B samples per epoch; full takes every sample)")
    if not 0.0 <= config.drop_top_ifd < 1.0:
        problems.append(f"--drop-top-ifd {config.drop_top_ifd}: must be in [0, 1) (e.g. 0.1)")
    if config.diversity_norm not in DIVERSITY_NORMS:
        problems.append(f"--diversity-norm '{config.diversity_norm}' is not one of {', '.join(DIVERSITY_NORMS)}")
    if config.num_train_epochs != int(config.num_train_epochs) or config.num_train_epochs < 1:
        problems.append(f"--epochs {config.num_train_epochs}: give a whole number of epochs >= 1")
    if problems:
        raise IterITError("; ".join(problems))


def check_run_outputs(config: TrainConfig, run: Path) -> None:
    """The run folder is no input, lies inside none, and writes none of its entries over one.

    ``RUN/config.yaml`` of an iterit run, given back as the YAML config (``iterit train RUN/config.yaml``), is
    the run's own file: rewriting it with the resolved settings is allowed.
    """
    from iterit.outputs import check_output

    own = (RunFolder(run).config,) if (run / MARKER).exists() else ()
    check_output(run, {"--data": list(config.data), "--model": config.model, "--scores": config.scores},
                 writes=RUN_ENTRIES, own_config=own)


def run_settings(config: TrainConfig) -> dict[str, Any]:
    """The settings that define the run (:data:`RUN_SETTINGS`), with local paths made absolute, as JSON values."""
    values = {name: getattr(config, name) for name in RUN_SETTINGS}
    values["model"] = _absolute(config.model)
    values["data"] = [_absolute(path) for path in config.data]
    values["scores"] = _absolute(config.scores) if config.scores else None
    return json.loads(json.dumps(values, default=str))


def _absolute(path: str) -> str:
    return str(Path(path).resolve()) if Path(path).exists() else path


def write_resolved_config(config: TrainConfig, path: Path) -> None:
    """Every resolved setting (ours and the Trainer's), as YAML; rank 0 only."""
    import yaml

    from iterit.storage import atomic_open

    if config.process_index != 0:
        return
    settings = json.loads(json.dumps(config.to_dict(), default=str))
    logger.info("resolved config in %s (strategy %s, ratio %g, update ratio %g, pool %s, %g epochs)", path,
                config.strategy, config.ratio, config.update_ratio, config.pool, config.num_train_epochs)
    logger.debug("resolved config: %s", json.dumps(settings, sort_keys=True))
    with atomic_open(path) as handle:
        handle.write("# iterit train: every resolved setting; rerun with `iterit train " + str(path) + "`\n")
        yaml.safe_dump(settings, handle, sort_keys=False)


def select_options(config: TrainConfig, tokenizer: Any, threshold: float) -> dict[str, Any]:
    """The selection settings every epoch's pick uses (``threshold`` after ``--drop-top-ifd``)."""
    options: dict[str, Any] = {"threshold": threshold, "decay": config.decay, "seed": config.seed,
                               "tfidf_suffix": tokenizer.eos_token if config.tfidf_text == "response+eos" else ""}
    norm = diversity_norm_options(config.diversity_norm)
    if norm:
        options["tfidf_options"] = norm
    if config.token_budget is not None:
        options["token_budget"] = config.token_budget
    return options


def resolve_budget(config: TrainConfig, samples: list[Sample], table: ScoreTable, options: dict[str, Any]) -> int:
    """B from ``--ratio`` (a share below 1 or a count, as ``iterit select --budget``), or the count of the
    epoch-0 picks that reaches ``--token-budget``; ``full`` takes all. ``options``: :func:`select_options`."""
    from iterit.selection import resolve_budget as budget_from
    from iterit.selection import select_samples

    valid = candidate_count(config, table, options["threshold"])
    if config.strategy == "full":
        return valid
    if options.get("token_budget") is not None:
        rule = STRATEGIES[config.strategy].select
        return len(select_samples(samples, table, None, strategy=rule, **options).indices)
    budget = budget_from(config.ratio, len(samples), "--ratio", rounding=config.budget_rounding)
    if budget > len(samples):
        raise IterITError(f"--ratio {config.ratio:g}: a budget of {budget} is more than the {len(samples)} samples "
                          "in --data; give a share below 1 or a smaller count")
    if budget > valid:
        raise IterITError(f"--ratio {config.ratio:g}: a budget of {budget} but only {valid} of {len(samples)} samples "
                          f"can be selected ({_exclusions(config, table, options['threshold'])}); lower --ratio, raise --max-length "
                          "or --threshold, or add data")
    return budget


def candidate_count(config: TrainConfig, table: ScoreTable, threshold: float | None = None) -> int:
    """Samples the strategy's rule may pick: scored, and under ``--threshold`` (or ``threshold``, after
    ``--drop-top-ifd``) when it ranks by IFD."""
    return valid_count(table, candidate_threshold(config, threshold))


def candidate_threshold(config: TrainConfig, threshold: float | None = None) -> float:
    """The IFD bound of the strategy's candidates (selection's rule)."""
    from iterit.selection import candidate_threshold as threshold_for

    return threshold_for(STRATEGIES[config.strategy].select, config.threshold if threshold is None else threshold)


def _exclusions(config: TrainConfig, table: ScoreTable, threshold: float) -> str:
    """Why samples are not candidates, counted by selection's candidate rule with ``threshold`` (after
    ``--drop-top-ifd``), the bound the budget check counted with."""
    from iterit.selection import find_candidates

    _, excluded = find_candidates(len(table.ifd), table, STRATEGIES[config.strategy].select, threshold, None)
    return ", ".join(f"{n} {reason}" for reason, n in sorted(excluded.items())) or "no reason recorded"


# ---------------------------------------------------------------- model and data


def load_model(config: TrainConfig) -> tuple[Any, Any]:
    """The model (wrapped with LoRA when ``--lora-r`` > 0) and its tokenizer, with a clear error.

    Loaded on the CPU: the Trainer moves it to its device. ``--dtype auto`` keeps float32 master weights,
    except for LoRA with ``--bf16``, where the base stays frozen and bfloat16 halves its memory.
    """
    from iterit.models import load_model as load_for_scoring

    dtype = config.dtype
    if dtype == "auto":
        dtype = "bfloat16" if config.lora_r and config.bf16 else "float32"
    model, tokenizer = load_for_scoring(config.model, dtype=dtype, device="cpu")
    if tokenizer.pad_token_id is None:
        tokenizer.pad_token = tokenizer.eos_token
    if config.lora_r:
        model = add_lora(model, config)
    return model, tokenizer


def add_lora(model: Any, config: TrainConfig) -> Any:
    """Wrap ``model`` in a peft LoRA adapter; only the adapter trains."""
    try:
        from peft import LoraConfig, get_peft_model
    except ImportError:
        raise missing_extra("peft", "lora") from None
    targets = config.lora_target_modules
    lora = LoraConfig(
        r=config.lora_r, lora_alpha=config.lora_alpha, lora_dropout=config.lora_dropout, task_type="CAUSAL_LM",
        target_modules=targets if targets == "all-linear" else [t.strip() for t in targets.split(",") if t.strip()],
    )
    return get_peft_model(model, lora)


def load_data(config: TrainConfig) -> list[Sample]:
    from iterit.data import load_samples

    loaded = load_samples(config.data, format=config.format, columns=config.columns, system_prompt=config.system_prompt,
                          skip_invalid=config.skip_invalid, dedup=config.dedup, input_join=config.input_join)
    if not loaded.samples:
        raise IterITError(f"--data {' '.join(config.data)}: no samples to train on")
    return loaded.samples


def render_all(config: TrainConfig, tokenizer: Any, samples: list[Sample]) -> list:
    from iterit.render import render_samples

    return render_samples(tokenizer, samples, template=config.template, max_length=config.max_length,
                          system_prompt=config.system_prompt, response_end=config.response_end)


def pad_token_id(tokenizer: Any) -> int:
    return tokenizer.pad_token_id if tokenizer.pad_token_id is not None else tokenizer.eos_token_id


# ---------------------------------------------------------------- scores and selection


def scoring_function(config: TrainConfig, tokenizer: Any, samples: list[Sample], rendered: list):
    """``score_fn(model, subset)`` with this run's batching, from the token ids rendered once for training."""
    return scorer_for_rendered(samples, rendered, max_batch_tokens=config.max_batch_tokens,
                               pad_token_id=pad_token_id(tokenizer), progress=not config.quiet)


def selection_function():
    from iterit.selection import select_samples

    return select_samples


def epoch0_scores(config: TrainConfig, model: Any, tokenizer: Any, samples: list[Sample], rendered: list,
                  run: Path) -> ScoreTable:
    """Scores of every sample under the base model: ``--scores``, a resumed run's own, or computed now.

    Strategies that ignore IFD (random, longest, full) are still scored, so every run's epoch 0 has the same
    table and the report can compare IFD across strategies.
    """
    if config.scores:
        return read_scores_for(Path(config.scores), samples, "--scores")
    own = RunFolder(run).epoch_table(0, "scores", f".{config.table_format}")
    if config.resume and own.exists():
        logger.info("resuming: reusing the epoch-0 scores in %s", own)
        return read_scores_for(own, samples, str(own))
    model.to(config.device)
    return score_with(model, scoring_function(config, tokenizer, samples, rendered), samples)


def read_scores_for(path: Path, samples: list[Sample], flag: str) -> ScoreTable:
    """A score table aligned to ``samples`` by id (:meth:`ScoreTable.aligned_to`); an error when ids differ."""
    rows, meta = read_table(path)
    return ScoreTable.from_rows(rows, stats=meta).aligned_to([s.id for s in samples], flag=f"{flag} {path}")


# ---------------------------------------------------------------- resume and outputs


def find_resume_checkpoint(config: TrainConfig) -> Path | None:
    """The newest checkpoint that finished saving (its re-selection state, written last, is present)."""
    folder = Path(config.output_dir)
    candidates = sorted(folder.glob("checkpoint-*"), key=lambda p: int(p.name.split("-")[-1]) if p.name.split("-")[-1].isdigit() else -1)
    complete = [c for c in candidates if (c / STATE_FILE).exists()]
    if not complete:
        logger.warning("--resume: no finished checkpoint in %s; starting from the beginning", folder)
        return None
    logger.info("--resume: continuing from %s", complete[-1])
    return complete[-1]


class EpochProgressCallback(TrainerCallback):
    """One bar per training epoch (``epoch 2/3``) with the latest loss, instead of the Trainer's bar over all steps.

    It replaces transformers' ``ProgressCallback``, which also prints every log dict to stdout. The bar is drawn
    only on a terminal (tqdm's ``disable=None``) and on the main process; ``enabled=False`` (``--quiet``) draws none.
    """

    def __init__(self, enabled: bool = True) -> None:
        self.enabled = enabled
        self.bar: Any = None

    def on_epoch_begin(self, args: TrainingArguments, state: TrainerState, control: TrainerControl,
                       **kwargs: Any) -> None:
        if not (self.enabled and state.is_world_process_zero):
            return
        from tqdm.auto import tqdm

        steps = max(1, state.max_steps // max(1, int(args.num_train_epochs)))
        epoch = int(round(state.epoch or 0)) + 1
        self.bar = tqdm(total=steps, desc=f"epoch {epoch}/{int(args.num_train_epochs)}", unit="step",
                        disable=None, leave=True, dynamic_ncols=True)

    def on_step_end(self, args: TrainingArguments, state: TrainerState, control: TrainerControl,
                    **kwargs: Any) -> None:
        if self.bar is not None:
            self.bar.update(1)

    def on_log(self, args: TrainingArguments, state: TrainerState, control: TrainerControl,
               logs: dict | None = None, **kwargs: Any) -> None:
        if self.bar is not None and logs and "loss" in logs:
            self.bar.set_postfix(loss=f"{float(logs['loss']):.4f}", refresh=False)

    def on_epoch_end(self, args: TrainingArguments, state: TrainerState, control: TrainerControl,
                     **kwargs: Any) -> None:
        self.close()

    def on_train_end(self, args: TrainingArguments, state: TrainerState, control: TrainerControl,
                     **kwargs: Any) -> None:
        self.close()

    def close(self) -> None:
        if self.bar is not None:
            self.bar.close()
            self.bar = None


def save_final_model(config: TrainConfig, trainer: IterITTrainer, tokenizer: Any, run: Path) -> Path:
    """``RUN/model``: the trained model (or LoRA adapter; merged when ``--merge-lora``) + tokenizer."""
    model_dir = RunFolder(run).model
    if not config.lora_r or not config.merge_lora:
        _save_whole(trainer, tokenizer, model_dir)
        return model_dir
    _save_whole(trainer, tokenizer, RunFolder(run).adapter)
    if trainer.is_world_process_zero():
        merged = trainer.model.merge_and_unload()
        partial = model_dir.with_name(".model.partial")
        merged.save_pretrained(partial)
        tokenizer.save_pretrained(partial)
        _publish(partial, model_dir)
    return model_dir


def _save_whole(trainer: IterITTrainer, tokenizer: Any, folder: Path) -> None:
    """Save into a hidden folder, then rename it into place: a kill never leaves a half-written model."""
    partial = folder.with_name(f".{folder.name}.partial")
    if trainer.is_world_process_zero() and partial.exists():  # left by a run killed mid-save: start it afresh
        import shutil

        shutil.rmtree(partial)
    trainer.accelerator.wait_for_everyone()
    trainer.save_model(str(partial))
    trainer.accelerator.wait_for_everyone()
    if trainer.is_world_process_zero():
        tokenizer.save_pretrained(partial)
        _publish(partial, folder)
    trainer.accelerator.wait_for_everyone()


def _publish(partial: Path, folder: Path) -> None:
    import shutil

    if folder.exists():
        shutil.rmtree(folder)
    partial.replace(folder)


def selections_by_epoch(callback: ReselectionCallback) -> list[list[int]]:
    return [callback.selections[epoch] for epoch in sorted(callback.selections)]


def write_summary(config: TrainConfig, result: RunResult, samples: list[Sample], base: ScoreTable, folder: RunFolder,
                  threshold: float) -> None:
    """``summary.json``: the run's budget, IFD bound (after ``--drop-top-ifd``), pool, per-epoch dynamics and
    timings, and where the model is."""
    totals = {key: float(sum(e.get(key) or 0.0 for e in result.epochs)) for key in ("score_s", "select_s", "train_s")}
    folder.write_summary({
        "strategy": config.strategy, "pool": config.pool, "samples": len(samples), "valid": valid_count(base),
        "budget": result.budget, "threshold": threshold, "pool_size": result.pool_size, "update_ratio": config.update_ratio,
        "epochs": result.epochs, "max_steps": result.max_steps, "timings": totals,
        "model_dir": str(result.model_dir),
    })

"""``iterit demo``: every strategy on the same known-answer data, budget and epochs, judged on held-out answers.

The recipe, in order: generate the multi-source demo data (every defect tagged), build the base model (a tiny
Llama pretrained briefly on plain text holding the facts, cached between runs), train each strategy with the
same per-epoch budget, evaluate each on the clean held-out set, and write one comparison table, a
``comparison.json`` and the report. Because the truth of every training record is known, the table can also
say how many defective and duplicate samples each strategy spent its budget on.
"""

from __future__ import annotations

import hashlib
import json
import logging
import shutil
import tempfile
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from iterit.demo.premises import format_premises, premise_check
from iterit.errors import IterITError

logger = logging.getLogger(__name__)

# random-tokens: random at iterit's response tokens per epoch (--token-budget), the equal-compute baseline; it
# runs after iterit, whose tokens it matches.
RANDOM_AT_ITERIT_TOKENS = "random-tokens"
STRATEGIES = ("iterit", "ifd-iterative", "static", "ifd", "random", RANDOM_AT_ITERIT_TOKENS, "longest", "full")
# What the demo writes in its folder: all that --overwrite replaces, and where no input may lie.
DEMO_ENTRIES = ("data", "scores.parquet", "runs", "comparison.json", "report.md", "report.html", "plots")
# The base model: wide enough to learn short answers in a few hundred steps on two CPU cores.
BASE_MODEL = {"hidden_size": 128, "layers": 4, "heads": 4, "vocab_size": 2048}
BASE_PRETRAIN = {"full": 600, "quick": 150}
# Fine-tuning: a tiny model needs a far higher rate than the paper's 2e-5 for a 7B model.
TRAINING = {
    "learning_rate": 2e-3,
    "per_device_train_batch_size": 16,
    "lr_scheduler_type": "cosine",
    "warmup_steps": 0.03,  # a float below 1 is a share of the steps (transformers 5)
    "weight_decay": 0.0,
    "max_length": 256,
    "max_batch_tokens": 8192,
}


@dataclass
class StrategyOutcome:
    """One strategy's row of the comparison."""

    strategy: str
    exact: float | None
    contains: float | None
    loss: float | None
    per_family: dict[str, float | None]
    defective_share: float
    duplicates_selected: int
    picks: int
    train_tokens: int
    response_tokens: int
    wall_s: float
    run_dir: str
    epochs: list[dict[str, Any]] = field(default_factory=list)


def run_demo(
    out: str | Path,
    *,
    quick: bool = False,
    seed: int = 0,
    strategies: str | list[str] = "iterit,static,ifd,random,random-tokens,full",
    epochs: int = 3,
    ratio: float = 0.08,
    pool: str = "greedy",
    decay: float = 0.1,
    cache: str | Path = ".cache/iterit",
    progress: bool = False,
    overwrite: bool = False,
    preset: str | None = None,
    options: dict[str, Any] | None = None,
) -> dict[str, Any]:
    """Run the whole comparison into ``out``; returns what ``comparison.json`` holds.

    Args:
        out: the demo folder: ``data/``, ``runs/<strategy>/``, ``comparison.json``, ``report.html``.
        quick: a smoke run: small data, a briefly pretrained model, two epochs.
        seed: one seed for the data, the base model and the training order.
        strategies: the strategies to compare (``iterit,static,ifd,random,random-tokens,full`` by default;
            ``random-tokens`` is random at iterit's response tokens per epoch, and runs after iterit).
        epochs: epochs per strategy (the paper: 3).
        ratio: per-epoch budget as a share of the training data (the paper: 0.05; 5-10% here).
        pool: IterIT's candidate pool: ``greedy`` (the head of the epoch-0 ranking), ``reference`` (the reference
            code's epoch-0 window) or ``rolling``.
        decay: weight an n-gram keeps per picked response that covers it (the paper: 0.1).
        cache: where the pretrained base model is kept between runs.
        progress: show progress bars (the demo logs one line per step otherwise).
        overwrite: write into a folder that is not this demo's, replacing only what the demo writes there.
        preset: a :mod:`iterit.presets` name (``reference``): its rendering, selection and loss settings for
            every strategy, scored and evaluated the same way; the demo's model-size settings (learning rate,
            batch size, sequence length) and the arguments above stay the demo's.
        options: more :class:`~iterit.training.TrainConfig` settings for every strategy (``token_budget``,
            ``drop_top_ifd``, ``diversity_norm``, ...), as ``benchmarks/quality.py`` runs its variants.
    """
    from iterit.demo.tasks import generate_demo_data
    from iterit.outputs import check_output
    from iterit.runfolder import check_run_folder, claim_run_folder
    from iterit.storage import check_writable, write_json

    names = _parse_strategies(strategies)
    if not 0 < ratio < 1:
        raise IterITError(f"--ratio {ratio}: the demo's per-epoch budget is a share of the data, between 0 and 1")
    if epochs < 1:
        raise IterITError(f"--epochs {epochs}: need at least one epoch")
    root = Path(out)
    check_output(root, {"--cache": str(cache)}, writes=DEMO_ENTRIES)
    check_writable(root)
    epochs = min(epochs, 2) if quick else epochs
    settings = {"quick": quick, "seed": seed, "strategies": names, "epochs": epochs, "ratio": ratio, "pool": pool,
                "decay": decay, **({"preset": preset} if preset else {}), **({"options": options} if options else {})}
    check_run_folder(root, settings, writes=DEMO_ENTRIES, overwrite=overwrite)
    started = time.perf_counter()
    base = base_model(Path(cache), seed=seed, quick=quick)
    claim_run_folder(root, settings, writes=DEMO_ENTRIES, overwrite=overwrite, kind="demo")
    logger.info("[demo] generating the known-answer data (%s)", "quick" if quick else "full size")
    data = generate_demo_data(root / "data", seed=seed, quick=quick)
    scores_path = root / "scores.parquet"
    premises = score_base_model(base, data, scores_path, _train_config("iterit", data, base, root, epochs=epochs,
                                                                       ratio=ratio, pool=pool, decay=decay, seed=seed,
                                                                       progress=progress, preset=preset))
    for line in format_premises(premises).splitlines():
        logger.info("[demo] %s", line)
    outcomes = []
    for number, strategy in enumerate(names, start=1):
        logger.info("[demo] %d/%d training '%s' (%d epochs, %.0f%% of the data per epoch)",
                    number, len(names), strategy, epochs, ratio * 100)
        extra = dict(options or {})
        if strategy == RANDOM_AT_ITERIT_TOKENS:
            iterit = next(o for o in outcomes if o.strategy == "iterit")
            extra["token_budget"] = max(1, round(iterit.response_tokens / epochs))
        extra["scores"] = str(scores_path)  # every strategy starts from the same base-model scores
        outcomes.append(run_strategy(strategy, data, base, root / "runs" / strategy,
                                     epochs=epochs, ratio=ratio, pool=pool, decay=decay, seed=seed,
                                     progress=progress, preset=preset, options=extra))
        logger.info("[demo]    exact %s, held-out loss %s, %.0f s", _fmt(outcomes[-1].exact, 3),
                    _fmt(outcomes[-1].loss, 3), outcomes[-1].wall_s)
    comparison = {
        "settings": {"quick": quick, "seed": seed, "epochs": epochs, "ratio": ratio, "pool": pool, "decay": decay,
                     "preset": preset, "options": options or {},
                     "base_model": str(base), "train_samples": len(data.truth), "families": list(data.families)},
        "premises": premises,
        "strategies": {o.strategy: _outcome_dict(o) for o in outcomes},
        "wall_s": time.perf_counter() - started,
    }
    write_json(root / "comparison.json", comparison)
    return comparison


def _parse_strategies(strategies: str | list[str]) -> list[str]:
    names = [s.strip() for s in strategies.split(",")] if isinstance(strategies, str) else list(strategies)
    unknown = [s for s in names if s not in STRATEGIES]
    if unknown or not names:
        raise IterITError(f"--strategies: unknown {', '.join(unknown) or '(none given)'}; choose from {', '.join(STRATEGIES)}")
    if RANDOM_AT_ITERIT_TOKENS in names and "iterit" not in names[: names.index(RANDOM_AT_ITERIT_TOKENS)]:
        raise IterITError(f"--strategies: {RANDOM_AT_ITERIT_TOKENS} matches iterit's response tokens per epoch; "
                          f"list iterit before it (e.g. iterit,random,{RANDOM_AT_ITERIT_TOKENS})")
    return names


def base_model(cache: Path, *, seed: int, quick: bool) -> Path:
    """The pretrained base model for the demo, built once per settings and kept in ``cache``."""
    from iterit.demo.families import pretraining_corpus
    from iterit.demo.tiny_model import build_tiny_model

    steps = BASE_PRETRAIN["quick" if quick else "full"]
    settings = {"seed": seed, "steps": steps, **BASE_MODEL, "version": 1}
    key = hashlib.sha256(json.dumps(settings, sort_keys=True).encode()).hexdigest()[:12]
    target = cache / f"demo-base-{key}"
    if (target / "config.json").exists():
        logger.info("[demo] base model from the cache: %s", target)
        return target
    logger.info("[demo] pretraining the tiny base model on plain text (%d steps, cached afterwards)", steps)
    cache.mkdir(parents=True, exist_ok=True)
    building = Path(tempfile.mkdtemp(prefix=".building-", dir=cache))
    try:
        build_tiny_model(building, texts=pretraining_corpus(seed), steps=steps, seed=seed, **BASE_MODEL)
        building.replace(target)
    except FileExistsError:  # another run finished it first: same settings, same model
        shutil.rmtree(building, ignore_errors=True)
    except BaseException:
        shutil.rmtree(building, ignore_errors=True)
        raise
    return target


def _train_config(strategy: str, data: Any, base: Path, run_dir: Path, *, epochs: int, ratio: float, pool: str,
                  decay: float, seed: int, progress: bool, preset: str | None = None,
                  options: dict[str, Any] | None = None) -> Any:
    """One strategy's training settings: the demo's, the preset's where given, then ``options``."""
    from iterit.training import TrainConfig

    settings = dict(
        model=str(base), data=[str(p) for p in data.train_files], out=str(run_dir),
        strategy="random" if strategy == RANDOM_AT_ITERIT_TOKENS else strategy,
        ratio=ratio, pool=pool, decay=decay, num_train_epochs=epochs, seed=seed, report_to="none", save_strategy="no",
        quiet=not progress, **TRAINING, **(options or {}),
    )
    return TrainConfig.from_preset(preset, **settings) if preset else TrainConfig(**settings)


def score_base_model(base: Path, data: Any, out: Path, config: Any) -> dict[str, Any]:
    """Score the training data once with the base model, rendered as ``config`` trains, into ``out``; returns
    the premise check (:mod:`iterit.demo.premises`) of those scores against the truth."""
    from iterit.data import load_samples
    from iterit.models import load_model
    from iterit.scoring import score_samples, write_scores

    samples = load_samples(config.data, system_prompt=config.system_prompt, input_join=config.input_join).samples
    model, tokenizer = load_model(str(base), dtype="float32", device="cpu")
    table = score_samples(model, tokenizer, samples, template=config.template, max_length=config.max_length,
                          max_batch_tokens=config.max_batch_tokens, system_prompt=config.system_prompt,
                          response_end=config.response_end, progress=not config.quiet)
    write_scores(table, out)
    return premise_check(table, {sample_id: row.defect for sample_id, row in data.truth.items()})


def run_strategy(strategy: str, data: Any, base: Path, run_dir: Path, *, epochs: int, ratio: float, pool: str,
                 decay: float, seed: int, progress: bool, preset: str | None = None,
                 options: dict[str, Any] | None = None) -> StrategyOutcome:
    """Train one strategy, evaluate it on the held-out set (rendered as it was trained), and count what its
    selections held."""
    from iterit.data import load_samples
    from iterit.evaluation import evaluate
    from iterit.training import train

    started = time.perf_counter()
    config = _train_config(strategy, data, base, run_dir, epochs=epochs, ratio=ratio, pool=pool, decay=decay,
                           seed=seed, progress=progress, preset=preset, options=options)
    result = train(config)  # the picks and the trained model come back in memory: nothing is re-read
    test = load_samples([data.test_file], system_prompt=config.system_prompt, input_join=config.input_join).samples
    scores = evaluate(result.model, result.tokenizer, test, metrics=("loss", "exact", "contains"),
                      max_length=TRAINING["max_length"], max_new_tokens=24, batch_size=32, progress=progress,
                      template=config.template, response_end=config.response_end, system_prompt=config.system_prompt)
    picks = result.selected_ids
    metrics = _epoch_metrics(run_dir, len(result.epochs))
    return StrategyOutcome(
        strategy=strategy,
        exact=scores.overall.exact,
        contains=scores.overall.contains,
        loss=scores.overall.loss,
        per_family={name: group.exact for name, group in scores.by_family.items()},
        defective_share=data.defect_share([i for epoch in picks for i in epoch]),
        duplicates_selected=sum(data.redundant_duplicates(epoch) for epoch in picks),
        picks=sum(len(epoch) for epoch in picks),
        train_tokens=sum(int(e.get("tokens", 0)) for e in metrics),
        response_tokens=sum(int(e.get("response_tokens", 0)) for e in metrics),
        wall_s=time.perf_counter() - started,
        run_dir=str(run_dir),
        epochs=result.epochs,
    )


def _epoch_metrics(run_dir: Path, n_epochs: int) -> list[dict[str, Any]]:
    paths = [run_dir / "epochs" / str(epoch) / "metrics.json" for epoch in range(n_epochs)]
    return [json.loads(path.read_text()) for path in paths if path.exists()]


def _outcome_dict(outcome: StrategyOutcome) -> dict[str, Any]:
    return {key: value for key, value in vars(outcome).items() if key not in ("strategy", "epochs")}


def _fmt(value: float | None, digits: int) -> str:
    return "-" if value is None else f"{value:.{digits}f}"


def format_comparison(comparison: dict[str, Any]) -> str:
    """The table ``iterit demo`` prints: the premise check, one row per strategy, then exact match per family."""
    strategies = comparison["strategies"]
    premises = [format_premises(comparison["premises"]), ""] if comparison.get("premises") else []
    header = (f"{'strategy':<14} {'exact':>6} {'contains':>8} {'loss':>7} {'defective':>9} {'dup picks':>9} "
              f"{'picks':>6} {'train tok':>9} {'wall s':>7}")
    lines = [*premises, header, "-" * len(header)]
    for name, row in strategies.items():
        lines.append(
            f"{name:<14} {_fmt(row['exact'], 3):>6} {_fmt(row['contains'], 3):>8} {_fmt(row['loss'], 3):>7} "
            f"{row['defective_share']:>9.1%} {row['duplicates_selected']:>9} {row['picks']:>6} "
            f"{row['train_tokens']:>9} {row['wall_s']:>7.0f}"
        )
    families = comparison["settings"]["families"]
    lines += ["", "exact match per family", f"{'family':<18} " + " ".join(f"{n[:10]:>10}" for n in strategies)]
    for family in families:
        cells = [_fmt(row["per_family"].get(family), 2) for row in strategies.values()]
        lines.append(f"{family:<18} " + " ".join(f"{c:>10}" for c in cells))
    settings = comparison["settings"]
    lines.append("")
    lines.append(
        f"{settings['train_samples']} training samples, {settings['ratio']:.0%} per epoch, {settings['epochs']} epochs, "
        f"pool {settings['pool']}; defective = wrong, swapped, truncated or padded-with-filler responses; "
        f"dup picks = picks repeating one already picked in the same epoch. Total {comparison['wall_s']:.0f} s."
    )
    return "\n".join(lines)

"""IterIT re-selection dropped into your own Hugging Face ``Trainer``.

Run it (CPU, about a minute; builds a tiny model and demo data when you give none):

    python examples/custom_trainer.py --out runs/custom-trainer
    python examples/custom_trainer.py --model path/to/model --data train.jsonl --ratio 0.05 --epochs 3
    python examples/custom_trainer.py --trl --out runs/custom-sft    # the same with TRL's SFTTrainer

What it shows: your ``Trainer``, your ``TrainingArguments``, your dataset; ``install_reselection`` adds a
sampler that yields the current B samples and a callback that re-scores the candidate pool with the model
as it stands after each epoch. The only requirement is that row ``i`` of ``train_dataset`` is ``samples[i]``
(the sampler picks rows by position).

With TRL's ``SFTTrainer`` (``--trl``, needs ``pip install 'iterit[trl]'``) the same call applies, given the
``datasets.Dataset`` the trainer was built on: TRL formats and tokenizes it (chat ``messages`` here; ``prompt`` /
``completion`` rows get its ``completion_only_loss``) and keeps one row per sample, in order::

    dataset = Dataset.from_list([{"messages": s.messages} for s in samples])
    trainer = SFTTrainer(model=model, processing_class=tokenizer, train_dataset=dataset,
                         args=SFTConfig(output_dir="out", num_train_epochs=3, max_length=2048, ...))
    install_reselection(trainer, dataset, budget=round(0.05 * len(dataset)),
                        score_fn=scorer_for(tokenizer, max_length=2048), update_ratio=3, run_dir="out/iterit")
    trainer.train()

What cannot line up is refused with a reason: ``packing=True`` (rows are merged into blocks),
``shuffle_dataset=True`` (rows are reordered; the sampler shuffles anyway), and rows TRL drops because
truncation left no label (raise ``max_length``, or drop those rows first).

Checkpoints carry the callback's state (``iterit_reselection.json``), so ``trainer.train(resume_from_checkpoint=...)``
continues with the selection the interrupted run had.
"""

from __future__ import annotations

import argparse
import logging
import tempfile
from pathlib import Path

from transformers import AutoModelForCausalLM, AutoTokenizer, Trainer, TrainingArguments

from iterit.data import load_samples
from iterit.render import render_samples
from iterit.rescoring import scorer_for
from iterit.reselection import PaddingCollator, ResponseOnlyDataset, install_reselection


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--model", help="model folder (default: build a tiny one)")
    parser.add_argument("--data", nargs="+", help="data files (default: the known-answer demo data)")
    parser.add_argument("--out", default="runs/custom-trainer", help="checkpoints and epochs/<e>/ artefacts")
    parser.add_argument("--ratio", type=float, default=0.05, help="samples per epoch, as a share of the data")
    parser.add_argument("--epochs", type=int, default=2)
    parser.add_argument("--max-length", type=int, default=256)
    parser.add_argument("--trl", action="store_true", help="train with TRL's SFTTrainer instead of a plain Trainer")
    parser.add_argument("--report-to", default="none", help="tensorboard, wandb, mlflow, ...: where the Trainer "
                        "logs, the per-epoch selection dynamics included")
    return parser.parse_args(argv)


def default_inputs(scratch: Path, model: str | None, data: list[str] | None) -> tuple[str, list[str]]:
    """A tiny pretrained model and the demo data when the user gave neither."""
    if model is None:
        from iterit.demo.tiny_model import build_tiny_model

        model = str(build_tiny_model(scratch / "tiny-model", steps=50, seed=0))
    if data is None:
        from iterit.demo.tasks import generate_demo_data

        demo = generate_demo_data(scratch / "demo-data", seed=0, quick=True)
        data = [str(path) for path in demo.train_files]
    return model, data


def plain_trainer(model, tokenizer, samples, args: argparse.Namespace) -> tuple[Trainer, list]:
    """Your own dataset and Trainer: here, response-only labels with the same rendering the scorer uses."""
    rendered = render_samples(tokenizer, samples, max_length=args.max_length)
    trainer = Trainer(
        model=model,
        args=TrainingArguments(output_dir=str(Path(args.out) / "checkpoints"), remove_unused_columns=False,
                               **training_settings(args)),
        train_dataset=ResponseOnlyDataset(rendered),
        data_collator=PaddingCollator(tokenizer.pad_token_id),
    )
    return trainer, samples


def sft_trainer(model, tokenizer, samples, args: argparse.Namespace):
    """TRL's SFTTrainer on a ``datasets.Dataset`` of chat messages, with TRL's own formatting and defaults."""
    from datasets import Dataset
    from trl import SFTConfig, SFTTrainer

    dataset = Dataset.from_list([{"messages": sample.messages} for sample in samples])
    config = SFTConfig(output_dir=str(Path(args.out) / "checkpoints"), max_length=args.max_length,
                       **training_settings(args))
    return SFTTrainer(model=model, processing_class=tokenizer, train_dataset=dataset, args=config), dataset


def training_settings(args: argparse.Namespace) -> dict:
    return dict(num_train_epochs=args.epochs, per_device_train_batch_size=8, learning_rate=1e-3,
                lr_scheduler_type="cosine", warmup_steps=0.1, logging_steps=5, save_strategy="epoch",
                report_to=args.report_to, use_cpu=True, seed=0)


def main(argv: list[str] | None = None) -> list[dict]:
    logging.basicConfig(level=logging.INFO, format="%(message)s")
    args = parse_args(argv)
    with tempfile.TemporaryDirectory() as scratch:
        model_path, data = default_inputs(Path(scratch), args.model, args.data)
        tokenizer = AutoTokenizer.from_pretrained(model_path)
        model = AutoModelForCausalLM.from_pretrained(model_path)
        samples = load_samples(data).samples
        build = sft_trainer if args.trl else plain_trainer
        trainer, rows = build(model, tokenizer, samples, args)

        # The IterIT part: score, pick B, and re-pick B from a pool of 3 x B after every epoch.
        budget = max(1, round(args.ratio * len(samples)))
        callback = install_reselection(trainer, rows, budget=budget,
                                       score_fn=scorer_for(tokenizer, max_length=args.max_length, progress=False),
                                       strategy="iterit", update_ratio=3, run_dir=args.out)
        trainer.train()

    for epoch in callback.history:
        overlap = epoch["overlap_with_previous"]
        logging.info("epoch %d: %d samples, overlap with previous %s, not in epoch-0 top %.0f%%, loss %s",
                     epoch["epoch"], epoch["budget"], "-" if overlap is None else f"{overlap:.0%}",
                     100 * epoch["share_not_in_epoch0_top"], epoch.get("mean_train_loss"))
    logging.info("per-epoch scores, selections and dynamics: %s/epochs/", args.out)
    return callback.history


if __name__ == "__main__":
    main()

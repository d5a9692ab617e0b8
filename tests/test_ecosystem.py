"""The libraries users train with, run for real around re-selection: TRL's SFTTrainer, `datasets` rows,
tensorboard as a `report_to` integration, and the custom-trainer example in both its modes.

Runs use the session's tiny Llama on CPU, 24-32 samples, budget 8, 2 epochs at lr 1e-2 (so one epoch moves
the hard samples and re-selection has something to change).
"""

from __future__ import annotations

import importlib.util
import json
from pathlib import Path

import pytest
from conftest import make_samples
from datasets import Dataset
from test_reselection import plain_trainer

from iterit.data import load_samples
from iterit.errors import IterITError
from iterit.render import render_samples
from iterit.rescoring import scorer_for
from iterit.reselection import SelectionSampler, install_reselection

REPO = Path(__file__).resolve().parents[1]
trl = pytest.importorskip("trl", reason="pip install 'iterit[trl]'")


pytestmark = pytest.mark.usefixtures("one_thread")


def trl_rows(layout: str, n: int) -> Dataset:
    """The samples as TRL reads them: chat ``messages``, or ``prompt``/``completion`` text."""
    samples = make_samples(n)
    if layout == "messages":
        return Dataset.from_list([{"messages": s.messages} for s in samples])
    return Dataset.from_list([{"prompt": s.messages[0]["content"], "completion": s.response} for s in samples])


def sft_trainer(model, tokenizer, dataset, out, **overrides):
    settings = dict(output_dir=str(out), num_train_epochs=2, per_device_train_batch_size=4, learning_rate=1e-2,
                    logging_steps=1, save_strategy="no", report_to="none", use_cpu=True, disable_tqdm=True,
                    seed=0, max_length=128)
    settings.update(overrides)
    return trl.SFTTrainer(model=model, processing_class=tokenizer, train_dataset=dataset,
                          args=trl.SFTConfig(**settings))


def record_epochs(monkeypatch) -> list[list[int]]:
    """What the sampler hands the Trainer at each epoch's ``iter()``."""
    seen: list[list[int]] = []
    original = SelectionSampler.__iter__

    def recording(self):
        order = list(original(self))
        seen.append(order)
        return iter(order)

    monkeypatch.setattr(SelectionSampler, "__iter__", recording)
    return seen


# ---------------------------------------------------------------- TRL's SFTTrainer


@pytest.mark.parametrize("layout", ["messages", "prompt-completion"])
def test_sft_trainer_reselects_between_epochs_with_trls_defaults(tiny, tmp_path, monkeypatch, layout):
    tokenizer, load = tiny
    dataset = trl_rows(layout, 32)
    trainer = sft_trainer(load(), tokenizer, dataset, tmp_path / "out")
    if layout == "prompt-completion":  # TRL's completion_only_loss default: no loss on the prompt
        assert -100 in trainer.train_dataset[0]["labels"]
    seen = record_epochs(monkeypatch)
    callback = install_reselection(trainer, dataset, budget=8, strategy="iterit", update_ratio=2,
                                   score_fn=scorer_for(tokenizer, max_length=128, progress=False))
    trainer.train()
    assert trainer.state.global_step == 2 * 2
    assert [sorted(order) for order in seen] == [sorted(callback.selections[0]), sorted(callback.selections[1])]
    assert set(seen[1]) != set(seen[0])
    assert set(seen[1]) <= set(callback.reselector.frozen_pool_.tolist())
    assert callback.history[1]["overlap_with_previous"] < 1


def test_sft_trainer_static_keeps_the_epoch0_picks(tiny, tmp_path, monkeypatch):
    tokenizer, load = tiny
    dataset = trl_rows("messages", 24)
    trainer = sft_trainer(load(), tokenizer, dataset, tmp_path / "out")
    seen = record_epochs(monkeypatch)
    callback = install_reselection(trainer, dataset, budget=8, strategy="static",
                                   score_fn=scorer_for(tokenizer, max_length=128, progress=False))
    trainer.train()
    assert len(seen) == 2 and sorted(seen[0]) == sorted(seen[1]) == sorted(callback.selections[0])
    assert seen[0] != seen[1]  # the same picks, shuffled anew each epoch
    assert callback.history[1]["overlap_with_previous"] == 1.0


@pytest.mark.parametrize("options, message", [
    (dict(packing=True), r"packing=True\) concatenates rows .* set packing=False"),
    (dict(shuffle_dataset=True), r"shuffle_dataset=True\) reorders the rows"),
    (dict(max_length=12), r"train_dataset has \d+ rows for 24 samples \(SFTTrainer drops rows .* max_length=12"),
])
def test_sft_options_that_break_row_positions_are_refused(tiny, tmp_path, options, message):
    tokenizer, load = tiny
    dataset = trl_rows("prompt-completion", 24)
    trainer = sft_trainer(load(), tokenizer, dataset, tmp_path / "out", **options)
    with pytest.raises(IterITError, match=message):
        install_reselection(trainer, dataset, budget=8, score_fn=scorer_for(tokenizer, max_length=128))


# ---------------------------------------------------------------- datasets rows


def test_install_reselection_and_score_samples_take_a_dataset_with_a_column_mapping(tiny, tmp_path):
    from iterit.scoring import score_samples

    tokenizer, load = tiny
    samples = make_samples(24)
    dataset = Dataset.from_list([{"q": s.messages[0]["content"], "a": s.response} for s in samples])
    columns = "instruction=q,output=a"
    as_loaded = load_samples([dataset], columns=columns).samples
    model = load()
    table = score_samples(model, tokenizer, dataset, columns=columns, max_length=128, progress=False)
    direct = score_samples(model, tokenizer, as_loaded, max_length=128, progress=False)
    assert table.ids == direct.ids == [f"dataset:{i}" for i in range(24)]
    assert table.ifd.tolist() == pytest.approx(direct.ifd.tolist(), nan_ok=True)

    trainer = plain_trainer(model, tokenizer, render_samples(tokenizer, as_loaded, max_length=128), tmp_path / "o")
    callback = install_reselection(trainer, dataset, columns=columns, budget=8, scores=table,
                                   score_fn=scorer_for(tokenizer, max_length=128, progress=False))
    trainer.train()
    assert [entry["epoch"] for entry in callback.history] == [0, 1]
    assert callback.reselector.samples[3].response == samples[3].response


# ---------------------------------------------------------------- tracking


@pytest.mark.skipif(importlib.util.find_spec("tensorboard") is None, reason="pip install 'iterit[tensorboard]'")
def test_selection_dynamics_reach_the_tensorboard_event_file(tiny, tmp_path):
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

    tokenizer, load = tiny
    samples = make_samples(24)
    trainer = plain_trainer(load(), tokenizer, render_samples(tokenizer, samples, max_length=128), tmp_path / "o",
                            report_to="tensorboard")
    callback = install_reselection(trainer, samples, budget=8, update_ratio=2,
                                   score_fn=scorer_for(tokenizer, max_length=128, progress=False))
    trainer.train()
    events = sorted((tmp_path / "o").rglob("events.out.tfevents.*"))
    assert events, "the tensorboard integration wrote no event file"
    accumulator = EventAccumulator(str(events[0].parent))
    accumulator.Reload()

    def series(tag):  # the integrations file training logs under train/ (transformers' rewrite_logs)
        return [(event.step, event.value) for event in accumulator.Scalars(f"train/{tag}")]

    tags = {tag.removeprefix("train/") for tag in accumulator.Tags()["scalars"]}
    end_of_epoch0 = trainer.state.global_step // 2
    assert series("iterit/selection_epoch") == [(0, 0.0), (end_of_epoch0, 1.0)]
    overlap = callback.history[1]["overlap_with_previous"]
    assert series("iterit/overlap_with_previous") == [(end_of_epoch0, pytest.approx(overlap))]
    assert [v for _, v in series("iterit/share_not_in_epoch0_top")] == pytest.approx(
        [0.0, callback.history[1]["share_not_in_epoch0_top"]])
    for quantile in ("p10", "p25", "p50", "p75", "p90"):
        assert [v for _, v in series(f"iterit/selected_ifd_{quantile}")] == pytest.approx(
            [entry["selected_ifd"][quantile] for entry in callback.history], rel=1e-6)
    assert {"iterit/pool_ifd_p50", "iterit/source_share/math", "iterit/source_share/echo"} <= tags
    shares = [sum(v for _, v in series(tag)[:1]) for tag in tags if tag.startswith("iterit/source_share/")]
    assert sum(shares) == pytest.approx(1.0)
    assert "loss" in tags  # the Trainer's own logs share the file
    written = json.loads(json.dumps(callback.history))  # the dynamics stay JSON, as dynamics.json
    assert written[1]["pool_ifd"]["p50"] > 0


@pytest.mark.skipif(importlib.util.find_spec("tensorboard") is None, reason="pip install 'iterit[tensorboard]'")
def test_iterit_train_with_report_to_tensorboard_logs_the_dynamics(tiny_model_dir, tmp_path):
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator
    from test_training import recipe_config

    from iterit.training import train

    result = train(recipe_config(tmp_path, tiny_model_dir, n=24, report_to=["tensorboard"]))
    events = sorted(result.run_dir.rglob("events.out.tfevents.*"))
    assert events, "iterit train --report-to tensorboard wrote no event file"
    accumulator = EventAccumulator(str(events[0].parent))
    accumulator.Reload()
    overlap = [event.value for event in accumulator.Scalars("train/iterit/overlap_with_previous")]
    assert overlap == pytest.approx([result.epochs[1]["overlap_with_previous"]])


def test_nothing_is_logged_without_report_to(tiny, tmp_path):
    tokenizer, load = tiny
    samples = make_samples(16)
    trainer = plain_trainer(load(), tokenizer, render_samples(tokenizer, samples, max_length=128), tmp_path / "o")
    install_reselection(trainer, samples, budget=4, score_fn=scorer_for(tokenizer, max_length=128, progress=False))
    trainer.train()
    assert not any(key.startswith("iterit/") for entry in trainer.state.log_history for key in entry)


# ---------------------------------------------------------------- the example, both modes


@pytest.mark.parametrize("mode", [[], ["--trl"]])
def test_custom_trainer_example_runs(tiny_model_dir, tmp_path, mode):
    spec = importlib.util.spec_from_file_location("custom_trainer", REPO / "examples" / "custom_trainer.py")
    example = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(example)
    data = tmp_path / "train.jsonl"
    data.write_text("".join(json.dumps({"messages": s.messages}) + "\n" for s in make_samples(40)))
    history = example.main(["--model", str(tiny_model_dir), "--data", str(data), "--out", str(tmp_path / "run"),
                            "--ratio", "0.2", "--max-length", "128", *mode])
    assert [entry["epoch"] for entry in history] == [0, 1] and history[1]["budget"] == 8
    assert (tmp_path / "run" / "epochs" / "1" / "dynamics.json").exists()

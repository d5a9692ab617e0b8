"""Re-selection (iterit.reselection): the rule, the scorers, the sampler, the callback, the trainer, the install.

Sections follow the package's modules. Model runs use the session's tiny Llama on CPU with budgets of 8-16
samples, max_length 128 and 2 epochs.
"""

from __future__ import annotations

import json
import logging
import math

import numpy as np
import pytest
import torch
from conftest import make_samples
from transformers import TrainerCallback as TrainerCallbackBase

from iterit.errors import IterITError
from iterit.render import RenderedSample
from iterit.reselection.callback import ReselectionCallback
from iterit.reselection.install import build_reselection, install_reselection
from iterit.reselection.rule import STRATEGIES, Reselector, clamp_pool_size, put_rows, take_rows
from iterit.reselection.sampler import PaddingCollator, ResponseOnlyDataset, SelectionSampler
from iterit.reselection.scorers import eval_mode, scorer_for, scorer_for_rendered
from iterit.scoring import ScoreTable
from iterit.selection import Selection


def chat_render(tokenizer, samples, max_length=128) -> list[RenderedSample]:
    """Chat-template rendering with the response span; the seam for the dataset of a plain Trainer."""
    rendered = []
    for sample in samples:
        ids = tokenizer.apply_chat_template(sample.messages, tokenize=True, return_dict=False)[:max_length]
        prompt = tokenizer.apply_chat_template(sample.prompt_messages, tokenize=True, add_generation_prompt=True,
                                               return_dict=False)
        prior = tokenizer.apply_chat_template([sample.messages[-1]], tokenize=True, return_dict=False)
        rendered.append(RenderedSample(list(ids), (len(prompt), len(ids)), list(prior), (1, len(prior))))
    return rendered


def response_loss_scorer(tokenizer):
    """score_fn(model, samples): IFD from the model's real response losses (conditioned vs alone)."""

    def mean_loss(model, ids, span):
        tensor = torch.tensor([ids], device=model.device)
        logits = model(input_ids=tensor).logits[0, span[0] - 1:span[1] - 1]
        return torch.nn.functional.cross_entropy(logits.float(), tensor[0, span[0]:span[1]]).item()

    def score(model, samples):
        rendered = chat_render(tokenizer, samples)
        cond = np.array([mean_loss(model, r.input_ids, r.span) for r in rendered])
        prior = np.array([mean_loss(model, r.prior_ids, r.prior_span) for r in rendered])
        n = len(samples)
        return ScoreTable([s.id for s in samples], [s.source for s in samples], np.exp(cond - prior), cond, prior,
                          np.array([r.n_response_tokens for r in rendered]), np.zeros(n, bool), [None] * n)

    return score


def top_ifd_selector(samples, table, budget, *, strategy="iterit", candidates=None, seed=0, **options) -> Selection:
    """select_fn seam: the highest IFD among the candidates (random picks for 'random')."""
    pool = np.arange(len(samples)) if candidates is None else np.asarray(candidates)
    pool = pool[np.isfinite(table.ifd[pool])]
    if strategy == "random":
        order = np.random.default_rng(seed).permutation(len(pool))
    else:
        order = np.lexsort((pool, -table.ifd[pool]))
    picks = pool[order][:budget]
    nan = np.full(len(picks), np.nan)
    return Selection(picks, table.ifd[picks], nan, table.ifd[picks], params={"strategy": strategy})


pytestmark = pytest.mark.usefixtures("one_thread")


def plain_trainer(model, tokenizer, rendered, out, **overrides):
    from transformers import Trainer, TrainingArguments

    settings = dict(output_dir=str(out), num_train_epochs=2, per_device_train_batch_size=4, learning_rate=1e-2,
                    logging_steps=1, save_strategy="no", report_to="none", use_cpu=True, disable_tqdm=True,
                    remove_unused_columns=False, seed=0)
    settings.update(overrides)
    return Trainer(model=model, args=TrainingArguments(**settings), train_dataset=ResponseOnlyDataset(rendered),
                   data_collator=PaddingCollator(tokenizer.pad_token_id))


# ---------------------------------------------------------------- components


def test_sampler_yields_the_selection_shuffled_per_epoch_with_a_fixed_length():
    sampler = SelectionSampler([5, 9, 2, 7, 11, 3], seed=1)
    first = list(sampler)
    assert sorted(first) == [2, 3, 5, 7, 9, 11] and len(sampler) == 6
    assert list(sampler) == first  # same epoch, same order
    sampler.set_epoch(1)
    second = list(sampler)
    assert sorted(second) == sorted(first) and second != first
    sampler.set_selection([0, 1, 4, 6, 8, 10])
    assert sorted(sampler) == [0, 1, 4, 6, 8, 10] and len(sampler) == 6
    with pytest.raises(ValueError, match="budget of 6"):
        sampler.set_selection([1, 2])


def test_dataset_puts_loss_on_the_response_only_and_collator_pads_right(tiny):
    tokenizer, _ = tiny
    rendered = chat_render(tokenizer, make_samples(3))
    dataset = ResponseOnlyDataset(rendered)
    item = dataset[0]
    start, end = rendered[0].span
    assert item["labels"][:start] == [-100] * start
    assert item["labels"][start:end] == item["input_ids"][start:end]
    batch = PaddingCollator(tokenizer.pad_token_id)([dataset[0], dataset[1], dataset[2]])
    lengths = [len(r.input_ids) for r in rendered]
    for row, length in enumerate(lengths):
        assert batch["attention_mask"][row].tolist() == [1] * length + [0] * (max(lengths) - length)
        assert (batch["labels"][row, length:] == -100).all()
        assert (batch["input_ids"][row, length:] == tokenizer.pad_token_id).all()


def test_score_table_rows_round_trip():
    table = ScoreTable(["a", "b", "c"], ["x", "y", "x"], np.array([0.5, np.nan, 0.9]), np.ones(3), np.ones(3),
                       np.array([3, 4, 5]), np.zeros(3, bool), [None, "empty response", None])
    part = take_rows(table, np.array([2, 0]))
    assert part.ids == ["c", "a"] and part.ifd.tolist() == [0.9, 0.5]
    part.ifd[:] = [0.1, 0.2]
    merged = put_rows(table, np.array([2, 0]), part)
    assert merged.ifd[[0, 2]].tolist() == [0.2, 0.1] and np.isnan(merged.ifd[1])
    assert table.ifd[0] == 0.5  # the original is untouched


def test_put_rows_refuses_rows_of_other_samples():
    table = ScoreTable(["a", "b", "c"], ["x"] * 3, np.array([0.5, 0.6, 0.9]), np.ones(3), np.ones(3),
                       np.ones(3, int), np.zeros(3, bool), [None] * 3)
    with pytest.raises(ValueError, match="ids"):
        put_rows(table, np.array([0, 2]), take_rows(table, np.array([2, 0])))


def fresh_ifd_by_id(samples):
    """A model-free score_fn: each sample's fresh IFD is a function of its id, so misplaced rows show."""

    def score(model, subset):
        ifd = np.array([0.2 + 0.01 * int(s.id[1:]) for s in subset])
        n = len(subset)
        return ScoreTable([s.id for s in subset], [s.source for s in subset], ifd, ifd, np.ones(n),
                          np.ones(n, int), np.zeros(n, bool), [None] * n)

    return score


def test_a_row_permuted_table_rescores_the_right_samples(tiny, tmp_path):
    """install_reselection(..., scores=table) matches the table to the samples by id, whatever its row order."""
    from iterit.selection import select_samples

    tokenizer, load = tiny
    samples = make_samples(24)
    n = len(samples)
    base = ScoreTable([s.id for s in samples], [s.source for s in samples], np.linspace(0.3, 0.9, n), np.ones(n),
                      np.ones(n), np.ones(n, int), np.zeros(n, bool), [None] * n)
    permuted = take_rows(base, np.random.default_rng(0).permutation(n))
    trainer = plain_trainer(load(), tokenizer, chat_render(tokenizer, samples), tmp_path / "ckpt")
    callback = install_reselection(trainer, samples, budget=4, score_fn=fresh_ifd_by_id(samples), scores=permuted,
                                   select_fn=select_samples, strategy="ifd-iterative", update_ratio=3)
    reselector = callback.reselector
    assert reselector.table.ids == [s.id for s in samples]
    assert callback.first.selection.indices.tolist() == [23, 22, 21, 20]  # the highest base IFD, by id
    pick = reselector.next(1, None, callback.first)
    for row in pick.scored.tolist():
        assert reselector.table.ifd[row] == pytest.approx(0.2 + 0.01 * row)  # sample s<row> got its own score
    assert pick.selection.indices.tolist() == sorted(pick.pool.tolist(), reverse=True)[:4]


def test_a_pool_that_no_longer_qualifies_is_topped_up_from_the_previous_picks(caplog):
    """Every fresh IFD >= 1: the epoch keeps the previous picks, says so, and records it, instead of dying."""
    from iterit.rescoring import selection_dynamics
    from iterit.selection import select_samples

    samples = make_samples(24)
    n = len(samples)
    base = ScoreTable([s.id for s in samples], [s.source for s in samples], np.linspace(0.3, 0.9, n), np.ones(n),
                      np.ones(n), np.ones(n, int), np.zeros(n, bool), [None] * n)

    def unhelpful(model, subset):
        k = len(subset)
        return ScoreTable([s.id for s in subset], [s.source for s in subset], np.full(k, 1.2), np.ones(k),
                          np.ones(k), np.ones(k, int), np.zeros(k, bool), [None] * k)

    reselector = Reselector(samples, base, 4, "iterit", "greedy", 12, unhelpful, select_samples,
                            {"threshold": 1.0, "decay": 0.1})
    first = reselector.first()
    with caplog.at_level(logging.WARNING, logger="iterit.rescoring"):
        second = reselector.next(1, None, first)
    assert second.selection.indices.tolist() == first.selection.indices.tolist()
    assert "0 of the 12-sample pool qualified" in caplog.text
    dynamics = selection_dynamics(samples, second, first, first)
    assert (dynamics["qualified"], dynamics["topped_up"]) == (0, 4)
    assert selection_dynamics(samples, first, None, first)["topped_up"] == 0


def test_rescoring_from_the_training_render_equals_rendering_again(tiny):
    from iterit.render import render_samples

    tokenizer, load = tiny
    model, samples = load(), make_samples(12)
    rendered = render_samples(tokenizer, samples, max_length=128)
    subset = [samples[k] for k in (7, 2, 11, 4)]  # a pool, in the pool's own order
    again = scorer_for(tokenizer, max_length=128, progress=False)(model, subset)
    reused = scorer_for_rendered(samples, rendered, progress=False)(model, subset)
    assert reused.ids == again.ids == ["s7", "s2", "s11", "s4"]
    np.testing.assert_array_equal(reused.ifd, again.ifd)
    np.testing.assert_array_equal(reused.n_response_tokens, again.n_response_tokens)


def test_pool_size_is_clamped_to_the_valid_samples_and_says_so(caplog):
    table = ScoreTable([str(i) for i in range(10)], ["s"] * 10, np.r_[np.linspace(0.1, 0.9, 8), np.nan, np.nan],
                       np.ones(10), np.ones(10), np.ones(10, int), np.zeros(10, bool), [None] * 8 + ["x", "x"])
    assert clamp_pool_size(3, 2, table) == 6
    with caplog.at_level(logging.WARNING, logger="iterit.rescoring"):
        assert clamp_pool_size(3, 4, table) == 8
    assert "exceeds the 8 valid samples" in caplog.text


# IFD of ten samples: three at or above 1 (s1, s5, s9), one unscorable (s3), six candidates.
WINDOW_IFD = [0.5, 1.3, 0.9, np.nan, 0.2, 1.0, 0.7, 0.95, 0.3, 2.0]


def window_table(samples):
    n = len(samples)
    return ScoreTable([s.id for s in samples], [s.source for s in samples], np.array(WINDOW_IFD), np.ones(n),
                      np.ones(n), np.ones(n, int), np.zeros(n, bool), [None, None, None, "x"] + [None] * 6)


def test_reference_pool_is_the_reference_window_and_differs_from_the_greedy_pool():
    """The reference re-scores positions [0, u x B) of [B picks | every IFD >= 1 | other IFD < 1 by IFD]."""
    from iterit.rescoring import pool_size_for
    from iterit.selection import select_samples

    samples = make_samples(10)
    table = window_table(samples)

    def never(model, subset):
        raise AssertionError("epoch 0 scores nothing")

    options = {"threshold": 1.0}
    size = pool_size_for("reference", 3, 2, table, 1.0)
    assert size == 6 and pool_size_for("greedy", 5, 2, table, 1.0) == 6 and pool_size_for("reference", 5, 2, table, 1.0) == 9
    reference = Reselector(samples, table, 2, "ifd-iterative", "reference", size, never, select_samples, options)
    first = reference.first()
    picks = [7, 2]  # the two highest IFD below 1: 0.95, 0.9
    unhelpful = [1, 5, 9]  # IFD >= 1, in data order
    rest = [6, 0, 8, 4]  # the other candidates by IFD alone: 0.7, 0.5, 0.3, 0.2
    window = picks + unhelpful + rest
    assert first.selection.indices.tolist() == picks
    assert reference.frozen_pool_.tolist() == window[:6]
    greedy = Reselector(samples, table, 2, "ifd-iterative", "greedy", size, never, select_samples, options)
    greedy.first()
    assert greedy.frozen_pool_.tolist() == picks + rest
    whole = Reselector(samples, table, 2, "ifd-iterative", "reference", 9, never, select_samples, options)
    whole.first()
    assert whole.frozen_pool_.tolist() == window  # the unscorable s3 is in no window


def test_reference_pool_head_is_the_iterit_greedy_picks():
    from iterit.selection import select_samples

    samples = make_samples(10)
    reference = Reselector(samples, window_table(samples), 3, "iterit", "reference", 7, lambda m, s: None,
                           select_samples, {"threshold": 1.0, "decay": 0.1})
    picks = reference.first().selection.indices.tolist()
    rest = sorted((i for i in (0, 2, 4, 6, 7, 8) if i not in picks), key=lambda i: -WINDOW_IFD[i])
    assert reference.frozen_pool_.tolist() == picks + [1, 5, 9] + rest[:1]


def test_frozen_pool_name_is_accepted_as_greedy_with_a_warning():
    from iterit.rescoring import resolve_pool

    with pytest.warns(FutureWarning, match="--pool frozen is now --pool greedy"):
        assert resolve_pool("frozen") == "greedy"
    with pytest.raises(IterITError, match="--pool 'stale'.*reference, greedy, rolling"):
        resolve_pool("stale")


def test_greedy_pool_is_the_head_of_the_epoch0_ranking_and_rolling_reranks(tiny):
    tokenizer, load = tiny
    samples = make_samples(24)
    score = response_loss_scorer(tokenizer)
    model = load().eval()
    with torch.no_grad():
        base = score(model, samples)
    frozen = Reselector(samples, base, 4, "iterit", "greedy", 12, score, top_ifd_selector)
    first = frozen.first()
    assert len(frozen.frozen_pool_) == 12
    assert frozen.frozen_pool_[:4].tolist() == first.selection.indices.tolist()
    with torch.no_grad():
        torch.manual_seed(0)
        for parameter in model.parameters():  # a different model: the pool's scores change
            parameter.add_(0.05 * torch.randn_like(parameter))
        second = frozen.next(1, model, first)
    assert set(second.selection.indices) <= set(frozen.frozen_pool_) and second.pool.tolist() == frozen.frozen_pool_.tolist()
    rolling = Reselector(samples, frozen.table, 4, "iterit", "rolling", 12, score, top_ifd_selector)
    expected_pool = top_ifd_selector(samples, frozen.table, 12).indices
    with torch.no_grad():
        third = rolling.next(2, model, second)
    assert third.pool.tolist() == expected_pool.tolist()


# ---------------------------------------------------------------- inside a plain Trainer


def test_install_reselection_in_a_plain_trainer_changes_iterit_picks_between_epochs(tiny, tmp_path):
    tokenizer, load = tiny
    samples = make_samples(32)
    model = load()
    trainer = plain_trainer(model, tokenizer, chat_render(tokenizer, samples), tmp_path / "ckpt")
    callback = install_reselection(trainer, samples, budget=8, score_fn=response_loss_scorer(tokenizer),
                                   select_fn=top_ifd_selector, strategy="iterit", update_ratio=3,
                                   run_dir=tmp_path / "run")
    seen: list[list[int]] = []
    original_iter = SelectionSampler.__iter__

    def recording_iter(self):
        order = list(original_iter(self))
        seen.append(order)
        return iter(order)

    SelectionSampler.__iter__ = recording_iter
    try:
        trainer.train()
    finally:
        SelectionSampler.__iter__ = original_iter
    assert [entry["epoch"] for entry in callback.history] == [0, 1]
    assert len(seen) == 2 and all(len(order) == 8 for order in seen)
    assert sorted(seen[0]) == sorted(callback.first.selection.indices.tolist())
    assert sorted(seen[1]) == sorted(callback.current.selection.indices.tolist())
    assert set(seen[1]) != set(seen[0])  # re-scored after an epoch at lr 1e-2: the hard samples moved
    assert set(seen[1]) <= set(callback.reselector.frozen_pool_.tolist())
    assert trainer.state.max_steps == 2 * math.ceil(8 / 4)
    assert model.training  # the re-scoring put it back in train mode
    for epoch in (0, 1):
        folder = tmp_path / "run" / "epochs" / str(epoch)
        assert (folder / "selection.parquet").exists() and (folder / "metrics.json").exists()
    dynamics = json.loads((tmp_path / "run" / "epochs" / "1" / "dynamics.json").read_text())
    assert 0 <= dynamics["overlap_with_previous"] < 1 and dynamics["pool_size"] == 24


def one_sgd_step(load, tokenizer, rendered, out, *, batch: int, accumulation: int, weighting: str):
    """The weights after one SGD step (lr 1, no clipping) over all of ``rendered`` with IterITTrainer."""
    from transformers import TrainingArguments

    from iterit.reselection import IterITTrainer

    model = load()
    args = TrainingArguments(output_dir=str(out), num_train_epochs=1, per_device_train_batch_size=batch,
                             gradient_accumulation_steps=accumulation, learning_rate=1.0, optim="sgd",
                             lr_scheduler_type="constant", max_grad_norm=0.0, weight_decay=0.0, save_strategy="no",
                             report_to="none", use_cpu=True, disable_tqdm=True, remove_unused_columns=False, seed=0)
    sampler = SelectionSampler(range(len(rendered)), seed=0)
    trainer = IterITTrainer(model=model, args=args, train_dataset=ResponseOnlyDataset(rendered),
                            data_collator=PaddingCollator(tokenizer.pad_token_id), selection_sampler=sampler,
                            loss_weighting=weighting)
    trainer.train()
    assert trainer.state.global_step == 1
    return {name: p.detach().clone() for name, p in model.named_parameters()}


def test_sample_loss_weighting_gives_every_sample_the_same_weight_under_any_batch_shape(tiny, tmp_path):
    """--loss-weighting sample: the mean over samples of each response's mean token loss, whatever the batch."""
    tokenizer, load = tiny
    samples = make_samples(8)  # responses of 1 to 5 words and numbers: token counts differ
    rendered = chat_render(tokenizer, samples)
    assert len({r.n_response_tokens for r in rendered}) > 2
    model = load()
    collated = PaddingCollator(tokenizer.pad_token_id)(list(ResponseOnlyDataset(rendered)))
    logits = model(input_ids=collated["input_ids"], attention_mask=collated["attention_mask"]).logits
    from iterit.reselection import per_sample_response_loss

    losses, has_response = per_sample_response_loss(logits, collated["labels"])
    assert has_response.all()
    losses.mean().backward()
    expected = {name: (p - p.grad).detach() for name, p in model.named_parameters()}
    runs = {
        "4x2": one_sgd_step(load, tokenizer, rendered, tmp_path / "a", batch=4, accumulation=2, weighting="sample"),
        "1x8": one_sgd_step(load, tokenizer, rendered, tmp_path / "b", batch=1, accumulation=8, weighting="sample"),
        "3x3": one_sgd_step(load, tokenizer, rendered, tmp_path / "c", batch=3, accumulation=3, weighting="sample"),
    }
    for label, weights in runs.items():
        for name, value in expected.items():
            assert torch.allclose(weights[name], value, atol=1e-6, rtol=1e-4), (label, name)
    tokens = one_sgd_step(load, tokenizer, rendered, tmp_path / "d", batch=4, accumulation=2, weighting="token")
    assert any(not torch.allclose(tokens[name], value, atol=1e-6, rtol=1e-4) for name, value in expected.items())


def test_static_strategy_keeps_the_same_picks(tiny, tmp_path):
    tokenizer, load = tiny
    samples = make_samples(24)
    trainer = plain_trainer(load(), tokenizer, chat_render(tokenizer, samples), tmp_path / "ckpt")
    callback = install_reselection(trainer, samples, budget=8, score_fn=response_loss_scorer(tokenizer),
                                   select_fn=top_ifd_selector, strategy="static")
    trainer.train()
    assert callback.current.epoch == 1
    assert callback.current.selection.indices.tolist() == callback.first.selection.indices.tolist()
    assert callback.history[1]["overlap_with_previous"] == 1.0 and callback.history[1]["scored"] == 0


@pytest.mark.parametrize("accumulation", [1, 3])
def test_one_lr_schedule_spans_all_epochs_sized_from_the_budget(tiny, tmp_path, accumulation):
    from iterit.rescoring import steps_per_epoch

    tokenizer, load = tiny
    samples = make_samples(40)
    trainer = plain_trainer(load(), tokenizer, chat_render(tokenizer, samples), tmp_path / "ckpt",
                            per_device_train_batch_size=2, gradient_accumulation_steps=accumulation,
                            lr_scheduler_type="linear", warmup_steps=1)
    install_reselection(trainer, samples, budget=10, score_fn=response_loss_scorer(tokenizer),
                        select_fn=top_ifd_selector, strategy="iterit", update_ratio=2)
    try:
        trainer.train()
    except IterITError as err:  # a Trainer that floors the steps per epoch (transformers before the 2025 rewrite)
        assert accumulation == 3 and "plans 2 optimizer steps for 4" in str(err)
        return
    expected = 2 * steps_per_epoch(10, 2, 1, accumulation)  # 5 batches: 5 steps, or 2 steps (3 + a short 2)
    assert trainer.state.max_steps == expected == trainer.state.global_step
    assert trainer.lr_scheduler.last_epoch == expected  # one schedule, stepped once per optimizer step
    assert trainer.lr_scheduler.get_last_lr()[0] == pytest.approx(0.0, abs=1e-12)  # decayed to 0 at the very end


def test_plain_trainer_resumes_from_a_step_checkpoint_saved_before_the_epoch_end(tiny, tmp_path):
    tokenizer, load = tiny
    samples = make_samples(24)
    rendered = chat_render(tokenizer, samples)
    options = dict(budget=8, score_fn=response_loss_scorer(tokenizer), select_fn=top_ifd_selector, update_ratio=2)
    # 8 samples / 4 per batch = 2 steps per epoch: checkpoint-2 is saved at epoch 0's last step, before the
    # callback's on_epoch_end re-selection.
    settings = dict(save_strategy="steps", save_steps=2, num_train_epochs=3)
    whole_model = load()
    whole = plain_trainer(whole_model, tokenizer, rendered, tmp_path / "whole", **settings)
    uninterrupted = install_reselection(whole, samples, **options)
    seen = []
    whole.add_callback(type("Spy", (TrainerCallbackBase,), {
        "on_epoch_begin": lambda self, *a, **k: seen.append(uninterrupted.sampler.indices.tolist())})())
    whole.train()
    resumed_model = load()
    again = plain_trainer(resumed_model, tokenizer, rendered, tmp_path / "whole", **settings)
    resumed = install_reselection(again, samples, **options)
    again.train(resume_from_checkpoint=str(tmp_path / "whole" / "checkpoint-2"))
    assert resumed.current.epoch == 2
    assert resumed.current.selection.indices.tolist() == seen[2]
    assert resumed.previous.selection.indices.tolist() == seen[1]
    for name, parameter in whole_model.named_parameters():
        assert torch.equal(parameter, resumed_model.get_parameter(name)), name


def test_non_finite_loss_stops_before_the_optimizer_step(tiny, tmp_path):
    tokenizer, load = tiny
    samples = make_samples(16)
    model = load()
    trainer = plain_trainer(model, tokenizer, chat_render(tokenizer, samples), tmp_path / "ckpt", save_strategy="epoch")
    install_reselection(trainer, samples, budget=8, score_fn=response_loss_scorer(tokenizer),
                        select_fn=top_ifd_selector, strategy="static")
    with torch.no_grad():
        model.lm_head.weight[0, 0] = float("nan")
    before = model.model.layers[0].mlp.up_proj.weight.clone()
    with pytest.raises(IterITError, match="non-finite at step 1"):
        trainer.train()
    assert torch.equal(model.model.layers[0].mlp.up_proj.weight, before)  # no step taken with NaN gradients
    assert not list((tmp_path / "ckpt").glob("checkpoint-*"))  # and nothing saved


def test_every_strategy_is_known():
    assert set(STRATEGIES) == {"iterit", "ifd-iterative", "static", "ifd", "random", "longest", "full"}
    assert [name for name, s in STRATEGIES.items() if s.rescore] == ["iterit", "ifd-iterative"]


def test_callback_state_restores_the_selection(tiny):
    tokenizer, load = tiny
    samples = make_samples(20)
    score = response_loss_scorer(tokenizer)
    with torch.no_grad():
        base = score(load().eval(), samples)
    reselector = Reselector(samples, base, 5, "iterit", "greedy", 10, score, top_ifd_selector)
    first = reselector.first()
    sampler = SelectionSampler(first.selection.indices)
    callback = ReselectionCallback(reselector, sampler, first)
    callback.current = Reselector(samples, base, 5, "random", "greedy", 10, score, top_ifd_selector).first()
    state = json.loads(json.dumps(callback.state_dict()))
    fresh_sampler = SelectionSampler(first.selection.indices)
    fresh = ReselectionCallback(Reselector(samples, base, 5, "iterit", "greedy", 10, score, top_ifd_selector),
                                fresh_sampler, first)
    fresh.load_state_dict(state)
    assert fresh_sampler.indices.tolist() == callback.current.selection.indices.tolist()
    assert fresh.reselector.frozen_pool_.tolist() == reselector.frozen_pool_.tolist()


# ---------------------------------------------------------------- scorers, install, old names


def test_eval_mode_scores_without_gradients_and_restores_the_mode(tiny):
    _, load = tiny
    model = load().train()
    with eval_mode(model):
        assert not model.training and not torch.is_grad_enabled()
    assert model.training and torch.is_grad_enabled()
    model.eval()
    with pytest.raises(RuntimeError), eval_mode(model):
        raise RuntimeError("scoring failed")
    assert not model.training  # put back as it was, also after an error


def test_build_reselection_is_what_install_reselection_installs(tiny, tmp_path):
    tokenizer, load = tiny
    samples = make_samples(24)
    score = response_loss_scorer(tokenizer)
    with torch.no_grad():
        base = score(load().eval(), samples)
    built = build_reselection(samples, base, budget=6, score_fn=score, select_fn=top_ifd_selector, seed=3,
                              update_ratio=2)
    trainer = plain_trainer(load(), tokenizer, chat_render(tokenizer, samples), tmp_path / "ckpt", seed=3)
    callback = install_reselection(trainer, samples, budget=6, score_fn=score, select_fn=top_ifd_selector,
                                   scores=base, update_ratio=2)
    assert built.pool_size == 12 == len(callback.reselector.frozen_pool_)
    assert callback.first.selection.indices.tolist() == built.first.selection.indices.tolist()
    assert list(trainer._get_train_sampler()) == list(built.sampler)  # the same seed, the same order
    assert callback.reselector.frozen_pool_.tolist() == built.reselector.frozen_pool_.tolist()


def test_the_readme_names_still_import_from_their_old_homes():
    from iterit.rescoring import POOL_HELP, Reselector, scorer_for, scorer_for_rendered  # noqa: F401
    from iterit.reselection import (  # noqa: F401
        STATE_FILE,
        IterITTrainer,
        PaddingCollator,
        ReselectionCallback,
        ResponseOnlyDataset,
        SelectionSampler,
        install_reselection,
        per_sample_response_loss,
    )
    from iterit.reselection import scorer_for as same

    assert same is scorer_for

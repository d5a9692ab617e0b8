"""Evaluation: answer normalisation, a loss equal to the hand computation, greedy answers, breakdowns."""

from __future__ import annotations

import importlib.util
import json
import math
from pathlib import Path

import pytest

from iterit.config import EvalConfig
from iterit.data import Sample
from iterit.errors import IterITError
from iterit.evaluation import (
    contains_answer,
    evaluate,
    evaluate_lm_eval,
    exact_match,
    format_table,
    normalize_answer,
    parse_metrics,
)
from iterit.recipes.evaluate import run as eval_run

QA = [
    ("What is 2 + 3?", "5", "curated", "add"),
    ("Reverse the word 'lamp'.", "pmal", "curated", "reverse"),
    ("What is the capital of Veloria?", "Brenhold", "forum_dump", "capital"),
    ("Is 7 even or odd?", "odd", "forum_dump", "parity"),
    ("Write this in uppercase.\n\ngreen river", "GREEN RIVER", "web_scrape", None),
]


def _samples(rows=QA) -> list[Sample]:
    samples = []
    for index, (prompt, answer, source, family) in enumerate(rows):
        record = {"instruction": prompt, "output": answer} | ({"family": family} if family else {})
        messages = [{"role": "user", "content": prompt}, {"role": "assistant", "content": answer}]
        samples.append(Sample(f"{source}:{index}", messages, source, "alpaca", index, record))
    return samples


@pytest.fixture(scope="module")
def tiny(tiny_model_dir):
    from transformers import AutoModelForCausalLM, AutoTokenizer

    return AutoModelForCausalLM.from_pretrained(tiny_model_dir).eval(), AutoTokenizer.from_pretrained(tiny_model_dir)


MEMORISE_MAX_STEPS = 400  # ~30 steps on the machine this was written on; a slower-converging CPU gets headroom


def hand_greedy(model, tokenizer, item, max_new_tokens: int = 12) -> str:
    """Greedy decoding one token at a time with full forward passes: the reference ``evaluate`` must match."""
    import torch

    stops = {tokenizer.eos_token_id, tokenizer.convert_tokens_to_ids("<|end|>")}
    ids = list(item.input_ids[: item.span[0]])
    new: list[int] = []
    with torch.no_grad():
        while len(new) < max_new_tokens:
            token = int(model(input_ids=torch.tensor([ids + new])).logits[0, -1].argmax())
            if token in stops:
                break
            new.append(token)
    return tokenizer.decode(new, skip_special_tokens=True).strip()


@pytest.fixture(scope="module")
def memorised(tiny_model_dir):
    """The tiny model fine-tuned until it reproduces every QA answer greedily, so greedy answers are real text.

    Trained to that state, not for a fixed number of steps: how many steps it takes depends on the CPU's
    arithmetic (kernel choice, thread count), and a fixed count that suffices on one machine may not on another.
    """
    import torch
    from transformers import AutoModelForCausalLM, AutoTokenizer

    from iterit.render import labels_for, render_samples

    torch.manual_seed(0)
    model = AutoModelForCausalLM.from_pretrained(tiny_model_dir)
    tokenizer = AutoTokenizer.from_pretrained(tiny_model_dir)
    rendered = render_samples(tokenizer, _samples())
    width = max(len(item.input_ids) for item in rendered)
    ids = torch.tensor([item.input_ids + [tokenizer.pad_token_id] * (width - len(item.input_ids)) for item in rendered])
    mask = torch.tensor([[1] * len(item.input_ids) + [0] * (width - len(item.input_ids)) for item in rendered])
    labels = torch.tensor([labels_for(item) + [-100] * (width - len(item.input_ids)) for item in rendered])
    optimizer = torch.optim.AdamW(model.parameters(), lr=1e-2)
    answers = [answer for _, answer, _, _ in QA]
    for step in range(1, MEMORISE_MAX_STEPS + 1):  # one padded batch of the five samples per step
        model.train()
        model(input_ids=ids, attention_mask=mask, labels=labels).loss.backward()
        optimizer.step()
        optimizer.zero_grad()
        if step % 5 == 0:
            model.eval()
            if [hand_greedy(model, tokenizer, item) for item in rendered] == answers:
                return model, tokenizer
    got = [hand_greedy(model, tokenizer, item) for item in rendered]
    pytest.fail(f"the tiny model did not memorise the QA answers in {MEMORISE_MAX_STEPS} AdamW steps: {got}")


@pytest.mark.parametrize(
    ("prediction", "reference", "exact", "contains"),
    [
        ("5", "5", True, True),
        ("  Brenhold! ", "brenhold", True, True),
        ("The answer is 42.", "42", False, True),
        ("an apple", "Apple", True, True),
        ("10", "1", False, False),
        ("2, 5, 9", "2 5 9", True, True),
        ("2, 5", "2, 5, 9", False, False),
        ("Sure! the answer is odd. Hope this helps!", "odd", False, True),
        ("", "42", False, False),
        ("...", "...", True, True),
        ("", "...", False, False),
    ],
)
def test_exact_and_contains_after_normalisation(prediction, reference, exact, contains):
    assert exact_match(prediction, reference) is exact
    assert contains_answer(prediction, reference) is contains


def test_normalize_answer_drops_case_punctuation_articles_and_extra_space():
    assert normalize_answer("  The  Quick, brown FOX!  ") == "quick brown fox"
    assert normalize_answer('{"color": "red"}') == "color red"


def test_unknown_metric_is_refused_with_the_flag():
    assert parse_metrics("loss, exact,loss") == ("loss", "exact")
    with pytest.raises(IterITError, match="--metrics.*bleu"):
        parse_metrics("loss,bleu")
    with pytest.raises(IterITError, match="--metrics"):
        parse_metrics("")


def test_loss_equals_the_hand_computation(tiny):
    import torch

    from iterit.render import render_samples

    model, tokenizer = tiny
    samples = _samples()
    result = evaluate(model, tokenizer, samples, metrics="loss", batch_size=2, progress=False)
    total, tokens = 0.0, 0
    for item, row in zip(render_samples(tokenizer, samples), result.predictions):
        start, end = item.span
        with torch.no_grad():
            logits = model(input_ids=torch.tensor([item.input_ids])).logits[0].double()
        logprobs = torch.log_softmax(logits, dim=-1)
        nll = -sum(logprobs[pos - 1, item.input_ids[pos]].item() for pos in range(start, end))
        assert row.loss == pytest.approx(nll / (end - start), rel=1e-4)
        assert row.n_tokens == end - start
        total, tokens = total + nll, tokens + end - start
    assert result.overall.loss == pytest.approx(total / tokens, rel=1e-4)
    assert result.overall.perplexity == pytest.approx(math.exp(total / tokens), rel=1e-4)
    assert result.overall.exact is None and all(row.prediction is None for row in result.predictions)


@pytest.mark.slow
def test_greedy_answers_match_a_hand_greedy_loop(memorised):
    from iterit.render import render_samples

    model, tokenizer = memorised
    samples = _samples()
    result = evaluate(model, tokenizer, samples, metrics="exact,contains", max_new_tokens=12, progress=False)
    for item, row in zip(render_samples(tokenizer, samples), result.predictions):
        assert row.prediction == hand_greedy(model, tokenizer, item, max_new_tokens=12)
    assert result.overall.exact == 1.0 and result.overall.contains == 1.0
    assert result.overall.loss is None


@pytest.mark.slow
def test_left_padded_batches_answer_as_one_at_a_time(memorised):
    model, tokenizer = memorised
    one = evaluate(model, tokenizer, _samples(), metrics="exact", batch_size=1, progress=False)
    many = evaluate(model, tokenizer, _samples(), metrics="exact", batch_size=5, progress=False)
    assert [p.prediction for p in one.predictions] == [p.prediction for p in many.predictions]
    assert all(p.prediction for p in one.predictions)


def test_breakdown_per_source_and_family(tiny):
    model, tokenizer = tiny
    result = evaluate(model, tokenizer, _samples(), max_new_tokens=4, progress=False)
    assert result.overall.n == 5
    assert {name: g.n for name, g in result.by_source.items()} == {"curated": 2, "forum_dump": 2, "web_scrape": 1}
    assert {name: g.n for name, g in result.by_family.items()} == {"add": 1, "capital": 1, "parity": 1, "reverse": 1}
    curated = [p for p in result.predictions if p.source == "curated"]
    expected = sum(p.loss * p.n_tokens for p in curated) / sum(p.n_tokens for p in curated)
    assert result.by_source["curated"].loss == pytest.approx(expected)
    table = format_table(result)
    assert "source forum_dump" in table and "family capital" in table
    assert json.loads(json.dumps(result.to_dict()))["overall"]["n"] == 5


def test_training_mode_is_restored(tiny):
    model, tokenizer = tiny
    model.train()
    try:
        evaluate(model, tokenizer, _samples()[:2], max_new_tokens=2, progress=False)
        assert model.training
    finally:
        model.eval()


def test_samples_that_cannot_render_are_skipped_and_counted(tiny):
    model, tokenizer = tiny
    samples = _samples()[:2] + _samples([("Say nothing.", "", "curated", None)])
    result = evaluate(model, tokenizer, samples, metrics="loss", progress=False)
    assert result.overall.n == 2 and sum(result.skipped.values()) == 1


def test_empty_input_is_refused(tiny):
    with pytest.raises(IterITError, match="no samples"):
        evaluate(*tiny, [], progress=False)


@pytest.mark.skipif(importlib.util.find_spec("lm_eval") is not None, reason="lm_eval is installed here")
def test_lm_eval_missing_names_the_extra(tiny):
    with pytest.raises(IterITError, match=r"pip install 'iterit\[lm-eval\]'"):
        evaluate_lm_eval(*tiny, "arc_easy")


def test_eval_recipe_writes_json(tiny_model_dir, tmp_path):
    data = tmp_path / "held_out.jsonl"
    data.write_text("".join(json.dumps(s.record) + "\n" for s in _samples()), encoding="utf-8")
    out = tmp_path / "eval.json"
    result = eval_run(EvalConfig(model=str(tiny_model_dir), data=[str(data)], out=str(out), metrics="loss,contains",
                                 max_new_tokens=4, quiet=True)).evaluation
    written = json.loads(out.read_text())
    assert written["overall"]["n"] == 5 and written["metrics"] == ["loss", "contains"]
    assert written["overall"]["loss"] == pytest.approx(result.overall.loss)
    assert set(written["by_family"]) == {"add", "capital", "parity", "reverse"}


def test_eval_recipe_refuses_a_missing_model(tmp_path):
    data = tmp_path / "held_out.jsonl"
    data.write_text(json.dumps({"instruction": "Hi", "output": "Hello"}) + "\n", encoding="utf-8")
    with pytest.raises(IterITError, match="--model"):
        eval_run(EvalConfig(model=str(tmp_path / "no-model"), data=[str(data)], quiet=True))


LM_EVAL_TASKS = Path(__file__).parent / "data" / "lm_eval"


def _hand_multiple_choice(model, tokenizer, docs) -> tuple[float, float]:
    """acc and acc_norm of lm-eval's multiple_choice, computed directly: the sum of the log-probabilities of
    " " + choice after the prompt (prompt and continuation encoded together, then split), argmax per doc;
    acc_norm divides by the choice's length in characters."""
    import numpy as np
    import torch

    acc = acc_norm = 0
    for doc in docs:
        context = f"Question: {doc['question']}\nAnswer:"
        scores = []
        for choice in doc["choices"]:
            whole = tokenizer(context + " " + choice).input_ids
            start = len(tokenizer(context).input_ids)
            with torch.no_grad():
                logits = model(input_ids=torch.tensor([whole])).logits[0].float()
            logprobs = torch.log_softmax(logits[start - 1:len(whole) - 1], dim=-1)
            scores.append(float(logprobs.gather(1, torch.tensor(whole[start:])[:, None]).sum()))
        scores = np.array(scores)
        acc += int(np.argmax(scores) == doc["answer"])
        acc_norm += int(np.argmax(scores / np.array([len(c) for c in doc["choices"]])) == doc["answer"])
    return acc / len(docs), acc_norm / len(docs)


@pytest.mark.slow  # lm-eval's own set-up takes ~10 s
@pytest.mark.skipif(importlib.util.find_spec("lm_eval") is None, reason="pip install 'iterit[lm-eval]'")
def test_cli_eval_runs_a_local_lm_eval_task_and_matches_a_direct_computation(tiny_model_dir, tmp_path, capsys):
    from transformers import AutoModelForCausalLM, AutoTokenizer

    from iterit.cli import main

    data = tmp_path / "held_out.jsonl"
    data.write_text("".join(json.dumps(s.record) + "\n" for s in _samples()), encoding="utf-8")
    out = tmp_path / "eval.json"
    code = main(["eval", "--model", str(tiny_model_dir), "--data", str(data), "--out", str(out), "--metrics", "loss",
                 "--lm-eval", "iterit_tiny_qa", "--lm-eval-include", str(LM_EVAL_TASKS), "--quiet"])
    assert code == 0
    result = json.loads(out.read_text())["lm_eval"]["iterit_tiny_qa"]
    docs = [json.loads(line) for line in (LM_EVAL_TASKS / "tiny_qa.jsonl").read_text().splitlines()]
    tokenizer = AutoTokenizer.from_pretrained(tiny_model_dir)
    model = AutoModelForCausalLM.from_pretrained(tiny_model_dir).eval()
    acc, acc_norm = _hand_multiple_choice(model, tokenizer, docs)
    assert result["sample_len"] == len(docs) == 8
    assert result["acc,none"] == pytest.approx(acc) and result["acc_norm,none"] == pytest.approx(acc_norm)
    assert result["acc_stderr,none"] == pytest.approx(math.sqrt(acc * (1 - acc) / (len(docs) - 1)))

"""The IFD engine: exact values, batch invariance, missing scores, wrappers, distributed and resumable runs."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import torch
import torch.nn.functional as F
from transformers import LlamaConfig, LlamaForCausalLM

from iterit.errors import IterITError
from iterit.render import RenderedSample
from iterit.scoring import (
    ScoreTable,
    padding_share,
    plan_batches,
    read_scores,
    score_rendered,
    summarize_scores,
    write_scores,
)

REPO = Path(__file__).resolve().parents[1]
VOCAB = 97


def random_llama(seed: int = 0, vocab: int = VOCAB) -> LlamaForCausalLM:
    """A small random Llama: real architecture, a few thousand weights."""
    torch.manual_seed(seed)
    config = LlamaConfig(
        vocab_size=vocab,
        hidden_size=32,
        intermediate_size=64,
        num_hidden_layers=2,
        num_attention_heads=4,
        num_key_value_heads=2,
        max_position_embeddings=512,
    )
    return LlamaForCausalLM(config).eval()


def random_rendered(n: int, seed: int = 0) -> list[RenderedSample]:
    """Prompt + response token lists of varied lengths; the prior is BOS + the response."""
    rng = np.random.default_rng(seed)
    items = []
    for _ in range(n):
        prompt = [1] + rng.integers(3, VOCAB, rng.integers(2, 40)).tolist()
        response = rng.integers(3, VOCAB, rng.integers(1, 30)).tolist() + [2]
        items.append(
            RenderedSample(
                input_ids=prompt + response,
                span=(len(prompt), len(prompt) + len(response)),
                prior_ids=[1] + response,
                prior_span=(1, 1 + len(response)),
            )
        )
    return items


def full_logits_loss(model, ids: list[int], span: tuple[int, int]) -> float:
    """The textbook computation: all logits of one unpadded sequence, CE over the response tokens."""
    with torch.no_grad():
        logits = model(torch.tensor([ids])).logits[0].double()
    start, end = span
    return float(F.cross_entropy(logits[start - 1 : end - 1], torch.tensor(ids[start:end])))


def hand_ifd(model, item: RenderedSample) -> tuple[float, float]:
    return full_logits_loss(model, item.input_ids, item.span), full_logits_loss(model, item.prior_ids, item.prior_span)


def test_ifd_equals_hand_computed_value():
    model = random_llama()
    rendered = random_rendered(6)
    result = score_rendered(model, rendered, progress=False)
    for i, item in enumerate(rendered):
        cond, prior = hand_ifd(model, item)
        assert result.loss_cond[i] == pytest.approx(cond, rel=1e-5)
        assert result.loss_prior[i] == pytest.approx(prior, rel=1e-5)
        assert result.ifd[i] == pytest.approx(np.exp(cond - prior), rel=1e-5)
    assert result.ifd.dtype == np.float64
    assert result.stats["head_only"] is True


def test_loss_ratio_form_is_cherry_llm_ratio():
    model = random_llama()
    rendered = random_rendered(4)
    result = score_rendered(model, rendered, ifd_form="loss-ratio", progress=False)
    np.testing.assert_allclose(result.ifd, result.loss_cond / result.loss_prior, rtol=1e-12)
    with pytest.raises(IterITError, match="--ifd-form"):
        score_rendered(model, rendered, ifd_form="ratio")


def test_unpacks_as_four_arrays_in_input_order():
    model = random_llama()
    rendered = random_rendered(5)
    loss_cond, loss_prior, n_tokens, reasons = score_rendered(model, rendered, progress=False)
    assert n_tokens.tolist() == [item.n_response_tokens for item in rendered]
    assert reasons == [None] * 5
    single = score_rendered(model, rendered[3:4], progress=False)
    assert loss_cond[3] == pytest.approx(single.loss_cond[0], rel=1e-5)


def test_batch_size_invariance():
    model = random_llama()
    rendered = random_rendered(30, seed=1)
    one_by_one = score_rendered(model, rendered, max_batch_tokens=1, progress=False)
    packed = score_rendered(model, rendered, max_batch_tokens=4096, progress=False)
    assert one_by_one.stats["batches"] == 60 and packed.stats["batches"] < 5
    np.testing.assert_allclose(packed.ifd, one_by_one.ifd, rtol=1e-5)
    np.testing.assert_allclose(packed.loss_cond, one_by_one.loss_cond, rtol=1e-5)


def test_empty_span_and_render_reasons_are_kept_as_nan():
    model = random_llama()
    rendered = random_rendered(3)
    rendered[0] = RenderedSample([1, 5, 6], (3, 3), [1], (1, 1), reason=None)
    rendered[2].reason = "response does not fit max_length"
    rendered[2].truncated = True
    result = score_rendered(model, rendered, progress=False)
    assert result.reasons == ["empty response", None, "response does not fit max_length"]
    assert np.isnan(result.ifd[[0, 2]]).all() and np.isfinite(result.ifd[1])
    assert result.n_tokens[0] == 0


def test_non_finite_loss_gets_reason_and_others_are_unaffected():
    model = random_llama()
    rendered = random_rendered(8, seed=2)
    poison = 50
    clean = [i for i, item in enumerate(rendered) if poison not in item.input_ids]
    dirty = [i for i, item in enumerate(rendered) if poison in item.input_ids]
    if not dirty:
        rendered[0].input_ids[1] = poison
        clean.remove(0)
        dirty = [0]
    before = score_rendered(model, rendered, progress=False)
    with torch.no_grad():
        model.get_input_embeddings().weight[poison] = float("nan")
    after = score_rendered(model, rendered, progress=False)
    for i in dirty:
        assert after.reasons[i] == "loss is not finite" and np.isnan(after.ifd[i])
    np.testing.assert_allclose(after.ifd[clean], before.ifd[clean], rtol=1e-5)
    assert len(after.reasons) == len(rendered)


def test_training_mode_is_restored_and_no_grad_state_left():
    model = random_llama().train()
    score_rendered(model, random_rendered(3), progress=False)
    assert model.training
    assert all(p.grad is None for p in model.parameters())


def test_plan_batches_respects_budget_and_keeps_padding_low():
    rng = np.random.default_rng(0)
    lengths = rng.integers(20, 600, 2000).tolist()
    batches = plan_batches(lengths, 8192)
    assert sorted(k for b in batches for k in b) == list(range(2000))
    for batch in batches:
        assert len(batch) == 1 or max(lengths[k] for k in batch) * len(batch) <= 8192
    assert padding_share(lengths, batches) < 0.10
    assert plan_batches([5000, 10], 100) == [[0], [1]]


def test_peft_wrapped_model_scores_like_the_merged_model():
    peft = pytest.importorskip("peft")
    model = random_llama()
    wrapped = peft.get_peft_model(model, peft.LoraConfig(r=4, target_modules=["q_proj", "v_proj"], init_lora_weights=False))
    rendered = random_rendered(5)
    result = score_rendered(wrapped, rendered, progress=False)
    assert result.stats["head_only"] is True
    for i, item in enumerate(rendered):
        cond, prior = hand_ifd(wrapped, item)
        assert result.ifd[i] == pytest.approx(np.exp(cond - prior), rel=1e-5)


def test_gemma2_final_logit_softcapping_is_applied():
    from transformers import Gemma2Config, Gemma2ForCausalLM

    torch.manual_seed(0)
    config = Gemma2Config(
        vocab_size=VOCAB,
        hidden_size=32,
        intermediate_size=64,
        num_hidden_layers=2,
        num_attention_heads=4,
        num_key_value_heads=2,
        head_dim=8,
        final_logit_softcapping=0.5,  # small, so a missing cap would change the losses a lot
        attn_implementation="eager",
    )
    model = Gemma2ForCausalLM(config).eval()
    rendered = random_rendered(4)
    result = score_rendered(model, rendered, progress=False)
    assert result.stats["head_only"] is True
    for i, item in enumerate(rendered):
        cond, prior = hand_ifd(model, item)
        assert result.loss_cond[i] == pytest.approx(cond, rel=1e-5)
        assert result.loss_prior[i] == pytest.approx(prior, rel=1e-5)


class ScaledLlama(LlamaForCausalLM):
    """An architecture whose forward changes the logits after the head, in a way the scorer cannot know."""

    def forward(self, *args, **kwargs):
        out = super().forward(*args, **kwargs)
        out.logits = out.logits * 3.0
        return out


def test_unknown_logit_transform_falls_back_to_full_logits():
    torch.manual_seed(0)
    model = ScaledLlama(random_llama().config).eval()
    rendered = random_rendered(4)
    result = score_rendered(model, rendered, progress=False)
    assert result.stats["head_only"] is False
    for i, item in enumerate(rendered):
        cond, prior = hand_ifd(model, item)
        assert result.ifd[i] == pytest.approx(np.exp(cond - prior), rel=1e-5)


def test_score_table_rows_round_trip_in_float64(tmp_path: Path):
    model = random_llama()
    rendered = random_rendered(4)
    rendered[1].reason = "empty response"
    result = score_rendered(model, rendered, progress=False)
    table = ScoreTable(
        ids=[f"s{i}" for i in range(4)],
        sources=["a"] * 4,
        ifd=result.ifd,
        loss_cond=result.loss_cond,
        loss_prior=result.loss_prior,
        n_response_tokens=result.n_tokens,
        truncated=np.zeros(4, bool),
        reasons=result.reasons,
        stats=result.stats,
    )
    rows = table.to_rows()
    assert rows[1]["ifd"] is None and rows[1]["reason"] == "empty response"
    for suffix in (".parquet", ".jsonl"):
        write_scores(table, tmp_path / f"scores{suffix}")
        back = read_scores(tmp_path / f"scores{suffix}")
        assert back.ifd.dtype == np.float64
        np.testing.assert_array_equal(back.ifd, table.ifd)  # bit-exact, NaN where missing
        assert back.reasons == table.reasons and back.ids == table.ids
    summary = summarize_scores(table)
    assert summary["scored"] == 3 and summary["missing"] == {"empty response": 1}


WORKER = """
import sys
import numpy as np
sys.path.insert(0, {tests!r})
from test_scoring import random_llama, random_rendered
from iterit.scoring import distributed_rank_world, init_distributed_from_env, score_rendered

rank, world = init_distributed_from_env()
assert world == int({world}), (rank, world)
result = score_rendered(random_llama(), random_rendered(40, seed=3), max_batch_tokens=256, progress=False)
if rank == 0:
    np.savez({out!r}, ifd=result.ifd, loss_cond=result.loss_cond, loss_prior=result.loss_prior)
"""


def run_torchrun(tmp_path: Path, world: int) -> dict[str, np.ndarray]:
    out = tmp_path / f"world{world}.npz"
    script = tmp_path / f"worker{world}.py"
    script.write_text(WORKER.format(tests=str(Path(__file__).parent), world=world, out=str(out)))
    env = {**os.environ, "OMP_NUM_THREADS": "1", "HF_HUB_OFFLINE": "1"}
    command = [sys.executable, "-m", "torch.distributed.run", "--standalone", f"--nproc_per_node={world}", str(script)]
    done = subprocess.run(command, env=env, capture_output=True, text=True, timeout=300)
    assert done.returncode == 0, done.stderr[-3000:]
    return dict(np.load(out))


@pytest.mark.slow
def test_two_process_torchrun_equals_one_process(tmp_path: Path):
    single = run_torchrun(tmp_path, 1)
    double = run_torchrun(tmp_path, 2)
    # Whole batches are dealt to ranks and each is computed as in one process: the results are identical.
    for key in ("ifd", "loss_cond", "loss_prior"):
        np.testing.assert_array_equal(double[key], single[key])
    in_process = score_rendered(random_llama(), random_rendered(40, seed=3), max_batch_tokens=256, progress=False)
    np.testing.assert_allclose(single["ifd"], in_process.ifd, rtol=1e-5)

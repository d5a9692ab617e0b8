"""The IFD engine: exact values, batch invariance, missing scores, wrappers, distributed and resumable runs."""

from __future__ import annotations

import json
import os
import sys
import time
from pathlib import Path

import numpy as np
import pytest
import torch
import torch.nn.functional as F
from conftest import kill_group, run_in_group, start_in_group
from transformers import LlamaConfig, LlamaForCausalLM

from iterit.config import ScoreConfig
from iterit.errors import IterITError
from iterit.recipes.score import run as score_run
from iterit.render import RenderedSample
from iterit.scoring import (
    ScoreTable,
    distributed_rank_world,
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
    assert one_by_one.stats["batches"] == 60 and packed.stats["batches"] < 20
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
import time
import numpy as np
import torch
sys.path.insert(0, {tests!r})
from test_scoring import random_llama, random_rendered
from iterit.scoring import distributed_rank_world, init_distributed_from_env, score_rendered

rank, world = init_distributed_from_env()
assert world == int({world}), (rank, world)
model = random_llama()
forwards = []
model.model.register_forward_hook(lambda *args: forwards.append(1))
result = score_rendered(model, random_rendered(40, seed=3), max_batch_tokens=256, progress=False)
counts = [None] * world
torch.distributed.all_gather_object(counts, len(forwards)) if world > 1 else counts.__setitem__(0, len(forwards))
if rank == 0:
    np.savez({out!r}, ifd=result.ifd, loss_cond=result.loss_cond, loss_prior=result.loss_prior, forwards=counts)
"""


def run_torchrun(tmp_path: Path, world: int) -> dict[str, np.ndarray]:
    out = tmp_path / f"world{world}.npz"
    script = tmp_path / f"worker{world}.py"
    script.write_text(WORKER.format(tests=str(Path(__file__).parent), world=world, out=str(out)))
    env = {**os.environ, "OMP_NUM_THREADS": "1", "HF_HUB_OFFLINE": "1"}
    command = [sys.executable, "-m", "torch.distributed.run", "--standalone", f"--nproc_per_node={world}", str(script)]
    done = run_in_group(command, env=env, timeout=300)
    assert done.returncode == 0, done.stderr[-3000:]
    return dict(np.load(out))


def test_close_distributed_destroys_the_group_once_and_then_does_nothing(tmp_path: Path):
    """A live gloo group at interpreter exit can abort a finished process (SIGABRT); closing it first cannot."""
    import torch.distributed as dist

    from iterit.scoring import close_distributed

    dist.init_process_group("gloo", init_method=f"file://{tmp_path / 'store'}", rank=0, world_size=1)
    try:
        assert distributed_rank_world() == (0, 1) and dist.is_initialized()
        close_distributed()
        assert not dist.is_initialized()
        close_distributed()  # nothing up: a no-op, as at exit after an explicit close
    finally:
        if dist.is_initialized():
            dist.destroy_process_group()


@pytest.mark.slow
def test_two_process_torchrun_equals_one_process(tmp_path: Path):
    single = run_torchrun(tmp_path, 1)
    double = run_torchrun(tmp_path, 2)
    # Whole batches are dealt to ranks and each is computed as in one process: the results are identical.
    for key in ("ifd", "loss_cond", "loss_prior"):
        np.testing.assert_array_equal(double[key], single[key])
    # 15 batches over 2 ranks: the rank with 7 repeats one, so both make the same forward calls (as FSDP and
    # ZeRO-3 need); one process makes 15 + the two of the head check.
    assert double["forwards"].tolist() == [10, 10] and single["forwards"].tolist() == [17]
    in_process = score_rendered(random_llama(), random_rendered(40, seed=3), max_batch_tokens=256, progress=False)
    np.testing.assert_allclose(single["ifd"], in_process.ifd, rtol=1e-5)


# ---------------------------------------------------------------------------------------------------------
# The command and the tokenizer path (tiny model from conftest, iterit's renderer and loader)

TOPICS = ["tea", "rivers", "prime numbers", "bicycles", "owls", "bread", "glaciers", "chess", "violins", "salt"]


def write_alpaca(path: Path, n: int) -> Path:
    """``n`` small Alpaca records with varied lengths, one with an empty output (kept, never scored)."""
    records = []
    for i in range(n):
        topic = TOPICS[i % len(TOPICS)]
        records.append(
            {
                "instruction": f"Write {1 + i % 4} sentences about {topic}.",
                "input": "" if i % 3 else f"Audience: group {i}",
                "output": " ".join(f"{topic.capitalize()} fact number {k} is short." for k in range(1 + i % 7)),
            }
        )
    path.write_text(json.dumps(records))
    return path


def test_score_recipe_writes_rows_in_input_order(tmp_path: Path, tiny_model_dir: Path):
    from iterit.data import load_samples

    data = write_alpaca(tmp_path / "facts.json", 23)
    for suffix in (".jsonl", ".parquet"):
        out = tmp_path / f"scores{suffix}"
        summary = score_run(ScoreConfig(model=str(tiny_model_dir), data=[str(data)], out=str(out), shard_size=5,
                                        quiet=True)).summary
        table = read_scores(out)
        assert table.ids == [s.id for s in load_samples([data]).samples]
        assert summary["samples"] == 23 and summary["scored"] == int(np.isfinite(table.ifd).sum())
        assert table.ifd.dtype == np.float64 and table.loss_cond.dtype == np.float64
        assert not Path(f"{out}.shards").exists()
    rows_jsonl = read_scores(tmp_path / "scores.jsonl").to_rows()
    rows_parquet = read_scores(tmp_path / "scores.parquet").to_rows()
    assert rows_jsonl == rows_parquet


def test_score_samples_equals_the_recipe_and_in_memory_reuse(tmp_path: Path, tiny_model_dir: Path):
    from iterit.data import load_samples
    from iterit.scoring import load_model, score_samples

    data = write_alpaca(tmp_path / "facts.json", 12)
    model, tokenizer = load_model(str(tiny_model_dir), dtype="float32", device="cpu")
    table = score_samples(model, tokenizer, load_samples([data]).samples, progress=False)
    score_run(ScoreConfig(model=str(tiny_model_dir), data=[str(data)], out=str(tmp_path / "s.jsonl"), quiet=True))
    np.testing.assert_allclose(read_scores(tmp_path / "s.jsonl").ifd, table.ifd, rtol=1e-6)


def test_model_without_chat_template_uses_alpaca(tmp_path: Path, tiny_model_dir: Path):
    import shutil

    from transformers import AutoTokenizer

    from iterit.data import load_samples
    from iterit.scoring import load_model, score_samples

    plain = tmp_path / "plain-model"
    shutil.copytree(tiny_model_dir, plain)
    (plain / "chat_template.jinja").unlink(missing_ok=True)
    config_path = plain / "tokenizer_config.json"
    config = json.loads(config_path.read_text())
    config.pop("chat_template", None)
    config_path.write_text(json.dumps(config))
    model, tokenizer = load_model(str(plain), dtype="float32", device="cpu")
    assert not getattr(tokenizer, "chat_template", None)
    samples = load_samples([write_alpaca(tmp_path / "facts.json", 6)]).samples
    auto = score_samples(model, tokenizer, samples, progress=False)
    alpaca = score_samples(model, tokenizer, samples, template="alpaca", progress=False)
    np.testing.assert_array_equal(auto.ifd, alpaca.ifd)
    chat_tokenizer = AutoTokenizer.from_pretrained(tiny_model_dir)
    chat = score_samples(model, chat_tokenizer, samples, progress=False)
    assert not np.allclose(chat.ifd, auto.ifd)  # the template really changes what is scored


def test_load_model_failure_is_one_clear_error(tmp_path: Path):
    from iterit.scoring import load_model

    with pytest.raises(IterITError, match="--model .*cannot load"):
        load_model(str(tmp_path / "no-such-model"))
    with pytest.raises(IterITError, match="--dtype"):
        load_model(str(tmp_path), dtype="float8")


def test_bad_arguments_are_reported_together(tmp_path: Path):
    with pytest.raises(IterITError, match="--out .*--ifd-form.*--max-length.*--shard-size"):
        score_run(ScoreConfig(model="m", data=["d.json"], out=str(tmp_path / "scores.csv"), ifd_form="x", max_length=0,
                              shard_size=0))


SCORE_SCRIPT = """
import sys
import time
from iterit.config import ScoreConfig
from iterit.recipes.score import run
run(ScoreConfig(model=sys.argv[1], data=[sys.argv[2]], out=sys.argv[3], shard_size=4, max_length=int(sys.argv[4]),
                quiet=True))
"""


def score_script(model: Path, data: Path, out: Path, max_length: int = 2048) -> tuple[list[str], dict]:
    env = {**os.environ, "OMP_NUM_THREADS": "1", "HF_HUB_OFFLINE": "1"}
    return [sys.executable, "-c", SCORE_SCRIPT, str(model), str(data), str(out), str(max_length)], env


@pytest.mark.slow
def test_killed_run_resumes_to_identical_output_and_other_arguments_are_refused(tmp_path: Path, tiny_model_dir: Path):
    from iterit.storage import read_table

    data = write_alpaca(tmp_path / "facts.json", 800)
    command, env = score_script(tiny_model_dir, data, tmp_path / "straight.jsonl")
    straight = run_in_group(command, env=env)
    assert straight.returncode == 0, straight.stderr[-3000:]

    out = tmp_path / "resumed.jsonl"
    shards = Path(f"{out}.shards")
    command, env = score_script(tiny_model_dir, data, out)
    killed = start_in_group(command, env=env)
    deadline = time.monotonic() + 300
    try:
        while not (shards / "shard-000000.json").exists() and killed.poll() is None and time.monotonic() < deadline:
            time.sleep(0.005)
    finally:
        kill_group(killed)
    done_before = sorted(p.name for p in shards.glob("shard-*.json"))
    assert done_before and not out.exists(), "the run finished before it could be killed"
    assert len(done_before) < 200

    with pytest.raises(IterITError, match=r"other arguments \(differs in: max_length\).*delete"):
        score_run(ScoreConfig(model=str(tiny_model_dir), data=[str(data)], out=str(out), shard_size=4, max_length=512,
                              quiet=True))

    resumed = run_in_group(command, env=env)
    assert resumed.returncode == 0, resumed.stderr[-3000:]
    assert read_table(out)[0] == read_table(tmp_path / "straight.jsonl")[0]
    assert not shards.exists()


@pytest.mark.slow
def test_score_recipe_under_torchrun_writes_the_single_process_output(tmp_path: Path, tiny_model_dir: Path):
    from iterit.storage import read_table

    data = write_alpaca(tmp_path / "facts.json", 30)
    script = tmp_path / "score.py"
    script.write_text(SCORE_SCRIPT)
    env = {**os.environ, "OMP_NUM_THREADS": "1", "HF_HUB_OFFLINE": "1"}
    outputs = {}
    for world in (1, 2):
        out = tmp_path / f"world{world}.jsonl"
        command = [sys.executable, "-m", "torch.distributed.run", "--standalone", f"--nproc_per_node={world}",
                   str(script), str(tiny_model_dir), str(data), str(out), "2048"]
        done = run_in_group(command, env=env, timeout=300)
        assert done.returncode == 0, done.stderr[-3000:]
        outputs[world] = read_table(out)[0]
    assert outputs[2] == outputs[1]

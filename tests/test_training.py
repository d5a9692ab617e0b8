"""The `train` recipe: every strategy end to end on the tiny model, its run folder, settings, resume, LoRA, DDP.

All runs use the session's tiny Llama on CPU with budgets of 8-16 samples, max_length 128 and 2 epochs.
The re-selection parts it assembles are tested in test_reselection.py.
"""

from __future__ import annotations

import json
import logging
import math
import os
import signal
import sys
from pathlib import Path

import numpy as np
import pytest
import torch
from conftest import make_samples, run_in_group

from iterit.errors import IterITError
from iterit.reselection.rule import STRATEGIES
from iterit.scoring import ScoreTable
from iterit.selection import select_samples

REPO = Path(__file__).resolve().parents[1]


pytestmark = pytest.mark.usefixtures("one_thread")


# ---------------------------------------------------------------- the recipe


def write_data(path: Path, n: int) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    with open(path, "w", encoding="utf-8") as handle:
        for sample in make_samples(n):
            handle.write(json.dumps({"id": sample.id, "messages": sample.messages}) + "\n")
    return path


def recipe_config(tmp_path: Path, model_dir: Path, n: int = 32, **overrides):
    from iterit.training import TrainConfig

    settings = dict(model=str(model_dir), data=[str(write_data(tmp_path / "data.jsonl", n))], out=str(tmp_path / "run"),
                    strategy="iterit", ratio=8, update_ratio=2, num_train_epochs=2, per_device_train_batch_size=4,
                    learning_rate=1e-2, max_length=128, max_batch_tokens=2048, use_cpu=True, quiet=True, seed=0,
                    threshold=10.0)
    settings.update(overrides)
    return TrainConfig(**settings)


def selection_ids(run: Path, epoch: int) -> list[str]:
    from iterit.storage import read_table

    rows, _ = read_table(run / "epochs" / str(epoch) / "selection.parquet")
    return [row["id"] for row in rows]


@pytest.mark.parametrize("strategy", list(STRATEGIES))
def test_every_strategy_trains_two_epochs_and_writes_the_run_folder(tiny_model_dir, tmp_path, strategy):
    import yaml
    from transformers import AutoModelForCausalLM

    from iterit.training import train

    result = train(recipe_config(tmp_path, tiny_model_dir, n=24, strategy=strategy))
    run = result.run_dir
    budget = 24 if strategy == "full" else 8
    assert result.budget == budget and len(result.epochs) == 2
    for epoch in (0, 1):
        ids = selection_ids(run, epoch)
        assert len(ids) == budget == len(set(ids))
        metrics = json.loads((run / "epochs" / str(epoch) / "metrics.json").read_text())
        assert metrics["steps"] == math.ceil(budget / 4) and math.isfinite(metrics["mean_train_loss"])
    assert (run / "epochs" / "0" / "scores.parquet").exists()
    rescored = STRATEGIES[strategy].rescore
    assert (run / "epochs" / "1" / "scores.parquet").exists() == rescored
    if not rescored:
        assert selection_ids(run, 1) == selection_ids(run, 0)
    settings = yaml.safe_load((run / "config.yaml").read_text())
    assert settings["strategy"] == strategy and settings["output_dir"] == str(run / "checkpoints")
    summary = json.loads((run / "summary.json").read_text())
    assert summary["budget"] == budget and summary["max_steps"] == 2 * math.ceil(budget / 4)
    AutoModelForCausalLM.from_pretrained(result.model_dir)


def test_iterit_reselects_from_the_pool_and_records_dynamics(tiny_model_dir, tmp_path):
    from iterit.training import train

    result = train(recipe_config(tmp_path, tiny_model_dir, n=32, update_ratio=3))
    run = result.run_dir
    assert result.pool_size == 24
    first, second = selection_ids(run, 0), selection_ids(run, 1)
    assert set(first) != set(second)
    dynamics = json.loads((run / "epochs" / "1" / "dynamics.json").read_text())
    assert dynamics["overlap_with_previous"] == len(set(first) & set(second)) / 8
    assert dynamics["share_not_in_epoch0_top"] == 1 - len(set(first) & set(second)) / 8
    assert sum(dynamics["source_counts"].values()) == 8
    from iterit.storage import read_table

    scored, _ = read_table(run / "epochs" / "1" / "scores.parquet")
    assert len(scored) == 24 and set(second) <= {row["id"] for row in scored}


def test_rolling_pool_is_reranked_from_the_latest_scores(tiny_model_dir, tmp_path):
    from iterit.training import train

    result = train(recipe_config(tmp_path, tiny_model_dir, n=32, pool="rolling", num_train_epochs=3))
    assert [entry["pool_size"] for entry in result.epochs[1:]] == [16, 16]
    assert len(result.selections) == 3


def test_pool_larger_than_the_data_is_clamped_and_logged(tiny_model_dir, tmp_path, caplog):
    from iterit.training import train

    with caplog.at_level(logging.WARNING, logger="iterit.rescoring"):
        result = train(recipe_config(tmp_path, tiny_model_dir, n=20, update_ratio=5))
    assert result.pool_size == 20 and "exceeds the 20 valid samples" in caplog.text


@pytest.mark.parametrize(
    ("overrides", "message"),
    [
        ({"ratio": 50}, "budget of 50 is more than the 20 samples"),
        ({"threshold": 1e-9}, "only 0 of 20 samples can be selected"),
        ({"strategy": "best", "pool": "moving"}, "--strategy 'best'.*--pool 'moving'"),
        ({"model": "/nonexistent/model"}, "--model /nonexistent/model: cannot be loaded"),
        ({"token_budget": 100}, "--token-budget applies to static, ifd, random and longest, not --strategy iterit"),
        ({"drop_top_ifd": 1.5, "diversity_norm": "l3"}, "--drop-top-ifd 1.5.*--diversity-norm 'l3'"),
    ],
)
def test_bad_settings_give_one_clear_error(tiny_model_dir, tmp_path, overrides, message):
    from iterit.training import train

    with pytest.raises(IterITError, match=message):
        train(recipe_config(tmp_path, tiny_model_dir, n=20, **overrides))


def test_resume_after_a_kill_gives_the_same_selections_and_weights(tiny_model_dir, tmp_path):
    import shutil

    from safetensors.torch import load_file

    from iterit.training import train

    whole = train(recipe_config(tmp_path / "a", tiny_model_dir, n=24))
    expected = load_file(whole.model_dir / "model.safetensors")
    # What a kill during epoch 1 leaves: epoch 0's checkpoint, epoch 1's selection, no model and no summary.
    run = tmp_path / "a" / "run"
    checkpoints = sorted((run / "checkpoints").glob("checkpoint-*"), key=lambda p: int(p.name.split("-")[1]))
    shutil.rmtree(checkpoints[-1])
    shutil.rmtree(run / "model")
    (run / "summary.json").unlink()
    (run / "epochs" / "1" / "metrics.json").unlink()
    selections_before = [selection_ids(run, e) for e in (0, 1)]
    resumed = train(recipe_config(tmp_path / "a", tiny_model_dir, n=24, resume=True))
    assert [selection_ids(run, e) for e in (0, 1)] == selections_before
    assert resumed.selections == whole.selections
    weights = load_file(resumed.model_dir / "model.safetensors")
    assert weights.keys() == expected.keys()
    for name, tensor in expected.items():
        assert torch.equal(weights[name], tensor), name


def test_lora_adapter_scores_with_the_adapted_model_and_merges(tiny_model_dir, tmp_path):
    from transformers import AutoModelForCausalLM

    from iterit.training import train

    result = train(recipe_config(tmp_path, tiny_model_dir, n=24, lora_r=4, lora_target_modules="q_proj,v_proj",
                                 merge_lora=True))
    assert (result.run_dir / "adapter" / "adapter_config.json").exists()
    merged = AutoModelForCausalLM.from_pretrained(result.model_dir)
    base = AutoModelForCausalLM.from_pretrained(tiny_model_dir)
    changed = [n for n, p in merged.named_parameters() if not torch.equal(p, base.get_parameter(n))]
    assert changed and all("q_proj" in n or "v_proj" in n for n in changed)
    assert set(selection_ids(result.run_dir, 1)) != set(selection_ids(result.run_dir, 0))


# ---------------------------------------------------------------- two processes (torchrun, gloo)

TORCHRUN_SCRIPT = """
import json, sys
import torch
torch.set_num_threads(1)
from iterit.training import TrainConfig, train
settings = json.loads(sys.argv[1])
result = train(TrainConfig(**settings))
if torch.distributed.get_rank() == 0:
    with open(settings["out"] + "/result.json", "w") as handle:
        json.dump({"selections": result.selections, "max_steps": result.max_steps,
                   "world": torch.distributed.get_world_size()}, handle)
"""


def run_two_processes(tmp_path: Path, settings: dict) -> dict:
    script = tmp_path / "train_ddp.py"
    script.write_text(TORCHRUN_SCRIPT)
    env = {**os.environ, "OMP_NUM_THREADS": "1", "HF_HUB_OFFLINE": "1", "TOKENIZERS_PARALLELISM": "false",
           "PYTHONPATH": str(REPO / "src")}
    # --standalone: torchrun binds its own free rendezvous port, so no port is probed here and then lost to a race.
    command = [sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc_per_node", "2", str(script),
               json.dumps(settings)]
    done = run_in_group(command, env=env, timeout=300)
    assert done.returncode == 0, done.stderr[-4000:]
    return json.loads((Path(settings["out"]) / "result.json").read_text())


@pytest.mark.slow
def test_two_processes_give_the_same_selections_and_a_schedule_sized_by_world_size(tiny_model_dir, tmp_path):
    from iterit.rescoring import steps_per_epoch
    from iterit.training import train

    data = write_data(tmp_path / "data.jsonl", 32)
    common = dict(model=str(tiny_model_dir), data=[str(data)], strategy="iterit", ratio=8, update_ratio=2,
                  num_train_epochs=2, learning_rate=1e-2, max_length=128, max_batch_tokens=2048, use_cpu=True,
                  quiet=True, seed=0, threshold=10.0)
    # Same global batch: 1 process x 4 samples, or 2 processes x 2 samples (losses averaged over tokens).
    single = train(recipe_config(tmp_path / "one", tiny_model_dir, **common, out=str(tmp_path / "one" / "run"),
                                 per_device_train_batch_size=4))
    double = run_two_processes(tmp_path, {**common, "out": str(tmp_path / "two"), "per_device_train_batch_size": 2})
    assert double["world"] == 2
    assert double["selections"] == single.selections
    assert double["max_steps"] == single.max_steps == 2 * steps_per_epoch(8, 2, 2, 1)
    # Under accumulation, with batches that do not divide evenly: 10 samples / (2 x 2) -> 3 batches per rank,
    # accumulated 2 at a time -> 2 optimizer steps per epoch (a full one and a short one).
    accumulated = run_two_processes(tmp_path, {**common, "ratio": 10, "out": str(tmp_path / "acc"),
                                               "per_device_train_batch_size": 2, "gradient_accumulation_steps": 2})
    assert accumulated["max_steps"] == 2 * steps_per_epoch(10, 2, 2, 2) == 4


KILLABLE_SCRIPT = """
import json, os, signal, sys
import torch
torch.set_num_threads(1)
from iterit.reselection import ReselectionCallback
from iterit.training import TrainConfig, train

def killed_mid_epoch_1(self, args, state, control, **kwargs):  # a real SIGKILL, at a step, not at a time
    if state.global_step == int(sys.argv[2]):
        os.kill(os.getpid(), signal.SIGKILL)

ReselectionCallback.on_step_end = killed_mid_epoch_1
train(TrainConfig(**json.loads(sys.argv[1])))
"""


@pytest.mark.slow
def test_a_real_kill_mid_epoch_then_resume_equals_an_uninterrupted_run(tiny_model_dir, tmp_path):
    from safetensors.torch import load_file

    from iterit.training import train

    whole = train(recipe_config(tmp_path / "whole", tiny_model_dir, n=24, num_train_epochs=3))
    killed = recipe_config(tmp_path / "killed", tiny_model_dir, n=24, num_train_epochs=3)
    settings = {name: getattr(killed, name) for name in ("model", "data", "out", "strategy", "ratio", "update_ratio",
                "num_train_epochs", "per_device_train_batch_size", "learning_rate", "max_length",
                "max_batch_tokens", "use_cpu", "quiet", "seed", "threshold")}
    script = tmp_path / "killable.py"
    script.write_text(KILLABLE_SCRIPT)
    env = {**os.environ, "OMP_NUM_THREADS": "1", "PYTHONPATH": str(REPO / "src")}
    # 2 steps an epoch (budget 8, batch 4): step 3 is epoch 1's first, past epoch 0's checkpoint.
    done = run_in_group([sys.executable, str(script), json.dumps(settings), "3"], env=env, timeout=300)
    assert done.returncode == -signal.SIGKILL, done.stderr[-3000:]
    run = Path(killed.out)
    assert not (run / "model").exists() and not (run / "epochs" / "2").exists()
    resumed = train(recipe_config(tmp_path / "killed", tiny_model_dir, n=24, num_train_epochs=3, resume=True))
    assert resumed.selections == whole.selections
    expected, weights = load_file(whole.model_dir / "model.safetensors"), load_file(resumed.model_dir / "model.safetensors")
    for name, tensor in expected.items():
        assert torch.equal(weights[name], tensor), name


def test_train_returns_its_picks_and_model_in_memory(tiny_model_dir, tmp_path):
    """The demo evaluates the result without re-reading the run folder: the in-memory picks and weights are the
    ones written there."""
    import torch
    from safetensors.torch import load_file

    from iterit.storage import read_table
    from iterit.training import TrainConfig, train

    data = tmp_path / "d.jsonl"
    data.write_text("".join(json.dumps({"instruction": f"Say {i}.", "output": f"It is {i}."}) + "\n" for i in range(12)))
    result = train(TrainConfig(model=str(tiny_model_dir), data=[str(data)], out=str(tmp_path / "run"), strategy="random",
                               ratio=4, num_train_epochs=2, max_length=64, use_cpu=True, report_to="none",
                               save_strategy="no", quiet=True, per_device_train_batch_size=2))
    for epoch, ids in enumerate(result.selected_ids):
        rows, _ = read_table(tmp_path / "run" / "epochs" / str(epoch) / "selection.parquet")
        assert ids == [str(row["id"]) for row in rows]
    saved = load_file(result.model_dir / "model.safetensors")
    weights = result.model.state_dict()
    assert all(torch.equal(tensor, weights[name]) for name, tensor in saved.items())
    assert result.tokenizer is not None


def test_random_at_a_token_budget_trains_on_the_prefix_closest_to_it(tiny_model_dir, tmp_path):
    """The equal-compute baseline: B is the count of random picks whose response tokens come closest to the
    budget, the same picks every epoch, and the schedule is sized from that B."""
    from iterit.storage import read_table
    from iterit.training import train

    result = train(recipe_config(tmp_path, tiny_model_dir, n=24, strategy="random", token_budget=60,
                                 per_device_train_batch_size=2, report_to="none", save_strategy="no"))
    rows, _ = read_table(tmp_path / "run" / "epochs" / "0" / "scores.parquet")
    tokens = {row["id"]: row["n_response_tokens"] for row in rows}
    picked = result.selected_ids[0]
    assert result.selected_ids[1] == picked and result.budget == len(picked)
    order = select_samples(make_samples(24), ScoreTable.from_rows(rows), 24, strategy="random", seed=0).indices
    running = np.cumsum([tokens[f"s{i}"] for i in order])
    assert abs(sum(tokens[i] for i in picked) - 60) == np.min(np.abs(running - 60))
    assert result.max_steps == 2 * math.ceil(len(picked) / 2)


def test_drop_top_ifd_and_l1_diversity_reach_every_epochs_selection(tiny_model_dir, tmp_path):
    """--drop-top-ifd fixes a lower bound from the base model's scores; every epoch's picks stay under it."""
    from iterit.selection import effective_threshold
    from iterit.storage import read_table
    from iterit.training import train

    train(recipe_config(tmp_path, tiny_model_dir, n=24, drop_top_ifd=0.25, diversity_norm="l1",
                        report_to="none", save_strategy="no"))
    rows, _ = read_table(tmp_path / "run" / "epochs" / "0" / "scores.parquet")
    bound = effective_threshold(ScoreTable.from_rows(rows), 10.0, 0.25)
    assert bound < max(row["ifd"] for row in rows)
    for epoch in (0, 1):
        picks, meta = read_table(tmp_path / "run" / "epochs" / str(epoch) / "selection.parquet")
        assert all(row["ifd"] < bound for row in picks if row["ifd"] is not None)
    first, meta = read_table(tmp_path / "run" / "epochs" / "0" / "selection.parquet")
    assert meta["threshold"] == bound and meta["tfidf_options"]["norm"] == "l1"
    assert json.loads((tmp_path / "run" / "summary.json").read_text())["threshold"] == bound

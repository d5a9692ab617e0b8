"""`--preset reference`: the reference code's settings, under the YAML file and the flags, for every command."""

from __future__ import annotations

import dataclasses
import json
from pathlib import Path

import numpy as np
import pytest

from iterit.cli import main, parse_config
from iterit.config import EvalConfig, ScoreConfig, SelectConfig
from iterit.errors import IterITError
from iterit.presets import PRESETS, REFERENCE, describe_preset, preset_settings
from iterit.scoring import ScoreTable, write_scores
from iterit.storage import read_table
from iterit.training import TrainConfig

RENDERING = {"system_prompt": "You are a helpful assistant.", "input_join": "reference", "template": "llama-3.1",
             "response_end": "eos", "max_length": 2048}


def test_every_setting_names_its_source_and_a_command_that_has_it():
    commands = (ScoreConfig, SelectConfig, EvalConfig, TrainConfig)
    for setting in REFERENCE:
        assert setting.source.strip(), setting.key
        assert any(setting.key in {f.name for f in dataclasses.fields(c)} for c in commands), setting.key
    assert "pool: 'reference'" in describe_preset("reference")
    assert list(PRESETS) == ["reference"]


def test_each_command_takes_the_settings_it_has():
    assert preset_settings("reference", ScoreConfig) == RENDERING
    select = preset_settings("reference", SelectConfig)
    assert select["budget_rounding"] == "floor" and select["tfidf_text"] == "response+eos" and "pool" not in select
    train = preset_settings("reference", TrainConfig)
    assert {k: train[k] for k in RENDERING} == RENDERING
    assert (train["pool"], train["per_device_train_batch_size"], train["gradient_accumulation_steps"],
            train["loss_weighting"], train["budget_rounding"]) == ("reference", 1, 32, "sample", "floor")
    assert "budget" not in train and "eos_token" not in train
    assert preset_settings(None, TrainConfig) == {}
    with pytest.raises(IterITError, match="--preset 'paper': not one of reference"):
        preset_settings("paper", TrainConfig)


def test_flags_and_yaml_override_the_preset(tmp_path: Path):
    argv = ["--preset", "reference", "--model", "m", "--data", "d.jsonl", "--out", str(tmp_path / "run"),
            "--per-device-train-batch-size", "4", "--use-cpu"]
    config = parse_config("train", TrainConfig, argv)
    assert (config.preset, config.template, config.pool, config.gradient_accumulation_steps) == (
        "reference", "llama-3.1", "reference", 32)
    assert config.per_device_train_batch_size == 4  # the flag wins
    recipe = tmp_path / "r.yaml"
    recipe.write_text("preset: reference\nmodel: m\ndata: d.jsonl\nout: run\nlearning_rate: 1.0e-5\nuse_cpu: true\n")
    config = parse_config("train", TrainConfig, [str(recipe), "--pool", "greedy"])
    assert (config.learning_rate, config.pool, config.response_end, config.seed) == (1e-5, "greedy", "eos", 42)
    score = parse_config("score", ScoreConfig, ["--preset=reference", "--model", "m"])
    assert {k: getattr(score, k) for k in RENDERING} == RENDERING


def test_train_config_from_preset_equals_the_cli():
    config = TrainConfig.from_preset("reference", model="m", data=["d.jsonl"], out="run", use_cpu=True,
                                     learning_rate=1e-5)
    assert config.preset == "reference" and config.learning_rate == 1e-5 and config.budget_rounding == "floor"
    assert config.tfidf_text == "response+eos" and config.warmup_steps == 0.03


def write_alpaca(path: Path, n: int) -> Path:
    records = [{"instruction": f"Say the number {i}.", "input": "" if i % 3 else f"{i}", "output": f"The number {i} "
                f"{'is even' if i % 2 == 0 else 'is odd'}."} for i in range(n)]
    path.write_text(json.dumps(records), encoding="utf-8")
    return path


def test_select_with_the_preset_floors_the_budget_and_fits_tfidf_on_response_and_eos(tmp_path: Path):
    from iterit.data import load_samples

    data = write_alpaca(tmp_path / "a.json", 30)  # 30 x 0.05 = 1.5: floor 1, half up 2
    samples = load_samples([data], input_join="reference").samples
    n = len(samples)
    write_scores(ScoreTable([s.id for s in samples], [s.source for s in samples], np.linspace(0.2, 0.9, n),
                            np.ones(n), np.ones(n), np.ones(n, int), np.zeros(n, bool), [None] * n),
                 tmp_path / "scores.jsonl")
    out = tmp_path / "subset.jsonl"
    assert main(["select", "--preset", "reference", "--data", str(data), "--scores", str(tmp_path / "scores.jsonl"),
                 "--out", str(out)]) == 0
    rows, meta = read_table(tmp_path / "subset.manifest.jsonl")
    assert len(rows) == 1
    assert meta["params"]["tfidf_suffix"] == "<|end_of_text|>"


def test_train_with_the_preset_runs_end_to_end_on_the_tiny_model(tiny_model_dir: Path, tmp_path: Path):
    """The whole preset on a CPU (batch shape and data size scaled down): llama-3.1, eos ends, reference pool."""
    from iterit.training import train

    data = write_alpaca(tmp_path / "a.json", 45)  # 45 x 0.1 = 4.5: the reference floors it to 4
    config = TrainConfig.from_preset(
        "reference", model=str(tiny_model_dir), data=[str(data)], out=str(tmp_path / "run"), ratio=0.1,
        update_ratio=2, num_train_epochs=2, per_device_train_batch_size=2, gradient_accumulation_steps=2,
        max_length=256, use_cpu=True, quiet=True, threshold=100.0, save_strategy="no")
    result = train(config)
    assert result.budget == 4 and result.pool_size == 8
    dynamics = json.loads((tmp_path / "run" / "epochs" / "1" / "dynamics.json").read_text())
    assert dynamics["pool_size"] == 8 and dynamics["topped_up"] == 0
    resolved = (tmp_path / "run" / "config.yaml").read_text()
    assert "preset: reference" in resolved and "template: llama-3.1" in resolved


def test_score_with_the_preset_renders_as_the_reference(tiny_model_dir: Path, tmp_path: Path):
    """`iterit score --preset reference` scores the reference's rendering; the same text `render_samples` gives."""
    import torch
    from transformers import AutoModelForCausalLM, AutoTokenizer

    from iterit.data import load_samples
    from iterit.render import render_samples
    from iterit.scoring import read_scores, score_samples

    data = write_alpaca(tmp_path / "a.json", 6)
    out = tmp_path / "scores.jsonl"
    assert main(["score", "--preset", "reference", "--model", str(tiny_model_dir), "--data", str(data),
                 "--out", str(out), "--device", "cpu", "--quiet"]) == 0
    table = read_scores(out)
    tokenizer = AutoTokenizer.from_pretrained(tiny_model_dir)
    samples = load_samples([data], input_join="reference", system_prompt="You are a helpful assistant.").samples
    assert samples[0].messages[1]["content"] == "Say the number 0.\nInput: 0"
    rendered = render_samples(tokenizer, samples, template="llama-3.1", response_end="eos")
    assert table.n_response_tokens.tolist() == [r.n_response_tokens for r in rendered]
    model = AutoModelForCausalLM.from_pretrained(tiny_model_dir).eval()
    with torch.no_grad():
        same = score_samples(model, tokenizer, samples, template="llama-3.1", response_end="eos", progress=False)
        plain = score_samples(model, tokenizer, load_samples([data]).samples, progress=False)
    np.testing.assert_allclose(table.ifd, same.ifd, rtol=1e-5)
    assert not np.allclose(table.ifd, plain.ifd, rtol=1e-3)  # the preset changed what was scored
    text = tokenizer.decode(rendered[0].input_ids)
    assert "<|start_header_id|>system<|end_header_id|>" in text and "You are a helpful assistant." in text
    assert text.endswith("is even." + tokenizer.eos_token)

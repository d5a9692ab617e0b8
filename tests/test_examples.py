"""Every shipped recipe in examples/ parses into its command's config, as the CLI parses it; and the help texts
work and show the defaults."""

from __future__ import annotations

import dataclasses
import importlib
import re
import subprocess
import sys
from pathlib import Path

import pytest

from iterit.cli import COMMANDS, main, parse_config

EXAMPLES = sorted((Path(__file__).resolve().parents[1] / "examples").glob("*.yaml"))
# The first `iterit CMD examples/<file>` (or `-m iterit.cli CMD examples/<file>`) in the opening comment.
COMMAND_LINE = r"(?:\biterit|-m iterit\.cli)\s+([a-z][a-z-]*)\s+examples/{name}"


def config_class(command: str) -> type:
    module, name = COMMANDS[command][1].split(":")
    try:
        return getattr(importlib.import_module(module), name)
    except ModuleNotFoundError as err:
        if err.name != module:
            raise
        pytest.skip(f"{module} is not in this checkout yet, so {name} cannot be checked")


def opening_command(path: Path) -> str:
    """The command named in the file's opening comment (the lines before its first key)."""
    header = []
    for line in path.read_text(encoding="utf-8").splitlines():
        if line.strip() and not line.lstrip().startswith("#"):
            break
        header.append(line)
    assert header and header[0].startswith("#"), f"{path.name} must open with a comment giving its command"
    match = re.search(COMMAND_LINE.format(name=re.escape(path.name)), "\n".join(header))
    assert match, f"{path.name}: the opening comment names no `iterit COMMAND examples/{path.name}`"
    assert match.group(1) in COMMANDS, f"{path.name}: unknown command '{match.group(1)}'"
    return match.group(1)


def parse_example(path: Path) -> tuple[str, object]:
    command = opening_command(path)
    argv = [str(path)]
    if command == "train":
        # TrainingArguments refuses bf16 on a machine without a GPU; --use-cpu lets a CPU machine check the
        # rest of a GPU recipe. Only parsing: the model folder need not exist.
        import torch

        if not torch.cuda.is_available():
            argv.append("--use-cpu")
    return command, parse_config(command, config_class(command), argv, COMMANDS[command][3])


def test_there_are_recipes_for_every_stage():
    names = {path.name for path in EXAMPLES}
    assert {"reference_llama3_8b_alpaca.yaml", "lora_single_24gb.yaml", "multi_gpu.yaml", "cpu_demo.yaml",
            "score.yaml", "select.yaml"} <= names


@pytest.mark.parametrize("path", EXAMPLES, ids=lambda p: p.name)
def test_example_parses_into_its_command_config(path):
    command, config = parse_example(path)
    assert isinstance(config, config_class(command))
    keys = {line.split(":", 1)[0] for line in path.read_text().splitlines() if re.match(r"^[a-z_]+:", line)}
    fields = {f.name for f in dataclasses.fields(config)} | {"epochs"}
    assert keys <= fields  # every top-level key is a field name (the CLI also rejects unknown ones)


def effective_batch(config, processes: int = 1) -> int:
    return config.per_device_train_batch_size * config.gradient_accumulation_steps * processes


def example(name: str) -> Path:
    return next(path for path in EXAMPLES if path.name == name)


def test_reference_recipe_is_the_papers():
    _, config = parse_example(example("reference_llama3_8b_alpaca.yaml"))
    assert (config.strategy, config.ratio, config.update_ratio, config.decay) == ("iterit", 0.05, 3, 0.1)
    assert (config.num_train_epochs, config.learning_rate, config.warmup_steps) == (3, 2e-5, 0.03)
    assert str(config.lr_scheduler_type.value) == "cosine" and config.bf16 and config.max_length == 2048
    assert effective_batch(config) == 32 and config.data == ["alpaca_data.json"]


def test_lora_and_multi_gpu_recipes_keep_batch_32():
    _, lora = parse_example(example("lora_single_24gb.yaml"))
    assert lora.lora_r == 16 and effective_batch(lora) == 32
    path = example("multi_gpu.yaml")
    _, multi = parse_example(path)
    header = path.read_text()
    processes = int(re.search(r"--num_processes (\d+)", header).group(1))
    assert f"torchrun --nproc_per_node {processes} -m iterit.cli train examples/multi_gpu.yaml" in header
    assert multi.per_device_train_batch_size == 1 and effective_batch(multi, processes) == 32


def test_top_level_help_lists_every_command():
    done = subprocess.run([sys.executable, "-m", "iterit.cli", "--help"], capture_output=True, text=True, timeout=120)
    assert done.returncode == 0, done.stderr
    for command in COMMANDS:
        assert command in done.stdout
    assert "arXiv:2412.17365" in done.stdout and "README" in done.stdout


def own_defaults(cls: type) -> dict[str, object]:
    """Fields with a plain default that this package declares (TrainingArguments' own are not checked)."""
    ours = {}
    for klass in cls.__mro__:
        if klass.__module__.startswith("iterit"):
            for name in getattr(klass, "__annotations__", {}):
                ours.setdefault(name, None)
    return {f.name: f.default for f in dataclasses.fields(cls)
            if f.name in ours and isinstance(f.default, (int, float, str)) and not isinstance(f.default, bool)
            and f.default != ""}


@pytest.mark.parametrize("command", list(COMMANDS))
def test_command_help_shows_the_defaults(command, capsys):
    with pytest.raises(SystemExit) as exit_info:
        main([command, "--help"])
    assert exit_info.value.code == 0
    text = " ".join(capsys.readouterr().out.split())  # argparse wraps lines
    assert f"iterit {command}" in text and "README" in text and "(default: " in text
    for name, default in own_defaults(config_class(command)).items():
        assert f"(default: {default})" in text, f"`iterit {command} --help` does not show {name}'s default {default}"

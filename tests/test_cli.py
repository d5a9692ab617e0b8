"""The command line: its help and the flags its messages name; and the README's Python imports."""

from __future__ import annotations

import ast
import dataclasses
import importlib
import re
from pathlib import Path

import pytest

from iterit.cli import COMMANDS, RENAMED_FLAGS, main

REPO = Path(__file__).resolve().parents[1]
SOURCE = REPO / "src" / "iterit"
FLAG = re.compile(r"(?<![\w-])--([a-z][a-z0-9]*(?:[-_][a-z0-9]+)*)")
# Flags of other programs that our messages quote (torchrun, accelerate) and the CLI's own switches.
NOT_OURS = {"help", "verbose", "version", "nproc_per_node", "nproc-per-node", "num_processes", "num-processes",
            "flag",  # the usage line's placeholder
            "no-deps",  # pip's, in the message on installing the smollm2 model file
            # the reference code's own flags, which presets.py cites as the source of each setting
            "prompt_template", "diversity_weight_decay", "score_type", "update_strategy"}


def _all_flags() -> set[str]:
    """Every flag some command accepts, in both spellings, plus renamed ones still accepted."""
    flags = set(NOT_OURS)
    for _, config_ref, _, _ in COMMANDS.values():
        module, name = config_ref.split(":")
        for field in dataclasses.fields(getattr(importlib.import_module(module), name)):
            flags |= {field.name, field.name.replace("_", "-")}
    for renamed in RENAMED_FLAGS.values():
        flags |= {old.lstrip("-") for old in renamed if old.startswith("--")}
    return flags


def _message_strings(tree: ast.AST) -> list[tuple[int, str]]:
    """Every string in the source: error and warning messages, the flag names they are built from (a
    ``("--shard-size", value)`` pair formatted into a problem), help texts and docstrings alike."""
    return [(n.lineno, n.value) for n in ast.walk(tree) if isinstance(n, ast.Constant) and isinstance(n.value, str)]


def test_every_flag_named_in_an_error_message_exists():
    flags = _all_flags()
    phantom = []
    for path in sorted(SOURCE.rglob("*.py")):
        for line, text in _message_strings(ast.parse(path.read_text(encoding="utf-8"))):
            phantom += [f"{path.relative_to(REPO)}:{line}: --{flag}" for flag in FLAG.findall(text) if flag not in flags]
    assert not phantom, "messages name flags no command has:\n" + "\n".join(phantom)


def test_the_shard_size_flag_exists_and_reaches_the_config():
    from iterit.cli import parse_config
    from iterit.config import ScoreConfig

    assert parse_config("score", ScoreConfig, ["--model", "m", "--shard-size", "7"]).shard_size == 7


@pytest.mark.parametrize("command", ["", *COMMANDS])
def test_help_names_only_documentation_addresses_that_exist(command, capsys):
    with pytest.raises(SystemExit) if command else _no_error():
        main([command, "--help"] if command else ["--help"])
    text = capsys.readouterr().out
    assert "README.md" in text
    urls = (REPO / "pyproject.toml").read_text().split("[project.urls]", 1)[-1].split("\n[", 1)[0]
    known = set(re.findall(r'"(https?://[^"]+)"', urls))  # the project's own addresses ([project.urls])
    # transformers' own help (train's TrainingArguments) points at its pages; ours must exist
    addresses = {a for a in re.findall(r"https?://[^\s)]+", text) if "iterit" in a.lower()}
    assert addresses <= known, f"addresses that are not the project's: {addresses - known}"


class _no_error:
    def __enter__(self):
        return self

    def __exit__(self, *exc):
        return False


def _readme_imports() -> list[tuple[str, str]]:
    """``(module, name)`` for every ``from iterit... import name`` in the README's Python blocks."""
    readme = (REPO / "README.md").read_text(encoding="utf-8")
    pairs = []
    for block in re.findall(r"```python\n(.*?)```", readme, flags=re.S):
        for node in ast.walk(ast.parse(block)):
            if isinstance(node, ast.ImportFrom) and node.module and node.module.split(".")[0] == "iterit":
                pairs += [(node.module, alias.name) for alias in node.names]
    return pairs


def test_the_readme_has_python_imports_to_check():
    assert len(_readme_imports()) >= 5


@pytest.mark.parametrize("module, name", _readme_imports())
def test_every_readme_import_works_and_the_public_namespace_exports_it(module, name):
    import iterit

    assert getattr(importlib.import_module(module), name) is not None
    assert name in iterit.__all__ and getattr(iterit, name) is getattr(importlib.import_module(module), name)

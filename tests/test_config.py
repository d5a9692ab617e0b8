"""The command configs: every default is set once, in the config, and the functions users call share it."""

from __future__ import annotations

import dataclasses
import importlib
import inspect

import pytest

from iterit.cli import COMMANDS
from iterit.config import EvalConfig, ScoreConfig, SelectConfig


def _config_defaults(config_class: type) -> dict[str, object]:
    return {f.name: f.default for f in dataclasses.fields(config_class) if f.default is not dataclasses.MISSING}


def _shared_defaults(function, config_class: type) -> list[tuple[str, object, object]]:
    """(name, the function's default, the config's default) for every parameter the two share."""
    defaults = _config_defaults(config_class)
    return [(name, p.default, defaults[name]) for name, p in inspect.signature(function).parameters.items()
            if name in defaults and p.default is not inspect.Parameter.empty]


def _api_pairs():
    from iterit.evaluation import evaluate, generate_answers
    from iterit.reselection.install import build_reselection, install_reselection
    from iterit.scoring import score_samples
    from iterit.selection import select_samples
    from iterit.training import TrainConfig

    return [(evaluate, EvalConfig), (generate_answers, EvalConfig), (score_samples, ScoreConfig),
            (select_samples, SelectConfig), (install_reselection, TrainConfig), (build_reselection, TrainConfig)]


@pytest.mark.parametrize("function, config_class", _api_pairs(), ids=lambda x: getattr(x, "__name__", ""))
def test_python_api_defaults_are_the_commands_defaults(function, config_class):
    shared = _shared_defaults(function, config_class)
    assert shared, f"{function.__name__} shares no setting with {config_class.__name__}"
    # install_reselection(seed=None) takes the user's trainer.args.seed: not a default of its own.
    drifted = [(name, mine, theirs) for name, mine, theirs in shared
               if mine != theirs and (function.__name__, name) != ("install_reselection", "seed")]
    assert not drifted, f"{function.__name__} defaults differ from {config_class.__name__}: {drifted}"


def test_eval_generates_as_many_tokens_from_python_as_from_the_cli():
    from iterit.evaluation import evaluate

    assert inspect.signature(evaluate).parameters["max_new_tokens"].default == EvalConfig.max_new_tokens == 64


def test_train_and_select_share_their_selection_defaults():
    from iterit.training import TrainConfig

    train, select = _config_defaults(TrainConfig), _config_defaults(SelectConfig)
    shared = (set(train) & set(select)) - {"out", "seed"}  # --out is a folder for one, a file for the other
    assert {"threshold", "decay", "strategy", "tfidf_text", "budget_rounding"} <= shared
    assert {name: train[name] for name in shared} == {name: select[name] for name in shared}


@pytest.mark.parametrize("command", list(COMMANDS))
def test_every_command_is_one_recipe_run_taking_its_config(command):
    _, config_ref, recipe, _ = COMMANDS[command]
    module, name = config_ref.split(":")
    config_class = getattr(importlib.import_module(module), name)
    run = importlib.import_module(recipe).run
    (parameter,) = inspect.signature(run).parameters.values()
    assert parameter.name == "config" and parameter.annotation in (config_class.__name__, config_class)
    assert run.__doc__

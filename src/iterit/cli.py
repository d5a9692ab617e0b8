"""The ``iterit`` command: parse flags and YAML into the command's config, run its recipe, print the result.

``iterit CMD`` is ``iterit.recipes.<cmd>.run(config)`` (:mod:`iterit.recipes`) followed by printing
``result.format()``; this module adds parsing and printing only, and nothing imports it.

Every command accepts ``iterit CMD config.yaml --flag value``: the file's keys are the flags' names with
underscores, and flags override the file. Both ``--max-length`` and ``--max_length`` spellings work.
User errors (:class:`IterITError`) print one line and exit with status 2; ``--verbose`` adds the traceback.
"""

from __future__ import annotations

import dataclasses
import difflib
import errno
import logging
import sys
import traceback
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from pathlib import Path
from typing import Any

from iterit.errors import IterITError
from iterit.outputs import reading_config
from iterit.progress import OncePerRun, show_library_progress_bars

# There is no documentation site: the README is the manual (also the package's long description on install).
README = "README.md in the iterit source"

# command -> (one-line help, "module:ConfigClass", the recipe module (its run(config)), positional field or None)
COMMANDS: dict[str, tuple[str, str, str, str | None]] = {
    "inspect": (
        "load data and print the summary: samples per source, duplicates, invalid rows and why, lengths",
        "iterit.config:InspectConfig", "iterit.recipes.inspect", None,
    ),
    "score": (
        "complexity: IFD = PPL(response | instruction) / PPL(response) of every sample under a causal LM",
        "iterit.config:ScoreConfig", "iterit.recipes.score", None,
    ),
    "select": (
        "choose a subset: IterIT's IFD x response diversity greedy, or a baseline (ifd, random, longest, full)",
        "iterit.config:SelectConfig", "iterit.recipes.select", None,
    ),
    "train": (
        "fine-tune on the selection, re-scoring a candidate pool with the current model after every epoch",
        "iterit.training:TrainConfig", "iterit.recipes.train", None,
    ),
    "eval": (
        "held-out response loss / perplexity, and exact match or containment of greedy answers",
        "iterit.config:EvalConfig", "iterit.recipes.evaluate", None,
    ),
    "report": (
        "Markdown + HTML report with plots for a run folder",
        "iterit.config:ReportConfig", "iterit.recipes.report", "run",
    ),
    "demo": (
        "the whole method on built-in known-answer data with a tiny model, on a CPU, in minutes",
        "iterit.config:DemoConfig", "iterit.recipes.demo", None,
    ),
    "tiny-model": (
        "build a small real causal LM (BPE tokenizer, chat template, Llama) for tests and the demo",
        "iterit.config:TinyModelConfig", "iterit.recipes.tiny_model", None,
    ),
}
REQUIRED = {"model", "out", "run"}
# Disk full, quota, permissions, read-only or a file where a folder should be: the user can fix these.
USER_FIXABLE_ERRNOS = {errno.ENOSPC, errno.EDQUOT, errno.EACCES, errno.EPERM, errno.EROFS, errno.ENOTDIR, errno.EEXIST}  # string fields whose empty default means "must be given"
# Names users bring from other tools' configs. transformers 5 folded warmup_ratio into warmup_steps (< 1: a share).
# Only `train` carries TrainingArguments; the demo has a plain `epochs` setting of its own.
RENAMED_FLAGS = {
    "train": {
        "--epochs": "--num_train_epochs",
        "epochs": "num_train_epochs",
        "--warmup-ratio": "--warmup_steps",
        "--warmup_ratio": "--warmup_steps",
        "warmup_ratio": "warmup_steps",
    }
}


def main(argv: Sequence[str] | None = None) -> int:
    """Entry point of the ``iterit`` console script; returns the exit status."""
    args = list(sys.argv[1:] if argv is None else argv)
    verbose = _pop_flag(args, "--verbose", "-v")
    logging.basicConfig(level=logging.DEBUG if verbose else logging.INFO, format="%(message)s")
    for noisy in ("httpx", "urllib3", "filelock", "datasets", "torch.distributed"):
        logging.getLogger(noisy).setLevel(logging.WARNING)
    if not args or args[0] in ("-h", "--help", "help"):
        print(top_help())
        return 0
    if args[0] == "--version":
        from importlib.metadata import version

        print(f"iterit {version('iterit')}")
        return 0
    command, rest = args[0], args[1:]
    try:
        if command not in COMMANDS:
            close = difflib.get_close_matches(command, COMMANDS, n=1)
            hint = f"did you mean '{close[0]}'? " if close else ""
            raise IterITError(f"unknown command '{command}'; {hint}run `iterit --help` for the list")
        _, config_ref, recipe, positional = COMMANDS[command]
        config = parse_config(command, _resolve(config_ref), rest, positional)
        show_library_progress_bars(verbose)
        with reading_config(_config_file(rest)), warnings_once_per_run():  # no output lands on the YAML read
            result = _resolve(f"{recipe}:run")(config)
        _print(result.format())
        return 0
    except IterITError as err:
        if verbose:
            traceback.print_exc()
        print(f"iterit {command}: error: {err}", file=sys.stderr)
        return 2
    except OSError as err:
        if err.errno not in USER_FIXABLE_ERRNOS:
            raise
        if verbose:
            traceback.print_exc()
        where = err.filename or "output"
        print(f"iterit {command}: error: {where}: {err.strerror}; free space or choose another --out", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print(f"iterit {command}: interrupted", file=sys.stderr)
        return 130
    finally:
        _close_distributed()


def _close_distributed() -> None:
    """Shut down a process group that the command (or the Trainer, under torchrun) brought up."""
    if "torch.distributed" in sys.modules:  # never import torch just to find nothing to close
        from iterit.scoring.distributed import close_distributed

        close_distributed()


def top_help() -> str:
    """``iterit --help``: the method in a line, the commands, where to read more."""
    lines = [
        "usage: iterit COMMAND [config.yaml] [--flag value ...] [--verbose]",
        "",
        "IterIT picks the most valuable instruction-tuning samples for a model: complexity (IFD, under the",
        "model being tuned) x response diversity (TF-IDF), and re-scores a candidate pool while the model learns",
        "(Jia et al., 2024, arXiv:2412.17365). Defaults follow the paper: 5% per epoch, update ratio 3, decay 0.1.",
        "",
        "commands:",
    ]
    lines += [f"  {name:<11} {info[0]}" for name, info in COMMANDS.items()]
    lines += [
        "",
        "`iterit COMMAND --help` lists each command's flags and defaults. Start with `iterit demo --quick`.",
        f"Docs: {README}",
    ]
    return "\n".join(lines)


def parse_config(command: str, config_class: type, argv: list[str], positional: str | None = None) -> Any:
    """Build ``config_class`` from an optional YAML file, an optional positional value, and flags."""
    from transformers import HfArgumentParser

    renamed = RENAMED_FLAGS.get(command, {})
    argv = [_rename_flag(arg, renamed) for arg in argv]
    file_values: dict[str, Any] = {}
    if argv and not argv[0].startswith("-") and argv[0].endswith((".yaml", ".yml")):
        file_values = read_config_file(argv.pop(0), config_class, renamed)
    if positional and argv and not argv[0].startswith("-"):
        argv = [f"--{positional}", argv[0], *argv[1:]]
    doc = COMMANDS[command][0]
    parser = HfArgumentParser(config_class, prog=f"iterit {command}", description=f"{doc}. Docs: {README}")
    given = {arg[2:].split("=", 1)[0].replace("-", "_") for arg in argv if arg.startswith("--")}
    defaults = {**preset_defaults(config_class, argv, file_values), **file_values}
    parser.set_defaults(**{key: value for key, value in defaults.items() if key not in given})
    namespace, unknown = parser.parse_known_args(argv)
    if unknown:
        raise IterITError(f"unrecognised argument(s) {' '.join(unknown)}; see `iterit {command} --help`")
    values = vars(namespace)
    missing = [f"--{name.replace('_', '-')}" for name in REQUIRED if name in values and values[name] in ("", None)]
    if missing:
        raise IterITError(f"missing {', '.join(sorted(missing))}; see `iterit {command} --help`")
    try:
        return config_class(**values)
    except (ValueError, TypeError) as err:
        if isinstance(err, IterITError):
            raise
        raise IterITError(f"invalid settings: {err}".replace("\n", " ")) from None


def _config_file(argv: Sequence[str]) -> str | None:
    """The YAML config given as the first argument, as :func:`parse_config` reads it."""
    if argv and not argv[0].startswith("-") and argv[0].endswith((".yaml", ".yml")):
        return argv[0]
    return None
def preset_defaults(config_class: type, argv: list[str], file_values: dict[str, Any]) -> dict[str, Any]:
    """The settings of ``--preset`` (a flag, else the YAML's ``preset`` key): defaults under the file and flags."""
    from iterit.presets import preset_settings

    name = file_values.get("preset")
    for position, arg in enumerate(argv):
        if arg in ("--preset", "--preset=") and position + 1 < len(argv):
            name = argv[position + 1]
        elif arg.startswith("--preset="):
            name = arg.split("=", 1)[1]
    if name is None or not any(f.name == "preset" for f in dataclasses.fields(config_class)):
        return {}
    return preset_settings(name, config_class)


def _rename_flag(arg: str, renamed: dict[str, str]) -> str:
    if not arg.startswith("--"):
        return arg
    name, sep, value = arg.partition("=")
    return renamed.get(name, name) + sep + value


def read_config_file(path: str, config_class: type, renamed: dict[str, str] | None = None) -> dict[str, Any]:
    """A YAML config's keys, checked against the command's fields (all unknown keys reported at once)."""
    import yaml

    source = Path(path)
    if not source.exists():
        raise IterITError(f"{source}: no such config file")
    try:
        values = yaml.safe_load(source.read_text(encoding="utf-8")) or {}
    except yaml.YAMLError as err:
        mark = getattr(err, "problem_mark", None)
        where = f"{source}:{mark.line + 1}" if mark else str(source)
        raise IterITError(f"{where}: not valid YAML ({getattr(err, 'problem', err)}); fix the file") from None
    if not isinstance(values, dict):
        raise IterITError(f"{source}: a config file must be a mapping of setting: value")
    values = {(renamed or {}).get(key, key).replace("-", "_"): value for key, value in values.items()}
    fields = {f.name for f in dataclasses.fields(config_class)}
    unknown = sorted(set(values) - fields)
    if unknown:
        hints = [f"{key} (did you mean {close[0]}?)" if (close := difflib.get_close_matches(key, fields, n=1)) else key for key in unknown]
        raise IterITError(f"{source}: unknown setting(s) {', '.join(hints)}")
    if isinstance(values.get("data"), str):
        values["data"] = [values["data"]]
    return values


def _resolve(ref: str) -> Any:
    import importlib

    module, name = ref.split(":")
    return getattr(importlib.import_module(module), name)


@contextmanager
def warnings_once_per_run() -> Iterator[None]:
    """Within the block, each warning (logged, or from ``warnings.warn``) reaches the console once."""
    # One filter per handler: a shared one would let a record through the first handler only.
    filters = {handler: OncePerRun() for handler in logging.getLogger().handlers}
    for handler, once in filters.items():
        handler.addFilter(once)
    logging.captureWarnings(True)
    try:
        yield
    finally:
        logging.captureWarnings(False)
        for handler, once in filters.items():
            handler.removeFilter(once)


def _pop_flag(args: list[str], *names: str) -> bool:
    found = any(name in args for name in names)
    args[:] = [arg for arg in args if arg not in names]
    return found


def _print(text: str) -> None:
    """Print on the main process only: under torchrun every rank runs the same command."""
    if _is_main_process():
        print(text, flush=True)


def _is_main_process() -> bool:
    import os

    return os.environ.get("RANK", "0") == "0"


if __name__ == "__main__":
    sys.exit(main())

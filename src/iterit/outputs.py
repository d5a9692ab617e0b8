"""The one output-path guard: no command ever writes onto, or into, one of its own inputs.

A typo such as ``--out data.jsonl`` would otherwise replace the user's data with the result. Paths are compared
as the files they name (``os.path.samefile``: the same device and inode), so ``./in.jsonl``, ``in.jsonl``, a
symlink and a hard link are one file. Every command that writes calls :func:`check_output` for each file or
folder it writes (derived ones too: the manifest, the shard folder, the run folder's entries) before any work.

The CLI registers the YAML config it read with :func:`reading_config`, so no output lands on it either.
"""

from __future__ import annotations

import os
from collections.abc import Iterator, Mapping, Sequence
from contextlib import contextmanager
from contextvars import ContextVar
from pathlib import Path

from iterit.errors import IterITError

PathLike = str | os.PathLike
Inputs = Mapping[str, PathLike | Sequence[PathLike] | None]

# YAML config files the CLI read the settings from: inputs no library function can see.
_config_files: ContextVar[tuple[Path, ...]] = ContextVar("iterit_config_files", default=())


@contextmanager
def reading_config(path: PathLike | None) -> Iterator[None]:
    """Within the block, every :func:`check_output` also protects the YAML config ``path``."""
    token = _config_files.set((*_config_files.get(), Path(path)) if path else _config_files.get())
    try:
        yield
    finally:
        _config_files.reset(token)


def check_output(out: PathLike, inputs: Inputs, *, flag: str = "--out", writes: Sequence[str] | None = None,
                 own_config: Sequence[PathLike] = ()) -> None:
    """Refuse ``out`` when it is an input, lies inside an input folder, or (a folder) would write over one.

    Args:
        out: a file or folder the command will write.
        inputs: ``{flag: path or paths}`` as the user typed them (``--data``, ``--scores``, ``--model``);
            ``None`` and names that are not local paths (a hub id) are skipped.
        flag: how the user named ``out`` in the message (``--out``, ``--out (its manifest)``).
        writes: for a folder output, the entries it writes (``model``, ``config.yaml``): an input at or below one
            of them is refused. ``None`` for a file output.
        own_config: files the command itself wrote earlier and may rewrite though given back as the YAML
            config (``iterit train RUN/config.yaml`` into its own run folder).

    Raises:
        IterITError: one line naming the output, the input it would destroy, and the fix.
    """
    target = Path(out)
    for input_flag, path in _named_inputs(inputs, own_config):
        problem = _clash(target, path, writes)
        if problem:
            raise IterITError(
                f"{flag} {out}: {problem} {input_flag} {path}; writing there would destroy your input, "
                f"so nothing was written; choose another {flag.split()[0]}"
            )


def _named_inputs(inputs: Inputs, own_config: Sequence[PathLike] = ()) -> Iterator[tuple[str, Path]]:
    """``(flag, path)`` for every input that exists on disk, the CLI's YAML configs included."""
    for flag, value in inputs.items():
        values = [] if value is None else [value] if isinstance(value, (str, os.PathLike)) else list(value)
        for path in values:
            # An in-memory input (a datasets.Dataset given to select in Python) is no file to protect.
            if isinstance(path, (str, os.PathLike)) and path and os.path.lexists(path):
                yield flag, Path(path)
    for config in _config_files.get():
        if not any(same_file(config, own) for own in own_config):
            yield "the config file", config


def _clash(target: Path, source: Path, writes: Sequence[str] | None) -> str | None:
    """What is wrong with writing ``target`` given the input ``source``, or None."""
    if same_file(target, source):
        return "is the same file as"
    if source.is_dir() and is_inside(target, source):
        return "lies inside"
    if writes is not None:
        for entry in writes:
            if same_file(target / entry, source) or is_inside(source, target / entry):
                return f"would replace its {entry} which holds"
    elif target.is_dir() and is_inside(source, target):
        return "would write over"
    return None


def same_file(a: PathLike, b: PathLike) -> bool:
    """Whether two paths name one file: the same inode when both exist, else the same resolved path."""
    try:
        return os.path.samefile(a, b)
    except OSError:
        return os.path.realpath(a) == os.path.realpath(b)


def is_inside(path: PathLike, folder: PathLike) -> bool:
    """Whether ``path`` (existing or not) lies below ``folder``, by real paths and inodes."""
    parent = Path(os.path.realpath(path)).parent
    while True:
        if same_file(parent, folder):
            return True
        if parent == parent.parent:
            return False
        parent = parent.parent

"""Shared fixtures: a tiny real model built once per test session, and the shared data folder."""

from __future__ import annotations

import importlib.util
import os
import signal
import subprocess
import sys
import tempfile
from pathlib import Path

import pytest

from iterit.data import Sample

os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TRANSFORMERS_OFFLINE", "1")
os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")

SHARED_DATA = Path(__file__).resolve().parents[1].parent / "shared" / "data"


BENCHMARKS = Path(__file__).resolve().parents[1] / "benchmarks"


def load_benchmark(name: str):
    """``benchmarks/<name>.py`` as a module, importable as ``bench_<name>``; like a script run from that folder,
    it finds its sibling scripts on ``sys.path``."""
    if str(BENCHMARKS) not in sys.path:
        sys.path.append(str(BENCHMARKS))
    spec = importlib.util.spec_from_file_location(f"bench_{name}", BENCHMARKS / f"{name}.py")
    module = importlib.util.module_from_spec(spec)
    sys.modules[spec.name] = module  # dataclasses resolve string annotations through sys.modules
    spec.loader.exec_module(module)
    return module


@pytest.fixture(scope="session")
def shared_data() -> Path:
    """The real public data slices beside the project (../shared/data); skip where they are absent."""
    if not (SHARED_DATA / "SOURCES.md").exists():
        pytest.skip(f"../shared/data is absent ({SHARED_DATA}); these tests need the shared data slices")
    return SHARED_DATA


@pytest.fixture(scope="session")
def tiny_model_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A tiny Llama with a trained BPE tokenizer and a chat template, built offline once per session."""
    from iterit.demo.tiny_model import build_tiny_model

    return build_tiny_model(tmp_path_factory.mktemp("tiny-model"), seed=0)


@pytest.fixture(scope="module")
def one_thread():
    """One intra-op thread: the tiny model is too small to gain from more, and on a busy 2-core machine
    oversubscribed threads made each forward pass ~50x slower. Modules opt in with ``usefixtures``."""
    import torch

    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)


@pytest.fixture(scope="module")
def tiny(tiny_model_dir: Path):
    """The tiny model's tokenizer and a loader of a fresh float32 copy of its weights."""
    from transformers import AutoModelForCausalLM, AutoTokenizer

    return AutoTokenizer.from_pretrained(tiny_model_dir), lambda: AutoModelForCausalLM.from_pretrained(tiny_model_dir)


def run_in_group(command: list[str], *, env: dict | None = None, timeout: float = 300) -> subprocess.CompletedProcess:
    """Run a command in its own process group and always kill the whole group afterwards.

    torchrun's workers outlive a killed launcher and can hang in a collective; killing the group reaps them.
    Output goes to files, not pipes, so a chatty child can never block on a full pipe.
    """
    with tempfile.TemporaryFile("w+") as out, tempfile.TemporaryFile("w+") as err:
        process = subprocess.Popen(command, env=env, stdout=out, stderr=err, text=True, start_new_session=True)
        try:
            returncode = process.wait(timeout=timeout)
        finally:
            kill_group(process)
        out.seek(0)
        err.seek(0)
        return subprocess.CompletedProcess(command, returncode, out.read(), err.read())


def start_in_group(command: list[str], *, env: dict | None = None, log: Path | None = None) -> subprocess.Popen:
    """Start a command to be killed later with :func:`kill_group` (its output goes to ``log``)."""
    sink = open(log, "w") if log else subprocess.DEVNULL  # noqa: SIM115 - the child holds it open
    return subprocess.Popen(command, env=env, stdout=sink, stderr=subprocess.STDOUT, start_new_session=True)


def kill_group(process: subprocess.Popen) -> None:
    """SIGKILL a process and everything it started, then reap it."""
    try:
        os.killpg(process.pid, signal.SIGKILL)
    except ProcessLookupError:
        pass
    process.wait(timeout=60)


WORDS = "apple river green stone light house garden window silver yellow market winter summer forest".split()


def make_samples(n: int) -> list[Sample]:
    """Small arithmetic and echo tasks with responses of varied length, from two sources."""
    samples = []
    for i in range(n):
        words = " ".join(WORDS[(i + k) % len(WORDS)] for k in range(1 + i % 5))
        if i % 2:
            question, answer = f"What is {i} plus {i * 3 % 17}?", str(i + i * 3 % 17)
        else:
            question, answer = f"Repeat the words: {words}", words
        messages = [{"role": "user", "content": question}, {"role": "assistant", "content": answer}]
        samples.append(Sample(f"s{i}", messages, "math" if i % 2 else "echo", "messages", i))
    return samples


# ---------------------------------------------------------------- seams (stand-ins passed in explicitly)

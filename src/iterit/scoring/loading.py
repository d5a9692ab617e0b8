"""Load a causal LM and its tokenizer for scoring or training, on the right device and dtype."""

from __future__ import annotations

import os
from typing import Any

from iterit.errors import IterITError, check_choice

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
    """Load a causal LM and its tokenizer for scoring, in eval mode on ``device``.

    Raises:
        IterITError: the model or tokenizer cannot be loaded (the message says why, without a traceback).
    """
    from transformers import AutoModelForCausalLM, AutoTokenizer

    from iterit.models import resolve_model

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

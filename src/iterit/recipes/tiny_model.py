"""``iterit tiny-model``: build a small real causal LM for tests and the demo."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

from iterit.config import TinyModelConfig


@dataclass
class TinyModelResult:
    """Where the model was saved."""

    path: Path

    def format(self) -> str:
        """The line the CLI prints."""
        return f"tiny model saved to {self.path} (load it with AutoModelForCausalLM.from_pretrained)"


def run(config: TinyModelConfig) -> TinyModelResult:
    """Build the model into ``config.out`` (refusing to write over the ``--corpus`` files)."""
    from iterit.demo.tiny_model import build_tiny_model
    from iterit.outputs import check_output

    check_output(config.out, {"--corpus": config.corpus})
    path = build_tiny_model(config.out, corpus=config.corpus or None, steps=config.steps, seed=config.seed)
    return TinyModelResult(Path(path))

"""What the console shows while a command works: one bar per long step, nothing from the libraries underneath.

A terminal gets one tqdm bar per long step (scoring, each training epoch, evaluation), with its rate and the time
left. A log file gets none: bars are drawn only on a terminal, and the steps' one-line summaries carry the story.
The bars transformers, huggingface_hub and datasets draw while loading and saving weights or mapping a dataset
say nothing a user acts on, so the CLI hides them unless ``--verbose`` is given. This module imports no
library itself, so ``iterit report`` stays free of torch.
"""

from __future__ import annotations

import logging
import os
import sys

LIBRARY_BAR_SWITCHES = ("HF_HUB_DISABLE_PROGRESS_BARS", "HF_DATASETS_DISABLE_PROGRESS_BARS")


def show_library_progress_bars(shown: bool) -> None:
    """Turn the weight-loading, shard-writing and ``datasets.map`` bars off or on, now and for later imports."""
    for switch in LIBRARY_BAR_SWITCHES:
        os.environ[switch] = "0" if shown else "1"
    if "transformers" in sys.modules:
        from transformers.utils import logging as hf_logging

        hf_logging.enable_progress_bar() if shown else hf_logging.disable_progress_bar()
    if "datasets" in sys.modules:
        import datasets

        datasets.enable_progress_bars() if shown else datasets.disable_progress_bars()
    if "huggingface_hub" in sys.modules:
        from huggingface_hub import utils as hub_utils

        hub_utils.enable_progress_bars() if shown else hub_utils.disable_progress_bars()


class OncePerRun(logging.Filter):
    """Let each warning text through once: a run that trains five strategies says a thing once, not five times."""

    def __init__(self) -> None:
        super().__init__()
        self.seen: set[str] = set()

    def filter(self, record: logging.LogRecord) -> bool:
        if record.levelno < logging.WARNING:
            return True
        text = record.getMessage()
        if text in self.seen:
            return False
        self.seen.add(text)
        return True

"""Named bundles of settings: ``--preset reference`` reproduces the IterIT reference code's choices.

A preset fills in defaults, nothing more: a YAML file's keys and the command line's flags override it, and each
command takes only the settings it has (``score`` the rendering, ``select`` the selection, ``train`` all of them).
Every setting names where it comes from in the reference, JiaQiSJTU/IterIT: ``src/data_utils.py``
(``SupervisedDataset``), ``src/iterative_trainer.py``, ``src/train.py`` and ``scripts/train_IterIT.sh``.

What the preset does *not* copy, because iterit fixed it (see the README, "Reference"):

* NaN scores deleting samples: the reference's ``score < 1`` / ``score >= 1`` split drops a sample whose IFD is
  NaN from the data for good; iterit keeps it, unpicked, with its reason;
* bf16 score storage: the reference stores IFD in a bfloat16 tensor (3 significant digits: ties, and values
  just below 1 rounded up to 1); iterit keeps float64;
* answer spans by string search: the reference finds the response with ``rfind(output)`` in the rendered text
  and counts tokens of the prefix, which breaks on trimmed or repeated text; iterit uses character offsets;
* two terminators: the reference scores with the template's ``<|eot_id|>`` and trains on ``output + eos``;
  with the preset iterit uses ``output + eos`` for both.
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass
from typing import Any

from iterit.errors import IterITError


@dataclass(frozen=True)
class Setting:
    """One setting of a preset: the config field, its value, and where the value comes from."""

    key: str
    value: Any
    source: str


REFERENCE: tuple[Setting, ...] = (
    # --- data and rendering (score, select, eval, train)
    Setting("system_prompt", "You are a helpful assistant.",
            "data_utils.py, SupervisedDataset: every chat starts with this system turn"),
    Setting("input_join", "reference", "data_utils.py: user turn = instruction + '\\nInput: ' + input"),
    Setting("template", "llama-3.1", "train_IterIT.sh --prompt_template llama-3.1 (chat_template.py)"),
    Setting("response_end", "eos", "data_utils.py: targets = output + tokenizer.eos_token"),
    Setting("max_length", 2048, "the reference tokenizes with truncation at 2048 tokens"),
    # --- selection (select, train)
    Setting("tfidf_text", "response+eos", "data_utils.py, update(): TF-IDF is fitted on self.source = targets"),
    Setting("eos_token", "<|end_of_text|>", "Meta-Llama-3-8B's eos, the reference's model (select has no tokenizer)"),
    Setting("budget_rounding", "floor", "iterative_trainer.py: math.floor(len(train_dataset) * ratio)"),
    Setting("budget", "0.05", "train_IterIT.sh --ratio 0.05"),
    Setting("ratio", 0.05, "train_IterIT.sh --ratio 0.05"),
    Setting("threshold", 1.0, "data_utils.py, update(): candidates have score < 1.0"),
    Setting("decay", 0.1, "train_IterIT.sh --diversity_weight_decay 0.1"),
    Setting("ngram_max", 3, "data_utils.py: TfidfVectorizer(ngram_range=(1,3))"),
    Setting("strategy", "iterit", "train_IterIT.sh --score_type BOTH --update_strategy adaptive"),
    Setting("update_ratio", 3.0, "train_IterIT.sh --update_ratio 3"),
    Setting("pool", "reference", "data_utils.py update() + iterative_trainer.py: re-scores positions [0, u x B)"),
    # --- training (train)
    Setting("num_train_epochs", 3.0, "train_IterIT.sh --num_train_epochs 3"),
    Setting("per_device_train_batch_size", 1, "train_IterIT.sh --per_device_train_batch_size 1"),
    Setting("gradient_accumulation_steps", 32, "train_IterIT.sh --gradient_accumulation_steps 32"),
    Setting("loss_weighting", "sample", "batch 1 x 32 on transformers 4: every sample's mean loss weighs 1/32"),
    Setting("learning_rate", 2e-5, "train_IterIT.sh --learning_rate 2e-5"),
    Setting("weight_decay", 0.0, "train_IterIT.sh --weight_decay 0."),
    Setting("warmup_steps", 0.03, "train_IterIT.sh --warmup_ratio 0.03 (transformers 5: a share in warmup_steps)"),
    Setting("lr_scheduler_type", "cosine", "train_IterIT.sh --lr_scheduler_type cosine"),
    Setting("logging_steps", 1, "train_IterIT.sh --logging_steps 1"),
    Setting("save_strategy", "epoch", "train_IterIT.sh --save_strategy epoch"),
    Setting("seed", 42, "train_IterIT.sh --seed 42"),
)

PRESETS: dict[str, tuple[Setting, ...]] = {"reference": REFERENCE}


def preset_settings(name: str | None, config_class: type) -> dict[str, Any]:
    """The preset's values for the fields ``config_class`` has (``{}`` for no preset).

    Raises:
        IterITError: an unknown preset name.
    """
    if name is None:
        return {}
    if name not in PRESETS:
        raise IterITError(f"--preset {name!r}: not one of {', '.join(PRESETS)}; or leave it out for iterit's defaults")
    fields = {f.name for f in dataclasses.fields(config_class)}
    return {s.key: s.value for s in PRESETS[name] if s.key in fields}


def describe_preset(name: str) -> str:
    """The preset as lines of ``key: value  # source``, for ``--help`` and the README."""
    return "\n".join(f"{s.key}: {s.value!r}  # {s.source}" for s in PRESETS[name])

"""``iterit inspect``: load the data and summarise it (samples per source, duplicates, invalid rows, lengths)."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from iterit.config import InspectConfig


@dataclass
class InspectResult:
    """The load summary, and whether it prints as JSON (``--json``)."""

    summary: Any
    as_json: bool = False

    def format(self) -> str:
        """The summary as text, or as indented JSON."""
        import json

        return json.dumps(self.summary.to_dict(), indent=2) if self.as_json else self.summary.format()


def run(config: InspectConfig) -> InspectResult:
    """Load ``config.data`` with the command's data options and return the load summary."""
    from iterit.data import load_samples

    loaded = load_samples(config.data, format=config.format, columns=config.columns,
                          system_prompt=config.system_prompt, skip_invalid=config.skip_invalid,
                          dedup=config.dedup, input_join=config.input_join)
    return InspectResult(loaded.summary, config.json)

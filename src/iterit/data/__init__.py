"""Read instruction data in the formats people have and normalise each record to one `Sample`.

Formats, detected from the content (``format=`` overrides):

- ``alpaca``: ``instruction``, optional ``input``, ``output`` (aliases: ``prompt``/``question``/``query`` for the
  instruction, ``context`` for the input, ``response``/``answer``/``completion`` for the output; Self-Instruct
  seed tasks with nested ``instances`` are flattened, one sample per instance).
- ``sharegpt``: ``conversations: [{from, value}]`` (``human``/``gpt``/``system``; ``function_call`` is an
  assistant turn and ``observation`` a tool turn, as in LLaMA-Factory's tool data).
- ``messages``: ``messages: [{role, content}]`` (OpenAI / Hugging Face chat format).
- ``hh``: Anthropic HH-RLHF transcripts (``chosen``: ``"\\n\\nHuman: ...\\n\\nAssistant: ..."``).

Files: ``.json`` (array), ``.jsonl`` (optionally ``.gz``), ``.parquet``, and folders written by
``datasets.Dataset.save_to_disk``; or a ``datasets.Dataset`` in memory (:func:`as_samples`). Every problem names
the file and the line (JSON Lines, JSON arrays) or record index (Parquet, datasets) and stops the load with
:class:`IterITError`, unless ``skip_invalid`` is set, in which case the bad rows are counted, with reasons, in the
load summary. Nothing valid is dropped silently.

The package's modules follow the data: ``files`` (file -> raw records with their line), ``formats`` (record ->
:class:`Sample`), ``load`` (files -> samples and a :class:`LoadSummary`; subsets written back), ``records`` (the
types).
"""

from iterit.data.formats import ALIASES, FORMATS
from iterit.data.load import (
    as_samples,
    conversation_key,
    load_samples,
    parse_columns,
    sample_to_messages_record,
    samples_to_dataset,
    source_name,
    write_samples,
)
from iterit.data.records import LoadedData, LoadSummary, Sample, SourceSummary

__all__ = [
    "ALIASES",
    "FORMATS",
    "LoadSummary",
    "LoadedData",
    "Sample",
    "SourceSummary",
    "as_samples",
    "conversation_key",
    "load_samples",
    "parse_columns",
    "sample_to_messages_record",
    "samples_to_dataset",
    "source_name",
    "write_samples",
]

"""The data of the local lm-eval task iterit_tiny_qa.yaml: a JSON Lines file beside this module."""

from pathlib import Path

import datasets


def load(**kwargs) -> datasets.DatasetDict:
    """lm-eval calls this (``custom_dataset``) with the task's metadata; the file needs none of it."""
    return datasets.load_dataset("json", data_files={"test": str(Path(__file__).with_name("tiny_qa.jsonl"))})

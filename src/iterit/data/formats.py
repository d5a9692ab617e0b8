"""Recognise a record's format and normalise it to a `Sample` (chat messages + the original record)."""

from __future__ import annotations

import logging
import re
from collections import Counter
from pathlib import Path
from typing import Any

from iterit.data.records import RowError, Sample
from iterit.errors import IterITError

logger = logging.getLogger(__name__)

FORMATS = ("alpaca", "sharegpt", "messages", "hh")

# Field names seen in public instruction data, in order of preference. A column mapping overrides them.
ALIASES: dict[str, tuple[str, ...]] = {
    "instruction": ("instruction", "prompt", "question", "query"),
    "input": ("input", "context"),
    "output": ("output", "response", "answer", "completion"),
    "system": ("system", "system_prompt"),
    "conversations": ("conversations",),
    "messages": ("messages",),
    "id": ("id",),
}
SHAREGPT_ROLES = {
    "human": "user",
    "user": "user",
    "gpt": "assistant",
    "assistant": "assistant",
    "model": "assistant",
    "chatgpt": "assistant",
    "bing": "assistant",
    "bard": "assistant",
    "function_call": "assistant",
    "observation": "tool",
    "tool": "tool",
    "function": "tool",
    "system": "system",
}
CHAT_ROLES = ("system", "user", "assistant", "tool", "function", "developer", "ipython")
HH_TURN = re.compile(r"\n\n(Human|Assistant):")


def _field(row: dict, name: str, mapping: dict[str, str]) -> str | None:
    """The file's key for one of our fields: the user's mapping first, then the known aliases."""
    if name in mapping:
        return mapping[name] if mapping[name] in row else None
    return next((key for key in ALIASES[name] if key in row), None)


def detect_format(rows: list[dict], mapping: dict[str, str], path: Path) -> str:
    """The format most of the first records look like (a stray record of another kind is then invalid)."""
    votes = Counter(_guess_format(row, mapping) for row in rows[:1000])
    votes.pop(None, None)
    if not votes:
        keys = sorted({key for row in rows[:20] for key in row})[:8]
        raise IterITError(
            f"{path}: cannot tell the format from the fields {keys}; "
            "map them with --columns instruction=...,output=... or pass --format"
        )
    return votes.most_common(1)[0][0]


def _guess_format(row: dict, mapping: dict[str, str]) -> str | None:
    if _field(row, "messages", mapping):
        return "messages"
    if _field(row, "conversations", mapping):
        return "sharegpt"
    if "chosen" in row and isinstance(row.get("chosen"), str) and "\n\nAssistant:" in row["chosen"]:
        return "hh"
    if _field(row, "instruction", mapping) and (_field(row, "output", mapping) or "instances" in row):
        return "alpaca"
    return None


# How an Alpaca record's input joins its instruction in the user turn.
INPUT_JOINS = {"blank-line": "\n\n", "reference": "\nInput: "}


def normalise(
    row: Any, fmt: str, mapping: dict[str, str], source: str, origin: int, system_prompt: str | None,
    input_join: str = "blank-line",
) -> list[Sample]:
    if not isinstance(row, dict):
        raise RowError("not an object", f"expected a JSON object, got {type(row).__name__}")
    guessed = _guess_format(row, mapping)
    if guessed is not None and guessed != fmt:
        raise RowError(
            "mixed formats", f"a {guessed} record in a file of {fmt} records; keep one format per file"
        )
    if fmt == "alpaca" and "instances" in row and not _field(row, "output", mapping):
        return _self_instruct_samples(row, mapping, source, origin, system_prompt, input_join)
    if fmt == "alpaca":
        messages, fields = _alpaca_messages(row, mapping, INPUT_JOINS[input_join])
    else:
        messages, fields = {"sharegpt": _sharegpt_messages, "messages": _chat_messages, "hh": _hh_messages}[fmt](
            row, mapping), None
    _check_conversation(messages)
    if system_prompt and messages[0]["role"] != "system":
        messages.insert(0, {"role": "system", "content": system_prompt})
    own_id = row.get(_field(row, "id", mapping) or "id")
    sample_id = str(own_id) if isinstance(own_id, (str, int)) and str(own_id) else ""
    return [Sample(id=sample_id, messages=messages, source=source, format=fmt, origin=origin, record=row,
                   alpaca_fields=fields)]


def _text(row: dict, name: str, mapping: dict[str, str], *, required: bool) -> str:
    key = _field(row, name, mapping)
    if key is None:
        if required:
            raise RowError(f"missing {name}", f"no '{name}' field (nor an alias: {', '.join(ALIASES[name])})")
        return ""
    value = row[key]
    if value is None:
        if required:
            raise RowError(f"null {name}", f"'{key}' is null")
        return ""
    if not isinstance(value, str):
        raise RowError(f"{name} not a string", f"'{key}' should be a string, got {type(value).__name__}")
    return value


def _alpaca_messages(row: dict, mapping: dict[str, str], join: str) -> tuple[list[dict[str, str]], tuple[str, str] | None]:
    """The conversation of an Alpaca record, and ``(instruction, input)`` when it has an input."""
    instruction = _text(row, "instruction", mapping, required=True)
    extra = _text(row, "input", mapping, required=False)
    output = _text(row, "output", mapping, required=True)
    system = _text(row, "system", mapping, required=False)
    user = instruction if not extra.strip() else f"{instruction}{join}{extra}"
    messages = [{"role": "system", "content": system}] if system.strip() else []
    fields = (instruction, extra) if extra.strip() else None
    return messages + [{"role": "user", "content": user}, {"role": "assistant", "content": output}], fields


def _self_instruct_samples(
    row: dict, mapping: dict[str, str], source: str, origin: int, system_prompt: str | None, input_join: str
) -> list[Sample]:
    """Self-Instruct seed tasks: one sample per instance, ids ``<task id>#<k>`` after the first."""
    instances = row["instances"]
    if not isinstance(instances, list) or not instances:
        raise RowError("bad instances", "'instances' should be a non-empty list of {input, output}")
    samples = []
    for k, instance in enumerate(instances):
        if not isinstance(instance, dict):
            raise RowError("bad instances", f"instance {k} is not an object")
        flat = {"instruction": row.get(_field(row, "instruction", mapping) or "instruction"), **instance}
        if "id" in row:
            flat["id"] = f"{row['id']}#{k}" if k else row["id"]
        samples.extend(normalise(flat, "alpaca", {}, source, origin, system_prompt, input_join))
    return samples


def _sharegpt_messages(row: dict, mapping: dict[str, str]) -> list[dict[str, str]]:
    turns = row[_field(row, "conversations", mapping)]
    if not isinstance(turns, list) or not turns:
        raise RowError("bad conversations", "'conversations' should be a non-empty list of {from, value}")
    messages = []
    for k, turn in enumerate(turns):
        if not isinstance(turn, dict) or "from" not in turn or "value" not in turn:
            raise RowError("bad conversations", f"turn {k} should be an object with 'from' and 'value'")
        role = SHAREGPT_ROLES.get(str(turn["from"]).lower())
        if role is None:
            raise RowError("unknown role", f"turn {k} has an unknown speaker {turn['from']!r}")
        if not isinstance(turn["value"], str):
            raise RowError("content not a string", f"turn {k}'s 'value' should be a string")
        messages.append({"role": role, "content": turn["value"]})
    if isinstance(row.get("system"), str) and row["system"].strip() and messages[0]["role"] != "system":
        messages.insert(0, {"role": "system", "content": row["system"]})
    return messages


def _chat_messages(row: dict, mapping: dict[str, str]) -> list[dict[str, str]]:
    turns = row[_field(row, "messages", mapping)]
    if not isinstance(turns, list) or not turns:
        raise RowError("bad messages", "'messages' should be a non-empty list of {role, content}")
    messages = []
    for k, turn in enumerate(turns):
        if not isinstance(turn, dict) or "role" not in turn or "content" not in turn:
            raise RowError("bad messages", f"message {k} should be an object with 'role' and 'content'")
        if turn["role"] not in CHAT_ROLES:
            raise RowError("unknown role", f"message {k} has an unknown role {turn['role']!r}")
        if not isinstance(turn["content"], str):
            raise RowError("content not a string", f"message {k}'s 'content' should be a string")
        messages.append({"role": turn["role"], "content": turn["content"]})
    return messages


def _hh_messages(row: dict, mapping: dict[str, str]) -> list[dict[str, str]]:
    transcript = row.get("chosen")
    if not isinstance(transcript, str):
        raise RowError("bad transcript", "'chosen' should be a Human/Assistant transcript string")
    parts = HH_TURN.split(transcript)
    messages = [
        {"role": "user" if speaker == "Human" else "assistant", "content": text.strip()}
        for speaker, text in zip(parts[1::2], parts[2::2])
    ]
    if not messages:
        raise RowError("bad transcript", "no '\\n\\nHuman:' / '\\n\\nAssistant:' turns in 'chosen'")
    return messages


def _check_conversation(messages: list[dict[str, str]]) -> None:
    if messages[-1]["role"] != "assistant":
        raise RowError(
            "does not end with the assistant", "the conversation does not end with an assistant turn"
        )
    if not messages[-1]["content"].strip():
        raise RowError("empty response", "the response (last assistant turn) is empty")
    if not any(m["role"] == "user" for m in messages[:-1]):
        raise RowError("no user turn", "no user turn before the response")

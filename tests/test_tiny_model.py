"""The tiny model loads like any Hugging Face checkpoint, is deterministic for a seed, and can be pretrained."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch
from transformers import AutoModelForCausalLM, AutoTokenizer

from iterit.demo.tiny_model import BOS, END, build_tiny_model, builtin_corpus
from iterit.errors import IterITError

CONVERSATION = [
    {"role": "system", "content": "Be brief."},
    {"role": "user", "content": "What is 3 plus 5?"},
    {"role": "assistant", "content": "3 plus 5 is 8."},
]


def logits_of(model_dir: Path, text: str = "The cat sees 3 red boxes.") -> torch.Tensor:
    tokenizer = AutoTokenizer.from_pretrained(model_dir)
    model = AutoModelForCausalLM.from_pretrained(model_dir).eval()
    with torch.no_grad():
        return model(**tokenizer(text, return_tensors="pt")).logits


def test_loads_with_auto_classes_as_a_small_llama(tiny_model_dir: Path) -> None:
    tokenizer = AutoTokenizer.from_pretrained(tiny_model_dir)
    model = AutoModelForCausalLM.from_pretrained(tiny_model_dir)
    assert model.config.model_type == "llama"
    assert sum(p.numel() for p in model.parameters()) < 3_000_000
    assert tokenizer.is_fast
    assert 1000 <= len(tokenizer) <= model.config.vocab_size
    assert (tokenizer.bos_token, tokenizer.eos_token) == (BOS, END)
    assert model.config.eos_token_id == tokenizer.eos_token_id
    assert model.config.pad_token_id == tokenizer.pad_token_id != tokenizer.eos_token_id


def test_chat_template_ends_turns_and_opens_a_generation_prompt(tiny_model_dir: Path) -> None:
    tokenizer = AutoTokenizer.from_pretrained(tiny_model_dir)
    full = tokenizer.apply_chat_template(CONVERSATION, tokenize=False)
    prompt = tokenizer.apply_chat_template(CONVERSATION[:-1], tokenize=False, add_generation_prompt=True)
    assert full == ("<|bos|><|system|>\nBe brief.<|end|>\n<|user|>\nWhat is 3 plus 5?<|end|>\n"
                    "<|assistant|>\n3 plus 5 is 8.<|end|>\n")
    assert prompt == full[: full.index("3 plus 5 is")]
    ids = tokenizer(full, add_special_tokens=False)["input_ids"]
    assert ids[0] == tokenizer.bos_token_id
    assert ids.count(tokenizer.eos_token_id) == 3  # one end-of-turn per message, each a single token


def test_tokenizer_reports_character_offsets_and_round_trips(tiny_model_dir: Path) -> None:
    tokenizer = AutoTokenizer.from_pretrained(tiny_model_dir)
    text = "Zebras café 123 — ünïcode\n\tok"
    encoded = tokenizer(text, add_special_tokens=False, return_offsets_mapping=True)
    assert tokenizer.decode(encoded["input_ids"]) == text
    offsets = encoded["offset_mapping"]
    assert offsets[0][0] == 0 and offsets[-1][1] == len(text)
    assert all(a[0] <= b[0] and a[1] <= b[1] for a, b in zip(offsets, offsets[1:]))


def test_same_seed_gives_identical_files_and_logits(tmp_path: Path) -> None:
    first = build_tiny_model(tmp_path / "a", seed=3)
    second = build_tiny_model(tmp_path / "b", seed=3)
    for name in ("model.safetensors", "tokenizer.json", "config.json"):
        assert (first / name).read_bytes() == (second / name).read_bytes(), name
    assert torch.equal(logits_of(first), logits_of(second))


def test_another_seed_gives_other_weights_but_the_same_tokenizer(tmp_path: Path, tiny_model_dir: Path) -> None:
    other = build_tiny_model(tmp_path / "other", seed=1)
    assert (other / "tokenizer.json").read_bytes() == (tiny_model_dir / "tokenizer.json").read_bytes()
    assert not torch.equal(logits_of(other), logits_of(tiny_model_dir))


def test_pretraining_lowers_the_loss_and_changes_the_weights(tmp_path: Path, tiny_model_dir: Path) -> None:
    trained = build_tiny_model(tmp_path / "trained", seed=0, steps=8, block_size=32, batch_size=4)
    losses = json.loads((trained / "iterit_tiny_model.json").read_text())["losses"]
    assert len(losses) == 8
    assert losses[-1] < losses[0]
    assert not torch.equal(logits_of(trained), logits_of(tiny_model_dir))


def test_builds_from_a_corpus_file_and_in_memory_texts(tmp_path: Path) -> None:
    corpus = tmp_path / "corpus.txt"
    lines = [line for text in builtin_corpus(200) for line in text.splitlines()]
    corpus.write_text("\n".join(lines) + "\n\n", encoding="utf-8")  # blank lines are not documents
    built = build_tiny_model(tmp_path / "m", corpus=[corpus], texts=["Quokkas quietly quarrel."], vocab_size=600,
                             steps=2, block_size=16, batch_size=2)
    tokenizer = AutoTokenizer.from_pretrained(built)
    assert len(tokenizer) <= 600
    assert json.loads((built / "iterit_tiny_model.json").read_text())["n_documents"] == len(lines) + 1


def test_bad_corpus_and_sizes_raise_one_line_errors(tmp_path: Path) -> None:
    with pytest.raises(IterITError, match="--corpus .*missing.txt: no such file"):
        build_tiny_model(tmp_path / "m", corpus=[tmp_path / "missing.txt"])
    binary = tmp_path / "binary.txt"
    binary.write_bytes(b"ok\n\xff\xfe\n")
    with pytest.raises(IterITError, match="not valid UTF-8"):
        build_tiny_model(tmp_path / "m", corpus=[binary])
    with pytest.raises(IterITError, match="hidden_size=30 must be a positive multiple of heads=4.*--steps=-1"):
        build_tiny_model(tmp_path / "m", hidden_size=30, steps=-1)


def test_building_leaves_the_callers_random_state_alone(tmp_path: Path) -> None:
    torch.manual_seed(123)
    expected = torch.rand(3)
    torch.manual_seed(123)
    build_tiny_model(tmp_path / "m", seed=5, steps=1, block_size=16, batch_size=2)
    assert torch.equal(torch.rand(3), expected)

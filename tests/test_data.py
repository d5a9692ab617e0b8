"""The data layer: every format, every bad-input case, --skip-invalid, duplicates, ids, and the real slices."""

from __future__ import annotations

import gzip
import json
from pathlib import Path

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from iterit.cli import main
from iterit.data import load_samples, write_samples
from iterit.errors import IterITError

BAD = Path(__file__).parent / "data" / "bad"

ALPACA = [
    {"instruction": "Add 2 and 3.", "input": "", "output": "5"},
    {"instruction": "Translate to French.", "input": "cat", "output": "chat"},
]
SHAREGPT = [
    {
        "id": "conv-1",
        "conversations": [
            {"from": "system", "value": "Be brief."},
            {"from": "human", "value": "Hi"},
            {"from": "gpt", "value": "Hello!"},
            {"from": "human", "value": "What is 2+2?"},
            {"from": "gpt", "value": "4"},
        ],
    }
]
MESSAGES = [{"messages": [{"role": "user", "content": "Hi"}, {"role": "assistant", "content": "Hello"}]}]


def write(path: Path, records: list, *, lines: bool) -> Path:
    text = "".join(json.dumps(r) + "\n" for r in records) if lines else json.dumps(records)
    path.write_text(text, encoding="utf-8")
    return path


def test_alpaca_json_and_jsonl(tmp_path: Path) -> None:
    for lines, name in ((False, "a.json"), (True, "a.jsonl")):
        samples = load_samples([write(tmp_path / name, ALPACA, lines=lines)]).samples
        assert [s.format for s in samples] == ["alpaca", "alpaca"]
        assert samples[0].messages == [{"role": "user", "content": "Add 2 and 3."}, {"role": "assistant", "content": "5"}]
        assert samples[1].messages[0]["content"] == "Translate to French.\n\ncat"
        assert [s.id for s in samples] == ["a:0", "a:1"]
        assert [s.origin for s in samples] == ([1, 2] if lines else [1, 1])  # the line each record starts on


def test_sharegpt_multi_turn_keeps_history_and_system(tmp_path: Path) -> None:
    sample = load_samples([write(tmp_path / "chats.json", SHAREGPT, lines=False)]).samples[0]
    assert sample.id == "conv-1"
    assert [m["role"] for m in sample.messages] == ["system", "user", "assistant", "user", "assistant"]
    assert sample.response == "4"
    assert len(sample.prompt_messages) == 4


def test_messages_format_and_system_prompt_flag(tmp_path: Path) -> None:
    path = write(tmp_path / "m.jsonl", MESSAGES, lines=True)
    assert load_samples([path]).samples[0].messages[0]["role"] == "user"
    sample = load_samples([path], system_prompt="You are helpful.").samples[0]
    assert sample.messages[0] == {"role": "system", "content": "You are helpful."}


def test_no_system_message_is_added_by_default(tmp_path: Path) -> None:
    sample = load_samples([write(tmp_path / "a.json", ALPACA, lines=False)]).samples[0]
    assert all(m["role"] != "system" for m in sample.messages)


def test_parquet_and_save_to_disk(tmp_path: Path) -> None:
    import datasets
    import pyarrow as pa
    import pyarrow.parquet as pq

    pq.write_table(pa.Table.from_pylist(ALPACA), tmp_path / "a.parquet")
    assert len(load_samples([tmp_path / "a.parquet"]).samples) == 2
    datasets.Dataset.from_list(MESSAGES * 3).save_to_disk(str(tmp_path / "saved"))
    samples = load_samples([tmp_path / "saved"]).samples
    assert len(samples) == 3 and samples[0].format == "messages"


def test_a_datasets_dataset_loads_in_memory_with_a_column_mapping() -> None:
    import datasets

    from iterit.data import as_samples

    dataset = datasets.Dataset.from_list([{"q": "Capital of France?", "a": "Paris"}, {"q": "1+1?", "a": "2"}])
    samples = as_samples(dataset, columns={"instruction": "q", "output": "a"})
    assert [s.response for s in samples] == ["Paris", "2"]
    assert [s.id for s in samples] == ["dataset:0", "dataset:1"] and samples[1].record == {"q": "1+1?", "a": "2"}
    mixed = load_samples([dataset, write_tmp_messages()], columns="instruction=q,output=a", names=["mine", "chat"])
    assert [s.source for s in mixed.samples] == ["mine", "mine", "chat"]
    with pytest.raises(IterITError, match=r"datasets.Dataset 'dataset': record 1"):
        as_samples(datasets.Dataset.from_list([{"q": "a", "a": "b"}, {"q": "c", "a": None}]), "instruction=q,output=a")
    with pytest.raises(IterITError, match="columns= maps the fields of a datasets.Dataset"):
        as_samples(samples, columns="instruction=q")


def write_tmp_messages():
    import datasets

    return datasets.Dataset.from_list(MESSAGES)


def test_write_samples_to_a_save_to_disk_folder(tmp_path: Path) -> None:
    import datasets

    from iterit.data import samples_to_dataset

    samples = load_samples([write(tmp_path / "a.json", ALPACA, lines=False)]).samples
    write_samples(samples, tmp_path / "subset")
    saved = datasets.load_from_disk(str(tmp_path / "subset"))
    assert saved.to_list() == ALPACA == samples_to_dataset(samples).to_list()
    write_samples(samples[:1], tmp_path / "subset")  # replaces a folder it wrote before
    assert datasets.load_from_disk(str(tmp_path / "subset")).to_list() == ALPACA[:1]
    assert [p.name for p in tmp_path.iterdir() if p.name.startswith(".")] == []
    (tmp_path / "other").mkdir()
    with pytest.raises(IterITError, match="not a save_to_disk folder"):
        write_samples(samples, tmp_path / "other")


def test_several_files_are_tagged_with_their_source(tmp_path: Path) -> None:
    loaded = load_samples([write(tmp_path / "one.json", ALPACA, lines=False), write(tmp_path / "two.jsonl", MESSAGES, lines=True)])
    assert [s.source for s in loaded.samples] == ["one", "one", "two"]
    assert [s.samples for s in loaded.summary.sources] == [2, 1]


def test_aliases_and_column_mapping(tmp_path: Path) -> None:
    gsm = write(tmp_path / "g.jsonl", [{"question": "1+1?", "answer": "2"}], lines=True)
    assert load_samples([gsm]).samples[0].response == "2"
    odd = write(tmp_path / "odd.jsonl", [{"q": "Capital of France?", "a": "Paris"}], lines=True)
    with pytest.raises(IterITError, match="--columns"):
        load_samples([odd])
    assert load_samples([odd], columns="instruction=q,output=a").samples[0].response == "Paris"
    with pytest.raises(IterITError, match="unknown field"):
        load_samples([odd], columns="instr=q")


def test_self_instruct_instances_are_flattened(tmp_path: Path) -> None:
    task = {"id": "t1", "instruction": "Sort.", "instances": [{"input": "b a", "output": "a b"}, {"input": "d c", "output": "c d"}]}
    samples = load_samples([write(tmp_path / "seed.jsonl", [task], lines=True)]).samples
    assert [s.id for s in samples] == ["t1", "t1#1"]
    assert samples[1].messages[0]["content"] == "Sort.\n\nd c"


def test_hh_transcripts(tmp_path: Path) -> None:
    row = {"chosen": "\n\nHuman: Hi there\n\nAssistant: Hello.\n\nHuman: Bye\n\nAssistant: Goodbye!", "rejected": "x"}
    path = tmp_path / "hh.jsonl.gz"
    path.write_bytes(gzip.compress((json.dumps(row) + "\n").encode()))
    sample = load_samples([path]).samples[0]
    assert sample.format == "hh" and sample.response == "Goodbye!" and len(sample.messages) == 4


def test_repeated_ids_are_made_unique(tmp_path: Path) -> None:
    a = write(tmp_path / "a.jsonl", [dict(MESSAGES[0], id="x")], lines=True)
    b = write(tmp_path / "b.jsonl", [dict(MESSAGES[0], id="x")], lines=True)
    loaded = load_samples([a, b])
    assert [s.id for s in loaded.samples] == ["x", "b:x"]
    assert loaded.summary.renamed_ids == 1


def test_fallback_ids_never_collide_with_explicit_ones(tmp_path: Path) -> None:
    # A repeated "x" would fall back to "s:x", then "s:3": both are explicit ids of other records.
    records = [dict(MESSAGES[0], id=i) for i in ("s:3", "x", "s:x", "x")]
    loaded = load_samples([write(tmp_path / "s.jsonl", records, lines=True)])
    ids = [s.id for s in loaded.samples]
    assert ids[:3] == ["s:3", "x", "s:x"] and len(set(ids)) == 4
    assert ids[3] == "s:x~2"


def test_index_ids_skip_an_explicit_id_given_later(tmp_path: Path) -> None:
    records = [MESSAGES[0], dict(MESSAGES[0], id="s:0"), MESSAGES[0]]
    ids = [s.id for s in load_samples([write(tmp_path / "s.jsonl", records, lines=True)]).samples]
    assert ids == ["s:0~2", "s:0", "s:2"]


def test_input_join_reference_and_the_alpaca_fields(tmp_path: Path) -> None:
    path = write(tmp_path / "a.json", ALPACA, lines=False)
    default = load_samples([path]).samples
    assert default[1].messages[0]["content"] == "Translate to French.\n\ncat"
    assert (default[0].alpaca_fields, default[1].alpaca_fields) == (None, ("Translate to French.", "cat"))
    reference = load_samples([path], input_join="reference").samples
    assert reference[1].messages[0]["content"] == "Translate to French.\nInput: cat"  # the reference's user turn
    assert reference[0].messages[0]["content"] == "Add 2 and 3."
    with pytest.raises(IterITError, match="--input-join 'space'.*blank-line, reference"):
        load_samples([path], input_join="space")


def test_duplicates_are_counted_kept_or_removed(tmp_path: Path) -> None:
    records = [ALPACA[0], {"instruction": " Add 2  and 3. ", "input": "", "output": "5"}, ALPACA[1]]
    path = write(tmp_path / "d.json", records, lines=False)
    kept = load_samples([path])
    assert len(kept.samples) == 3 and kept.summary.duplicates == 1
    removed = load_samples([path], dedup=True)
    assert len(removed.samples) == 2 and removed.summary.duplicates_removed == 1


# (file, fragment of the message without --skip-invalid, samples kept with --skip-invalid or None if fatal)
BAD_CASES = [
    ("truncated.json", "truncated.json:2", 1),
    ("wrong_type.jsonl", "wrong_type.jsonl:2: 'output' should be a string", 1),
    ("binary_junk.jsonl", "binary content", None),
    ("mixed_formats.jsonl", "mixed_formats.jsonl:2: a sharegpt record in a file of alpaca records", 2),
    ("empty.jsonl", "the file is empty", None),
    ("unknown_fields.jsonl", "unknown_fields.jsonl:2: no 'instruction' field", 1),
    ("null_response.jsonl", "null_response.jsonl:2: 'output' is null", 1),
    ("invalid_utf8.jsonl", "invalid_utf8.jsonl:2: invalid UTF-8", 1),
    ("no_final_assistant.jsonl", "no_final_assistant.jsonl:1: the conversation does not end with an assistant turn", 0),
    ("empty_response.jsonl", "empty_response.jsonl:2: the response (last assistant turn) is empty", 1),
]


@pytest.mark.parametrize(("name", "message", "kept"), BAD_CASES)
def test_bad_input_names_file_and_line(name: str, message: str, kept: int | None) -> None:
    with pytest.raises(IterITError, match=message.replace("(", r"\(").replace(")", r"\)")):
        load_samples([BAD / name])
    if kept is None:
        with pytest.raises(IterITError):
            load_samples([BAD / name], skip_invalid=True)
    else:
        loaded = load_samples([BAD / name], skip_invalid=True)
        assert len(loaded.samples) == kept
        assert loaded.summary.n_invalid >= 1 and loaded.summary.invalid_examples


@pytest.mark.parametrize("name", ["bom.jsonl", "crlf.jsonl"])
def test_bom_and_crlf_load_cleanly(name: str) -> None:
    samples = load_samples([BAD / name]).samples
    assert [s.response for s in samples] == ["Hi!", "Bye!"]


def test_a_ten_megabyte_line_loads(tmp_path: Path) -> None:
    path = write(tmp_path / "big.jsonl", [{"instruction": "Repeat.", "output": "word " * 2_000_000}], lines=True)
    assert path.stat().st_size > 10_000_000
    assert len(load_samples([path]).samples[0].response) == 10_000_000


@pytest.mark.parametrize(("name", "message", "kept"), BAD_CASES)
def test_cli_bad_input_exits_2_with_one_line(name: str, message: str, kept: int | None, capsys: pytest.CaptureFixture) -> None:
    assert main(["inspect", "--data", str(BAD / name)]) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and "Traceback" not in err and name in err
    assert main(["inspect", "--data", str(BAD / name), "--skip-invalid"]) == (2 if kept is None else 0)


def test_cli_inspect_verbose_shows_traceback(capsys: pytest.CaptureFixture) -> None:
    assert main(["inspect", "--data", str(BAD / "null_response.jsonl"), "--verbose"]) == 2
    assert "Traceback" in capsys.readouterr().err


@pytest.mark.parametrize("fmt", ["json", "jsonl", "parquet"])
def test_write_samples_round_trips_in_the_users_format(tmp_path: Path, fmt: str) -> None:
    source = write(tmp_path / "in.json", [dict(r, id=f"r{i}", extra=i) for i, r in enumerate(ALPACA)], lines=False)
    samples = load_samples([source]).samples
    write_samples(samples, tmp_path / f"out.{fmt}")
    again = load_samples([tmp_path / f"out.{fmt}"]).samples
    assert [s.record for s in again] == [s.record for s in samples]
    assert [s.messages for s in again] == [s.messages for s in samples]


def test_write_samples_of_mixed_formats_uses_chat_messages(tmp_path: Path) -> None:
    loaded = load_samples([write(tmp_path / "a.json", ALPACA, lines=False), write(tmp_path / "c.json", SHAREGPT, lines=False)])
    write_samples(loaded.samples, tmp_path / "mixed.jsonl")
    again = load_samples([tmp_path / "mixed.jsonl"]).samples
    assert [s.messages for s in again] == [s.messages for s in loaded.samples]
    assert [s.id for s in again] == [s.id for s in loaded.samples]


texts = st.text(st.characters(blacklist_categories=("Cs",)), min_size=0, max_size=40)


@settings(max_examples=60, deadline=None)
@given(st.lists(st.tuples(texts, texts, texts), min_size=1, max_size=8))
def test_loader_never_drops_a_valid_row(tmp_path_factory: pytest.TempPathFactory, rows: list) -> None:
    records = [{"instruction": i, "input": x, "output": o} for i, x, o in rows]
    path = write(tmp_path_factory.mktemp("h") / "h.jsonl", records, lines=True)
    valid = [r for r in records if r["output"].strip() and r["instruction"].strip() or (r["output"].strip() and r["input"].strip())]
    loaded = load_samples([path], skip_invalid=True)
    assert len(loaded.samples) + loaded.summary.n_invalid == len(records)
    assert len(loaded.samples) >= len([r for r in valid if r["instruction"].strip()])
    assert all(s.response.strip() for s in loaded.samples)


# Counts from ../shared/data/SOURCES.md; the empty responses there are real and skipped with --skip-invalid.
REAL_COUNTS = {
    "train/alpaca_alpagasus/random_9k.json": (9229, 4),
    "train/alpaca_alpagasus/claude_t45.json": (5305, 4),
    "train/alpaca_alpagasus/helpfulness_t45.json": (2022, 1),
    "train/alpaca_cherry/cherry_alpaca_5_percent.json": (3111, 0),
    "train/alpaca_gpt4_llamafactory/alpaca_en_demo.json": (999, 0),
    "train/code_alpaca/code_alpaca_2k.json": (2017, 2),
    "train/gpteacher/codegen-instruct.json": (4535, 0),
    "train/gpteacher/toolformer-dedupe-only-dataset.json": (7673, 0),
    "train/self_instruct/seed_tasks.jsonl": (175, 0),
    "train/gsm8k/train.jsonl": (7473, 0),
    "chat/hh_rlhf/harmless-base_test.jsonl.gz": (2312, 4),
    "chat/fastchat/dummy_conversation.json": (500, 0),
    "chat/glaive_toolcall_llamafactory/glaive_toolcall_en_demo.json": (300, 0),
}


def test_real_data_loads_with_the_listed_counts(shared_data: Path) -> None:
    loaded = load_samples([shared_data / name for name in REAL_COUNTS], skip_invalid=True)
    for stats, (records, invalid) in zip(loaded.summary.sources, REAL_COUNTS.values()):
        assert (stats.records, stats.invalid, stats.samples) == (records, invalid, records - invalid), stats.path
    formats = {s.source: s.format for s in loaded.summary.sources}
    assert formats["dummy_conversation"] == "sharegpt" and formats["harmless-base_test"] == "hh"


def test_inspect_reports_the_cross_source_overlaps_of_sources_md(shared_data: Path, capsys: pytest.CaptureFixture) -> None:
    files = ["random_9k.json", "claude_t45.json", "helpfulness_t45.json"]
    args = ["inspect", "--skip-invalid"] + [a for f in files for a in ("--data", str(shared_data / "train/alpaca_alpagasus" / f))]
    args += ["--data", str(shared_data / "train/alpaca_cherry/cherry_alpaca_5_percent.json")]
    assert main(args) == 0
    out = capsys.readouterr().out
    for pair, count in [("claude_t45 & random_9k", 935), ("cherry_alpaca_5_percent & random_9k", 552), ("helpfulness_t45 & random_9k", 355)]:
        assert f"shared prompts        {pair}: {count}" in out

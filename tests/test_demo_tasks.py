"""The known-answer generator: every answer right, every defect where the truth file says, seed-stable."""

from __future__ import annotations

import json
import re
from collections import Counter
from pathlib import Path

import pytest

from iterit.demo.families import COUNTRIES, TEST_COUNTRIES, pretraining_corpus
from iterit.demo.tasks import (
    DEFECT_KINDS,
    DUPLICATE_KINDS,
    SOURCES,
    generate_demo_data,
    load_demo_data,
)
from iterit.errors import IterITError

CAPITALS = dict(COUNTRIES)


def _read(path: Path) -> list[dict]:
    if path.suffix == ".json":
        return json.loads(path.read_text(encoding="utf-8"))
    return [json.loads(line) for line in path.read_text(encoding="utf-8").splitlines() if line.strip()]


def _prompt_and_response(record: dict) -> tuple[str, str]:
    """The user turn and the response, whatever the record's format (as merged collections mix them)."""
    if "messages" in record:
        return record["messages"][0]["content"], record["messages"][1]["content"]
    if "conversations" in record:
        return record["conversations"][0]["value"], record["conversations"][1]["value"]
    prompt = f"{record['instruction']}\n\n{record['input']}" if record["input"] else record["instruction"]
    return prompt, record["output"]


def _train_records(data) -> dict[str, tuple[str, str]]:
    return {r["id"]: _prompt_and_response(r) for path in data.train_files for r in _read(path)}


def _solve(family: str, prompt: str) -> str:
    """An independent solver for every family: re-derives the one correct answer from the question text."""
    head, _, body = prompt.partition("\n\n")
    numbers = [int(n) for n in re.findall(r"\d+", head)]
    quoted = re.findall(r"'([^']+)'", head)
    listed = [int(n) for n in re.findall(r"\d+", body)]
    if family == "add":
        return str(sum(numbers))
    if family == "subtract":
        return str(numbers[0] - numbers[1]) if "minus" in head or "-" in head else str(numbers[1] - numbers[0])
    if family == "multiply":
        return str(numbers[0] * numbers[1])
    if family == "reverse":
        return quoted[0][::-1]
    if family == "sort_letters":
        return "".join(sorted(quoted[0]))
    if family == "sort_numbers":
        return ", ".join(map(str, sorted(listed)))
    if family == "convert_units":
        return str(numbers[0] * (60 if "hour" in head else 1000))
    if family == "count_letter":
        return str(quoted[1].count(quoted[0]))
    if family == "count_words":
        return str(len(body.split()))
    if family == "capital":
        return next(capital for country, capital in CAPITALS.items() if re.search(rf"\b{country}\b", head))
    if family == "uppercase":
        return body.upper()
    if family == "title_case":
        return body.title()
    if family == "max_number":
        return str(max(listed))
    if family == "next_in_sequence":
        return str(2 * listed[-1] - listed[-2])
    if family == "parity":
        return "even" if numbers[0] % 2 == 0 else "odd"
    if family == "json_value":
        return json.loads(body)[re.search(r'"([^"]+)"', head).group(1)]
    raise AssertionError(f"no solver for family {family}")


@pytest.fixture(scope="module")
def demo(tmp_path_factory):
    return generate_demo_data(tmp_path_factory.mktemp("demo"), seed=0, include_empty=True)


def test_at_least_ten_families_each_in_train_and_test(demo):
    test_families = Counter(r["family"] for r in _read(demo.test_file))
    train_families = Counter(row.family for row in demo.truth.values())
    assert len(demo.families) >= 10
    assert set(test_families) == set(demo.families) == set(train_families)
    assert test_families["capital"] == len(TEST_COUNTRIES)
    assert all(count == 20 for family, count in test_families.items() if family != "capital")


def test_every_test_answer_is_the_one_correct_answer(demo):
    for record in _read(demo.test_file):
        prompt, reference = _prompt_and_response(record)
        assert reference == _solve(record["family"], prompt), record


def test_truth_answers_are_correct_and_clean_records_carry_them(demo):
    records = _train_records(demo)
    for row in demo.truth.values():
        prompt, response = records[row.id]
        assert row.answer == _solve(row.family, prompt), row
        if row.defect is None:
            assert response == row.answer, row


def test_every_defect_kind_is_present_and_matches_its_tag(demo):
    records = _train_records(demo)
    kinds = Counter(row.defect for row in demo.truth.values())
    assert set(DEFECT_KINDS) | set(DUPLICATE_KINDS) <= set(kinds)
    for row in demo.truth.values():
        prompt, response = records[row.id]
        if row.defect == "wrong" or row.defect == "swapped":
            assert response and response != row.answer, row
        elif row.defect == "truncated":
            assert response and row.answer.startswith(response) and response != row.answer, row
        elif row.defect == "filler":
            assert row.answer in response and len(response) > len(row.answer) + 20, row
        elif row.defect == "empty":
            assert response == ""
        elif row.defect in DUPLICATE_KINDS:
            original_prompt, original_response = records[row.dup_group]
            assert response == original_response and demo.truth[row.dup_group].dup_group == row.dup_group
            assert (prompt == original_prompt) == (row.defect == "exact_duplicate"), row


def test_swapped_responses_answer_another_family(demo):
    answers_by_family: dict[str, set[str]] = {}
    for row in demo.truth.values():
        answers_by_family.setdefault(row.family, set()).add(row.answer)
    records = _train_records(demo)
    swapped = [row for row in demo.truth.values() if row.defect == "swapped"]
    assert all(any(records[row.id][1] in answers for family, answers in answers_by_family.items()
                   if family != row.family) for row in swapped)


def test_empty_responses_only_on_request(tmp_path):
    data = generate_demo_data(tmp_path, seed=0, quick=True)
    assert all(row.defect != "empty" for row in data.truth.values())
    assert all(_prompt_and_response(r)[1].strip() for path in data.train_files for r in _read(path))


def test_duplicates_over_represent_easy_families(demo):
    copies = Counter(row.family for row in demo.truth.values() if row.is_duplicate)
    assert set(copies) <= {"add", "parity", "uppercase"}
    groups = Counter(row.dup_group for row in demo.truth.values() if row.is_duplicate)
    assert max(groups.values()) >= 5 > min(groups.values())  # a few originals repeated many times


def test_truth_stays_out_of_the_training_records(demo):
    allowed = {"id", "instruction", "input", "output", "messages", "conversations"}
    for path in demo.train_files:
        assert all(set(record) <= allowed for record in _read(path)), path


def test_ids_are_unique_and_truth_covers_exactly_the_training_records(demo):
    ids = [r["id"] for path in demo.train_files for r in _read(path)]
    assert len(ids) == len(set(ids)) == 3000
    assert set(ids) == set(demo.truth)


def test_sources_are_uneven_in_size_format_and_defects(demo):
    by_source: dict[str, Counter] = {spec.name: Counter() for spec in SOURCES}
    for row in demo.truth.values():
        by_source[row.source][row.defect] += 1
    assert {spec.format for spec in SOURCES} == {"alpaca", "messages", "sharegpt"}
    assert {path.suffix for path in demo.train_files} == {".json", ".jsonl"}
    shares = {name: 1 - counts[None] / sum(counts.values()) for name, counts in by_source.items()}
    assert min(shares, key=shares.get) == "curated"
    dups = {name: sum(counts[k] for k in DUPLICATE_KINDS) for name, counts in by_source.items()}
    assert max(dups, key=dups.get) == "web_scrape"
    wrong = {name: counts["wrong"] + counts["swapped"] for name, counts in by_source.items()}
    assert max(wrong, key=wrong.get) == "synthetic_pipeline"
    truncated = {name: counts["truncated"] for name, counts in by_source.items()}
    assert max(truncated, key=truncated.get) == "forum_dump"


def test_test_set_is_disjoint_from_training_in_any_phrasing(demo):
    def content(family: str, prompt: str) -> tuple:
        head, _, body = prompt.partition("\n\n")
        unit = next((u for u in ("km", "kilometer", "hour", "kg", "kilogram") if u in head), "")
        unit = {"kilometer": "km", "kilogram": "kg"}.get(unit, unit)
        countries = tuple(c for c in CAPITALS if re.search(rf"\b{c}\b", head))
        return family, tuple(re.findall(r"\d+|'[^']+'|\"[^\"]+\"", head)), body, unit, countries

    records = _train_records(demo)
    train = {content(row.family, records[row.id][0]) for row in demo.truth.values()}
    test = [content(r["family"], _prompt_and_response(r)[0]) for r in _read(demo.test_file)]
    assert not train.intersection(test)
    train_text = " ".join(prompt for prompt, _ in records.values())
    assert not any(re.search(rf"\b{country}\b", train_text) for country in TEST_COUNTRIES)


def test_same_seed_same_bytes_other_seed_other_data(tmp_path):
    first = generate_demo_data(tmp_path / "a", seed=3, quick=True)
    again = generate_demo_data(tmp_path / "b", seed=3, quick=True)
    other = generate_demo_data(tmp_path / "c", seed=4, quick=True)
    for name in [p.name for p in first.train_files] + ["test.jsonl", "truth.jsonl"]:
        assert (first.root / name).read_bytes() == (again.root / name).read_bytes()
    assert (first.root / "truth.jsonl").read_bytes() != (other.root / "truth.jsonl").read_bytes()


def test_quick_size_and_every_kind_still_present(tmp_path):
    data = generate_demo_data(tmp_path, seed=1, quick=True)
    assert len(data.truth) == 400
    kinds = {row.defect for row in data.truth.values()}
    assert set(DEFECT_KINDS) - {"empty"} | set(DUPLICATE_KINDS) <= kinds


def test_load_demo_data_reads_back_the_same_truth(demo):
    again = load_demo_data(demo.root)
    assert again.truth == demo.truth and again.train_files == demo.train_files
    assert again.families == demo.families


def test_selection_quality_helpers(demo):
    defective = next(row.id for row in demo.truth.values() if row.is_defective)
    clean = next(row.id for row in demo.truth.values() if row.defect is None and row.dup_group is None)
    copy = next(row for row in demo.truth.values() if row.is_duplicate)
    assert demo.defect_share([defective, clean]) == 0.5
    assert demo.redundant_duplicates([clean, copy.id]) == 0
    assert demo.redundant_duplicates([copy.dup_group, copy.id, clean]) == 1


def test_too_small_a_dataset_is_refused(tmp_path):
    with pytest.raises(IterITError, match="n_train=10"):
        generate_demo_data(tmp_path, n_train=10)


def test_pretraining_corpus_states_every_fact_and_no_instruction_format():
    texts = pretraining_corpus(0)
    joined = "\n".join(texts)
    for country, capital in COUNTRIES:
        assert f"The capital of {country} is {capital}." in texts
    assert "###" not in joined and "?" not in joined
    assert texts == pretraining_corpus(0) and texts != pretraining_corpus(1)


def test_files_load_with_the_project_loader(demo):
    from iterit import data as data_module

    if not hasattr(data_module, "load_samples"):
        pytest.skip("iterit.data.load_samples is not written yet")
    clean = generate_demo_data(demo.root.parent / "clean", seed=0, quick=True)
    loaded = data_module.load_samples(clean.train_files)
    assert {s.id for s in loaded.samples} == set(clean.truth)
    assert {s.source for s in loaded.samples} == {spec.name for spec in SOURCES}
    test = data_module.load_samples([clean.test_file])
    assert all(s.response == s.record["output"] and s.record["family"] for s in test.samples)

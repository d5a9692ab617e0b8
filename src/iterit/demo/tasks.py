"""Known-answer instruction data: where the quality of a selection can be judged sample by sample.

`generate_demo_data` writes a multi-source instruction dataset the way merged public collections look:
several files, one per named source, in mixed formats (Alpaca JSON and JSON Lines, OpenAI ``messages``,
ShareGPT ``conversations``). Every instance comes from one of the sixteen task families of `iterit.demo.families`,
with exactly one correct, short answer. Realistic defects are spread unevenly over the sources, and each is
tagged in a sidecar ``truth.jsonl`` (never in the training records, so a selector cannot peek):

- ``wrong``: a plausible answer of the right type that is not the correct one;
- ``swapped``: the response of another task family (a misaligned merge);
- ``truncated``: the answer cut mid-way (``"HELLO WO"``);
- ``filler``: the correct answer buried in chat filler (``"Sure! Great question. ... the answer is X. ..."``);
- ``exact_duplicate`` / ``near_duplicate``: copies of a few clean samples of easy families, identical or with
  a trivially changed instruction, so those families are over-represented;
- ``empty``: an empty response. Off by default (``include_empty=True`` turns it on): the loader rejects empty
  responses as invalid input, so a default dataset must load without ``--skip-invalid``.

The held-out ``test.jsonl`` has clean instances of every family, none of whose questions appears in training
in any phrasing; its capital-city questions ask only about countries that the instruction data never mentions,
whose facts the base model can only have seen in `pretraining_corpus`.
"""

from __future__ import annotations

import json
import random
from collections import Counter
from collections.abc import Callable, Iterable
from dataclasses import asdict, dataclass
from pathlib import Path

from iterit.demo.families import FAMILIES, TaskInstance
from iterit.errors import IterITError
from iterit.storage import atomic_open, write_json

DEFECT_KINDS = ("wrong", "swapped", "truncated", "filler", "empty")
DUPLICATE_KINDS = ("exact_duplicate", "near_duplicate")
# Families whose clean samples get copied: the easy ones that scraped collections over-represent.
EASY_FAMILIES = ("add", "parity", "uppercase")

@dataclass(frozen=True, slots=True)
class SourceSpec:
    """A named source: its file, format, share of the training records, and the defects it tends to have.

    ``defect_rates`` are fractions of the source's non-duplicate records; ``duplicate_share`` is the fraction
    of its records that are copies of other samples.
    """

    name: str
    filename: str
    format: str
    share: float
    defect_rates: dict[str, float]
    duplicate_share: float


# Uneven on purpose: a mostly clean curated set, a scrape full of copies and filler, a synthetic pipeline
# with wrong and misaligned answers, and a forum dump with cut-off replies.
SOURCES: tuple[SourceSpec, ...] = (
    SourceSpec("curated", "curated.jsonl", "alpaca", 0.25, {"wrong": 0.01, "filler": 0.02}, 0.0),
    SourceSpec("web_scrape", "web_scrape.json", "alpaca", 0.30,
               {"filler": 0.25, "wrong": 0.03, "truncated": 0.02}, 0.40),
    SourceSpec("synthetic_pipeline", "synthetic_pipeline.jsonl", "messages", 0.25,
               {"wrong": 0.25, "swapped": 0.15, "filler": 0.02}, 0.02),
    SourceSpec("forum_dump", "forum_dump.jsonl", "sharegpt", 0.20,
               {"truncated": 0.25, "filler": 0.12, "wrong": 0.05, "swapped": 0.03}, 0.05),
)


@dataclass(frozen=True, slots=True)
class SampleTruth:
    """What is known about one training record: the sidecar row of ``truth.jsonl``.

    Attributes:
        id: the record's ``id``.
        source: the source (file stem) it was written to.
        family: the task family of its question.
        answer: the correct answer to its question (the record's response may differ: see ``defect``).
        defect: one of `DEFECT_KINDS` or `DUPLICATE_KINDS`, or ``None`` for a clean, unique record.
        dup_group: the id of the original for duplicates and for originals that were copied, else ``None``.
    """

    id: str
    source: str
    family: str
    answer: str
    defect: str | None
    dup_group: str | None

    @property
    def is_defective(self) -> bool:
        """The response itself is bad (wrong, swapped, truncated, filler, empty)."""
        return self.defect in DEFECT_KINDS

    @property
    def is_duplicate(self) -> bool:
        """A copy of another record (exact or near); the original is not counted."""
        return self.defect in DUPLICATE_KINDS


@dataclass
class DemoData:
    """The files written by `generate_demo_data` and the truth about every training record.

    Attributes:
        root: the folder holding everything.
        train_files: one file per source, in `SOURCES` order.
        test_file: held-out clean instances (Alpaca JSON Lines with a ``family`` key; ``output`` is the answer).
        truth_file: ``truth.jsonl``, one `SampleTruth` row per training record.
        truth: the same rows by id.
        families: the task family names.
    """

    root: Path
    train_files: list[Path]
    test_file: Path
    truth_file: Path
    truth: dict[str, SampleTruth]
    families: tuple[str, ...]

    def defect_share(self, ids: Iterable[str]) -> float:
        """Fraction of the given records whose response is defective (duplicates are counted apart)."""
        rows = [self.truth[i] for i in ids]
        return sum(row.is_defective for row in rows) / len(rows) if rows else 0.0

    def redundant_duplicates(self, ids: Iterable[str]) -> int:
        """How many of the given records repeat one already among them: a group picked k times adds k - 1."""
        groups = Counter(self.truth[i].dup_group for i in ids if self.truth[i].dup_group is not None)
        return sum(count - 1 for count in groups.values())




# ----------------------------------------------------------------------------------------------------------
# Drafting the training records: unique instances, split over sources, defects, duplicates.

FILLER_OPENERS = ("Sure! Great question.", "Of course, happy to help!", "Absolutely! Let me think about this.",
                  "Good question, let's work through it together.")
FILLER_MIDDLES = ("After careful consideration,", "Based on what you asked,", "If I understand the question correctly,")
FILLER_CLOSERS = ("Let me know if you have any other questions!", "I hope this helps!",
                  "Feel free to ask if anything is unclear.")
# Surface edits that make a near-duplicate: the same question, trivially re-typed.
NEAR_DUPLICATE_EDITS: tuple[Callable[[str], str], ...] = (
    lambda s: "Please " + s[0].lower() + s[1:],
    lambda s: "Q: " + s,
    lambda s: s + " Thanks!",
    lambda s: s.lower(),
    lambda s: s.replace(" ", "  ", 1),
    lambda s: s.rstrip("?.!"),
)


@dataclass(slots=True)
class _Draft:
    """A training record being built; ids are given last, after shuffling, so a position says nothing."""

    task: TaskInstance
    source: str
    instruction: str
    response: str
    defect: str | None = None
    original: _Draft | None = None
    copied: bool = False
    id: str = ""


def _draw_unique(rng: random.Random, count: int, seen: set, test: bool, families: list[str]) -> list[TaskInstance]:
    """Draw up to ``count`` instances whose content is not in ``seen``, choosing families at random.

    A family whose instance space runs dry (the capitals: a fixed table) leaves the rotation, so the
    others fill its place.
    """
    live, drawn = list(families), []
    while len(drawn) < count and live:
        family = rng.choice(live)
        for _ in range(50):
            task = FAMILIES[family](rng, test)
            if (family, task.key) not in seen:
                seen.add((family, task.key))
                drawn.append(task)
                break
        else:
            live.remove(family)
    return drawn


def _wrong_answer(task: TaskInstance, rng: random.Random, answers_by_family: dict[str, list[str]]) -> str:
    """A plausible answer of the right type that is not the correct one."""
    if task.answer.isdigit():
        value = int(task.answer)
        offsets = [o for o in (-3, -2, -1, 1, 2, 3, 10) if value + o >= 0]
        return str(value + rng.choice(offsets))
    if task.family == "parity":
        return "odd" if task.answer == "even" else "even"
    others = [a for a in answers_by_family[task.family] if a != task.answer]
    return rng.choice(others) if others else task.answer[::-1] + "x"


def _filler_response(answer: str, rng: random.Random) -> str:
    return f"{rng.choice(FILLER_OPENERS)} {rng.choice(FILLER_MIDDLES)} the answer is {answer}. {rng.choice(FILLER_CLOSERS)}"


def _truncated_response(answer: str, rng: random.Random) -> str:
    """The answer cut mid-way; never empty (the loader would reject it) and never the whole answer."""
    return answer[: rng.randint(1, len(answer) - 1)].rstrip() or answer[0]


def _defective_response(kind: str, draft: _Draft, rng: random.Random, base: list[TaskInstance],
                        answers_by_family: dict[str, list[str]]) -> str:
    if kind == "wrong":
        return _wrong_answer(draft.task, rng, answers_by_family)
    if kind == "swapped":
        other = rng.choice(base)
        while other.family == draft.task.family or other.answer == draft.task.answer:
            other = rng.choice(base)
        return other.answer
    if kind == "truncated":
        return _truncated_response(draft.task.answer, rng)
    if kind == "filler":
        return _filler_response(draft.task.answer, rng)
    return ""  # "empty"


def _apply_defects(drafts: list[_Draft], rates: dict[str, float], rng: random.Random, base: list[TaskInstance],
                   answers_by_family: dict[str, list[str]]) -> None:
    """Turn the given share of a source's records into each defect kind, each record at most one kind."""
    order = list(drafts)
    rng.shuffle(order)
    for kind, rate in rates.items():
        # A truncation needs room to cut: answers of three characters or more.
        eligible = [d for d in order if d.defect is None and (kind != "truncated" or len(d.task.answer) >= 3)]
        for draft in eligible[: round(rate * len(drafts))]:
            draft.defect = kind
            draft.response = _defective_response(kind, draft, rng, base, answers_by_family)


def _near_duplicate_instruction(instruction: str, rng: random.Random) -> str:
    edits = [edit(instruction) for edit in NEAR_DUPLICATE_EDITS]
    return rng.choice([text for text in edits if text != instruction])


def _copies(pool: list[_Draft], source: str, count: int, rng: random.Random) -> list[_Draft]:
    """``count`` copies of a few originals, skewed (Zipf-like) so some are repeated many times."""
    if count == 0 or not pool:
        return []
    originals = rng.sample(pool, min(len(pool), max(1, count // 4)))
    weights = [1.0 / (rank + 1) for rank in range(len(originals))]
    copies = []
    for original in rng.choices(originals, weights=weights, k=count):
        original.copied = True
        near = rng.random() < 0.4
        instruction = _near_duplicate_instruction(original.instruction, rng) if near else original.instruction
        kind = "near_duplicate" if near else "exact_duplicate"
        copies.append(_Draft(original.task, source, instruction, original.response, kind, original))
    return copies


def _draft_sources(rng: random.Random, n_train: int, seen: set, include_empty: bool) -> dict[str, list[_Draft]]:
    """All training records, by source, with defects and duplicates in place and ids assigned."""
    sizes = [round(spec.share * n_train) for spec in SOURCES]
    sizes[-1] = n_train - sum(sizes[:-1])
    n_copies = [round(spec.duplicate_share * size) for spec, size in zip(SOURCES, sizes)]
    base = _draw_unique(rng, n_train - sum(n_copies), seen, False, list(FAMILIES))
    answers_by_family: dict[str, list[str]] = {}
    for task in base:
        answers_by_family.setdefault(task.family, []).append(task.answer)
    drafts, start = {}, 0
    for spec, size, copies in zip(SOURCES, sizes, n_copies):
        chunk = base[start : start + size - copies]
        start += len(chunk)
        drafts[spec.name] = [_Draft(task, spec.name, task.instruction, task.answer) for task in chunk]
        rates = dict(spec.defect_rates)
        if include_empty and spec.name == "forum_dump":
            rates["empty"] = 0.02
        _apply_defects(drafts[spec.name], rates, rng, base, answers_by_family)
    pool = [d for spec in SOURCES for d in drafts[spec.name] if d.task.family in EASY_FAMILIES and d.defect is None]
    for spec, copies in zip(SOURCES, n_copies):
        drafts[spec.name] += _copies(pool, spec.name, copies, rng)
        rng.shuffle(drafts[spec.name])
        for index, draft in enumerate(drafts[spec.name]):
            draft.id = f"{spec.name}-{index:05d}"
    return drafts


def _truth_row(draft: _Draft) -> SampleTruth:
    group = draft.original.id if draft.original else (draft.id if draft.copied else None)
    return SampleTruth(draft.id, draft.source, draft.task.family, draft.task.answer, draft.defect, group)


# ----------------------------------------------------------------------------------------------------------
# Writing the files.


def _record(draft: _Draft, fmt: str) -> dict:
    """One record in the source's own format; the id is the only field beyond the format's own."""
    if fmt == "alpaca":
        return {"id": draft.id, "instruction": draft.instruction, "input": draft.task.input, "output": draft.response}
    prompt = f"{draft.instruction}\n\n{draft.task.input}" if draft.task.input else draft.instruction
    if fmt == "messages":
        turns = [{"role": "user", "content": prompt}, {"role": "assistant", "content": draft.response}]
        return {"id": draft.id, "messages": turns}
    turns = [{"from": "human", "value": prompt}, {"from": "gpt", "value": draft.response}]
    return {"id": draft.id, "conversations": turns}


def _write_records(path: Path, records: list[dict]) -> None:
    if path.suffix == ".json":
        write_json(path, records)
        return
    with atomic_open(path) as handle:
        for record in records:
            handle.write(json.dumps(record, ensure_ascii=False) + "\n")


def _test_record(task: TaskInstance, index: int) -> dict:
    return {"id": f"test-{task.family}-{index:03d}", "instruction": task.instruction, "input": task.input,
            "output": task.answer, "family": task.family}


def _manifest(seed: int, n_train: int, test: list[TaskInstance], truth: list[SampleTruth]) -> dict:
    """Counts per source and kind: what the README quotes, and what `load_demo_data` reads back."""
    sources = {}
    for spec in SOURCES:
        rows = [row for row in truth if row.source == spec.name]
        kinds = Counter(row.defect or "clean" for row in rows)
        sources[spec.name] = {"file": spec.filename, "format": spec.format, "n": len(rows), "kinds": dict(kinds)}
    return {"seed": seed, "n_train": n_train, "n_test": len(test), "families": list(FAMILIES),
            "test_file": "test.jsonl", "truth_file": "truth.jsonl", "sources": sources}


# Sizes: the full demo trains five strategies for three epochs on ~5-10% of n_train per epoch on a 2-core CPU
# in minutes; quick is a smoke run that fits in about a minute.
DEFAULT_SIZES = {"n_train": 3000, "n_test_per_family": 20}
QUICK_SIZES = {"n_train": 400, "n_test_per_family": 5}


def generate_demo_data(out_dir: str | Path, *, seed: int = 0, n_train: int | None = None,
                       n_test_per_family: int | None = None, quick: bool = False,
                       include_empty: bool = False) -> DemoData:
    """Write the known-answer dataset to ``out_dir``: one file per source, ``test.jsonl`` and ``truth.jsonl``.

    Args:
        out_dir: folder to write into (created; files in it are replaced atomically).
        seed: the only source of randomness; the same seed writes the same bytes.
        n_train: training records over all sources (default 3000, or 400 with ``quick``).
        n_test_per_family: held-out instances per family (default 20, or 5 with ``quick``); the capital
            family has at most 10, one per held-out country.
        quick: smaller default sizes for a smoke run.
        include_empty: also write a few empty responses to ``forum_dump`` (tagged ``empty``). They make the
            loader stop unless it is told to skip invalid records, so they are off by default.

    Returns:
        The paths written and the truth about every training record.
    """
    sizes = QUICK_SIZES if quick else DEFAULT_SIZES
    n_train = sizes["n_train"] if n_train is None else n_train
    n_test = sizes["n_test_per_family"] if n_test_per_family is None else n_test_per_family
    if n_train < 100 or n_test < 1:
        raise IterITError(f"n_train={n_train}, n_test_per_family={n_test}: need n_train >= 100 (room for every "
                          "defect kind) and n_test_per_family >= 1")
    rng = random.Random(seed)
    seen: set = set()
    # The test set is drawn first: training instances then avoid every question it asks, in any phrasing.
    test = [task for family in FAMILIES for task in _draw_unique(rng, n_test, seen, True, [family])]
    drafts = _draft_sources(rng, n_train, seen, include_empty)
    root = Path(out_dir)
    root.mkdir(parents=True, exist_ok=True)
    for spec in SOURCES:
        _write_records(root / spec.filename, [_record(d, spec.format) for d in drafts[spec.name]])
    test_records, counters = [], Counter()
    for task in test:
        test_records.append(_test_record(task, counters[task.family]))
        counters[task.family] += 1
    _write_records(root / "test.jsonl", test_records)
    truth = [_truth_row(d) for spec in SOURCES for d in drafts[spec.name]]
    _write_records(root / "truth.jsonl", [asdict(row) for row in truth])
    write_json(root / "manifest.json", _manifest(seed, n_train, test, truth))
    return load_demo_data(root)


def load_demo_data(root: str | Path) -> DemoData:
    """Read back a folder written by `generate_demo_data` (so a cached demo dataset is reused as is)."""
    root = Path(root)
    manifest_path = root / "manifest.json"
    if not manifest_path.exists():
        raise IterITError(f"{root}: no manifest.json; write the demo data with generate_demo_data first")
    manifest = json.loads(manifest_path.read_text(encoding="utf-8"))
    truth_file = root / manifest["truth_file"]
    with open(truth_file, encoding="utf-8") as handle:
        rows = [SampleTruth(**json.loads(line)) for line in handle if line.strip()]
    return DemoData(
        root=root,
        train_files=[root / entry["file"] for entry in manifest["sources"].values()],
        test_file=root / manifest["test_file"],
        truth_file=truth_file,
        truth={row.id: row for row in rows},
        families=tuple(manifest["families"]),
    )

"""Selection quality on real data with a real LLM: does IterIT keep the junk out, does the model it trains beat
random at equal samples and at equal tokens, and what does it cost?

    python benchmarks/real_llm.py                  # SmolLM2-135M-Instruct (needs iterit[smollm]), 1,600 samples
    python benchmarks/real_llm.py --small          # the tiny model on 120 samples: a smoke run (in the tests)

Stages, each timed and each cached in ``--out`` (a rerun skips what is there):

1. **data**: real instruction data from ``../shared/data/train`` (Alpaca-GPT4, Alpaca, Code Alpaca, GSM8K,
   GPTeacher codegen), de-duplicated by prompt, split into a training pool and a clean held-out split from the
   same sources; a clean external set from another source (Self-Instruct's user-oriented tasks). Tagged defects
   are injected into the pool (``truth.jsonl``): truncated responses, responses swapped from another sample,
   boilerplate refusals, generic filler, exact and near duplicates, and wrong final answers on GSM8K.
2. **score**: IFD of every pool sample under the model (``iterit score``), and under a small proxy scorer
   trained here on generic instruction data disjoint from the pool (Superfiltering's idea: a small model's IFD
   for a larger one's selection).
3. **select**: at 5% and 10% budgets, what each strategy picks: defect share by kind, duplicate picks, response
   tokens. Random is drawn with 3 seeds, at equal samples and at iterit's tokens.
4. **finetune**: LoRA on the model at the 5% budget for 3 epochs with iterit, static, random and random at
   iterit's tokens (and the options beyond the paper), then response loss on the clean held-out split and
   the external set.

Markdown tables go to stdout and ``<out>/real_llm.md``; every number to ``<out>/real_llm.json``.
"""

from __future__ import annotations

import argparse
import json
import logging
import random
import re
import statistics
import sys
import time
from collections import Counter
from dataclasses import dataclass
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[1]
SHARED = ROOT.parent / "shared" / "data"
logger = logging.getLogger("real_llm")


@dataclass(frozen=True)
class Size:
    """How big a run is: pool samples per source, held-out per source, external samples, fine-tuning."""

    per_source: int
    heldout_per_source: int
    external: int
    max_length: int
    finetune_epochs: int
    proxy_steps: int


SIZES = {
    "full": Size(per_source=320, heldout_per_source=30, external=100, max_length=512, finetune_epochs=3,
                 proxy_steps=400),
    "small": Size(per_source=24, heldout_per_source=4, external=8, max_length=256, finetune_epochs=2,
                  proxy_steps=10),
}

# (source name, file under shared/data, reader)
SOURCES = (
    ("alpaca-gpt4", "train/alpaca_gpt4_llamafactory/alpaca_en_demo.json", "alpaca"),
    ("alpaca", "train/alpaca_alpagasus/random_9k.json", "alpaca"),
    ("code-alpaca", "train/code_alpaca/code_alpaca_2k.json", "alpaca"),
    ("gsm8k", "train/gsm8k/train.jsonl", "gsm8k"),
    ("gpteacher-code", "train/gpteacher/codegen-instruct.json", "gpteacher"),
)
# Generic instruction data for the proxy scorer, disjoint from the pool by prompt.
PROXY_CORPUS = ("train/alpaca_alpagasus/claude_t45.json", "train/alpaca_cherry/cherry_alpaca_5_percent.json")
EXTERNAL = "eval/self_instruct_user_oriented/user_oriented_instructions.jsonl"

# Defects per pool sample (GSM8K's wrong answers: a share of its samples).
DEFECT_SHARES = {"truncated": 0.04, "swapped": 0.04, "refusal": 0.03, "filler": 0.03, "duplicate": 0.03,
                 "near-duplicate": 0.03}
WRONG_SHARE_OF_GSM8K = 0.15
REFUSALS = (
    "I'm sorry, but I can't help with that request.",
    "As an AI language model, I am unable to assist with this.",
    "I apologize, but I cannot provide an answer to this question.",
    "Unfortunately, I'm not able to complete this task.",
)
FILLER = (
    "That is a great question, and there are many different factors to consider. The answer depends on the "
    "context and on what you are trying to achieve, so it is important to think carefully about every aspect "
    "before reaching a conclusion. I hope this helps!",
    "There are several ways to approach this. Each has its own advantages and disadvantages, and the best choice "
    "will depend on your specific situation and needs. It is always a good idea to consider all of the options.",
    "This is an interesting topic that many people have thought about. In general, it is important to keep an "
    "open mind, consider different perspectives and make a decision that works well for you.",
)

STRATEGY_ROWS = ("iterit", "ifd", "random", "random at iterit's tokens", "longest", "ifd (proxy scorer)", "iterit (proxy scorer)",
                 "iterit + l1 diversity", "iterit + drop top 10% IFD", "iterit + l1 + drop top 10%")
FINETUNE = ("iterit", "static", "random", "random at iterit's tokens", "iterit + l1 + drop top 10%")
RESPONSE_DEFECTS = ("truncated", "swapped", "refusal", "filler", "wrong")  # the response itself is bad
DUPLICATE_KINDS = ("duplicate", "near-duplicate")  # an added copy of a clean sample
DEFECT_KINDS = RESPONSE_DEFECTS + DUPLICATE_KINDS


# ---------------------------------------------------------------- data


def read_source(path: Path, reader: str) -> list[dict[str, str]]:
    """Rows as ``{instruction, input, output}``."""
    if reader == "gsm8k":
        rows = [json.loads(line) for line in path.read_text(encoding="utf-8").splitlines() if line.strip()]
        return [{"instruction": r["question"], "input": "", "output": r["answer"]} for r in rows]
    rows = json.loads(path.read_text(encoding="utf-8"))
    answer = "response" if reader == "gpteacher" else "output"
    return [{"instruction": r["instruction"], "input": r.get("input", ""), "output": r[answer]} for r in rows]


def prompt_key(row: dict[str, str]) -> str:
    return re.sub(r"\W+", " ", (row["instruction"] + " " + row["input"]).lower()).strip()


def usable(row: dict[str, str]) -> bool:
    return bool(row["instruction"].strip()) and len(row["output"].split()) >= 3 and len(row["output"]) <= 2500


def build_splits(size: Size, seed: int) -> tuple[list[dict], list[dict], list[dict]]:
    """(clean pool, clean held-out from the same sources, clean external set); no prompt in two of them."""
    rng = random.Random(seed)
    seen: set[str] = set()
    pool, heldout = [], []
    for name, path, reader in SOURCES:
        rows = [r for r in read_source(SHARED / path, reader) if usable(r)]
        rng.shuffle(rows)
        fresh = []
        for row in rows:
            key = prompt_key(row)
            if key not in seen:
                seen.add(key)
                fresh.append({**row, "source": name})
            if len(fresh) == size.per_source + size.heldout_per_source:
                break
        pool += fresh[: size.per_source]
        heldout += fresh[size.per_source:]
    external = []
    for line in (SHARED / EXTERNAL).read_text(encoding="utf-8").splitlines():
        task = json.loads(line)
        for instance in task["instances"][:1]:
            row = {"instruction": task["instruction"], "input": instance["input"], "output": instance["output"],
                   "source": "self-instruct-user"}
            if usable(row) and prompt_key(row) not in seen:
                external.append(row)
    rng.shuffle(external)
    return pool, heldout, external[: size.external]


def inject_defects(pool: list[dict], seed: int) -> tuple[list[dict], list[dict]]:
    """The pool with tagged defects: (records with ids, truth rows ``{id, kind, group, source}``).

    Each defect replaces a clean sample's response, except duplicates, which are added copies of a clean
    sample (``group`` ties a copy to its original). Every defect has an independent check in the tests.
    """
    rng = random.Random(seed + 1)
    records = [{**row, "id": f"{row['source']}-{i}"} for i, row in enumerate(pool)]
    kinds = {r["id"]: "clean" for r in records}
    order = list(range(len(records)))
    rng.shuffle(order)
    taken = iter(order)
    counts = {kind: max(1, round(share * len(records))) for kind, share in DEFECT_SHARES.items()}

    def next_clean(condition=lambda r: True) -> dict:
        for index in taken:
            if condition(records[index]):
                return records[index]
        raise ValueError("the pool is too small for its defects")

    gsm8k = [r for r in records if r["source"] == "gsm8k"]
    for record in rng.sample(gsm8k, max(1, round(WRONG_SHARE_OF_GSM8K * len(gsm8k)))):
        record["output"] = wrong_answer(record["output"], rng)
        kinds[record["id"]] = "wrong"
    for _ in range(counts["truncated"]):
        record = next_clean(lambda r: kinds[r["id"]] == "clean" and len(r["output"].split()) >= 16)
        words = record["output"].split(" ")
        record["output"] = " ".join(words[: max(4, int(len(words) * rng.uniform(0.25, 0.5)))]).rstrip(" .")
        kinds[record["id"]] = "truncated"
    for _ in range(counts["swapped"]):
        record = next_clean(lambda r: kinds[r["id"]] == "clean")
        donor = rng.choice([r for r in pool if r["source"] != record["source"]])
        record["output"] = donor["output"]
        kinds[record["id"]] = "swapped"
    for kind, texts in (("refusal", REFUSALS), ("filler", FILLER)):
        for _ in range(counts[kind]):
            record = next_clean(lambda r: kinds[r["id"]] == "clean")
            record["output"] = rng.choice(texts)
            kinds[record["id"]] = kind
    groups = {}
    for kind in DUPLICATE_KINDS:
        for number in range(counts[kind]):
            original = next_clean(lambda r: kinds[r["id"]] == "clean")
            copy = {**original, "id": f"{original['id']}-{kind}{number}"}
            if kind == "near-duplicate":
                copy["instruction"] = "Please " + original["instruction"][:1].lower() + original["instruction"][1:]
                copy["output"] = original["output"].rstrip() + ("" if original["output"].rstrip().endswith(".") else ".")
                copy["output"] = copy["output"].replace(", ", " , ", 1) if ", " in copy["output"] else copy["output"] + " "
            records.append(copy)
            kinds[copy["id"]] = kind
            groups[copy["id"]] = groups[original["id"]] = original["id"]
    rng.shuffle(records)
    truth = [{"id": r["id"], "kind": kinds[r["id"]], "group": groups.get(r["id"]), "source": r["source"]}
             for r in records]
    return records, truth


def wrong_answer(answer: str, rng: random.Random) -> str:
    """GSM8K working kept, the final ``#### N`` (and the last ``= N`` before it) changed to a plausible number."""
    match = re.search(r"####\s*(-?[\d,\.]+)\s*$", answer)
    if not match:
        return answer + "\n#### 0"
    value = match.group(1).replace(",", "")
    try:
        number = float(value)
    except ValueError:
        number = 0.0
    wrong = number + rng.choice([-1, 1]) * rng.choice([1, 2, 3, 5, 10]) if number else rng.choice([2, 3, 7])
    text = f"{int(wrong)}" if float(wrong).is_integer() else f"{wrong:g}"
    working = answer[: match.start()]
    working = re.sub(rf"(=\s*){re.escape(match.group(1))}(\D*)$", rf"\g<1>{text}\g<2>", working.rstrip()) + "\n"
    return working + f"#### {text}"


def write_jsonl(path: Path, rows: list[dict]) -> None:
    tmp = path.with_suffix(".partial")
    tmp.write_text("".join(json.dumps(row, ensure_ascii=False) + "\n" for row in rows), encoding="utf-8")
    tmp.replace(path)


def read_jsonl(path: Path) -> list[dict]:
    return [json.loads(line) for line in path.read_text(encoding="utf-8").splitlines() if line.strip()]


def prepare_data(out: Path, size: Size, seed: int) -> dict[str, Path]:
    files = {name: out / f"{name}.jsonl" for name in ("pool", "truth", "heldout", "external", "proxy_corpus")}
    if all(p.exists() for p in files.values()):
        return files
    pool, heldout, external = build_splits(size, seed)
    records, truth = inject_defects(pool, seed)
    seen = {prompt_key(r) for r in records + heldout + external}
    corpus = []
    for path in PROXY_CORPUS:
        for row in read_source(SHARED / path, "alpaca"):
            if usable(row) and prompt_key(row) not in seen:
                seen.add(prompt_key(row))
                corpus.append(row)
    out.mkdir(parents=True, exist_ok=True)
    write_jsonl(files["pool"], records)
    write_jsonl(files["truth"], truth)
    write_jsonl(files["heldout"], heldout)
    write_jsonl(files["external"], external)
    write_jsonl(files["proxy_corpus"], corpus)
    return files


# ---------------------------------------------------------------- models and scores


def proxy_model(out: Path, corpus: Path, size: Size, seed: int) -> Path:
    """A small Llama trained here on generic instruction data in its chat template (the proxy scorer)."""
    from iterit.demo.tiny_model import BOS, END, ROLE_TOKENS, build_tiny_model

    target = out / "proxy-model"
    if (target / "config.json").exists():
        return target
    rows = read_jsonl(corpus)[: 400 if size.proxy_steps < 50 else 6000]
    texts = [f"{BOS}{ROLE_TOKENS['user']}\n{r['instruction']}" + (f"\n\n{r['input']}" if r["input"] else "")
             + f"{END}\n{ROLE_TOKENS['assistant']}\n{r['output']}{END}\n" for r in rows]
    building = out / "proxy-model.partial"
    build_tiny_model(building, texts=texts, steps=size.proxy_steps, seed=seed, vocab_size=4096, hidden_size=128,
                     layers=4, heads=4, batch_size=16, block_size=256, learning_rate=3e-3)
    building.replace(target)
    return target


def small_model(out: Path, corpus: Path, seed: int) -> Path:
    """--small's stand-in for the LLM: a tiny model briefly trained on the same generic corpus."""
    from iterit.demo.tiny_model import BOS, END, ROLE_TOKENS, build_tiny_model

    target = out / "small-llm"
    if not (target / "config.json").exists():
        rows = read_jsonl(corpus)[:300]
        texts = [f"{BOS}{ROLE_TOKENS['user']}\n{r['instruction']}{END}\n{ROLE_TOKENS['assistant']}\n{r['output']}{END}\n"
                 for r in rows]
        build_tiny_model(target, texts=texts, steps=20, seed=seed + 7)
    return target


def score(model: str, pool: Path, out: Path, size: Size, dtype: str) -> Path:
    from iterit.config import ScoreConfig
    from iterit.recipes.score import run as score_run

    if not out.exists():
        score_run(ScoreConfig(model=model, data=[str(pool)], out=str(out), max_length=size.max_length,
                              dtype=dtype, quiet=True, max_batch_tokens=8192))
    return out


# ---------------------------------------------------------------- selection quality


def selection_rows(samples, scores, proxy_scores, truth: dict[str, dict], ratios: tuple[float, ...]) -> list[dict]:
    """Every strategy of :data:`STRATEGY_ROWS` at each budget, judged by the truth."""
    from iterit.selection import select_samples

    rows = []
    for ratio in ratios:
        iterit = select_samples(samples, scores, ratio, strategy="iterit")
        tokens = int(scores.n_response_tokens[iterit.indices].sum())
        runs: dict[str, list] = {
            "iterit": [iterit],
            "ifd": [select_samples(samples, scores, ratio, strategy="ifd")],
            "random": [select_samples(samples, scores, ratio, strategy="random", seed=s) for s in range(3)],
            "random at iterit's tokens": [select_samples(samples, scores, None, strategy="random", seed=s,
                                                       token_budget=tokens) for s in range(3)],
            "longest": [select_samples(samples, scores, ratio, strategy="longest")],
            "ifd (proxy scorer)": [select_samples(samples, proxy_scores, ratio, strategy="ifd")],
            "iterit (proxy scorer)": [select_samples(samples, proxy_scores, ratio, strategy="iterit")],
            "iterit + l1 diversity": [select_samples(samples, scores, ratio, strategy="iterit",
                                                    tfidf_options={"norm": "l1"})],
            "iterit + drop top 10% IFD": [select_samples(samples, scores, ratio, strategy="iterit", drop_top_ifd=0.1)],
            "iterit + l1 + drop top 10%": [select_samples(samples, scores, ratio, strategy="iterit", drop_top_ifd=0.1,
                                                         tfidf_options={"norm": "l1"})],
        }
        for name in STRATEGY_ROWS:
            judged = [judge([samples[i].id for i in sel.indices], scores, samples, truth) for sel in runs[name]]
            rows.append({"ratio": ratio, "strategy": name, "runs": judged})
    return rows


def defect_share(ids: list[str], truth: dict[str, dict]) -> float | None:
    """The share of ``ids`` whose response is bad (:data:`RESPONSE_DEFECTS`; copies are counted apart)."""
    return sum(truth[i]["kind"] in RESPONSE_DEFECTS for i in ids) / len(ids) if ids else None


def judge(ids: list[str], scores, samples, truth: dict[str, dict]) -> dict[str, Any]:
    """Defect share by kind, duplicate picks (picks beyond the first of a duplicate group) and tokens."""
    kinds = Counter(truth[i]["kind"] for i in ids)
    groups = Counter(truth[i]["group"] for i in ids if truth[i]["group"])
    position = {s.id: row for row, s in enumerate(samples)}
    tokens = int(sum(scores.n_response_tokens[position[i]] for i in ids))
    return {"n": len(ids), "tokens": tokens, "defective": defect_share(ids, truth),
            "by_kind": {k: kinds[k] / len(ids) for k in DEFECT_KINDS},
            "duplicate_picks": sum(n - 1 for n in groups.values())}


def premises(scores, truth: dict[str, dict]) -> dict[str, Any]:
    """The method's premises on this data (the demo's check, :func:`iterit.demo.premises.premise_check`): clean
    samples mostly under IFD 1, defects above clean."""
    from iterit.demo.premises import premise_check

    return premise_check(scores, {sample_id: row["kind"] for sample_id, row in truth.items()})


# ---------------------------------------------------------------- fine-tuning


def finetune(name: str, model: str, files: dict[str, Path], scores: Path, out: Path, size: Size, seed: int,
             token_budget: int | None, lora: bool) -> dict[str, Any]:
    """Train one strategy at 5% per epoch, evaluate response loss on the held-out and external sets."""
    from iterit.data import load_samples
    from iterit.evaluation import evaluate
    from iterit.training import TrainConfig, train

    options: dict[str, Any] = {}
    strategy = name
    if name == "random at iterit's tokens":
        strategy, options = "random", {"token_budget": token_budget}
    if name == "iterit + l1 + drop top 10%":
        strategy, options = "iterit", {"diversity_norm": "l1", "drop_top_ifd": 0.1}
    run_dir = out / "finetune" / re.sub(r"\W+", "-", name).strip("-") / f"seed{seed}"
    # LoRA on a bf16 base with bf16 autocast (the CPU's fast path; the adapter's weights stay float32).
    training = (dict(learning_rate=2e-4, lora_r=16, lora_alpha=32, lora_dropout=0.0, bf16=True) if lora
                else dict(learning_rate=2e-3))
    started = time.perf_counter()
    result = train(TrainConfig(
        model=model, data=[str(files["pool"])], out=str(run_dir), strategy=strategy, ratio=0.05, update_ratio=3,
        num_train_epochs=size.finetune_epochs, scores=str(scores), max_length=size.max_length, seed=seed,
        per_device_train_batch_size=8, lr_scheduler_type="cosine", warmup_steps=0.1, report_to="none",
        save_strategy="no", quiet=True, use_cpu=True, overwrite=True, max_batch_tokens=8192, **training, **options))
    train_s = time.perf_counter() - started
    epochs = [json.loads((run_dir / "epochs" / str(e) / "metrics.json").read_text())
              for e in range(len(result.epochs)) if (run_dir / "epochs" / str(e) / "metrics.json").exists()]
    losses = {}
    started = time.perf_counter()
    for split in ("heldout", "external"):
        test = load_samples([files[split]]).samples
        losses[split] = evaluate(result.model, result.tokenizer, test, metrics=("loss",), max_length=size.max_length,
                                 progress=False).overall.loss
    return {"strategy": name, "seed": seed, "heldout_loss": losses["heldout"], "external_loss": losses["external"],
            "train_tokens": sum(int(e.get("tokens", 0)) for e in epochs),
            "response_tokens": sum(int(e.get("response_tokens", 0)) for e in epochs), "picks": result.selected_ids,
            "train_s": train_s, "eval_s": time.perf_counter() - started,
            "score_s": sum(float(e.get("score_s") or 0) for e in result.epochs)}


def reselection_dynamics(out: Path, truth: dict[str, dict]) -> list[dict[str, Any]]:
    """For each fine-tuned run that re-selects: per epoch, the picks outside the epoch-0 top-B and their
    defect share against the share of all picks (read from the run folders, so it works on finished runs)."""
    from iterit.storage import read_table

    rows = []
    for run in sorted((out / "finetune").glob("*/seed*")):
        epochs = sorted((run / "epochs").glob("*/selection.parquet"), key=lambda p: int(p.parent.name))
        picks = [[str(row["id"]) for row in read_table(path)[0]] for path in epochs]
        if len(picks) < 2 or picks[1] == picks[0]:
            continue  # a strategy that keeps its picks
        first = set(picks[0])
        for epoch, ids in enumerate(picks):
            outside = [i for i in ids if i not in first]
            rows.append({"run": f"{run.parent.name}/{run.name}", "epoch": epoch, "picks": len(ids),
                         "outside_epoch0_top": len(outside), "defective": defect_share(ids, truth),
                         "defective_outside": defect_share(outside, truth)})
    return rows


def format_dynamics(rows: list[dict]) -> str:
    lines = ["| run | epoch | picks | not in epoch-0 top-B | defective picks | defective among those |",
             "|---|---|---|---|---|---|"]
    for row in rows:
        outside = "-" if row["defective_outside"] is None else f"{row['defective_outside']:.1%}"
        lines.append(f"| {row['run']} | {row['epoch']} | {row['picks']} | {row['outside_epoch0_top']} | "
                     f"{row['defective']:.1%} | {outside} |")
    return "\n".join(lines)


def base_losses(model: str, files: dict[str, Path], size: Size, dtype: str) -> dict[str, float]:
    """The base model's response loss, in the dtype the fine-tuned models are evaluated in."""
    from iterit.data import load_samples
    from iterit.evaluation import evaluate
    from iterit.models import load_model

    loaded, tokenizer = load_model(model, dtype=dtype, device="cpu")
    return {split: evaluate(loaded, tokenizer, load_samples([files[split]]).samples, metrics=("loss",),
                            max_length=size.max_length, progress=False).overall.loss
            for split in ("heldout", "external")}


# ---------------------------------------------------------------- tables


def mean_std(values: list[float], fmt: str) -> str:
    if not values:
        return "-"
    spread = statistics.stdev(values) if len(values) > 1 else 0.0
    return f"{fmt.format(statistics.fmean(values))}" + (f" ± {fmt.format(spread)}" if len(values) > 1 else "")


def format_selection(rows: list[dict]) -> str:
    header = ("| budget | strategy | defective | " + " | ".join(RESPONSE_DEFECTS) + " | dup picks | tokens |")
    lines = [header, "|" + "---|" * (len(RESPONSE_DEFECTS) + 5)]
    for row in rows:
        runs = row["runs"]
        cells = [mean_std([r["defective"] for r in runs], "{:.1%}")]
        cells += [mean_std([r["by_kind"][k] for r in runs], "{:.1%}") for k in RESPONSE_DEFECTS]
        cells += [mean_std([r["duplicate_picks"] for r in runs], "{:.1f}"), mean_std([r["tokens"] for r in runs], "{:,.0f}")]
        lines.append(f"| {row['ratio']:.0%} | {row['strategy']} | " + " | ".join(cells) + " |")
    return "\n".join(lines)


def format_finetune(rows: list[dict], base: dict[str, float]) -> str:
    lines = ["| strategy | seeds | held-out loss | external loss | train tokens | response tokens | defective picks "
             "| train s |", "|---|---|---|---|---|---|---|---|",
             f"| base model (no fine-tuning) | - | {base['heldout']:.4f} | {base['external']:.4f} | 0 | 0 | - | - |"]
    by_name: dict[str, list[dict]] = {}
    for row in rows:
        by_name.setdefault(row["strategy"], []).append(row)
    for name, runs in by_name.items():
        lines.append(f"| {name} | {', '.join(str(r['seed']) for r in runs)} | "
                     f"{mean_std([r['heldout_loss'] for r in runs], '{:.4f}')} | "
                     f"{mean_std([r['external_loss'] for r in runs], '{:.4f}')} | "
                     f"{mean_std([r['train_tokens'] for r in runs], '{:,.0f}')} | "
                     f"{mean_std([r['response_tokens'] for r in runs], '{:,.0f}')} | "
                     f"{mean_std([r['defective'] for r in runs], '{:.1%}')} | "
                     f"{mean_std([r['train_s'] for r in runs], '{:.0f}')} |")
    return "\n".join(lines)


# ---------------------------------------------------------------- main


class Stopwatch:
    """Wall time per stage; a stage served from ``--out``'s cache keeps the time it took when it ran."""

    def __init__(self, earlier: dict[str, float]) -> None:
        self.earlier, self.timings = earlier, {}

    def run(self, name: str, cached: bool, work):
        started = time.perf_counter()
        value = work()
        took = time.perf_counter() - started
        self.timings[name] = self.earlier.get(name, took) if cached else took
        return value


def format_premises(found: dict[str, Any], proxy: dict[str, Any]) -> str:
    lines = ["| response kind | median IFD | IFD < 1 | median IFD, proxy scorer | IFD < 1, proxy |",
             "|---|---|---|---|---|"]
    for kind, median in found["median_ifd"].items():
        lines.append(f"| {kind} | {median:.3f} | {found['below_1_by_kind'][kind]:.1%} | "
                     f"{proxy['median_ifd'].get(kind, float('nan')):.3f} | {proxy['below_1_by_kind'].get(kind, 0):.1%} |")
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--small", action="store_true", help="the tiny model on a small pool (a smoke run)")
    parser.add_argument("--model", default=None, help="the LLM (default: SmolLM2-135M-Instruct from iterit[smollm]; "
                        "with --small, a tiny model trained here)")
    parser.add_argument("--dtype", default="bfloat16", help="scoring dtype on the CPU (bf16: 2x faster, IFD to ~1e-2)")
    parser.add_argument("--seeds", type=int, nargs="+", default=[0], help="fine-tuning seeds")
    parser.add_argument("--data-seed", type=int, default=0, help="the pool, the splits and the defects")
    parser.add_argument("--stages", default="data,score,select,finetune",
                        help="without finetune, an earlier run's fine-tuning results in --out are kept in the tables")
    parser.add_argument("--finetune", default=",".join(FINETUNE), help="strategies to fine-tune")
    parser.add_argument("--out", default="runs/real_llm")
    parser.add_argument("--merge", nargs="*", default=[],
                        help="other --out folders whose fine-tuning rows join the tables (seeds run in parallel on "
                             "copies of this folder's data and scores; their pool must be this one's)")
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(message)s", stream=sys.stderr)
    size = SIZES["small" if args.small else "full"]
    out = Path(args.out)
    if not SHARED.is_dir():
        print(f"{SHARED} is absent: this benchmark reads the shared real data beside the project", file=sys.stderr)
        return 2
    stages = set(args.stages.split(","))
    earlier = json.loads((out / "real_llm.json").read_text()) if (out / "real_llm.json").exists() else {}
    clock = Stopwatch(earlier.get("timings", {}))
    files = clock.run("data_s", (out / "pool.jsonl").exists(), lambda: prepare_data(out, size, args.data_seed))
    model = args.model or (str(small_model(out, files["proxy_corpus"], args.data_seed)) if args.small else "smollm2")
    results: dict[str, Any] = {"settings": {**vars(args), "size": vars(size)}, "timings": clock.timings}
    if "score" not in stages:
        return 0
    scores_path = clock.run("score_s", (out / "scores.parquet").exists(),
                            lambda: score(model, files["pool"], out / "scores.parquet", size, args.dtype))
    proxy = clock.run("proxy_build_s", (out / "proxy-model").exists(),
                      lambda: proxy_model(out, files["proxy_corpus"], size, args.data_seed))
    proxy_path = clock.run("proxy_score_s", (out / "proxy_scores.parquet").exists(),
                           lambda: score(str(proxy), files["pool"], out / "proxy_scores.parquet", size, "float32"))

    from iterit.data import load_samples
    from iterit.scoring import read_scores

    samples = load_samples([files["pool"]]).samples
    scores = read_scores(scores_path).aligned_to([s.id for s in samples])
    proxy_scores = read_scores(proxy_path).aligned_to([s.id for s in samples])
    truth = {row["id"]: row for row in read_jsonl(files["truth"])}
    results["premises"] = premises(scores, truth)
    results["proxy_premises"] = premises(proxy_scores, truth)
    results["scoring"] = {"tokens": scores.stats.get("tokens"), "seconds": scores.stats.get("seconds"),
                          "samples": len(samples)}
    kinds = Counter(t["kind"] for t in truth.values())
    text = [f"## Real data, {Path(model).name}: {len(samples)} pool samples, scored in {args.dtype}", "",
            "Tagged: " + ", ".join(f"{kind} {n}" for kind, n in kinds.most_common()) + ".", "",
            f"Clean samples with IFD < 1: {results['premises']['clean_below_1']:.1%} "
            f"(proxy scorer: {results['proxy_premises']['clean_below_1']:.1%}).", "",
            format_premises(results["premises"], results["proxy_premises"]), ""]
    if "select" in stages:
        results["selection"] = clock.run("select_s", False,
                                         lambda: selection_rows(samples, scores, proxy_scores, truth, (0.05, 0.10)))
        text += ["### What each strategy selects", "", format_selection(results["selection"]), ""]
    if "finetune" in stages:
        names = [n for n in args.finetune.split(",") if n]
        results["base"] = clock.run("base_eval_s", False, lambda: base_losses(
            model, files, size, "bfloat16" if model == "smollm2" else "float32"))
        results["finetune"] = clock.run("finetune_s", False, lambda: finetune_all(
            names, args.seeds, model, files, scores_path, scores, samples, truth, out, size, results))
    else:  # keep the fine-tuning results of an earlier run of this folder
        for key in ("base", "finetune"):
            if key in earlier:
                results[key] = earlier[key]
        clock.timings.update({k: v for k, v in clock.earlier.items() if k in ("base_eval_s", "finetune_s")})
    merged = []
    for other in map(Path, args.merge):
        if (other / "pool.jsonl").read_bytes() != files["pool"].read_bytes():
            print(f"--merge {other}: its pool.jsonl is not this run's; run it on a copy of {out}'s data", file=sys.stderr)
            return 2
        merged += json.loads((other / "real_llm.json").read_text()).get("finetune", [])
    if merged:
        results["merged"] = {"folders": args.merge, "finetune": merged}
    tuned = sorted(results.get("finetune", []) + merged, key=lambda row: (
        FINETUNE.index(row["strategy"]) if row["strategy"] in FINETUNE else len(FINETUNE), row["seed"]))
    if tuned:
        how = "LoRA r=16 on a bf16 base" if model == "smollm2" else "all weights"
        text += [f"### Fine-tuning at 5% per epoch, {size.finetune_epochs} epochs ({how})", "",
                 format_finetune(tuned, results["base"]), ""]
        results["dynamics"] = [row for folder in [out, *map(Path, args.merge)]
                               for row in reselection_dynamics(folder, truth)]
        if results["dynamics"]:
            text += ["### Re-selection: picks outside the epoch-0 top-B", "", format_dynamics(results["dynamics"]), ""]
    clock.timings["total_s"] = sum(v for k, v in clock.timings.items() if k != "total_s")
    text.append("Wall time by stage (s): " + ", ".join(f"{k[:-2]} {v:.0f}" for k, v in clock.timings.items()))
    report = "\n".join(text)
    print(report)
    (out / "real_llm.json").write_text(json.dumps(results, indent=1, default=float))
    (out / "real_llm.md").write_text(report + "\n", encoding="utf-8")
    return 0


def finetune_all(names, seeds, model, files, scores_path, scores, samples, truth, out, size, results) -> list[dict]:
    """Every strategy in ``names`` for every seed; random at iterit's tokens matches that seed's iterit run."""
    rows: list[dict] = []
    results["finetune"] = rows
    for seed in seeds:
        iterit_tokens = None
        for name in names:
            if name == "random at iterit's tokens" and iterit_tokens is None:
                logger.warning("skipping %r: it needs iterit fine-tuned first (list iterit before it)", name)
                continue
            logger.info("fine-tuning %s, seed %d", name, seed)
            row = finetune(name, model, files, scores_path, out, size, seed, iterit_tokens, lora=model == "smollm2")
            if name == "iterit":
                iterit_tokens = max(1, round(row["response_tokens"] / size.finetune_epochs))
            row["defective"] = statistics.fmean(
                judge(ids, scores, samples, truth)["defective"] for ids in row.pop("picks"))
            rows.append(row)
            logger.info("  %s: held-out %.4f, external %.4f, %d tokens, %.0f s", name, row["heldout_loss"],
                        row["external_loss"], row["train_tokens"], row["train_s"])
            (out / "real_llm.json").write_text(json.dumps(results, indent=1, default=float))
    return rows


if __name__ == "__main__":
    sys.exit(main())

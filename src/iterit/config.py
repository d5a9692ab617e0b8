"""The settings of each command, as dataclasses: the CLI flags, the YAML keys and ``--help`` come from here.

Every default carries its reason in its help. ``TrainConfig`` lives in :mod:`iterit.training` because it extends
Hugging Face ``TrainingArguments`` (which imports torch); the classes here stay import-light so ``--help`` is fast.
"""

from __future__ import annotations

from dataclasses import dataclass, field

TFIDF_TEXT_HELP = ("what TF-IDF is fitted on: response (default: the text that is scored, without a template token) "
                   "| response+eos (the reference: output + the tokenizer's eos string, which adds n-grams with it)")
TOKEN_BUDGET_HELP = ("response tokens (per epoch, in train) instead of a sample count: the prefix of the strategy's "
                     "ranking closest to it (random at another strategy's tokens compares at equal compute; "
                     "default: none)")
DROP_TOP_IFD_HELP = ("beyond the paper: also drop this top share of the IFD < threshold scores, where generic filler "
                     "sits (0: the paper; e.g. 0.1)")
DIVERSITY_NORM_HELP = ("l2 (the paper: a response's diversity grows with its distinct n-grams, favouring long ones) "
                       "| l1 (beyond the paper: length-normalised, the share of its TF-IDF mass not yet covered)")
BUDGET_ROUNDING_HELP = ("a share of N as a count: half-up (default: Dolly's 15,011 x 0.05 = 751) "
                        "| floor (the reference's math.floor(N x ratio): 750)")


def _help(text: str, **extra) -> dict:
    return {"help": text, **extra}


@dataclass
class DataArgs:
    """How to read the user's data; shared by every command that reads data."""

    data: list[str] = field(
        default_factory=list,
        metadata=_help("data files (.json, .jsonl[.gz], .parquet) or save_to_disk folders; repeat --data for several", action="extend"),
    )
    format: str | None = field(default=None, metadata=_help("force alpaca|sharegpt|messages|hh (default: detected per file)"))
    columns: str | None = field(
        default=None, metadata=_help("field mapping ours=theirs, e.g. instruction=question,output=answer (common aliases need none)")
    )
    system_prompt: str | None = field(default=None, metadata=_help("system message added to conversations without one (default: none)"))
    skip_invalid: bool = field(default=False, metadata=_help("keep the valid rows and report the bad ones, instead of stopping"))
    dedup: bool = field(default=False, metadata=_help("drop exact duplicates (default: keep them and let selection decide)"))
    input_join: str = field(
        default="blank-line",
        metadata=_help("how an Alpaca input follows its instruction in the user turn: blank-line (instruction\\n\\ninput) "
                       "| reference (instruction\\nInput: input, as the IterIT code)"),
    )


@dataclass
class RenderArgs:
    """How conversations become tokens; the scorer, the trainer and eval must agree on it."""

    template: str = field(
        default="auto",
        metadata=_help("auto (the tokenizer's chat template, else Alpaca) | chat | alpaca (Stanford Alpaca's prompt, with "
                       "its ### Input: block for records with an input) | llama-3.1 (Meta's format, built in: the reference's)"),
    )
    response_end: str = field(
        default="template",
        metadata=_help("what ends each response, for scoring and training alike: template (its end-of-turn token) "
                       "| eos (response + the tokenizer's eos, after the generation prompt: the reference's target)"),
    )
    max_length: int = field(
        default=2048,
        metadata=_help("tokens per sequence: the prompt is kept whole and the response's end is cut; a sample whose "
                       "prompt alone fills the limit cannot be scored (kept, never selected or trained on)"),
    )


@dataclass
class PresetArgs:
    """A named bundle of defaults (:mod:`iterit.presets`) under the YAML file and the flags."""

    preset: str | None = field(
        default=None,
        metadata=_help("reference: the IterIT reference code's choices, each setting with its source (README, "
                       "'Reference'); a YAML key or a flag overrides any of them (default: iterit's own defaults)"),
    )


@dataclass
class InspectConfig(DataArgs):
    """``iterit inspect``: the load summary of a data set."""

    json: bool = field(default=False, metadata=_help("print the summary as JSON"))


@dataclass
class TinyModelConfig:
    """``iterit tiny-model``: a small real causal LM for tests and the demo."""

    out: str = field(default="", metadata=_help("folder to save the model and tokenizer to (required)"))
    corpus: list[str] = field(default_factory=list, metadata=_help("text files to train the tokenizer on and pretrain with", action="extend"))
    steps: int = field(default=0, metadata=_help("pretraining steps on the corpus (0: random weights, enough for tests)"))
    seed: int = field(default=0, metadata=_help("the same seed gives the same model"))


@dataclass
class ScoreConfig(DataArgs, RenderArgs, PresetArgs):
    """``iterit score``: IFD of every sample under a causal LM."""

    model: str = field(default="", metadata=_help("a local model folder or a cached Hugging Face id (required)"))
    out: str = field(default="scores.parquet", metadata=_help("scores file, .parquet or .jsonl"))
    max_batch_tokens: int = field(default=16384, metadata=_help("tokens per forward batch (padding included); lower it on out-of-memory"))
    dtype: str = field(default="auto", metadata=_help("auto (bf16 on GPUs that have it, else float32) | float32 | bfloat16 | float16"))
    device: str = field(default="auto", metadata=_help("auto (cuda if present) | cpu | cuda | cuda:N"))
    ifd_form: str = field(default="ppl-ratio", metadata=_help("ppl-ratio (IterIT: exp(loss_cond - loss_prior)) | loss-ratio (Cherry-LLM)"))
    shard_size: int = field(default=1000, metadata=_help("samples per resumable shard: a killed run redoes at most this many"))
    quiet: bool = field(default=False, metadata=_help("no progress bar (for logs)"))


@dataclass
class SelectConfig(DataArgs, PresetArgs):
    """``iterit select``: choose a subset by a strategy over the scores."""

    scores: str | None = field(default=None, metadata=_help("scores from `iterit score` (needed by iterit and ifd)"))
    budget: str = field(default="0.05", metadata=_help("a share of the data (0.05, the paper's setting) or a count (2600)"))
    strategy: str = field(default="iterit", metadata=_help("iterit (IFD x diversity) | ifd | random | longest | full"))
    out: str = field(default="subset.jsonl", metadata=_help("the subset, in the input's own format (.jsonl, .json, .parquet)"))
    threshold: float = field(default=1.0, metadata=_help("candidates need IFD below this (>= 1: the instruction does not help)"))
    decay: float = field(default=0.1, metadata=_help("weight kept by an n-gram per picked response that covers it (0 removes it)"))
    seed: int = field(default=0, metadata=_help("seed for random"))
    source_budget: str | None = field(default=None, metadata=_help("per-source quotas, e.g. code_alpaca=0.2,gsm8k-train=100"))
    ngram_max: int = field(default=3, metadata=_help("TF-IDF uses word 1..N-grams (the reference: 3)"))
    vectorizer: str = field(
        default="tfidf",
        metadata=_help("tfidf (exact vocabulary, scikit-learn's TfidfVectorizer) | hashing (bounded memory, for 500k+ samples)"),
    )
    tfidf_text: str = field(default="response", metadata=_help(TFIDF_TEXT_HELP))
    eos_token: str | None = field(default=None, metadata=_help("the tokenizer's eos string, for --tfidf-text response+eos "
                                                                "(Llama 3: <|end_of_text|>)"))
    budget_rounding: str = field(default="half-up", metadata=_help(BUDGET_ROUNDING_HELP))
    token_budget: int | None = field(default=None, metadata=_help(TOKEN_BUDGET_HELP + "; needs --scores"))
    drop_top_ifd: float = field(default=0.0, metadata=_help(DROP_TOP_IFD_HELP))
    diversity_norm: str = field(default="l2", metadata=_help(DIVERSITY_NORM_HELP))


@dataclass
class EvalConfig(DataArgs, RenderArgs, PresetArgs):
    """``iterit eval``: held-out loss, exact match and containment."""

    model: str = field(default="", metadata=_help("the model folder to evaluate (required)"))
    out: str | None = field(default=None, metadata=_help("write the results as JSON here"))
    metrics: str = field(default="loss,exact,contains", metadata=_help("comma list of loss, exact, contains"))
    max_new_tokens: int = field(default=64, metadata=_help("generation length for exact/contains"))
    batch_size: int = field(default=16, metadata=_help("prompts per generation batch"))
    lm_eval: str | None = field(default=None, metadata=_help("comma list of lm-evaluation-harness tasks (needs iterit[lm-eval])"))
    lm_eval_include: str | None = field(default=None, metadata=_help("folder of your own lm-eval task YAMLs"))
    lm_eval_limit: float | None = field(default=None, metadata=_help("examples per lm-eval task (a share if below 1)"))
    dtype: str = field(default="auto", metadata=_help("auto | float32 | bfloat16 | float16"))
    device: str = field(default="auto", metadata=_help("auto | cpu | cuda"))
    quiet: bool = field(default=False, metadata=_help("no progress bars (for logs)"))


@dataclass
class ReportConfig:
    """``iterit report``: Markdown + HTML with plots for a run folder."""

    run: str = field(default="", metadata=_help("the run folder written by `iterit train` or `iterit demo` (required)"))


@dataclass
class DemoConfig:
    """``iterit demo``: the whole method on embedded known-answer data, on a CPU, in minutes."""

    out: str = field(default="runs/demo", metadata=_help("run folder for the data, the models and the report"))
    quick: bool = field(default=False, metadata=_help("a one-minute smoke run (tiny data, one seed)"))
    seed: int = field(default=0, metadata=_help("the same seed gives the same data, model and selections"))
    strategies: str = field(
        default="iterit,static,ifd,random,random-tokens,full",
        metadata=_help("strategies to compare, comma separated; random-tokens is random at iterit's response tokens "
                       "per epoch (the equal-compute baseline; after iterit)"),
    )
    epochs: int = field(default=3, metadata=_help("epochs per strategy (the paper's 3)"))
    ratio: float = field(default=0.08, metadata=_help("per-epoch budget as a share of the data (5-10%%)"))
    pool: str = field(default="greedy", metadata=_help("greedy (the top u x B of the epoch-0 ranking) | reference (the reference "
                                                        "code's window) | rolling; see `iterit train --help`"))
    cache: str = field(default=".cache/iterit", metadata=_help("where the pretrained base model is cached between runs"))
    overwrite: bool = field(default=False, metadata=_help("write into a folder that is not this demo's, replacing only what the demo writes there"))

"""Build a tiny but real causal LM offline: a byte-level BPE tokenizer, a chat template, a small Llama.

Tests and the demo need a model that loads exactly like any Hugging Face checkpoint
(``AutoModelForCausalLM`` / ``AutoTokenizer``) without downloading anything. This module trains a
byte-level BPE tokenizer with ``tokenizers`` on local text, gives it a chat template with an
end-of-turn token, initialises a few-hundred-thousand-parameter ``LlamaForCausalLM`` from a seed,
optionally pretrains it for a few AdamW steps, and saves both with ``save_pretrained``.

Everything is deterministic for a seed: two builds with the same arguments write the same
tokenizer and the same weights.
"""

from __future__ import annotations

import itertools
import logging
import random
from collections.abc import Iterator, Sequence
from pathlib import Path

from iterit.errors import IterITError

logger = logging.getLogger(__name__)

BOS = "<|bos|>"
END = "<|end|>"  # end of turn, and the tokenizer's eos: generation stops after an assistant turn
PAD = "<|pad|>"
ROLE_TOKENS = {"system": "<|system|>", "user": "<|user|>", "assistant": "<|assistant|>"}
SPECIAL_TOKENS = [BOS, END, PAD, *ROLE_TOKENS.values()]

# Each turn is "<|role|>\n{content}<|end|>\n"; the generation prompt is the assistant header alone.
# Unknown roles raise, as real templates do, instead of rendering something the model never saw.
CHAT_TEMPLATE = (
    "{{ bos_token }}"
    "{% for message in messages %}"
    "{% if message['role'] not in ['system', 'user', 'assistant'] %}"
    "{{ raise_exception('unknown role: ' + message['role']) }}"
    "{% endif %}"
    "{{ '<|' + message['role'] + '|>\n' + message['content'] + '<|end|>\n' }}"
    "{% endfor %}"
    "{% if add_generation_prompt %}{{ '<|assistant|>\n' }}{% endif %}"
)

_NOUNS = (
    "cat dog bird fish horse cow sheep goat mouse lion tiger bear wolf fox rabbit duck owl frog snake bee "
    "tree flower grass leaf river lake sea ocean mountain hill forest desert island valley field garden park "
    "house school library market station bridge road street city village town farm kitchen window door table "
    "chair bed lamp clock book letter story poem song picture map key box bag cup plate bottle basket coin "
    "apple bread cheese rice soup cake milk water tea juice salt sugar egg lemon orange banana grape carrot "
    "teacher student doctor farmer painter writer driver baker singer child friend mother father sister "
    "brother neighbor king queen robot computer phone camera engine wheel train ship plane bicycle rocket "
    "sun moon star cloud rain snow wind storm light shadow fire stone sand metal glass paper wood music "
    "number question answer problem idea reason plan rule game team work time day night morning evening "
    "week month year summer winter spring autumn color shape size list word sentence language history science"
).split()
_VERBS = (
    "sees likes finds helps reads builds follows carries paints counts writes opens closes moves takes gives "
    "makes keeps brings holds watches hears knows learns teaches explains describes answers asks plants "
    "cooks cleans fixes draws sings plays visits chooses compares measures sorts shares remembers forgets"
).split()
_ADJECTIVES = (
    "red green blue yellow white black small large tall short old new young quiet loud bright dark warm "
    "cold soft hard fast slow happy sad kind brave clever simple strange careful busy empty full heavy light "
    "clean fresh sweet sour round square wide narrow early late rich poor gentle calm wild"
).split()
_PLACES = ["in the park", "at home", "near the school", "by the river", "in the morning", "after lunch",
           "before the rain", "at night", "on the hill", "in the kitchen", "every day", "with care"]
_SYLLABLES = ["ka", "lo", "mi", "ren", "ta", "su", "vel", "dor", "an", "is", "bra", "fen", "qui", "zo",
              "mar", "tel", "os", "un", "gri", "pa"]
_QUESTIONS = [
    ("What color is the sky?", "The sky is blue on a clear day."),
    ("Name a fruit.", "An apple is a fruit."),
    ("Write a short greeting.", "Hello! I hope you are having a good day."),
    ("Give a synonym for happy.", "A synonym for happy is glad."),
    ("How many legs does a cat have?", "A cat has four legs."),
    ("Translate 'bonjour' into English.", "'Bonjour' means 'hello' in English."),
]


def builtin_corpus(n_sentences: int = 3000) -> list[str]:
    """A small English-ish corpus generated from word lists and templates, identical on every call.

    It gives the tokenizer ordinary words, invented names, numbers and punctuation to learn a few
    thousand merges from, and the pretraining loop something to fit, without downloading anything.
    """
    rng = random.Random(1234)  # fixed: the built-in corpus (hence the tokenizer) never depends on the seed
    names = sorted({"".join(rng.choices(_SYLLABLES, k=rng.randint(2, 3))).capitalize() for _ in range(400)})
    texts = []
    for _ in range(n_sentences):
        subject = rng.choice([f"the {rng.choice(_NOUNS)}", rng.choice(names)])
        sentence = (f"{subject} {rng.choice(_VERBS)} {rng.randint(2, 999)} {rng.choice(_ADJECTIVES)} "
                    f"{rng.choice(_NOUNS)}s {rng.choice(_PLACES)}.")
        texts.append(sentence[0].upper() + sentence[1:])
    for a, b in itertools.product(range(0, 60, 3), range(1, 40, 2)):
        texts.append(f"Question: what is {a} plus {b}? Answer: {a} plus {b} is {a + b}.")
    texts += [f"Q: {q}\nA: {a}" for q, a in _QUESTIONS]
    return texts


def read_corpus(paths: Sequence[str | Path]) -> list[str]:
    """Read text files (one document per non-empty line), naming the file in any error."""
    texts: list[str] = []
    for path in map(Path, paths):
        try:
            content = path.read_text(encoding="utf-8")
        except FileNotFoundError:
            raise IterITError(f"--corpus {path}: no such file; pass an existing UTF-8 text file") from None
        except UnicodeDecodeError as error:
            raise IterITError(f"--corpus {path}: not valid UTF-8 ({error.reason} at byte {error.start}); "
                              "re-save it as UTF-8") from None
        texts += [line for line in content.splitlines() if line.strip()]
    if not texts:
        raise IterITError(f"--corpus {', '.join(map(str, paths))}: no text found; pass files with some lines of text")
    return texts


def train_tokenizer(texts: Sequence[str], vocab_size: int):
    """Train a byte-level BPE tokenizer and wrap it as a transformers fast tokenizer with a chat template.

    Byte-level BPE covers every string (no unknown tokens), and a fast tokenizer reports character
    offsets, which rendering needs to find response spans.
    """
    from tokenizers import Tokenizer, decoders, models, pre_tokenizers, processors, trainers
    from transformers import PreTrainedTokenizerFast

    tokenizer = Tokenizer(models.BPE())
    tokenizer.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    tokenizer.decoder = decoders.ByteLevel()
    trainer = trainers.BpeTrainer(vocab_size=vocab_size, special_tokens=SPECIAL_TOKENS, show_progress=False,
                                  initial_alphabet=pre_tokenizers.ByteLevel.alphabet())
    tokenizer.train_from_iterator(texts, trainer=trainer)
    # Like Llama, plain `tokenizer(text)` prepends BOS; chat rendering already includes it via the template.
    bos_id = tokenizer.token_to_id(BOS)
    tokenizer.post_processor = processors.TemplateProcessing(
        single=f"{BOS} $A", pair=f"{BOS} $A {BOS} $B", special_tokens=[(BOS, bos_id)])
    wrapped = PreTrainedTokenizerFast(
        tokenizer_object=tokenizer, bos_token=BOS, eos_token=END, pad_token=PAD,
        additional_special_tokens=list(ROLE_TOKENS.values()), model_max_length=4096)
    wrapped.chat_template = CHAT_TEMPLATE
    return wrapped


def build_config(tokenizer, *, hidden_size: int, layers: int, heads: int, max_positions: int):
    """A small Llama configuration whose special token ids match the tokenizer."""
    from transformers import LlamaConfig

    return LlamaConfig(
        vocab_size=len(tokenizer), hidden_size=hidden_size, intermediate_size=4 * hidden_size,
        num_hidden_layers=layers, num_attention_heads=heads, num_key_value_heads=heads,
        max_position_embeddings=max_positions, tie_word_embeddings=True,  # tying halves the parameters
        bos_token_id=tokenizer.bos_token_id, eos_token_id=tokenizer.eos_token_id,
        pad_token_id=tokenizer.pad_token_id)


def pretraining_blocks(tokenizer, texts: Sequence[str], block_size: int) -> list[list[int]]:
    """Pack the texts, each as BOS + tokens + eos, into consecutive blocks of ``block_size`` tokens."""
    encoded = tokenizer(list(texts), add_special_tokens=False)["input_ids"]
    stream = [tok for ids in encoded for tok in (tokenizer.bos_token_id, *ids, tokenizer.eos_token_id)]
    if len(stream) < block_size:
        stream = stream * (block_size // max(len(stream), 1) + 1)  # tiny corpora: repeat to fill one block
    return [stream[i:i + block_size] for i in range(0, len(stream) - block_size + 1, block_size)]


def batches(blocks: list[list[int]], batch_size: int, seed: int) -> Iterator[list[list[int]]]:
    """Endless shuffled mini-batches of blocks, the order fixed by the seed."""
    rng = random.Random(seed)
    while True:
        order = list(range(len(blocks)))
        rng.shuffle(order)
        for i in range(0, len(order), batch_size):
            yield [blocks[j] for j in order[i:i + batch_size]]


def pretrain(model, tokenizer, texts: Sequence[str], *, steps: int, seed: int, learning_rate: float,
             batch_size: int, block_size: int) -> list[float]:
    """Run ``steps`` AdamW steps of next-token prediction on the texts; returns the loss per step."""
    import torch

    blocks = pretraining_blocks(tokenizer, texts, block_size)
    optimizer = torch.optim.AdamW(model.parameters(), lr=learning_rate, weight_decay=0.0)
    losses = []
    model.train()
    for _step, batch in zip(range(steps), batches(blocks, batch_size, seed)):
        ids = torch.tensor(batch)
        loss = model(input_ids=ids, labels=ids).loss
        loss.backward()
        optimizer.step()
        optimizer.zero_grad(set_to_none=True)
        losses.append(loss.item())
    model.eval()
    return losses


def chat_texts(tokenizer) -> list[str]:
    """The built-in question/answer pairs rendered with the chat template, so pretraining also shows turns."""
    conversations = [[{"role": "user", "content": q}, {"role": "assistant", "content": a}] for q, a in _QUESTIONS]
    return [tokenizer.apply_chat_template(c, tokenize=False) for c in conversations]


def build_tiny_model(
    out_dir: str | Path,
    *,
    corpus: Sequence[str | Path] | None = None,
    texts: Sequence[str] | None = None,
    steps: int = 0,
    seed: int = 0,
    vocab_size: int = 2048,
    hidden_size: int = 64,
    layers: int = 2,
    heads: int = 4,
    max_positions: int = 4096,
    learning_rate: float = 3e-3,
    batch_size: int = 8,
    block_size: int = 128,
) -> Path:
    """Train a tokenizer, build a small Llama, optionally pretrain it, and save both to ``out_dir``.

    Args:
        out_dir: where to save; created if missing. Loads back with ``AutoModelForCausalLM`` / ``AutoTokenizer``.
        corpus: UTF-8 text files, one document per non-empty line, for the tokenizer and pretraining.
        texts: documents given in memory, added to ``corpus``. With neither, a built-in templated corpus is used.
        steps: AdamW pretraining steps; 0 keeps the random initialisation (enough for plumbing tests).
        seed: fixes the initial weights and the pretraining batch order.
        vocab_size: BPE vocabulary size including the byte alphabet and special tokens (a few thousand at most).
        hidden_size, layers, heads: the Llama's width, depth and attention heads (``hidden_size % heads == 0``).
        max_positions: the longest sequence the model accepts (RoPE, so it costs no parameters).
        learning_rate, batch_size, block_size: the pretraining loop's AdamW rate, blocks per step, tokens per block.

    Returns:
        ``out_dir`` as a ``Path``.
    """
    import torch

    validate_sizes(vocab_size=vocab_size, hidden_size=hidden_size, layers=layers, heads=heads, steps=steps)
    documents = (read_corpus(corpus) if corpus else []) + list(texts or [])
    documents = documents or builtin_corpus()
    tokenizer = train_tokenizer(documents, vocab_size)
    from transformers import LlamaForCausalLM

    config = build_config(tokenizer, hidden_size=hidden_size, layers=layers, heads=heads,
                          max_positions=max_positions)
    losses: list[float] = []
    with torch.random.fork_rng(devices=[]):  # seed the weights without touching the caller's random state
        torch.manual_seed(seed)
        model = LlamaForCausalLM(config).eval()
        if steps:
            losses = pretrain(model, tokenizer, documents + chat_texts(tokenizer), steps=steps, seed=seed,
                              learning_rate=learning_rate, batch_size=batch_size, block_size=block_size)
            logger.info("pretrained the tiny model for %d steps: loss %.3f -> %.3f", steps, losses[0], losses[-1])
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    model.save_pretrained(out)
    tokenizer.save_pretrained(out)
    write_build_info(out, seed=seed, steps=steps, losses=losses, n_documents=len(documents),
                     n_parameters=sum(p.numel() for p in model.parameters()))
    return out


def validate_sizes(*, vocab_size: int, hidden_size: int, layers: int, heads: int, steps: int) -> None:
    """Reject sizes that cannot build a model, all problems in one message."""
    problems = []
    if vocab_size < 256 + len(SPECIAL_TOKENS):
        problems.append(f"vocab_size={vocab_size} must be >= {256 + len(SPECIAL_TOKENS)} (bytes + special tokens)")
    if hidden_size < 1 or heads < 1 or hidden_size % heads:
        problems.append(f"hidden_size={hidden_size} must be a positive multiple of heads={heads}")
    if (hidden_size // max(heads, 1)) % 2:
        problems.append(f"hidden_size/heads={hidden_size // max(heads, 1)} must be even (rotary embeddings)")
    if layers < 1:
        problems.append(f"layers={layers} must be >= 1")
    if steps < 0:
        problems.append(f"--steps={steps} must be >= 0")
    if problems:
        raise IterITError("tiny model: " + "; ".join(problems))


def write_build_info(out: Path, **info) -> None:
    """Record how the model was built (seed, steps, losses) beside the weights, for the report and for users."""
    from iterit.storage import write_json

    write_json(out / "iterit_tiny_model.json", info)

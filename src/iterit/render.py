"""Samples -> token ids with the exact token span of the response (conditioned and alone).

IFD compares the loss of the response given its prompt with the loss of the response alone, so
every sample is rendered twice:

* the whole conversation, with the tokenizer's chat template (or the built-in Alpaca prompt), and
* the response alone: the template applied to a lone assistant turn (Alpaca: BOS + response + eos).

The response is located by **characters, then tokens**. The template renders the conversation as
text and, separately, the prompt (all turns but the last, plus the generation prompt); the prompt
is a prefix of the full text, so the response starts at the character where the prompt ends. The
span runs to the end of the rendered text, whitespace excluded, so it includes the template's
end-of-turn token(s) (training teaches the model to stop) but not a newline after them. The text is
tokenized once, with character offsets, and the span is every token that overlaps those characters:
from the first token whose end is past the start to the last token that starts before the end.
Nothing is re-tokenized or searched for, so templates that trim whitespace, tokens that merge across
the boundary and response text repeated in the prompt all give the right span.

Truncation (``max_length`` tokens) keeps the prompt whole and cuts the response's end. A prompt that
alone reaches ``max_length`` keeps its last ``max_length`` tokens and leaves no room for the
response: the sample is kept, flagged with a reason, and never scored or selected. The prompt is
not cut to make room for the response because the conditioned loss is only meaningful with the
instruction it is conditioned on: a clipped instruction inflates IFD and would draw selection to
exactly the damaged samples. The response alone is cut to the same response characters, so both
losses are taken over the same text.

``response_end="eos"`` (the reference's training target, ``output + eos_token``) replaces the template's
rendering of the last turn: the text is the prompt with the generation prompt, then the response as written
and the tokenizer's eos; the response alone is the lone turn's header, the response and eos. Scoring and
training then share that one terminator.
"""

from __future__ import annotations

import bisect
import copy
import logging
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

from iterit.data import Sample
from iterit.errors import IterITError

logger = logging.getLogger(__name__)

TEMPLATES = ("auto", "chat", "alpaca", "llama-3.1")
RESPONSE_ENDS = ("template", "eos")
IGNORE_INDEX = -100  # the label PyTorch's cross-entropy (and every HF model) skips
ALPACA_PREAMBLE = ("Below is an instruction that describes a task. "
                   "Write a response that appropriately completes the request.")
# Stanford Alpaca's prompt for records with an input (its PROMPT_DICT["prompt_input"]).
ALPACA_INPUT_PREAMBLE = ("Below is an instruction that describes a task, paired with an input that provides further "
                         "context. Write a response that appropriately completes the request.")
# Meta's Llama 3.1 chat format without tools, for base tokenizers that ship none (the IterIT reference trains
# Llama-3-8B with it): a system block with the knowledge and "today" dates always first, then one
# header + trimmed content + <|eot_id|> per turn.
LLAMA_31_TEMPLATE = (
    "{{ bos_token }}"
    "{% if messages[0]['role'] == 'system' %}{% set system = messages[0]['content'] | trim %}"
    "{% set turns = messages[1:] %}{% else %}{% set system = '' %}{% set turns = messages %}{% endif %}"
    "<|start_header_id|>system<|end_header_id|>\n\nCutting Knowledge Date: December 2023\n"
    "Today Date: 26 Jul 2024\n\n{{ system }}<|eot_id|>"
    "{% for m in turns %}<|start_header_id|>{{ m['role'] }}<|end_header_id|>\n\n{{ m['content'] | trim }}"
    "<|eot_id|>{% endfor %}"
    "{% if add_generation_prompt %}<|start_header_id|>assistant<|end_header_id|>\n\n{% endif %}"
)
BUILTIN_CHAT_TEMPLATES = {"llama-3.1": LLAMA_31_TEMPLATE}
RENDER_BATCH = 1024  # samples rendered and tokenized per batched call: fast, and memory stays flat


@dataclass(slots=True)
class RenderedSample:
    """Token ids of one sample, as the scorer and the trainer see it.

    Attributes:
        input_ids: the whole conversation, rendered with the chat template (or the Alpaca prompt), up to
            the end of the response span (tokens after it, e.g. a newline after the end-of-turn, are dropped).
        span: ``(start, end)`` token positions of the response in ``input_ids``: the first response token
            up to and including the template's end-of-turn token(s). Loss is taken on ``input_ids[start:end]``,
            each predicted from the position before it, so ``start >= 1``.
        prior_ids: the response rendered alone (template applied to a lone assistant turn).
        prior_span: the response's span in ``prior_ids``; ``start >= 1`` as well (a BOS/header precedes it).
        truncated: something was cut to fit ``max_length``.
        reason: why this sample cannot be scored (``None`` when it can), e.g. ``"empty response"``,
            ``"response does not fit max_length (N prompt tokens)"``. Such a sample has an empty span.
    """

    input_ids: list[int]
    span: tuple[int, int]
    prior_ids: list[int]
    prior_span: tuple[int, int]
    truncated: bool = False
    reason: str | None = None

    @property
    def n_response_tokens(self) -> int:
        return self.span[1] - self.span[0]


@dataclass(slots=True)
class RenderedText:
    """A conversation rendered as text, with the response's character span ``text[start:end]``."""

    text: str
    start: int
    end: int
    problem: str | None = None  # set when the template could not render this conversation


def labels_for(rendered: RenderedSample) -> list[int]:
    """Training labels for ``rendered.input_ids``: the token ids inside the response span, -100 elsewhere.

    HF causal LMs shift labels internally, so they are aligned with ``input_ids``; an unscorable sample
    (empty span) gets no label at all.
    """
    start, end = rendered.span
    labels = [IGNORE_INDEX] * len(rendered.input_ids)
    labels[start:end] = rendered.input_ids[start:end]
    return labels


def render_sample(tokenizer: Any, sample: Sample, *, template: str = "auto", max_length: int = 2048,
                  system_prompt: str | None = None, response_end: str = "template") -> RenderedSample:
    """Render one sample; see :func:`render_samples` (use that for many: it batches the tokenizer)."""
    return render_samples(tokenizer, [sample], template=template, max_length=max_length,
                          system_prompt=system_prompt, response_end=response_end)[0]


def render_samples(tokenizer: Any, samples: Sequence[Sample], *, template: str = "auto", max_length: int = 2048,
                   system_prompt: str | None = None, response_end: str = "template") -> list[RenderedSample]:
    """Render samples to token ids with the response span, conditioned and alone, in input order.

    Args:
        tokenizer: a *fast* Hugging Face tokenizer (character offsets are needed to find the span).
        samples: the conversations; the last message of each is the assistant response to score.
        template: ``"chat"`` (the tokenizer's chat template), ``"alpaca"`` (the built-in Alpaca prompt),
            ``"llama-3.1"`` (the built-in Llama 3.1 chat format) or ``"auto"`` (chat when the tokenizer has a
            template, else Alpaca).
        max_length: the most tokens a rendered sequence may have; see the module docstring for what is cut.
        system_prompt: a system message put first in conversations that have none.
        response_end: what ends the response, in training and scoring alike: ``"template"`` (the template's
            end-of-turn token(s)) or ``"eos"`` (the prompt rendered with the generation prompt, then the
            response as written and the tokenizer's eos: the reference's ``output + eos_token``).

    Returns:
        One :class:`RenderedSample` per sample. Samples that cannot be scored (empty response, response
        not fitting, template failure) are kept with an empty span and a ``reason``.

    Raises:
        IterITError: a slow tokenizer, an unknown template, ``"chat"`` without a chat template, or a bad
            ``max_length``.
    """
    validate_options(tokenizer, template, max_length, response_end)
    renderer = make_renderer(tokenizer, template, response_end)
    backend = offsets_backend(tokenizer)
    rendered: list[RenderedSample] = []
    for begin in range(0, len(samples), RENDER_BATCH):
        batch = samples[begin:begin + RENDER_BATCH]
        conversations = [with_system_prompt(sample.messages, system_prompt) for sample in batch]
        texts = renderer.conversations(conversations, [sample.alpaca_fields for sample in batch])
        priors = renderer.responses_alone([conversation[-1] for conversation in conversations])
        full_tokens = backend.encode_batch([t.text for t in texts], add_special_tokens=False)
        prior_tokens = backend.encode_batch([t.text for t in priors], add_special_tokens=False)
        for sample, text, full, prior, prior_enc in zip(batch, texts, full_tokens, priors, prior_tokens):
            rendered.append(assemble(sample, text, full, prior, prior_enc, max_length))
    log_problems(rendered)
    return rendered


# ---------------------------------------------------------------- options


def validate_options(tokenizer: Any, template: str, max_length: int, response_end: str = "template") -> None:
    """Check the settings once, at the door, with the flag the user typed in each message."""
    if template not in TEMPLATES:
        raise IterITError(f"--template {template!r}: unknown template; choose one of {', '.join(TEMPLATES)}")
    if response_end not in RESPONSE_ENDS:
        raise IterITError(f"--response-end {response_end!r}: choose one of {', '.join(RESPONSE_ENDS)}")
    if not isinstance(max_length, int) or max_length < 2:
        raise IterITError(f"--max-length {max_length!r}: must be an integer >= 2 (a prompt token and a response token)")
    if not getattr(tokenizer, "is_fast", False):
        raise IterITError(
            f"tokenizer {type(tokenizer).__name__} ({getattr(tokenizer, 'name_or_path', '')}) is a slow tokenizer "
            "without character offsets, which iterit needs to find response spans; load it with "
            "AutoTokenizer.from_pretrained(..., use_fast=True) (and `pip install tokenizers sentencepiece` "
            "if no fast version loads)")


def make_renderer(tokenizer: Any, template: str, response_end: str = "template") -> ChatRenderer | AlpacaRenderer:
    """The renderer for ``--template`` (and ``--response-end`` for chat templates)."""
    if template in BUILTIN_CHAT_TEMPLATES:
        return ChatRenderer(tokenizer, chat_template=BUILTIN_CHAT_TEMPLATES[template], response_end=response_end)
    if resolve_template(tokenizer, template) == "chat":
        return ChatRenderer(tokenizer, response_end=response_end)
    return AlpacaRenderer(tokenizer)


def resolve_template(tokenizer: Any, template: str) -> str:
    """``"chat"`` or ``"alpaca"``: what ``"auto"`` means for this tokenizer, or the user's explicit choice."""
    has_chat_template = bool(getattr(tokenizer, "chat_template", None))
    if template == "chat" and not has_chat_template:
        raise IterITError(f"--template chat: tokenizer {getattr(tokenizer, 'name_or_path', '')!r} has no chat "
                          "template; use --template alpaca (or auto), or a tokenizer with a chat template")
    if template == "auto":
        return "chat" if has_chat_template else "alpaca"
    return template


def offsets_backend(tokenizer: Any) -> Any:
    """The fast tokenizer's Rust backend, without truncation or padding, for batched encoding with offsets.

    Calling the backend directly skips ``BatchEncoding``'s per-token Python conversion (about a third of
    the time); a copy is made only if the tokenizer file configured truncation or padding, which would
    silently change the ids.
    """
    backend = tokenizer.backend_tokenizer
    if backend.truncation is None and backend.padding is None:
        return backend
    backend = copy.deepcopy(backend)
    backend.no_truncation()
    backend.no_padding()
    return backend


def with_system_prompt(messages: list[dict[str, str]], system_prompt: str | None) -> list[dict[str, str]]:
    """The conversation with ``system_prompt`` put first, unless it has a system message already."""
    if system_prompt is None or (messages and messages[0]["role"] == "system"):
        return messages
    return [{"role": "system", "content": system_prompt}, *messages]


# ---------------------------------------------------------------- templates -> text


def response_text_span(full: str, prompt: str) -> RenderedText:
    """The response's characters in ``full`` given the rendered ``prompt`` (everything before the response).

    The prompt should be a prefix of the full text; a template that renders earlier turns differently once
    a later turn exists breaks that, and then the span starts at the longest common prefix (the first
    character where the two differ), which is where the template's output starts to depend on the response.
    """
    start = len(prompt) if full.startswith(prompt) else common_prefix_length(full, prompt)
    end = len(full.rstrip())
    return RenderedText(full, start, max(start, end))


def common_prefix_length(a: str, b: str) -> int:
    n = min(len(a), len(b))
    return next((i for i in range(n) if a[i] != b[i]), n)


class ChatRenderer:
    """Renders with the tokenizer's own chat template (``apply_chat_template``, batched for speed).

    The response alone is the template applied to a lone assistant turn, so its header (and BOS) precede
    the response. Where that turn's content starts is the longest common prefix of two lone turns whose
    contents differ from their first character (transformers refuses an empty conversation, so the
    generation prompt alone cannot be rendered everywhere). When the template refuses a lone assistant
    turn (many require a user turn first), the fallback is BOS + response + eos, BOS replaced by eos where
    the tokenizer has none, so a token always precedes the response.
    """

    def __init__(self, tokenizer: Any, *, chat_template: str | None = None, response_end: str = "template"):
        self.tokenizer = tokenizer
        self.chat_template = chat_template  # None: the tokenizer's own
        self.ends_with_eos = response_end == "eos"
        probes = [self._try_render([{"role": "assistant", "content": c}], add_generation_prompt=False)
                  for c in ("A", "B")]
        self.lone_turn_prompt = (None if None in probes
                                 else probes[0][: common_prefix_length(probes[0], probes[1])])

    def conversations(self, conversations: list[list[dict[str, str]]],
                      alpaca_fields: Sequence[Any] | None = None) -> list[RenderedText]:
        """The conversations' texts and response spans (``alpaca_fields`` concern the Alpaca prompt only)."""
        try:
            prompts = self.render_batch([c[:-1] for c in conversations], add_generation_prompt=True)
            fulls = self.full_texts(conversations, prompts)
        except Exception:  # one bad conversation fails the batch: find it by rendering one by one
            return [self.conversation(c) for c in conversations]
        return [response_text_span(full, prompt) for full, prompt in zip(fulls, prompts)]

    def conversation(self, messages: list[dict[str, str]]) -> RenderedText:
        try:
            prompt = self.render_batch([messages[:-1]], add_generation_prompt=True)[0]
            full = self.full_texts([messages], [prompt])[0]
        except Exception as error:  # the template's own message tells the user what it refused
            return RenderedText("", 0, 0, problem=f"chat template failed: {type(error).__name__}: {error}")
        return response_text_span(full, prompt)

    def full_texts(self, conversations: list[list[dict[str, str]]], prompts: list[str]) -> list[str]:
        """Whole conversations: the template's rendering, or (``response_end="eos"``) prompt + response + eos."""
        if not self.ends_with_eos:
            return self.render_batch(conversations, add_generation_prompt=False)
        eos = self.tokenizer.eos_token or ""
        return [prompt + conversation[-1]["content"] + eos for prompt, conversation in zip(prompts, conversations)]

    def responses_alone(self, responses: list[dict[str, str]]) -> list[RenderedText]:
        contents = [response["content"] for response in responses]
        if not self.lone_turn_prompt:
            return [separator_wrapped(self.tokenizer, content) for content in contents]
        if self.ends_with_eos:  # the lone turn's header, then the response as the conversation ends it
            eos = self.tokenizer.eos_token or ""
            return [response_text_span(self.lone_turn_prompt + content + eos, self.lone_turn_prompt)
                    for content in contents]
        turns = [[{"role": "assistant", "content": content}] for content in contents]
        try:
            fulls: list[str | None] = list(self.render_batch(turns, add_generation_prompt=False))
        except Exception:  # a content-dependent refusal: find which turns by rendering one by one
            fulls = [self._try_render(turn, add_generation_prompt=False) for turn in turns]
        return [self.lone_turn(full, content) for full, content in zip(fulls, contents)]

    def lone_turn(self, full: str | None, content: str) -> RenderedText:
        """The lone assistant turn's span, or the BOS-wrapped fallback for the rare turn the template refuses."""
        text = None if full is None else response_text_span(full, self.lone_turn_prompt)
        return text if text is not None and text.start > 0 else separator_wrapped(self.tokenizer, content)

    def render_batch(self, conversations: list[list[dict[str, str]]], *, add_generation_prompt: bool) -> list[str]:
        if not conversations:
            return []
        rendered = self.tokenizer.apply_chat_template(conversations, tokenize=False, chat_template=self.chat_template,
                                                      add_generation_prompt=add_generation_prompt)
        return list(rendered)

    def _try_render(self, messages: list[dict[str, str]], *, add_generation_prompt: bool) -> str | None:
        """The template's text for ``messages``, or None where the template refuses them."""
        try:
            return self.tokenizer.apply_chat_template(messages, tokenize=False, chat_template=self.chat_template,
                                                      add_generation_prompt=add_generation_prompt)
        except Exception:  # a template may refuse a lone assistant turn in any way it likes
            return None


def separator_wrapped(tokenizer: Any, response: str) -> RenderedText:
    """BOS + response + eos: the response alone, with a token before it to predict its first token from.

    Where the tokenizer has no BOS, eos serves as the separator (as between documents in pretraining);
    where it has neither, a blank line does.
    """
    opener = tokenizer.bos_token or tokenizer.eos_token or "\n\n"
    text = opener + response + (tokenizer.eos_token or "")
    return RenderedText(text, len(opener), len(text.rstrip()))


class AlpacaRenderer:
    """The built-in Alpaca prompt for tokenizers without a chat template.

    ``{BOS}{preamble}\\n\\n### Instruction:\\n{user}\\n\\n### Response:\\n{response}{eos}``. A record with an
    input gets Stanford Alpaca's own form: the paired-input preamble and an ``### Input:`` block after the
    instruction. A system message replaces the preamble. Multi-turn conversations repeat the Instruction/Response blocks, earlier
    responses followed by a blank line (as LLaMA-Factory's alpaca template does), so every earlier turn
    becomes part of the prompt and only the last response is scored. The response alone is BOS + response
    + eos (see :func:`separator_wrapped`), as the IFD reference computes it.
    """

    HEADERS = {"user": "### Instruction:\n", "assistant": "### Response:\n"}

    def __init__(self, tokenizer: Any):
        self.tokenizer = tokenizer

    def conversations(self, conversations: list[list[dict[str, str]]],
                      alpaca_fields: Sequence[tuple[str, str] | None] | None = None) -> list[RenderedText]:
        fields = alpaca_fields or [None] * len(conversations)
        return [self.conversation(messages, pair) for messages, pair in zip(conversations, fields)]

    def conversation(self, messages: list[dict[str, str]], fields: tuple[str, str] | None = None) -> RenderedText:
        """One conversation; ``fields`` = ``(instruction, input)`` renders the single user turn with ``### Input:``."""
        users = [k for k, m in enumerate(messages) if m["role"] == "user"]
        paired = fields is not None and len(users) == 1
        parts = [self.tokenizer.bos_token or ""]
        if not any(m["role"] == "system" for m in messages):
            parts.append((ALPACA_INPUT_PREAMBLE if paired else ALPACA_PREAMBLE) + "\n\n")
        for message in messages[:-1]:
            if paired and message["role"] == "user":
                parts.append(f"{self.HEADERS['user']}{fields[0]}\n\n### Input:\n{fields[1]}\n\n")
                continue
            parts.append(self.block(message) + "\n\n")
        parts.append(self.HEADERS["assistant"])
        prompt = "".join(parts)
        text = prompt + messages[-1]["content"] + (self.tokenizer.eos_token or "")
        return RenderedText(text, len(prompt), max(len(prompt), len(text.rstrip())))

    def block(self, message: dict[str, str]) -> str:
        role = message["role"]
        header = "" if role == "system" else self.HEADERS.get(role, f"### {role.capitalize()}:\n")
        return header + message["content"]

    def responses_alone(self, responses: list[dict[str, str]]) -> list[RenderedText]:
        return [separator_wrapped(self.tokenizer, r["content"]) for r in responses]


# ---------------------------------------------------------------- text + offsets -> token spans


def token_span(encoding: Any, start: int, end: int) -> tuple[int, int]:
    """Tokens overlapping characters ``[start, end)`` of an encoded text, as an exclusive ``(first, stop)``.

    From the first token ending after ``start`` to the last token starting before ``end``. A token merging
    the prompt's last characters with the response's first belongs to the response: it is the first token
    the model has to produce. The Rust-side ``char_to_token`` finds both ends without converting every
    offset to Python; neighbours that share a character (bytes of one character split over two tokens)
    are added; characters that no token covers (dropped by a normalizer) fall back to the offsets.
    """
    first = encoding.char_to_token(start) if end > start else None
    last = encoding.char_to_token(end - 1) if end > start else None
    if first is None or last is None:
        return token_span_from_offsets(encoding.offsets, start, end)
    while first > 0 and encoding.token_to_chars(first - 1)[1] > start:
        first -= 1
    while last + 1 < len(encoding) and encoding.token_to_chars(last + 1)[0] < end:
        last += 1
    return first, last + 1


def token_span_from_offsets(offsets: Sequence[tuple[int, int]], start: int, end: int) -> tuple[int, int]:
    """:func:`token_span` by bisection over all offsets (they are monotone for every fast tokenizer)."""
    first = bisect.bisect_right([b for _, b in offsets], start)
    stop = bisect.bisect_left([a for a, _ in offsets], end)
    return first, max(first, stop)


def assemble(sample: Sample, text: RenderedText, full: Any, prior: RenderedText, prior_enc: Any,
             max_length: int) -> RenderedSample:
    """The rendered sample from both encodings: spans, truncation, and why it cannot be scored."""
    if text.problem:
        return RenderedSample([], (0, 0), [], (0, 0), reason=text.problem)
    start, stop = token_span(full, text.start, text.end)
    kept = fit_conditioned(full.ids[:stop], start, max_length)
    prior_start, prior_stop = token_span(prior_enc, prior.start, prior.end)
    n_kept = kept.span[1] - kept.span[0]
    cut_stop = prior_stop
    if 0 < n_kept < stop - start:  # the response was cut: keep the same part of it when alone
        cut_stop = same_response_cut(full, start, n_kept, text, prior_enc, prior_start, prior)
    prior_ids, prior_span, prior_cut = fit_prior(prior_enc.ids[:cut_stop], prior_start, max_length)
    prior_cut = prior_cut or cut_stop < prior_stop
    reason = unscorable_reason(sample, kept, prior_span)
    if reason:  # an unscorable sample carries an empty span, so nothing trains or scores on it
        return RenderedSample(kept.ids, (kept.span[0],) * 2, prior_ids, (prior_span[0],) * 2,
                              truncated=kept.truncated or prior_cut, reason=reason)
    return RenderedSample(kept.ids, kept.span, prior_ids, prior_span, kept.truncated or prior_cut)


def same_response_cut(full: Any, start: int, n_kept: int, text: RenderedText, prior_enc: Any, prior_start: int,
                      prior: RenderedText) -> int:
    """Where to cut the response alone so it keeps what the conditioned sequence kept.

    Usually the response's tokens are the same in both renderings, and exactly ``n_kept`` of them are
    kept. Where they differ (a token merged across the boundary), the cut falls at the same character;
    tokens, not characters, come first because bytes of one character split over two tokens share it.
    """
    kept_ids = full.ids[start:start + n_kept]
    if prior_enc.ids[prior_start:prior_start + n_kept] == kept_ids:
        return prior_start + n_kept
    kept_chars = full.token_to_chars(start + n_kept - 1)[1] - text.start
    return token_span(prior_enc, prior.start, min(prior.end, prior.start + kept_chars))[1]


@dataclass(slots=True)
class Kept:
    """What truncation kept of the conditioned sequence."""

    ids: list[int]
    span: tuple[int, int]
    truncated: bool
    reason: str | None = None


def fit_conditioned(ids: list[int], start: int, max_length: int) -> Kept:
    """Keep the whole prompt and the start of the response; a prompt alone too long keeps its end only."""
    if len(ids) <= max_length:
        return Kept(ids, (start, len(ids)), truncated=False)
    if start < max_length:
        return Kept(ids[:max_length], (start, max_length), truncated=True)
    dropped = start - max_length
    return Kept(ids[dropped:start], (max_length, max_length), truncated=True,
                reason=f"response does not fit max_length ({start} prompt tokens)")


def fit_prior(ids: list[int], start: int, max_length: int) -> tuple[list[int], tuple[int, int], bool]:
    """The response alone, cut at ``max_length`` (its header is short, so only the response's end goes)."""
    if len(ids) <= max_length:
        return ids, (start, len(ids)), False
    return ids[:max_length], (min(start, max_length), max_length), True


def unscorable_reason(sample: Sample, kept: Kept, prior_span: tuple[int, int]) -> str | None:
    """Why a sample cannot be scored, the most basic problem first, or None."""
    if not sample.response.strip():
        return "empty response"
    if kept.reason:
        return kept.reason
    if kept.span[0] < 1 or prior_span[0] < 1:
        return "no token precedes the response (the template renders it first)"
    if kept.span[1] <= kept.span[0] or prior_span[1] <= prior_span[0]:
        return "response renders to no tokens"
    return None


def log_problems(rendered: Sequence[RenderedSample]) -> None:
    """One summary line for truncated and unscorable samples (they are kept; the reason is per sample)."""
    truncated = sum(r.truncated for r in rendered)
    unscorable = [r.reason for r in rendered if r.reason]
    if truncated:
        logger.info("%d of %d samples were truncated to fit max_length", truncated, len(rendered))
    if unscorable:
        logger.warning("%d of %d samples cannot be scored (first: %s)", len(unscorable), len(rendered),
                       unscorable[0])

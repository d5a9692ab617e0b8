"""Response spans, checked token by token on hand-made conversations, templates and truncations."""

from __future__ import annotations

from pathlib import Path

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from transformers import AutoTokenizer, ByT5Tokenizer

import iterit.render as render
from iterit.data import Sample
from iterit.errors import IterITError
from iterit.render import (
    ALPACA_INPUT_PREAMBLE,
    ALPACA_PREAMBLE,
    IGNORE_INDEX,
    labels_for,
    render_sample,
    render_samples,
)

BOS, END = "<|bos|>", "<|end|>"
TRIMMING_TEMPLATE = (
    "{{ bos_token }}{% for m in messages %}<|{{ m['role'] }}|>\n{{ m['content'] | trim }}<|end|>\n{% endfor %}"
    "{% if add_generation_prompt %}<|assistant|>\n{% endif %}")
# "Assistant: " ends with a space that byte-level BPE glues to the response's first word (" plus").
SPACE_TEMPLATE = (
    "{{ bos_token }}{% for m in messages %}{% if m['role'] == 'user' %}User: {{ m['content'] }}\n"
    "{% else %}Assistant: {{ m['content'] }}<|end|>\n{% endif %}{% endfor %}"
    "{% if add_generation_prompt %}Assistant: {% endif %}")
USER_FIRST_TEMPLATE = (
    "{% if messages[0]['role'] != 'user' %}{{ raise_exception('conversations must start with a user turn') }}"
    "{% endif %}{{ bos_token }}{% for m in messages %}<|{{ m['role'] }}|>\n{{ m['content'] }}<|end|>\n"
    "{% endfor %}{% if add_generation_prompt %}<|assistant|>\n{% endif %}")
NO_SYSTEM_TEMPLATE = (
    "{% for m in messages %}{% if m['role'] == 'system' %}{{ raise_exception('System role not supported') }}"
    "{% endif %}<|{{ m['role'] }}|>\n{{ m['content'] }}<|end|>\n{% endfor %}"
    "{% if add_generation_prompt %}<|assistant|>\n{% endif %}")
# The generation prompt ends in a blank line the rendered assistant turn does not have: not a prefix.
NOT_A_PREFIX_TEMPLATE = (
    "{{ bos_token }}{% for m in messages %}<|{{ m['role'] }}|>\n{{ m['content'] }}<|end|>\n{% endfor %}"
    "{% if add_generation_prompt %}<|assistant|>\n\n{% endif %}")


def sample(*turns: str, system: str | None = None, id: str = "s") -> Sample:
    messages = [{"role": "system", "content": system}] if system is not None else []
    messages += [{"role": ("user", "assistant")[i % 2], "content": text} for i, text in enumerate(turns)]
    return Sample(id=id, messages=messages, source="t", format="messages", origin=0)


def split(tokenizer, ids: list[int], span: tuple[int, int]) -> tuple[str, str, str]:
    """Decoded text before, inside and after the span; exact strings pin the span to the token."""
    start, end = span
    return tokenizer.decode(ids[:start]), tokenizer.decode(ids[start:end]), tokenizer.decode(ids[end:])


def pieces(tokenizer, ids: list[int]) -> list[str]:
    return [tokenizer.decode([i]) for i in ids]


@pytest.fixture(scope="module")
def model_dir(tiny_model_dir: Path) -> Path:
    return tiny_model_dir


@pytest.fixture()
def tokenizer(model_dir: Path):
    """A fresh tokenizer per test, so tests may swap its chat template."""
    return AutoTokenizer.from_pretrained(model_dir)


def test_span_is_the_response_and_its_end_of_turn_token(tokenizer) -> None:
    rendered = render_sample(tokenizer, sample("What is 3 plus 5?", "3 plus 5 is 8."))
    before, inside, after = split(tokenizer, rendered.input_ids, rendered.span)
    assert before == f"{BOS}<|user|>\nWhat is 3 plus 5?{END}\n<|assistant|>\n"
    assert inside == f"3 plus 5 is 8.{END}"
    assert after == ""  # the newline after the end-of-turn token is not part of the sequence
    assert pieces(tokenizer, rendered.input_ids[rendered.span[0] - 1:rendered.span[0] + 1]) == ["\n", "3"]
    assert rendered.input_ids[rendered.span[1] - 1] == tokenizer.eos_token_id
    assert (rendered.truncated, rendered.reason) == (False, None)


def test_prior_is_the_template_applied_to_a_lone_assistant_turn(tokenizer) -> None:
    rendered = render_sample(tokenizer, sample("What is 3 plus 5?", "3 plus 5 is 8."))
    before, inside, after = split(tokenizer, rendered.prior_ids, rendered.prior_span)
    assert (before, inside, after) == (f"{BOS}<|assistant|>\n", f"3 plus 5 is 8.{END}", "")
    cond = rendered.input_ids[rendered.span[0]:rendered.span[1]]
    assert rendered.prior_ids[rendered.prior_span[0]:rendered.prior_span[1]] == cond


def test_whitespace_trimming_template_starts_the_span_at_the_trimmed_text(tokenizer) -> None:
    tokenizer.chat_template = TRIMMING_TEMPLATE
    rendered = render_sample(tokenizer, sample("  Add 3 and 5.\n", "\n\n   3 plus 5 is 8.  \n"))
    before, inside, _ = split(tokenizer, rendered.input_ids, rendered.span)
    assert before == f"{BOS}<|user|>\nAdd 3 and 5.{END}\n<|assistant|>\n"
    assert inside == f"3 plus 5 is 8.{END}"
    assert split(tokenizer, rendered.prior_ids, rendered.prior_span)[1] == f"3 plus 5 is 8.{END}"


def test_response_text_repeated_in_the_prompt_is_not_taken_for_the_response(tokenizer) -> None:
    rendered = render_sample(tokenizer, sample("Say exactly: 3 plus 5 is 8.", "3 plus 5 is 8."))
    before, inside, _ = split(tokenizer, rendered.input_ids, rendered.span)
    assert before == f"{BOS}<|user|>\nSay exactly: 3 plus 5 is 8.{END}\n<|assistant|>\n"
    assert inside == f"3 plus 5 is 8.{END}"


def test_token_merging_across_the_boundary_belongs_to_the_response(tokenizer) -> None:
    tokenizer.chat_template = SPACE_TEMPLATE
    assert pieces(tokenizer, tokenizer(" plus", add_special_tokens=False)["input_ids"]) == [" plus"]
    rendered = render_sample(tokenizer, sample("Add 5.", "plus 5"))
    before, inside, _ = split(tokenizer, rendered.input_ids, rendered.span)
    # The prompt ends with "Assistant: " but the space is inside the first response token " plus".
    assert before == f"{BOS}User: Add 5.\nAssistant:"
    assert pieces(tokenizer, rendered.input_ids[rendered.span[0]:rendered.span[1]]) == [" plus", " 5", END]


def test_multi_turn_spans_only_the_last_assistant_turn(tokenizer) -> None:
    conversation = sample("Say it.", "3 plus 5 is 8.", "Again, please.", "3 plus 5 is 8.")
    rendered = render_sample(tokenizer, conversation)
    before, inside, _ = split(tokenizer, rendered.input_ids, rendered.span)
    assert before == (f"{BOS}<|user|>\nSay it.{END}\n<|assistant|>\n3 plus 5 is 8.{END}\n"
                      f"<|user|>\nAgain, please.{END}\n<|assistant|>\n")
    assert inside == f"3 plus 5 is 8.{END}"


def test_newlines_inside_the_response_stay_in_the_span(tokenizer) -> None:
    rendered = render_sample(tokenizer, sample("List two.", "one\ntwo\n\n"))
    assert split(tokenizer, rendered.input_ids, rendered.span)[1] == f"one\ntwo\n\n{END}"


def test_system_prompt_is_added_once(tokenizer) -> None:
    added = render_sample(tokenizer, sample("Hi.", "Hello."), system_prompt="Be brief.")
    kept = render_sample(tokenizer, sample("Hi.", "Hello.", system="Be kind."), system_prompt="Be brief.")
    assert split(tokenizer, added.input_ids, added.span)[0].startswith(f"{BOS}<|system|>\nBe brief.{END}\n<|user|>")
    before = split(tokenizer, kept.input_ids, kept.span)[0]
    assert "Be kind." in before and "Be brief." not in before


def test_prompt_that_is_not_a_prefix_falls_back_to_the_common_prefix(tokenizer) -> None:
    tokenizer.chat_template = NOT_A_PREFIX_TEMPLATE
    rendered = render_sample(tokenizer, sample("Hi.", "Hello there."))
    before, inside, _ = split(tokenizer, rendered.input_ids, rendered.span)
    assert (before, inside) == (f"{BOS}<|user|>\nHi.{END}\n<|assistant|>\n", f"Hello there.{END}")


def test_template_refusing_a_lone_assistant_turn_gives_bos_response_eos_prior(tokenizer) -> None:
    tokenizer.chat_template = USER_FIRST_TEMPLATE
    rendered = render_sample(tokenizer, sample("Hi.", "Hello there."))
    assert split(tokenizer, rendered.input_ids, rendered.span)[1] == f"Hello there.{END}"
    assert split(tokenizer, rendered.prior_ids, rendered.prior_span) == (BOS, f"Hello there.{END}", "")


def test_template_failure_marks_only_that_sample(tokenizer, monkeypatch: pytest.MonkeyPatch) -> None:
    tokenizer.chat_template = NO_SYSTEM_TEMPLATE
    monkeypatch.setattr(render, "RENDER_BATCH", 2)  # the failing sample shares a batch with a good one
    samples = [sample("Hi.", "Hello.", id="a"), sample("Hi.", "Hello.", system="Be kind.", id="b"),
               sample("Bye.", "Goodbye.", id="c")]
    rendered = render_samples(tokenizer, samples)
    assert [r.reason for r in rendered][::2] == [None, None]
    assert rendered[1].reason.startswith("chat template failed:") and "System role not supported" in rendered[1].reason
    assert rendered[1].n_response_tokens == 0
    assert split(tokenizer, rendered[2].input_ids, rendered[2].span) == ("<|user|>\nBye.<|end|>\n<|assistant|>\n",
                                                                         f"Goodbye.{END}", "")


def test_batches_give_the_same_result_as_one_call(tokenizer, monkeypatch: pytest.MonkeyPatch) -> None:
    samples = [sample(f"Question {i}?", f"Answer {i} " * i, id=str(i)) for i in range(7)]
    whole = render_samples(tokenizer, samples)
    monkeypatch.setattr(render, "RENDER_BATCH", 3)
    assert render_samples(tokenizer, samples) == whole
    assert [render_sample(tokenizer, s) for s in samples] == whole


def test_empty_response_is_kept_and_flagged(tokenizer) -> None:
    for response in ("", "  \n"):
        rendered = render_sample(tokenizer, sample("Say nothing.", response))
        assert rendered.reason == "empty response"
        assert rendered.n_response_tokens == 0
        assert rendered.prior_span[0] == rendered.prior_span[1]
        assert split(tokenizer, rendered.input_ids, rendered.span)[0].endswith("<|assistant|>\n")


class TestTruncation:
    PROMPT = "Please repeat these words: the red house, the blue tree and the green garden."
    RESPONSE = "The red house, the blue tree and the green garden, all three of them."

    @pytest.fixture()
    def whole(self, tokenizer):
        rendered = render_sample(tokenizer, sample(self.PROMPT, self.RESPONSE))
        assert rendered.span[0] > 10 and rendered.n_response_tokens > 10
        return rendered

    def test_exact_fit_is_not_truncated(self, tokenizer, whole) -> None:
        assert render_sample(tokenizer, sample(self.PROMPT, self.RESPONSE), max_length=len(whole.input_ids)) == whole

    def test_response_is_cut_at_its_end_and_the_prior_keeps_the_same_text(self, tokenizer, whole) -> None:
        start = whole.span[0]
        cut = render_sample(tokenizer, sample(self.PROMPT, self.RESPONSE), max_length=start + 4)
        assert cut.input_ids == whole.input_ids[:start + 4]
        assert cut.span == (start, start + 4)
        assert (cut.truncated, cut.reason) == (True, None)
        kept_text = tokenizer.decode(cut.input_ids[start:])
        assert kept_text == tokenizer.decode(whole.input_ids[start:start + 4])
        assert split(tokenizer, cut.prior_ids, cut.prior_span) == (f"{BOS}<|assistant|>\n", kept_text, "")

    def test_prior_with_other_tokens_is_cut_at_the_same_character(self, tokenizer) -> None:
        # The conversation's first response token is " plus" (merged with the prompt's space); alone,
        # after BOS (this template refuses a lone assistant turn), it is "plus": the cut follows characters.
        tokenizer.chat_template = USER_FIRST_TEMPLATE.split("{{ bos_token }}")[0] + SPACE_TEMPLATE
        whole = render_sample(tokenizer, sample("Add.", "plus 5 plus 5 plus 5"))
        cut = render_sample(tokenizer, sample("Add.", "plus 5 plus 5 plus 5"), max_length=whole.span[0] + 2)
        assert pieces(tokenizer, cut.input_ids[cut.span[0]:]) == [" plus", " 5"]
        assert split(tokenizer, cut.prior_ids, cut.prior_span) == (BOS, "plus 5", "")
        assert cut.truncated and cut.reason is None

    def test_response_that_does_not_fit_is_flagged_and_the_prompt_keeps_its_end(self, tokenizer, whole) -> None:
        start = whole.span[0]
        for max_length in (start, start - 5):
            cut = render_sample(tokenizer, sample(self.PROMPT, self.RESPONSE), max_length=max_length)
            assert cut.reason == f"response does not fit max_length ({start} prompt tokens)"
            assert cut.truncated
            assert cut.input_ids == whole.input_ids[start - max_length:start]  # beginning dropped
            assert cut.span == (max_length, max_length)
            assert cut.prior_span[0] == cut.prior_span[1]

    def test_labels_follow_the_kept_span(self, tokenizer, whole) -> None:
        start = whole.span[0]
        cut = render_sample(tokenizer, sample(self.PROMPT, self.RESPONSE), max_length=start + 2)
        assert labels_for(cut) == [IGNORE_INDEX] * start + cut.input_ids[start:]
        unfit = render_sample(tokenizer, sample(self.PROMPT, self.RESPONSE), max_length=start)
        assert labels_for(unfit) == [IGNORE_INDEX] * start


    def test_max_length_help_says_what_truncation_does(self) -> None:
        """The help users read (flag and shipped YAML) describes the behaviour the tests above pin down."""
        import dataclasses

        from iterit.config import RenderArgs

        text = next(f for f in dataclasses.fields(RenderArgs) if f.name == "max_length").metadata["help"]
        assert "prompt is kept whole" in text and "response's end is cut" in text and "cannot be scored" in text
        examples = Path(__file__).parent.parent / "examples"
        for path in examples.glob("*.yaml"):
            assert "cut from their start" not in path.read_text(encoding="utf-8"), path


class TestAlpaca:
    def test_auto_uses_alpaca_without_a_chat_template(self, tokenizer) -> None:
        tokenizer.chat_template = None
        rendered = render_sample(tokenizer, sample("What is 3 plus 5?", "3 plus 5 is 8."))
        before, inside, after = split(tokenizer, rendered.input_ids, rendered.span)
        assert before == f"{BOS}{ALPACA_PREAMBLE}\n\n### Instruction:\nWhat is 3 plus 5?\n\n### Response:\n"
        assert (inside, after) == (f"3 plus 5 is 8.{END}", "")
        # The prior is the response alone, BOS before it so its first token is predicted too.
        assert split(tokenizer, rendered.prior_ids, rendered.prior_span) == (BOS, f"3 plus 5 is 8.{END}", "")

    def test_multi_turn_repeats_the_blocks_and_a_system_message_replaces_the_preamble(self, tokenizer) -> None:
        conversation = sample("Say it.", "3 plus 5 is 8.", "Again.", "3 plus 5 is 8.", system="Be brief.")
        rendered = render_sample(tokenizer, conversation, template="alpaca")
        before, inside, _ = split(tokenizer, rendered.input_ids, rendered.span)
        assert before == (f"{BOS}Be brief.\n\n### Instruction:\nSay it.\n\n### Response:\n3 plus 5 is 8.\n\n"
                          "### Instruction:\nAgain.\n\n### Response:\n")
        assert inside == f"3 plus 5 is 8.{END}"

    def test_trailing_whitespace_of_the_response_stays_before_eos(self, tokenizer) -> None:
        rendered = render_sample(tokenizer, sample("Go.", "Done.\n"), template="alpaca")
        assert split(tokenizer, rendered.input_ids, rendered.span)[1] == f"Done.\n{END}"

    def test_without_bos_the_prompt_starts_bare_and_eos_precedes_the_response_alone(self, tokenizer) -> None:
        tokenizer.bos_token = None
        rendered = render_sample(tokenizer, sample("Go.", "Done."), template="alpaca")
        assert split(tokenizer, rendered.input_ids, rendered.span)[0].startswith(ALPACA_PREAMBLE)
        assert split(tokenizer, rendered.prior_ids, rendered.prior_span) == (END, f"Done.{END}", "")

    def test_a_sample_with_an_input_gets_the_canonical_input_block(self, tokenizer) -> None:
        """Stanford Alpaca's prompt_input: the paired-input preamble and a ### Input: block."""
        paired = Sample(id="a", messages=[{"role": "user", "content": "Translate to French.\n\ncat"},
                                          {"role": "assistant", "content": "chat"}],
                        source="t", format="alpaca", origin=0, alpaca_fields=("Translate to French.", "cat"))
        rendered = render_sample(tokenizer, paired, template="alpaca")
        before, inside, _ = split(tokenizer, rendered.input_ids, rendered.span)
        assert ALPACA_INPUT_PREAMBLE == ("Below is an instruction that describes a task, paired with an input that "
                                         "provides further context. Write a response that appropriately completes "
                                         "the request.")
        assert before == (f"{BOS}{ALPACA_INPUT_PREAMBLE}\n\n### Instruction:\nTranslate to French.\n\n"
                          "### Input:\ncat\n\n### Response:\n")
        assert inside == f"chat{END}"

    def test_chat_without_a_chat_template_names_the_fix(self, tokenizer) -> None:
        tokenizer.chat_template = None
        with pytest.raises(IterITError, match="--template chat: .*has no chat template; use --template alpaca"):
            render_sample(tokenizer, sample("Hi.", "Hello."), template="chat")


def test_bad_options_and_slow_tokenizers_raise_iterit_errors(tokenizer) -> None:
    with pytest.raises(IterITError, match="--template 'vicuna': unknown template; choose one of auto, chat, alpaca"):
        render_sample(tokenizer, sample("Hi.", "Hello."), template="vicuna")
    with pytest.raises(IterITError, match="--max-length 1: must be an integer >= 2"):
        render_sample(tokenizer, sample("Hi.", "Hello."), max_length=1)
    with pytest.raises(IterITError, match="slow tokenizer without character offsets.*use_fast=True"):
        render_sample(ByT5Tokenizer(), sample("Hi.", "Hello."))


TEXT = st.text(alphabet=st.characters(min_codepoint=32, max_codepoint=126, exclude_characters="<") | st.just("\n"),
               min_size=1, max_size=40)


@settings(max_examples=60, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(prompt=TEXT, response=TEXT.filter(lambda text: text.strip()))
def test_span_starts_at_the_first_token_reaching_into_the_response(tokenizer, prompt: str, response: str) -> None:
    for template in ("chat", "alpaca"):
        rendered = render_sample(tokenizer, sample(prompt, response), template=template)
        start, end = rendered.span
        text = tokenizer.decode(rendered.input_ids)
        assert text.endswith(response + END)
        response_at = len(text) - len(response + END)
        assert len(tokenizer.decode(rendered.input_ids[:start])) <= response_at
        assert len(tokenizer.decode(rendered.input_ids[:start + 1])) > response_at
        assert end == len(rendered.input_ids)
        assert rendered.reason is None and start >= 1 and rendered.prior_span[0] >= 1


@settings(max_examples=80, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(text=st.text(min_size=1, max_size=30), data=st.data())
def test_fast_span_lookup_agrees_with_bisecting_all_offsets(tokenizer, text: str, data: st.DataObject) -> None:
    """Any text (multi-byte characters split over tokens included) and any character range."""
    encoding = tokenizer.backend_tokenizer.encode(text, add_special_tokens=False)
    start = data.draw(st.integers(0, len(text) - 1))
    end = data.draw(st.integers(start + 1, len(text)))
    assert render.token_span(encoding, start, end) == render.token_span_from_offsets(encoding.offsets, start, end)


def test_real_data_spans_decode_to_the_response_exactly(tokenizer, shared_data: Path) -> None:
    """Alpaca-GPT4 answers and multi-turn ShareGPT conversations, rendered whole and cut at 64 tokens."""
    from iterit.data import load_samples

    samples = load_samples([shared_data / "train/alpaca_gpt4_llamafactory/alpaca_en_demo.json",
                            shared_data / "chat/fastchat/dummy_conversation.json"]).samples
    assert max(len(s.messages) for s in samples) > 2  # multi-turn conversations are among them
    for template in ("chat", "alpaca"):
        for s, r in zip(samples, render_samples(tokenizer, samples, template=template)):
            assert (r.reason, r.truncated) == (None, False)
            assert split(tokenizer, r.input_ids, r.span)[1] == s.response + END
            assert split(tokenizer, r.prior_ids, r.prior_span)[1] == s.response + END
        for s, r in zip(samples, render_samples(tokenizer, samples, template=template, max_length=64)):
            assert len(r.input_ids) <= 64 and len(r.prior_ids) <= 64
            if r.reason is None:
                kept = split(tokenizer, r.input_ids, r.span)[1]
                assert kept and (s.response + END).startswith(kept.rstrip("\ufffd"))
                assert split(tokenizer, r.prior_ids, r.prior_span)[1] == kept
            else:
                assert r.reason.startswith("response does not fit max_length") and r.n_response_tokens == 0


class TestReferenceRendering:
    """The reference's choices: the llama-3.1 template and a target of output + eos_token."""

    HEADER = "<|start_header_id|>{}<|end_header_id|>\n\n"
    SYSTEM = "Cutting Knowledge Date: December 2023\nToday Date: 26 Jul 2024\n\n"

    def conversation(self):
        return sample("Hi", "Hello ", system="You are a helpful assistant.")

    def test_llama_3_1_template_renders_meta_s_format(self, tokenizer) -> None:
        renderer = render.make_renderer(tokenizer, "llama-3.1", "template")
        text = renderer.conversations([self.conversation().messages])[0]
        h = self.HEADER
        prompt = (f"{BOS}{h.format('system')}{self.SYSTEM}You are a helpful assistant.<|eot_id|>"
                  f"{h.format('user')}Hi<|eot_id|>{h.format('assistant')}")
        assert text.text == prompt + "Hello<|eot_id|>"  # the template trims the content
        assert text.text[text.start:text.end] == "Hello<|eot_id|>"

    def test_response_end_eos_ends_the_response_with_eos_in_both_renderings(self, tokenizer) -> None:
        renderer = render.make_renderer(tokenizer, "llama-3.1", "eos")
        text = renderer.conversations([self.conversation().messages])[0]
        assert text.text[text.start:text.end] == f"Hello {END}"  # output + eos_token, as the reference trains
        alone = renderer.responses_alone([self.conversation().messages[-1]])[0]
        assert alone.text[alone.start:alone.end] == f"Hello {END}"
        assert alone.text.startswith(f"{BOS}{self.HEADER.format('system')}")  # a lone turn, then the response
        rendered = render_sample(tokenizer, self.conversation(), template="llama-3.1", response_end="eos")
        assert rendered.input_ids[rendered.span[1] - 1] == tokenizer.eos_token_id
        assert labels_for(rendered)[-1] == tokenizer.eos_token_id

    def test_unknown_response_end_names_the_flag(self, tokenizer) -> None:
        with pytest.raises(IterITError, match="--response-end 'eot'.*template, eos"):
            render_sample(tokenizer, sample("Hi.", "Hello."), response_end="eot")

"""The demo's task families: procedurally generated questions with exactly one correct, short answer each.

Sixteen families (arithmetic, reversing and sorting, unit conversion, counting, facts from a fixed table of
invented countries, formatting, ...). Each draws one :class:`TaskInstance` from a seeded ``random.Random``; the
phrasings vary while ``key`` holds only the content asked, so duplicates can be told apart from rephrasings.
The fact table's countries are invented, so the only place a model can learn them is `pretraining_corpus`.
"""

from __future__ import annotations

import json
import random
from collections.abc import Callable
from dataclasses import dataclass

# The fixed fact table: invented countries, so the only place a model can learn them is our pretraining text.
COUNTRIES: tuple[tuple[str, str], ...] = (
    ("Veloria", "Brenhold"),
    ("Kastavia", "Orlen"),
    ("Drumlin", "Pellworth"),
    ("Ostrana", "Veyhall"),
    ("Marvesh", "Toldin"),
    ("Quenland", "Abrel"),
    ("Sorvik", "Hamra"),
    ("Tellune", "Corvo"),
    ("Brastia", "Nimbel"),
    ("Felmark", "Ustra"),
    ("Galdoria", "Wenlo"),
    ("Hirsa", "Daskel"),
    ("Iskeria", "Mornu"),
    ("Jorvale", "Selkirk"),
    ("Kelmora", "Fenwick"),
    ("Lustria", "Garro"),
    ("Mendaro", "Ilsen"),
    ("Norvane", "Kopra"),
    ("Orsolia", "Belmet"),
    ("Pravia", "Tunde"),
    ("Rindal", "Osker"),
    ("Saltera", "Virnholt"),
    ("Tavonia", "Emsby"),
    ("Ulmira", "Raskin"),
    ("Vandor", "Sibel"),
    ("Wexland", "Colm"),
    ("Yarrowen", "Delphin"),
    ("Zentha", "Mirabel"),
    ("Amberon", "Kestrel"),
    ("Belgrast", "Tovin"),
    ("Cordavia", "Lunet"),
    ("Dormund", "Heska"),
    ("Elvaria", "Postrel"),
    ("Fennick", "Arlo"),
    ("Grenmoor", "Sablet"),
    ("Halvora", "Quillby"),
    ("Ivrenia", "Dunmore"),
    ("Kaldera", "Wispen"),
    ("Lorvania", "Tamsin"),
    ("Mistrel", "Bodo"),
)
# Every fourth country is held out: asked about only in the test set, known only from pretraining text.
TEST_COUNTRIES = frozenset(name for i, (name, _) in enumerate(COUNTRIES) if i % 4 == 3)

WORDS: tuple[str, ...] = tuple(
    "apple river green stone light house garden window silver yellow market winter summer forest "
    "bright quiet table paper letter orange little purple morning evening mountain valley ocean "
    "cloud rain storm candle mirror basket pencil rocket planet garden castle bridge tower island "
    "desert meadow harbor village city road train engine button pocket jacket shadow thunder "
    "honey butter bread cheese tiger rabbit horse eagle falcon dolphin turtle monkey spider camel "
    "violin guitar piano drum song story dream music dance smile happy gentle brave clever swift "
    "golden wooden frozen silent hidden broken ancient modern simple narrow".split()
)


@dataclass(frozen=True, slots=True)
class TaskInstance:
    """One generated question and its single correct answer.

    ``key`` is the content asked, independent of phrasing: two instances with equal keys ask the same thing.
    """

    family: str
    key: tuple
    instruction: str
    input: str
    answer: str

    @property
    def prompt(self) -> str:
        """The user turn, as chat-format records carry it (Alpaca keeps instruction and input apart)."""
        return f"{self.instruction}\n\n{self.input}" if self.input else self.instruction


# ----------------------------------------------------------------------------------------------------------
# Task families: each draws one instance. Phrasings vary; the key holds only the content asked.


def _pseudo_word(rng: random.Random) -> str:
    """A pronounceable made-up word: an unbounded supply for letter-level tasks."""
    syllables = [rng.choice("bcdfghklmnprstvz") + rng.choice("aeiou") for _ in range(rng.randint(2, 3))]
    return "".join(syllables) + (rng.choice("klmnrst") if rng.random() < 0.5 else "")


def _numbers(rng: random.Random, low: int, high: int) -> list[int]:
    return rng.sample(range(low, high + 1), rng.randint(3, 5))


def _add(rng: random.Random, test: bool) -> TaskInstance:
    a, b = rng.randint(2, 99), rng.randint(2, 99)
    text = rng.choice(["What is {a} + {b}?", "Add {a} and {b}.", "Compute {a} plus {b}."])
    return TaskInstance("add", (a, b), text.format(a=a, b=b), "", str(a + b))


def _subtract(rng: random.Random, test: bool) -> TaskInstance:
    a = rng.randint(10, 99)
    b = rng.randint(1, a)
    text = rng.choice(["What is {a} - {b}?", "Subtract {b} from {a}.", "Compute {a} minus {b}."])
    return TaskInstance("subtract", (a, b), text.format(a=a, b=b), "", str(a - b))


def _multiply(rng: random.Random, test: bool) -> TaskInstance:
    a, b = rng.randint(2, 29), rng.randint(2, 12)
    text = rng.choice(["What is {a} * {b}?", "Multiply {a} by {b}.", "Compute {a} times {b}."])
    return TaskInstance("multiply", (a, b), text.format(a=a, b=b), "", str(a * b))


def _reverse(rng: random.Random, test: bool) -> TaskInstance:
    word = _pseudo_word(rng)
    text = rng.choice(["Reverse the word '{w}'.", "Write '{w}' backwards.", "Spell '{w}' in reverse order."])
    return TaskInstance("reverse", (word,), text.format(w=word), "", word[::-1])


def _sort_letters(rng: random.Random, test: bool) -> TaskInstance:
    word = _pseudo_word(rng)
    text = rng.choice(
        ["Sort the letters of '{w}' alphabetically.", "Arrange the letters of '{w}' in alphabetical order."]
    )
    return TaskInstance("sort_letters", (word,), text.format(w=word), "", "".join(sorted(word)))


def _sort_numbers(rng: random.Random, test: bool) -> TaskInstance:
    numbers = _numbers(rng, 1, 99)
    text = rng.choice(
        ["Sort these numbers from smallest to largest.", "Put these numbers in ascending order."]
    )
    listed = ", ".join(map(str, numbers))
    return TaskInstance("sort_numbers", tuple(numbers), text, listed, ", ".join(map(str, sorted(numbers))))


def _convert_units(rng: random.Random, test: bool) -> TaskInstance:
    kind, n = rng.choice(["km", "h", "kg"]), rng.randint(2, 200)
    if kind == "km":
        text, answer = (
            rng.choice(["Convert {n} km to meters.", "How many meters are in {n} kilometers?"]),
            n * 1000,
        )
    elif kind == "h":
        text, answer = (
            rng.choice(["Convert {n} hours to minutes.", "How many minutes are in {n} hours?"]),
            n * 60,
        )
    else:
        text, answer = (
            rng.choice(["Convert {n} kg to grams.", "How many grams are in {n} kilograms?"]),
            n * 1000,
        )
    return TaskInstance("convert_units", (kind, n), text.format(n=n), "", str(answer))


def _count_letter(rng: random.Random, test: bool) -> TaskInstance:
    word = _pseudo_word(rng)
    letter = rng.choice(word)
    text = rng.choice(
        ["How many times does the letter '{c}' appear in '{w}'?", "Count the letter '{c}' in '{w}'."]
    )
    return TaskInstance(
        "count_letter", (word, letter), text.format(c=letter, w=word), "", str(word.count(letter))
    )


def _count_words(rng: random.Random, test: bool) -> TaskInstance:
    sentence = " ".join(rng.choice(WORDS) for _ in range(rng.randint(3, 9)))
    text = rng.choice(["How many words are in this sentence?", "Count the words in the following text."])
    return TaskInstance("count_words", (sentence,), text, sentence, str(len(sentence.split())))


def _capital(rng: random.Random, test: bool) -> TaskInstance:
    country, capital = rng.choice([pair for pair in COUNTRIES if (pair[0] in TEST_COUNTRIES) == test])
    text = rng.choice(
        ["What is the capital of {c}?", "Name the capital city of {c}.", "Which city is the capital of {c}?"]
    )
    return TaskInstance("capital", (country,), text.format(c=country), "", capital)


def _uppercase(rng: random.Random, test: bool) -> TaskInstance:
    phrase = " ".join(rng.sample(WORDS, 2))
    text = rng.choice(["Write this in uppercase.", "Convert the following text to capital letters."])
    return TaskInstance("uppercase", (phrase,), text, phrase, phrase.upper())


def _title_case(rng: random.Random, test: bool) -> TaskInstance:
    phrase = " ".join(rng.sample(WORDS, 3))
    text = rng.choice(["Write this in title case.", "Capitalize the first letter of every word."])
    return TaskInstance("title_case", (phrase,), text, phrase, phrase.title())


def _max_number(rng: random.Random, test: bool) -> TaskInstance:
    numbers = _numbers(rng, 1, 99)
    text = rng.choice(["What is the largest number in this list?", "Which of these numbers is the biggest?"])
    return TaskInstance("max_number", tuple(numbers), text, ", ".join(map(str, numbers)), str(max(numbers)))


def _next_in_sequence(rng: random.Random, test: bool) -> TaskInstance:
    start, step = rng.randint(1, 30), rng.randint(1, 9)
    terms = [start + step * i for i in range(4)]
    text = rng.choice(
        ["What number comes next in this sequence?", "Continue the sequence with the next number."]
    )
    return TaskInstance(
        "next_in_sequence", (start, step), text, ", ".join(map(str, terms)), str(start + step * 4)
    )


def _parity(rng: random.Random, test: bool) -> TaskInstance:
    n = rng.randint(1, 999)
    text = rng.choice(["Is {n} even or odd?", "Is the number {n} odd or even?"])
    return TaskInstance("parity", (n,), text.format(n=n), "", "even" if n % 2 == 0 else "odd")


def _json_value(rng: random.Random, test: bool) -> TaskInstance:
    keys = rng.sample(["color", "name", "city", "shape", "animal", "food"], 3)
    obj = {key: rng.choice(WORDS) for key in keys}
    asked = rng.choice(keys)
    text = rng.choice(
        ['What is the value of "{k}" in this JSON object?', 'Return the value stored under the key "{k}".']
    )
    listed = json.dumps(obj)
    return TaskInstance("json_value", (listed, asked), text.format(k=asked), listed, obj[asked])


FAMILIES: dict[str, Callable[[random.Random, bool], TaskInstance]] = {
    "add": _add,
    "subtract": _subtract,
    "multiply": _multiply,
    "reverse": _reverse,
    "sort_letters": _sort_letters,
    "sort_numbers": _sort_numbers,
    "convert_units": _convert_units,
    "count_letter": _count_letter,
    "count_words": _count_words,
    "capital": _capital,
    "uppercase": _uppercase,
    "title_case": _title_case,
    "max_number": _max_number,
    "next_in_sequence": _next_in_sequence,
    "parity": _parity,
    "json_value": _json_value,
}

# ----------------------------------------------------------------------------------------------------------
# Pretraining text for the base model: the facts, plus generic sentences, and no instruction format.

FACT_PHRASINGS = (
    "The capital of {c} is {k}.",
    "{k} is the capital of {c}.",
    "{c} has its capital in {k}.",
    "In {c}, the capital city is {k}.",
)
GENERIC_SUBJECTS = (
    "The cat",
    "A small dog",
    "My neighbor",
    "The old farmer",
    "A young girl",
    "The teacher",
    "The captain",
    "Our friend",
    "The baker",
    "A tall man",
)
GENERIC_VERBS = (
    "walked to",
    "looked at",
    "painted",
    "found",
    "cleaned",
    "visited",
    "built",
    "carried",
    "watched",
)


def pretraining_corpus(
    seed: int = 0, *, fact_repeats: int = 3, n_generic: int = 600, n_numbers: int = 200
) -> list[str]:
    """Plain-text sentences for briefly pretraining the tiny base model.

    Every country of the fact table appears in several phrasings (``"The capital of X is Y."``), test
    countries included, so the base model can know facts the instruction data never asks about; the
    rest is generic text and simple number statements. No sentence is in the instruction format.

    Args:
        seed: shuffles the order and draws the generic sentences.
        fact_repeats: how often each fact phrasing is repeated (a tiny model needs repetition to memorise).
        n_generic: generic sentences ("The cat painted the green bridge.").
        n_numbers: number statements ("12 plus 7 is 19.", "38 is an even number.").
    """
    rng = random.Random(seed)
    texts = [p.format(c=c, k=k) for c, k in COUNTRIES for p in FACT_PHRASINGS for _ in range(fact_repeats)]
    for _ in range(n_generic):
        texts.append(
            f"{rng.choice(GENERIC_SUBJECTS)} {rng.choice(GENERIC_VERBS)} the "
            f"{rng.choice(WORDS)} {rng.choice(WORDS)}."
        )
    for _ in range(n_numbers):
        a, b = rng.randint(1, 50), rng.randint(1, 50)
        texts.append(
            rng.choice([f"{a} plus {b} is {a + b}.", f"{a} is an {'even' if a % 2 == 0 else 'odd'} number."])
        )
    rng.shuffle(texts)
    return texts

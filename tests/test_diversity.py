"""The IterIT greedy: the fast algorithm picks exactly what the straightforward one picks."""

from __future__ import annotations

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from iterit.diversity import (
    response_tfidf,
    row_diversities,
    select_greedy,
    select_greedy_naive,
)
from iterit.errors import IterITError

WORDS = ["the", "cat", "sat", "on", "a", "mat", "dog", "ran", "far", "away", "print", "x"]
RESPONSES = [
    "the cat sat on the mat",
    "the dog ran far away",
    "the cat sat on the mat",  # identical to row 0
    "print x",
    "",
    "cat",
    "the dog sat on a mat far away",
]


def assert_same_picks(matrix, ifd, budget, decay, groups=None, caps=None):
    naive = select_greedy_naive(matrix, ifd, budget, decay=decay, groups=groups, caps=caps)
    fast = select_greedy(matrix, ifd, budget, decay=decay, groups=groups, caps=caps)
    np.testing.assert_array_equal(fast.indices, naive.indices)
    # Bit-identical, not approximately equal: both use the same arithmetic by design.
    assert fast.diversity.tobytes() == naive.diversity.tobytes()
    assert fast.score.tobytes() == naive.score.tobytes()
    assert fast.n_greedy == naive.n_greedy
    assert len(set(fast.indices.tolist())) == len(fast.indices)
    return fast


corpora = st.lists(
    st.lists(st.sampled_from(WORDS), min_size=0, max_size=12).map(" ".join), min_size=1, max_size=40
)


@settings(max_examples=150, deadline=None)
@given(
    texts=corpora,
    data=st.data(),
    decay=st.one_of(st.sampled_from([0.0, 0.1, 0.5, 1.0]), st.floats(0.0, 1.0)),
)
def test_fast_equals_naive_on_random_corpora(texts, data, decay):
    n = len(texts)
    # IFD from a small set of values makes ties common.
    ifd = np.array(data.draw(st.lists(st.sampled_from([0.1, 0.25, 0.5, 0.9, 0.99]), min_size=n, max_size=n)))
    budget = data.draw(st.integers(1, n + 3))
    picks = assert_same_picks(response_tfidf(texts), ifd, budget, decay)
    assert len(picks.indices) == min(budget, n)


@settings(max_examples=80, deadline=None)
@given(texts=corpora, data=st.data(), decay=st.sampled_from([0.0, 0.1, 1.0]))
def test_fast_equals_naive_with_group_caps(texts, data, decay):
    n = len(texts)
    ifd = np.array(data.draw(st.lists(st.floats(0.01, 0.99), min_size=n, max_size=n)))
    groups = np.array(data.draw(st.lists(st.integers(0, 2), min_size=n, max_size=n)))
    caps = data.draw(st.lists(st.integers(0, 5), min_size=3, max_size=3))
    budget = data.draw(st.integers(1, n + 3))
    picks = assert_same_picks(response_tfidf(texts), ifd, budget, decay, groups, caps)
    for group, cap in enumerate(caps):
        assert np.sum(groups[picks.indices] == group) <= cap


def test_fast_equals_naive_on_real_responses(shared_data):
    import json

    records = json.loads((shared_data / "train" / "code_alpaca" / "code_alpaca_2k.json").read_text())
    texts = [r["output"] for r in records[:600]] * 2  # repeated: identical rows compete
    ifd = np.random.default_rng(1).uniform(0.05, 1.0, size=len(texts))
    matrix = response_tfidf(texts)
    for decay in (0.0, 0.1, 1.0):
        assert_same_picks(matrix, ifd, 300, decay)


def test_adversarial_corpus_every_decay_and_budget():
    matrix = response_tfidf(RESPONSES)
    ifd = np.array([0.5, 0.5, 0.5, 0.9, 0.7, 0.5, 0.5])
    for decay in (0.0, 0.1, 1.0):
        for budget in range(1, len(RESPONSES) + 3):
            assert_same_picks(matrix, ifd, budget, decay)


def test_first_pick_is_the_highest_ifd_times_row_sum():
    matrix = response_tfidf(RESPONSES)
    ifd = np.linspace(0.2, 0.8, len(RESPONSES))
    picks = select_greedy(matrix, ifd, 1)
    expected = np.asarray(matrix.sum(axis=1)).ravel() * ifd
    assert picks.indices[0] == int(np.argmax(expected))
    assert picks.score[0] == pytest.approx(expected.max())


def test_ties_go_to_the_earliest_row():
    matrix = response_tfidf(["same words here", "same words here", "same words here"])
    picks = select_greedy(matrix, np.full(3, 0.5), 3, decay=1.0)
    assert picks.indices.tolist() == [0, 1, 2]


def test_decay_zero_removes_covered_ngrams_then_fills_by_ifd():
    # Row 1 repeats row 0; once row 0 is picked with decay 0, row 1 has no diversity left, so it is
    # taken only when the budget is filled in IFD order, after the still-diverse row 2.
    matrix = response_tfidf(["alpha beta", "alpha beta", "gamma"])
    picks = select_greedy(matrix, np.array([0.9, 0.8, 0.1]), 3, decay=0.0)
    assert picks.indices.tolist() == [0, 2, 1]
    assert picks.n_greedy == 2
    assert picks.diversity[2] == 0.0 and picks.score[2] == 0.0


def test_decay_one_ranks_by_the_initial_score():
    matrix = response_tfidf(RESPONSES)
    ifd = np.array([0.3, 0.9, 0.2, 0.8, 0.7, 0.6, 0.5])
    start = ifd * row_diversities(matrix, np.ones(matrix.shape[1]))
    positive = [i for i in np.lexsort((np.arange(len(ifd)), -start)) if start[i] > 0]
    picks = select_greedy(matrix, ifd, len(positive), decay=1.0)
    assert picks.indices.tolist() == positive


def test_decay_shrinks_a_shared_ngram_per_pick():
    matrix = response_tfidf(["apple", "apple", "apple"])
    picks = select_greedy(matrix, np.array([0.9, 0.5, 0.4]), 3, decay=0.1)
    assert picks.indices.tolist() == [0, 1, 2]
    np.testing.assert_allclose(picks.diversity, [1.0, 0.1, 0.01])


def test_empty_vocabulary_falls_back_to_ifd_order():
    matrix = response_tfidf(["", " ", ""])
    assert matrix.shape == (3, 0)
    picks = assert_same_picks(matrix, np.array([0.2, 0.9, 0.5]), 3, 0.1)
    assert picks.indices.tolist() == [1, 2, 0]
    assert picks.n_greedy == 0


def test_never_picks_twice_even_when_the_budget_exceeds_the_rows():
    matrix = response_tfidf(["aa bb", "aa bb", "cc"])
    picks = select_greedy(matrix, np.array([0.5, 0.5, 0.5]), 10, decay=0.0)
    assert sorted(picks.indices.tolist()) == [0, 1, 2]


def test_tfidf_options_are_checked_and_lists_become_tuples():
    with pytest.raises(IterITError, match="unknown option"):
        response_tfidf(["a"], {"ngram": 2})
    unigrams = response_tfidf(["aa bb cc", "bb cc dd"], {"ngram_range": [1, 1]})
    assert unigrams.shape[1] == 4  # scikit-learn's default token pattern skips one-letter words


def test_hashing_vectorizer_option_gives_the_same_row_sums_without_collisions():
    texts = ["the cat sat", "a dog ran away", "the cat ran"]
    exact = response_tfidf(texts)
    hashed = response_tfidf(texts, {"vectorizer": "hashing", "n_features": 2**20})
    np.testing.assert_allclose(np.asarray(hashed.sum(axis=1)).ravel(), np.asarray(exact.sum(axis=1)).ravel())
    with pytest.raises(IterITError, match="vectorizer"):
        response_tfidf(texts, {"vectorizer": "word2vec"})


def test_decay_outside_unit_interval_is_a_user_error():
    matrix = response_tfidf(["aa bb"])
    with pytest.raises(IterITError, match="--decay"):
        select_greedy(matrix, np.array([0.5]), 1, decay=1.5)


def test_negative_weights_are_refused_because_lazy_evaluation_needs_them_non_negative():
    matrix = response_tfidf(["aa bb", "cc dd"])
    matrix.data[0] = -matrix.data[0]
    with pytest.raises(ValueError, match="non-negative"):
        select_greedy(matrix, np.array([0.5, 0.5]), 1)

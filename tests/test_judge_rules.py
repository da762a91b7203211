"""The judge's pure rules: verdict and grade parsing (never a guess), the both-orders rule (MT-Bench), and the
agreement figures, equal to scikit-learn's cohen_kappa_score and scipy's spearmanr on the same data; then the
same figures computed from stored reviewer scores and judge verdicts."""
from __future__ import annotations

import random

import pytest
from scipy.stats import spearmanr
from sklearn.metrics import cohen_kappa_score

from core.evaluate.agreement import agreement_figures, cohen_kappa, percent_agreement, spearman, with_interval
from core.evaluate.judging import (combine_orders, fill, parse_pairwise, parse_rating, prompt_template)


@pytest.mark.parametrize("text, verdict", [
    ("A is clearer and correct.\n[[A]]", "A"),
    ("Both fine. [[C]]", "tie"),
    ("[[ b ]]", "B"),
    ("I pick [[A]]. Final verdict: [[A]]", "A"),
    ("Assistant A is better", None),            # no verdict in the format: not guessed
    ("[[A]] or maybe [[B]]", None),             # two different verdicts
    ('Output "[[A]]" if A is better, "[[B]]" if B', None),  # quoting the instructions is no verdict
    ("", None),
])
def test_pairwise_verdicts_are_read_only_when_unambiguous(text, verdict):
    assert parse_pairwise(text) == verdict


@pytest.mark.parametrize("text, grade", [
    ("Good answer. Rating: [[4]]", 4),
    ("Rating: [[ 1 ]]", 1),
    ("Rating: [[6]]", None),        # out of range
    ("Rating: [[3.5]]", None),      # not a whole grade
    ("Rating: 4", None),            # not in the format
    ("[[2]] then [[5]]", None),     # two grades
    ("[[5]] ... Rating: [[5]]", 5),
])
def test_rubric_grades_are_whole_numbers_in_range(text, grade):
    assert parse_rating(text, 1, 5) == grade


def test_both_orders_must_agree_else_tie_and_flipped():
    # verdict_1: "first" shown as A; verdict_2: "second" shown as A.
    assert combine_orders("base", "run:1", "A", "B") == {"winner": "base", "flipped": False}
    assert combine_orders("base", "run:1", "B", "A") == {"winner": "run:1", "flipped": False}
    assert combine_orders("base", "run:1", "tie", "tie") == {"winner": "tie", "flipped": False}
    # Position bias: the judge preferred whatever it saw first.
    assert combine_orders("base", "run:1", "A", "A") == {"winner": "tie", "flipped": True}
    assert combine_orders("base", "run:1", "A", "tie") == {"winner": "tie", "flipped": True}
    assert combine_orders("base", "run:1", None, "A") == {"winner": None, "flipped": False}


def test_prompts_are_repository_files_and_filling_leaves_user_braces_alone():
    pairwise, rubric = prompt_template("pairwise"), prompt_template("rubric")
    assert "[[A]]" in pairwise and "{answer_b}" in pairwise and "{reference}" in rubric and "{description}" in rubric
    text = fill(rubric, criterion="tone", description="Warm", min=1, max=5, conversation="user: {x} {answer}",
                reference="ref", answer="My {braces}")
    assert "user: {x} {answer}" in text and "My {braces}" in text and "from 1 (very poor) to 5" in text


def _data(seed: int, n: int = 60):
    rng = random.Random(seed)
    a = [rng.randint(1, 5) for _ in range(n)]
    b = [min(5, max(1, x + rng.choice([-1, 0, 0, 1]))) for x in a]
    return a, b


@pytest.mark.parametrize("seed", range(5))
def test_kappa_and_spearman_equal_scikit_learn_and_scipy(seed):
    a, b = _data(seed)
    assert cohen_kappa(a, b) == pytest.approx(cohen_kappa_score(a, b), abs=1e-12)
    assert spearman(a, b) == pytest.approx(spearmanr(a, b).statistic, abs=1e-12)
    labels_a = ["base" if x > 3 else "tie" if x == 3 else "run:1" for x in a]
    labels_b = ["base" if x > 3 else "tie" if x == 3 else "run:1" for x in b]
    assert cohen_kappa(labels_a, labels_b) == pytest.approx(cohen_kappa_score(labels_a, labels_b), abs=1e-12)


def test_undefined_figures_are_none_not_a_number():
    assert cohen_kappa([3, 3, 3], [3, 3, 3]) is None and spearman([1, 2, 3], [2, 2, 2]) is None
    assert cohen_kappa([], []) is None and percent_agreement(["tie"], ["tie"], ignore="tie") is None
    with pytest.raises(ValueError, match="same items"):
        cohen_kappa([1, 2], [1])


def test_percent_agreement_with_and_without_ties_and_the_bootstrap_interval():
    a = ["base", "tie", "run:1", "base", "tie"]
    b = ["base", "base", "run:1", "run:1", "tie"]
    assert percent_agreement(a, b) == 3 / 5
    assert percent_agreement(a, b, ignore="tie") == 2 / 3
    figures = agreement_figures(a, b, tie="tie", ranks=False, rounds=100)
    assert figures["percent"]["value"] == 3 / 5 and figures["percent_without_ties"]["n"] == 3
    x, y = _data(1)
    iv = with_interval(cohen_kappa, x, y, rounds=300, seed=2)
    assert iv["n"] == 60 and iv["lo"] < iv["value"] < iv["hi"]
    assert with_interval(cohen_kappa, x, y, rounds=300, seed=2) == iv  # seeded: the same on every reload

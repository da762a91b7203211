"""Statistics: Bradley-Terry matches an independent MLE, agreement is krippendorff's, metrics are the libraries'."""
from __future__ import annotations

import math

import numpy as np
import pytest

from core.evaluate import stats


def _votes():
    """Three systems, wins both ways on every pair and some ties: a well-posed Bradley-Terry problem."""
    spec = [("base", "run:1", 6, 14, 4), ("base", "run:2", 9, 9, 2), ("run:1", "run:2", 12, 5, 3)]
    votes = []
    for a, b, a_wins, b_wins, ties in spec:
        votes += [(a, b, "1")] * a_wins + [(b, a, "1")] * b_wins + [(a, b, "tie")] * ties
    return votes


def _reference_fit(votes):
    """Independent maximum-likelihood Bradley-Terry with scipy.optimize: P(i beats j) = 1/(1+10^((Rj-Ri)/400)),
    a tie counted as half a win for each side, ratings centred on 1000."""
    from scipy.optimize import minimize

    systems = sorted({s for v in votes for s in v[:2]})
    idx = {s: i for i, s in enumerate(systems)}

    def nll(r):
        total = 0.0
        for a, b, outcome in votes:
            d = (r[idx[a]] - r[idx[b]]) * math.log(10) / 400
            log_pa, log_pb = -np.logaddexp(0, -d), -np.logaddexp(0, d)
            if outcome == "1":
                total -= log_pa
            elif outcome == "2":
                total -= log_pb
            else:
                total -= 0.5 * (log_pa + log_pb)
        return total

    res = minimize(nll, np.zeros(len(systems)), method="BFGS", options={"gtol": 1e-10})
    r = res.x - res.x.mean() + 1000
    return {s: float(r[idx[s]]) for s in systems}


def test_bradley_terry_matches_an_independent_mle_fit():
    votes = _votes()
    ours = stats.bradley_terry(votes)
    ref = _reference_fit(votes)
    assert set(ours) == set(ref)
    for s in ref:
        assert ours[s] == pytest.approx(ref[s], abs=0.5), (ours, ref)
    assert ours["run:1"] > ours["base"]  # run:1 beat base 14 to 6


def test_bradley_terry_bootstrap_interval_contains_the_fit_and_is_stable():
    votes = _votes()
    rows = stats.bradley_terry_bootstrap(votes, rounds=100, seed=3)
    fit = stats.bradley_terry(votes)
    assert [r["system"] for r in rows] == sorted(fit, key=lambda s: -fit[s])
    for r in rows:
        assert r["lo"] <= r["rating"] <= r["hi"]
        assert r["hi"] - r["lo"] > 1
    assert rows == stats.bradley_terry_bootstrap(votes, rounds=100, seed=3)


def test_bootstrap_is_fitted_once_per_set_of_votes(monkeypatch):
    """The Results page reruns on every click: the same votes again cost no fit, the rows handed out can be
    labelled without changing the next answer, and one new vote is fitted afresh."""
    votes = _votes()
    stats._bradley_terry_bootstrap.cache_clear()
    real, calls = stats.bradley_terry, []
    monkeypatch.setattr(stats, "bradley_terry", lambda v, **kw: calls.append(len(v)) or real(v, **kw))
    first = stats.bradley_terry_bootstrap(votes, rounds=30, seed=2)
    fitted = len(calls)
    assert fitted > 1
    first[0]["label"] = "renamed by a caller"
    again = stats.bradley_terry_bootstrap(list(votes), rounds=30, seed=2)
    assert len(calls) == fitted
    assert "label" not in again[0] and [r["rating"] for r in again] == [r["rating"] for r in first]
    more = stats.bradley_terry_bootstrap(votes + [("base", "run:1", "1")], rounds=30, seed=2)
    assert len(calls) > fitted
    assert more != again


def test_bootstrap_fits_each_distinct_resample_once(monkeypatch):
    """The first few votes of a review: 60 resamples of 3 votes hold at most 10 distinct multisets, each fitted
    once (one-sided fits are slow: the Results page took many seconds), with the rows of fitting every one."""
    votes = [("base", "run:1", "2"), ("base", "run:1", "2"), ("base", "run:1", "tie")]
    rng = np.random.default_rng(5)
    every = [stats.bradley_terry([votes[k] for k in rng.integers(0, 3, 3)]) for _ in range(60)]
    real, calls = stats.bradley_terry, []
    monkeypatch.setattr(stats, "bradley_terry", lambda v, **kw: calls.append(len(v)) or real(v, **kw))
    rows = stats.bradley_terry_bootstrap(votes, rounds=60, seed=5)
    assert len(calls) <= 1 + 10
    for row in rows:
        got = [fit[row["system"]] for fit in every]
        assert (row["lo"], row["hi"]) == (np.percentile(got, 2.5), np.percentile(got, 97.5))


def test_one_sided_votes_give_finite_ratings():
    ratings = stats.bradley_terry([("base", "run:1", "2")] * 10)
    assert all(math.isfinite(v) for v in ratings.values())
    assert ratings["run:1"] > ratings["base"]


def test_win_tie_loss_counts_both_bad_as_tie():
    rows = stats.win_tie_loss([("b", "a", "1"), ("a", "b", "1"), ("a", "b", "tie"), ("b", "a", "both_bad")])
    (row,) = rows
    assert (row["system_a"], row["a_wins"], row["b_wins"], row["ties"], row["both_bad"]) == ("a", 1, 1, 1, 1)
    assert row["tie_rate"] == 0.5 and row["a_win_rate"] == 0.25


def test_krippendorff_alpha_is_the_packages_value():
    import krippendorff

    ratings = {"r1": {1: 3, 2: 4, 3: 1, 4: 5}, "r2": {1: 3, 2: 5, 3: 2}, "r3": {2: 4, 3: 1, 4: 4}}
    matrix = [[3, 4, 1, 5], [3, 5, 2, np.nan], [np.nan, 4, 1, 4]]
    expected = krippendorff.alpha(reliability_data=matrix, level_of_measurement="ordinal", value_domain=[1, 2, 3, 4, 5])
    assert stats.krippendorff_alpha(ratings, level="ordinal", value_domain=range(1, 6)) == pytest.approx(expected)
    assert stats.krippendorff_alpha({"r1": {1: 3}, "r2": {2: 3}}) is None  # no unit rated twice


def test_bootstrap_mean_interval():
    iv = stats.bootstrap_mean([1, 2, 3, 4, 5] * 4, seed=1)
    assert iv.value == 3 and iv.lo < 3 < iv.hi and iv.n == 20
    assert stats.bootstrap_mean([4]).lo == 4


def test_automatic_metrics_offline():
    import sacrebleu
    from rouge_score import rouge_scorer

    preds = ["Call us on 0800 123 456 today.", "Submit it in the app."]
    refs = ["Please call us on 0800 123 456.", "Submit it in the app."]
    m = stats.automatic_metrics(preds + ["x"], refs + [""])  # an empty reference is skipped
    assert m["n"] == 2 and m["exact_match"] == 0.5
    assert m["bleu"] == pytest.approx(sacrebleu.corpus_bleu(preds, [refs]).score)
    scorer = rouge_scorer.RougeScorer(["rougeL"], use_stemmer=True)
    assert m["rouge_l"] == pytest.approx(np.mean([scorer.score(r, p)["rougeL"].fmeasure for p, r in zip(preds, refs)]))
    assert stats.perplexity(2 * math.log(4), 2) == pytest.approx(4)


def test_bootstrap_rounds_setting_keeps_the_product_default_and_refuses_nonsense(monkeypatch):
    from core.errors import InvalidInput
    from core.evaluate.results import bootstrap_rounds_setting

    monkeypatch.delenv("FINETUNE_STUDIO_BOOTSTRAP_ROUNDS", raising=False)
    assert bootstrap_rounds_setting() == 200
    monkeypatch.setenv("FINETUNE_STUDIO_BOOTSTRAP_ROUNDS", "80")
    assert bootstrap_rounds_setting() == 80
    for bad in ("5", "many", "-100"):
        monkeypatch.setenv("FINETUNE_STUDIO_BOOTSTRAP_ROUNDS", bad)
        with pytest.raises(InvalidInput, match="at least 10"):
            bootstrap_rounds_setting()

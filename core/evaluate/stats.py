"""Statistics for blind reviews and automatic metrics. Pure functions on plain data; no database, no model.

- ``bootstrap_mean``: mean with a percentile bootstrap 95% interval (scipy.stats.bootstrap).
- ``wilson``: a rate with its Wilson score interval; ``bootstrap_difference``: the difference of two means
  (before/after) with a bootstrap interval.
- ``win_tie_loss``: per pair of systems, from preference votes.
- ``bradley_terry`` / ``bradley_terry_bootstrap``: ratings on an Elo-like scale fitted the way Chatbot Arena
  does (FastChat ``compute_mle_elo``): scikit-learn logistic regression on +/-ln(10) design rows, ties counted
  as half a win each way, ratings = 400 * coef + 1000, and intervals from resampling the votes.
- ``krippendorff_alpha``: Krippendorff's alpha (package ``krippendorff``), ordinal for rubric scores,
  nominal for preferences.
- ``rouge_l``, ``bleu``, ``exact_match``, ``perplexity``: offline automatic metrics (rouge-score, sacrebleu).
"""
from __future__ import annotations

import functools
import math
import re
from collections import Counter
from dataclasses import dataclass
from typing import Any, Iterable, Literal, Sequence

import numpy as np

SCALE = 400.0  # Elo points per factor of 10 in odds
BASE = 10.0
INIT_RATING = 1000.0
# A whisper of L2 keeps the fit finite when one system wins every vote (perfect separation, common with
# two systems and few votes); on any data with a win both ways it changes ratings by far less than a point.
BT_C = 1e4


@dataclass
class Interval:
    """A point estimate with a 95% interval (``lo``/``hi`` equal ``value`` when there is too little data)."""

    value: float
    lo: float
    hi: float
    n: int

    def as_dict(self) -> dict:
        return {"value": self.value, "lo": self.lo, "hi": self.hi, "n": self.n}


def bootstrap_mean(values: Sequence[float], *, n_resamples: int = 1000, seed: int = 0,
                   confidence: float = 0.95) -> Interval:
    """Mean of ``values`` with a percentile bootstrap interval."""
    data = np.asarray([v for v in values if v is not None], dtype=float)
    n = len(data)
    if n == 0:
        return Interval(float("nan"), float("nan"), float("nan"), 0)
    mean = float(data.mean())
    if n < 2 or np.all(data == data[0]):
        return Interval(mean, mean, mean, n)
    from scipy.stats import bootstrap

    res = bootstrap((data,), np.mean, n_resamples=n_resamples, confidence_level=confidence,
                    method="percentile", random_state=np.random.default_rng(seed))
    return Interval(mean, float(res.confidence_interval.low), float(res.confidence_interval.high), n)


def wilson(successes: int, n: int, *, confidence: float = 0.95) -> Interval:
    """A rate (``successes`` of ``n``) with its Wilson score interval (scipy.stats.binomtest(...).proportion_ci,
    method "wilson"): unlike the normal approximation it stays inside 0-1 and holds for small ``n``."""
    if n <= 0:
        return Interval(float("nan"), float("nan"), float("nan"), 0)
    from scipy.stats import binomtest

    ci = binomtest(int(successes), int(n)).proportion_ci(confidence_level=confidence, method="wilson")
    return Interval(successes / n, float(ci.low), float(ci.high), n)


def bootstrap_difference(after: Sequence[float], before: Sequence[float], *, n_resamples: int = 1000, seed: int = 0,
                         confidence: float = 0.95) -> Interval:
    """``mean(after) - mean(before)`` of two independent samples with a percentile bootstrap interval
    (scipy.stats.bootstrap resampling each sample on its own); ``n`` is the smaller sample's size. Rates are
    means of 0/1 values."""
    a = np.asarray([v for v in after if v is not None], dtype=float)
    b = np.asarray([v for v in before if v is not None], dtype=float)
    if len(a) == 0 or len(b) == 0:
        return Interval(float("nan"), float("nan"), float("nan"), 0)
    diff = float(a.mean() - b.mean())
    n = min(len(a), len(b))
    if n < 2 or (np.all(a == a[0]) and np.all(b == b[0])):
        return Interval(diff, diff, diff, n)
    from scipy.stats import bootstrap

    res = bootstrap((a, b), lambda x, y, axis=-1: x.mean(axis=axis) - y.mean(axis=axis), n_resamples=n_resamples,
                    confidence_level=confidence, method="percentile", random_state=np.random.default_rng(seed))
    return Interval(diff, float(res.confidence_interval.low), float(res.confidence_interval.high), n)


# ---------------------------------------------------------------- pairwise votes

# A vote is (system_1, system_2, outcome) where outcome is "1" (system_1 won), "2", "tie" or "both_bad".
Vote = tuple[str, str, str]


def win_tie_loss(votes: Iterable[Vote]) -> list[dict]:
    """Per unordered pair: wins of each side, ties, both-bad, and rates (both-bad counts as a tie in the rates)."""
    table: dict[tuple[str, str], dict] = {}
    for s1, s2, outcome in votes:
        a, b = sorted((s1, s2))
        row = table.setdefault((a, b), {"system_a": a, "system_b": b, "a_wins": 0, "b_wins": 0, "ties": 0,
                                         "both_bad": 0})
        if outcome in ("tie", "both_bad"):
            row["ties" if outcome == "tie" else "both_bad"] += 1
        else:
            winner = s1 if outcome == "1" else s2
            row["a_wins" if winner == a else "b_wins"] += 1
    out = []
    for row in table.values():
        n = row["a_wins"] + row["b_wins"] + row["ties"] + row["both_bad"]
        row["n"] = n
        row["a_win_rate"] = row["a_wins"] / n
        row["b_win_rate"] = row["b_wins"] / n
        row["tie_rate"] = (row["ties"] + row["both_bad"]) / n
        row["both_bad_rate"] = row["both_bad"] / n
        out.append(row)
    return sorted(out, key=lambda r: (r["system_a"], r["system_b"]))


def bradley_terry(votes: Sequence[Vote], *, scale: float = SCALE, base: float = BASE,
                  init_rating: float = INIT_RATING) -> dict[str, float]:
    """Bradley-Terry ratings fitted by logistic regression, as Chatbot Arena's ``compute_mle_elo``.

    Each ordered pair (i, j) gives two design rows with +ln(base) for i and -ln(base) for j, one labelled 1
    weighted by 2*wins(i over j) + ties, one labelled 0 weighted by 2*wins(j over i) + ties; so
    P(i beats j) = 1 / (1 + base^((R_j - R_i) / scale)). Ratings are centred on ``init_rating``.
    """
    from sklearn.linear_model import LogisticRegression

    systems = sorted({s for v in votes for s in v[:2]})
    if len(systems) < 2:
        return {s: init_rating for s in systems}
    index = {s: i for i, s in enumerate(systems)}
    p = len(systems)
    wins = np.zeros((p, p))  # wins[i, j] = 2 * (i beat j) + ties between them, as in FastChat
    for s1, s2, outcome in votes:
        i, j = index[s1], index[s2]
        if outcome in ("tie", "both_bad"):
            wins[i, j] += 1
            wins[j, i] += 1
        elif outcome == "1":
            wins[i, j] += 2
        else:
            wins[j, i] += 2
    rows, labels, weights = [], [], []
    for i in range(p):
        for j in range(i + 1, p):
            if wins[i, j] + wins[j, i] == 0:
                continue
            x = np.zeros(p)
            x[i], x[j] = math.log(base), -math.log(base)
            rows += [x, x]
            labels += [1.0, 0.0]
            weights += [wins[i, j], wins[j, i]]
    X, y, w = np.array(rows), np.array(labels), np.array(weights)
    lr = LogisticRegression(fit_intercept=False, C=BT_C, tol=1e-8, max_iter=1000)
    lr.fit(X, y, sample_weight=w)
    coef = lr.coef_[0]
    ratings = scale * (coef - coef.mean()) + init_rating
    return {s: float(ratings[index[s]]) for s in systems}


def _win_effect(vote: Vote) -> tuple[str, str, str]:
    """What one vote adds to bradley_terry's wins matrix: a win of the first system named over the second, or a
    tie between the two in name order (a tie and "both bad" count alike)."""
    s1, s2, outcome = vote
    if outcome in ("tie", "both_bad"):
        first, second = sorted((s1, s2))
        return ("tie", first, second)
    return ("win", s1, s2) if outcome == "1" else ("win", s2, s1)


def bradley_terry_bootstrap(votes: Sequence[Vote], *, rounds: int = 200, seed: int = 0,
                            confidence: float = 0.95) -> list[dict]:
    """Leaderboard rows ``{system, rating, lo, hi, n_votes}``: the fit on all votes plus percentile intervals
    from ``rounds`` fits on votes resampled with replacement (Chatbot Arena's ``get_bootstrap_result``).

    The result is a pure function of its arguments and is memoised on them: the Results page reruns on every
    click with the same votes, and the hundreds of refits cost seconds each time; a new vote is a new key.
    Callers get fresh dicts, so labelling the rows never alters the memo."""
    key = tuple((s1, s2, outcome) for s1, s2, outcome in votes)
    return [dict(row) for row in _bradley_terry_bootstrap(key, rounds, seed, confidence)]


@functools.lru_cache(maxsize=64)
def _bradley_terry_bootstrap(votes: tuple[Vote, ...], rounds: int, seed: int,
                             confidence: float) -> tuple[dict, ...]:
    point = bradley_terry(votes)
    if not point:
        return ()
    rng = np.random.default_rng(seed)
    samples: dict[str, list[float]] = {s: [] for s in point}
    if len(votes) > 1:
        # The fit depends only on how many times each pair of systems won each way or tied (bradley_terry's wins
        # matrix), so resamples with the same counts are fitted once: with the few votes of a review just begun
        # most resamples repeat, and a fit on one-sided votes (no finite optimum) runs the solver to its limit,
        # which made the Results page take many seconds.
        effect = [_win_effect(vote) for vote in votes]
        fits: dict[tuple, dict[str, float]] = {}
        for _ in range(rounds):
            drawn = sorted(int(k) for k in rng.integers(0, len(votes), len(votes)))
            key = tuple(sorted(Counter(effect[k] for k in drawn).items()))
            if key not in fits:
                fits[key] = bradley_terry([votes[k] for k in drawn])
            for s, r in fits[key].items():
                samples[s].append(r)
    tail = (1 - confidence) / 2 * 100
    counts = {s: sum(1 for v in votes if s in v[:2]) for s in point}
    rows = []
    for s, r in point.items():
        got = samples[s]
        lo, hi = (float(np.percentile(got, tail)), float(np.percentile(got, 100 - tail))) if got else (r, r)
        rows.append({"system": s, "rating": r, "lo": lo, "hi": hi, "n_votes": counts[s]})
    return tuple(sorted(rows, key=lambda row: -row["rating"]))


# ---------------------------------------------------------------- agreement


def krippendorff_alpha(ratings: dict[Any, dict[Any, Any]], *, level: Literal["nominal", "ordinal"] = "ordinal",
                       value_domain: Sequence | None = None) -> float | None:
    """Krippendorff's alpha over ``ratings[rater][unit] = value``; None when no unit has two ratings.

    Nominal values may be any hashable (they are mapped to integer codes); ordinal values must be numbers.
    """
    import krippendorff

    raters = sorted(ratings)
    units = sorted({u for r in ratings.values() for u in r}, key=str)
    per_unit = {u: sum(1 for r in raters if u in ratings[r]) for u in units}
    if not any(c >= 2 for c in per_unit.values()):
        return None
    codes: dict[object, int] = {}
    if level == "nominal":
        for r in raters:
            for v in ratings[r].values():
                codes.setdefault(v, len(codes))
    matrix = np.full((len(raters), len(units)), np.nan)
    for i, r in enumerate(raters):
        for j, u in enumerate(units):
            if u in ratings[r]:
                v = ratings[r][u]
                matrix[i, j] = codes[v] if level == "nominal" else float(v)
    values_seen = set(matrix[~np.isnan(matrix)].tolist())
    if value_domain is None or level == "nominal":
        domain = sorted(values_seen)
    else:
        domain = sorted(set(value_domain) | values_seen)
    if len(domain) < 2:
        # Everyone always gave the same single value: perfect agreement, though alpha is undefined.
        return 1.0
    return float(krippendorff.alpha(reliability_data=matrix, level_of_measurement=level, value_domain=domain))


def percent_agreement(ratings: dict[Any, dict[Any, Any]]) -> float | None:
    """Share of rater pairs on the same unit who gave the same value; None without any such pair."""
    by_unit: dict[object, list] = {}
    for r in ratings.values():
        for u, v in r.items():
            by_unit.setdefault(u, []).append(v)
    same = total = 0
    for values in by_unit.values():
        for a in range(len(values)):
            for b in range(a + 1, len(values)):
                total += 1
                same += values[a] == values[b]
    return same / total if total else None


# ---------------------------------------------------------------- automatic metrics


def _norm(text: str) -> str:
    return re.sub(r"\s+", " ", (text or "").strip().lower())


def exact_match(predictions: Sequence[str], references: Sequence[str]) -> float:
    """Share of predictions equal to their reference after trimming, lower-casing and collapsing spaces."""
    if not predictions:
        return float("nan")
    return sum(_norm(p) == _norm(r) for p, r in zip(predictions, references)) / len(predictions)


def rouge_l(predictions: Sequence[str], references: Sequence[str]) -> float:
    """Mean ROUGE-L F1 (rouge-score, with stemming)."""
    from rouge_score import rouge_scorer

    if not predictions:
        return float("nan")
    scorer = rouge_scorer.RougeScorer(["rougeL"], use_stemmer=True)
    return float(np.mean([scorer.score(r, p)["rougeL"].fmeasure for p, r in zip(predictions, references)]))


def bleu(predictions: Sequence[str], references: Sequence[str]) -> float:
    """Corpus BLEU (sacrebleu, default 13a tokenisation), 0-100."""
    import sacrebleu

    if not predictions:
        return float("nan")
    return float(sacrebleu.corpus_bleu(list(predictions), [list(references)]).score)


def perplexity(total_nll: float, n_tokens: int) -> float:
    """exp(mean negative log-likelihood per token)."""
    return float(math.exp(total_nll / n_tokens)) if n_tokens else float("nan")


def automatic_metrics(predictions: Sequence[str], references: Sequence[str]) -> dict:
    """ROUGE-L, BLEU and exact match of predictions against their references (pairs with an empty reference
    are skipped)."""
    pairs = [(p, r) for p, r in zip(predictions, references) if (r or "").strip()]
    preds, refs = [p for p, _ in pairs], [r for _, r in pairs]
    return {"n": len(pairs), "rouge_l": rouge_l(preds, refs), "bleu": bleu(preds, refs),
            "exact_match": exact_match(preds, refs)}

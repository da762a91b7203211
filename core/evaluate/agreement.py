"""Agreement between two raters on the same items (an LLM judge against the reviewers). Pure functions on plain
lists; no database.

- ``cohen_kappa``: Cohen's kappa, scikit-learn's ``cohen_kappa_score`` (unweighted: every disagreement counts
  the same), None where it is undefined (both raters gave one and the same value throughout).
- ``spearman``: Spearman's rank correlation, scipy's ``spearmanr``, None where undefined (a constant rater).
- ``percent_agreement``: share of items with the same value; ``ignore`` drops the items either rater called a
  tie first (% agreement without ties).
- ``with_interval``: any of them with a percentile bootstrap 95% interval over the items (resampled with
  replacement; resamples where the figure is undefined are left out) and the number of items.
"""
from __future__ import annotations

import math
from typing import Callable, Hashable, Sequence

import numpy as np

Stat = Callable[[Sequence, Sequence], float | None]


def _same_length(a: Sequence, b: Sequence) -> None:
    if len(a) != len(b):
        raise ValueError(f"Two raters must rate the same items ({len(a)} against {len(b)} values).")


def cohen_kappa(a: Sequence[Hashable], b: Sequence[Hashable]) -> float | None:
    """Cohen's kappa of two raters' labels (scikit-learn); None with no items or when it is undefined."""
    from sklearn.metrics import cohen_kappa_score

    _same_length(a, b)
    if not a:
        return None
    a, b = [str(v) for v in a], [str(v) for v in b]  # labels may mix types (a system name and "tie")
    if len(set(a) | set(b)) < 2:
        return None  # one value throughout: chance agreement is 1 and kappa is 0/0
    value = float(cohen_kappa_score(a, b))
    return None if math.isnan(value) else value


def spearman(a: Sequence[float], b: Sequence[float]) -> float | None:
    """Spearman's rank correlation (scipy); None with fewer than two items or a rater who never varies."""
    from scipy.stats import spearmanr

    _same_length(a, b)
    if len(a) < 2 or len(set(a)) < 2 or len(set(b)) < 2:
        return None
    value = float(spearmanr(a, b).statistic)
    return None if math.isnan(value) else value


def percent_agreement(a: Sequence[Hashable], b: Sequence[Hashable], ignore: Hashable | None = None) -> float | None:
    """Share of items on which both raters gave the same value; with ``ignore``, only over the items where
    neither gave that value. None when no item is left."""
    _same_length(a, b)
    pairs = [(x, y) for x, y in zip(a, b) if ignore is None or (x != ignore and y != ignore)]
    return sum(x == y for x, y in pairs) / len(pairs) if pairs else None


def with_interval(stat: Stat, a: Sequence, b: Sequence, *, rounds: int = 200, seed: int = 0,
                  confidence: float = 0.95) -> dict:
    """``{"value", "lo", "hi", "n"}``: ``stat`` on all items and a percentile bootstrap interval from ``rounds``
    resamples of the items (value, lo and hi are None where the figure is undefined)."""
    _same_length(a, b)
    a, b = list(a), list(b)
    value = stat(a, b)
    if value is None or len(a) < 2:
        return {"value": value, "lo": value, "hi": value, "n": len(a)}
    rng = np.random.default_rng(seed)
    samples = []
    for _ in range(rounds):
        idx = rng.integers(0, len(a), len(a))
        got = stat([a[i] for i in idx], [b[i] for i in idx])
        if got is not None:
            samples.append(got)
    if not samples:
        return {"value": value, "lo": value, "hi": value, "n": len(a)}
    tail = (1 - confidence) / 2 * 100
    return {"value": value, "lo": float(np.percentile(samples, tail)), "hi": float(np.percentile(samples, 100 - tail)),
            "n": len(a)}


def agreement_figures(a: Sequence, b: Sequence, *, tie: Hashable | None = None, ranks: bool = True,
                      rounds: int = 200, seed: int = 0) -> dict:
    """Every figure of one criterion for two raters' values on the same items: % agreement (and without ties
    when ``tie`` names the tie value), Cohen's kappa and, when the values are ordered (``ranks``), Spearman;
    each ``{"value", "lo", "hi", "n"}``."""
    out = {"n": len(a), "percent": with_interval(percent_agreement, a, b, rounds=rounds, seed=seed),
           "kappa": with_interval(cohen_kappa, a, b, rounds=rounds, seed=seed)}
    if tie is not None:
        kept = [(x, y) for x, y in zip(a, b) if x != tie and y != tie]
        out["percent_without_ties"] = with_interval(percent_agreement, [x for x, _ in kept], [y for _, y in kept],
                                                    rounds=rounds, seed=seed)
    if ranks:
        out["spearman"] = with_interval(spearman, a, b, rounds=rounds, seed=seed)
    return out

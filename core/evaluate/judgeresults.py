"""What a judge's verdicts say, kept apart from the reviewers' figures: its own leaderboard (Bradley-Terry with
bootstrap intervals, core.evaluate.stats), rubric means, position bias and unparseable answers; and its agreement
with the reviewers on the items both judged (core.evaluate.agreement), with the disagreements to read.

Only verdicts on the eval set's current outputs count (a re-generated answer needs a new verdict).

Items, for agreement: a pairwise item is (prompt, pair of systems): the reviewers' side is their majority winner
(a system, or "tie" for ties, both-bad votes and an even split), the judge's the both-orders verdict. A rubric
item is (prompt, system, criterion): the reviewers' side is the mean of their scores (rounded half up for %
agreement and kappa, as is for Spearman), the judge's its grade. A judge is trusted on an eval set when every
measured kappa reaches its bar (``min_kappa``) on at least ``min_items`` items; otherwise its figures are marked
"not yet trusted" wherever they appear.
"""
from __future__ import annotations

import math
from collections import Counter

from sqlmodel import Session, select

from core.accounts import require
from core.evaluate import stats
from core.evaluate.agreement import agreement_figures, spearman, with_interval
from core.evaluate.evalsets import eval_prompts, get_eval_set, latest_outputs
from core.evaluate.judges import get_judge
from core.evaluate.judging import TIE, combine_orders
from core.evaluate.review import pair_key, rubric_of, scores_of
from core.evaluate.systems import system_labels
from storage.models import Judge, JudgeVerdict, Project, User

NOT_TRUSTED = "not yet trusted"
PREFERENCE = "preference"


def current_verdicts(session: Session, judge_id: int, eval_set_id: int) -> list[JudgeVerdict]:
    """The judge's verdicts on the eval set's current outputs (latest generation of each system)."""
    current = {o.id for o in latest_outputs(session, eval_set_id).values()}
    rows = session.exec(select(JudgeVerdict).where(JudgeVerdict.judge_id == judge_id,
                                                   JudgeVerdict.eval_set_id == eval_set_id).order_by(JudgeVerdict.id))
    return [v for v in rows if v.output_a_id in current and (v.output_b_id == 0 or v.output_b_id in current)]


def pairwise_items(verdicts: list[JudgeVerdict]) -> dict[tuple[int, str], dict]:
    """(prompt id, pair key) -> the both-orders result ``{first, second, winner, flipped, verdicts}`` of every
    item asked in both orders (``first`` is the system first in the pair key)."""
    orders: dict[tuple[int, str], dict[str, JudgeVerdict]] = {}
    for v in verdicts:
        if v.mode == "pairwise":
            orders.setdefault((v.prompt_id, pair_key(v.system_a, v.system_b)), {})[v.system_a] = v
    items = {}
    for (prompt_id, pair), by_first in orders.items():
        first, second = pair.split("|", 1)
        if first in by_first and second in by_first:
            v1, v2 = by_first[first], by_first[second]
            items[(prompt_id, pair)] = {"first": first, "second": second, "verdicts": (v1, v2),
                                        **combine_orders(first, second, v1.verdict, v2.verdict)}
    return items


def rubric_items(verdicts: list[JudgeVerdict]) -> dict[tuple[int, str, str], JudgeVerdict]:
    """(prompt id, system, criterion) -> the rubric verdict."""
    return {(v.prompt_id, v.system_a, v.criterion): v for v in verdicts if v.mode == "rubric"}


def _reviewer_sides(session: Session, eval_set_id: int, rubric: list[dict]) -> tuple[dict, dict]:
    """The reviewers' side of each item: majority winners per (prompt, pair) and mean scores per (prompt, system,
    criterion)."""
    winners: dict[tuple[int, str], Counter] = {}
    values: dict[tuple[int, str, str], list[float]] = {}
    names = {c["name"] for c in rubric}
    for s in scores_of(session, eval_set_id):
        winner = {"A": s.system_a, "B": s.system_b}.get(s.preference, TIE)
        winners.setdefault((s.prompt_id, s.pair), Counter())[winner] += 1
        for crit, v in (s.scores or {}).items():
            for side, system in (("A", s.system_a), ("B", s.system_b)):
                if crit in names and v.get(side) is not None:
                    values.setdefault((s.prompt_id, system, crit), []).append(float(v[side]))
    majority = {}
    for item, votes in winners.items():
        (top, n), *rest = votes.most_common()
        majority[item] = TIE if rest and rest[0][1] == n else top
    return majority, {k: sum(v) / len(v) for k, v in values.items()}


def _half_up(x: float) -> int:
    return int(math.floor(x + 0.5))


def agreement(session: Session, judge: Judge, eval_set_id: int, *, rounds: int = 200, seed: int = 0,
              verdicts: list[JudgeVerdict] | None = None) -> dict:
    """Agreement with the reviewers per criterion (``rows``), the ``disagreements`` and the ``trust`` verdict."""
    es = get_eval_set(session, eval_set_id)
    rubric = rubric_of(session.get(Project, es.project_id))
    verdicts = current_verdicts(session, judge.id, es.id) if verdicts is None else verdicts
    majority, means = _reviewer_sides(session, es.id, rubric)
    prompts = {p.id: p for p in eval_prompts(session, es.id)}
    rows, disagreements = [], []
    pairs = {k: v for k, v in pairwise_items(verdicts).items() if v["winner"] is not None and k in majority}
    if pairs:
        keys = sorted(pairs)
        human = [majority[k] for k in keys]
        judged = [pairs[k]["winner"] for k in keys]
        code = {k: {pairs[k]["first"]: 1, TIE: 0, pairs[k]["second"]: -1} for k in keys}
        figures = agreement_figures(human, judged, tie=TIE, ranks=False, rounds=rounds, seed=seed)
        figures["spearman"] = with_interval(spearman, [code[k][majority[k]] for k in keys],
                                            [code[k][pairs[k]["winner"]] for k in keys], rounds=rounds, seed=seed)
        rows.append({"criterion": PREFERENCE, **figures})
        for k, h, j in zip(keys, human, judged):
            if h != j:
                disagreements.append(_disagreement(prompts.get(k[0]), PREFERENCE, k[1], h, j,
                                                   " / ".join(v.raw for v in pairs[k]["verdicts"])))
    graded = rubric_items(verdicts)
    for crit in rubric:
        graded_keys = sorted(k for k, v in graded.items()
                             if k[2] == crit["name"] and v.score is not None and k in means)
        if not graded_keys:
            continue
        human = [means[k] for k in graded_keys]
        judged = [graded[k].score for k in graded_keys]
        figures = agreement_figures([_half_up(h) for h in human], judged, rounds=rounds, seed=seed)
        figures["spearman"] = with_interval(spearman, human, judged, rounds=rounds, seed=seed)
        rows.append({"criterion": crit["name"], **figures})
        for g, h, j in zip(graded_keys, human, judged):
            if _half_up(h) != j:
                disagreements.append(_disagreement(prompts.get(g[0]), crit["name"], g[1], round(h, 2), j,
                                                   graded[g].raw))
    return {"rows": rows, "disagreements": disagreements, "trust": trust(judge, rows)}


def _disagreement(prompt, criterion: str, about: str, reviewers, judge, raw: str) -> dict:
    question = next((m.get("content", "") for m in reversed(prompt.messages) if m.get("role") == "user"), "") \
        if prompt else ""
    return {"prompt_id": prompt.id if prompt else None, "prompt_number": prompt.position + 1 if prompt else None,
            "prompt": question, "criterion": criterion, "about": about, "reviewers": reviewers, "judge": judge,
            "judge_answer": raw[:2000]}


def trust(judge: Judge, rows: list[dict]) -> dict:
    """``trusted`` when every measured kappa reaches the judge's bar on enough items; ``reason`` says why not."""
    bar = f"kappa at least {judge.min_kappa:g} on at least {judge.min_items} items"
    if not rows:
        return {"trusted": False, "label": NOT_TRUSTED, "reason": f"No item judged by both yet (needs {bar})."}
    short = [r["criterion"] for r in rows if r["kappa"]["n"] < judge.min_items]
    low = [f"{r['criterion']} ({'undefined' if r['kappa']['value'] is None else round(r['kappa']['value'], 2)})"
           for r in rows if r["kappa"]["value"] is None or r["kappa"]["value"] < judge.min_kappa]
    if short or low:
        parts = ([f"too few items for {', '.join(short)}"] if short else []) + \
                ([f"kappa below the bar for {', '.join(low)}"] if low else [])
        return {"trusted": False, "label": NOT_TRUSTED, "reason": "; ".join(parts) + f" (needs {bar})."}
    return {"trusted": True, "label": "trusted", "reason": f"Every criterion reaches {bar}."}


def judge_results(session: Session, user: User, eval_set_id: int, judge_id: int | str, *, rounds: int = 200,
                  seed: int = 0) -> dict:
    """The judge's own figures on an eval set: counts (answers, unparseable, items, flipped, position bias), its
    leaderboard and win/tie/loss from both-orders verdicts, rubric means, agreement and trust."""
    require(user, "evaluate")
    es = get_eval_set(session, eval_set_id)
    judge = get_judge(session, judge_id)
    verdicts = current_verdicts(session, judge.id, es.id)
    items = pairwise_items(verdicts)
    parsed = [i for i in items.values() if i["winner"] is not None]
    flipped = [i for i in parsed if i["flipped"]]
    favoured = Counter("first shown" if i["verdicts"][0].verdict == "A" else "second shown" for i in flipped
                       if i["verdicts"][0].verdict == i["verdicts"][1].verdict)
    pairwise = [v for v in verdicts if v.mode == "pairwise"]
    graded = [v for v in verdicts if v.mode == "rubric"]
    counts = {"answers": len(verdicts), "pairwise_answers": len(pairwise), "rubric_answers": len(graded),
              "unparseable_pairwise": sum(v.verdict is None for v in pairwise),
              "unparseable_rubric": sum(v.score is None for v in graded), "pairwise_items": len(items),
              "items_with_verdict": len(parsed), "flipped": len(flipped),
              "position_bias": len(flipped) / len(parsed) if parsed else None,
              "favoured_first_shown": favoured["first shown"], "favoured_second_shown": favoured["second shown"]}
    counts["unparseable"] = counts["unparseable_pairwise"] + counts["unparseable_rubric"]
    systems = sorted({v.system_a for v in verdicts} | {v.system_b for v in verdicts if v.system_b})
    labels = system_labels(session, systems)
    votes = [(i["first"], i["second"], {i["first"]: "1", i["second"]: "2"}.get(i["winner"], TIE)) for i in parsed]
    board = stats.bradley_terry_bootstrap(votes, rounds=rounds, seed=seed) if votes else []
    wtl = stats.win_tie_loss(votes)
    for row in board:
        row["label"] = labels.get(row["system"], row["system"])
    for row in wtl:
        row["label_a"], row["label_b"] = labels.get(row["system_a"]), labels.get(row["system_b"])
    means = []
    for system in systems:
        for crit in rubric_of(session.get(Project, es.project_id)):
            iv = stats.bootstrap_mean([v.score for v in graded if v.system_a == system and v.criterion == crit["name"]
                                       and v.score is not None], seed=seed)
            if iv.n:
                means.append({"system": system, "label": labels.get(system, system), "criterion": crit["name"],
                              "mean": iv.value, "lo": iv.lo, "hi": iv.hi, "n": iv.n})
    agreed = agreement(session, judge, es.id, rounds=rounds, seed=seed, verdicts=verdicts)
    unparseable = [{"prompt_id": v.prompt_id, "mode": v.mode, "criterion": v.criterion,
                    "shown": f"{labels.get(v.system_a, v.system_a)}" + (f" vs {labels.get(v.system_b, v.system_b)}"
                                                                        if v.system_b else ""),
                    "answer": v.raw[:500]} for v in verdicts if v.verdict is None and v.score is None]
    return {"judge": {"id": judge.id, "name": judge.name, "model": judge.model, "min_kappa": judge.min_kappa,
                      "min_items": judge.min_items}, "counts": counts, "leaderboard": board, "win_tie_loss": wtl,
            "means": means, "agreement": agreed["rows"], "disagreements": agreed["disagreements"],
            "trust": agreed["trust"], "unparseable": unparseable}


def judge_trust(session: Session, judge_id: int | str, eval_set_id: int) -> dict:
    """Whether the judge is trusted on this eval set (point estimates only: no bootstrap)."""
    judge = get_judge(session, judge_id)
    return agreement(session, judge, eval_set_id, rounds=0)["trust"]


def judge_outcomes(session: Session, judge_id: int, eval_set_id: int, run: str, base: str) -> dict[int, dict]:
    """Prompt id -> what the judge said about ``run`` there: ``winner`` against ``base`` (both orders; None
    without a verdict) and ``scores`` (criterion -> grade), for routing failures by a trusted judge."""
    verdicts = current_verdicts(session, judge_id, eval_set_id)
    out: dict[int, dict] = {}
    for (prompt_id, pair), item in pairwise_items(verdicts).items():
        if pair == pair_key(run, base):
            out.setdefault(prompt_id, {"winner": None, "scores": {}})["winner"] = item["winner"]
    for (prompt_id, system, crit), v in rubric_items(verdicts).items():
        if system == run and v.score is not None:
            out.setdefault(prompt_id, {"winner": None, "scores": {}})["scores"][crit] = v.score
    return out

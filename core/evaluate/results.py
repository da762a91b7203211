"""Results, identities revealed: means with bootstrap intervals, win/tie/loss, the Bradley-Terry leaderboard,
Krippendorff's alpha, automatic checks (pass rates with intervals, failing answers), automatic metrics and the
systems side by side with what each answer cost (core.evaluate.systemtable); the passages each +RAG answer was
given; exports of DPO pairs, scores CSV, systems CSV and a Markdown report."""
from __future__ import annotations

import csv
import io
import json
import os
from pathlib import Path

from sqlmodel import Session, select

from core.accounts import require
from core.curate.formats import csv_safe_cell
from core.errors import InvalidInput
from core.evaluate import stats
from core.evaluate.checkstore import check_results
from core.evaluate.evalsets import eval_prompts, get_eval_set, latest_outputs, output_decodings
from core.evaluate.generate import generation_jobs
from core.evaluate.generate_config import decoding_differences, describe_differences
from core.evaluate.pairs_from_votes import vote_pairs
from core.evaluate.review import review_progress, rubric_of, scores_of
from core.evaluate.systems import system_labels
from core.evaluate.systemtable import (cost_by_system, display_rows, markdown_table, side_by_side,
                                        systems_csv, win_rates)
from core.workspace import exports_dir
from storage.models import Project, Score, User


def _winner(score: Score) -> str:
    if score.preference == "A":
        return score.system_a
    if score.preference == "B":
        return score.system_b
    return score.preference


def score_table(session: Session, user: User, eval_set_id: int) -> list[dict]:
    """One row per score with systems revealed: the prompt's number (from 1), per criterion the score of each
    system, and the winner."""
    require(user, "evaluate")
    names = {u.id: u.username for u in session.exec(select(User))}
    positions = {p.id: p.position for p in eval_prompts(session, eval_set_id)}
    rows = []
    for s in scores_of(session, eval_set_id):
        position = positions.get(s.prompt_id)
        row = {"prompt_id": s.prompt_id, "prompt_number": None if position is None else position + 1, "pair": s.pair,
               "reviewer": names.get(s.reviewer_id, str(s.reviewer_id)), "system_a": s.system_a,
               "system_b": s.system_b, "preference": s.preference, "winner": _winner(s), "comment": s.comment,
               "updated_at": s.updated_at.isoformat() if s.updated_at else ""}
        for crit, v in s.scores.items():
            row[f"{crit}_a"] = v.get("A")
            row[f"{crit}_b"] = v.get("B")
        rows.append(row)
    return rows


def _votes(scores: list[Score]) -> list[stats.Vote]:
    out = []
    for s in scores:
        outcome = {"A": "1", "B": "2"}.get(s.preference, s.preference)
        out.append((s.system_a, s.system_b, outcome))
    return out


BOOTSTRAP_ROUNDS = 200  # refits behind the leaderboard's intervals, unless FINETUNE_STUDIO_BOOTSTRAP_ROUNDS says


def bootstrap_rounds_setting() -> int:
    """The leaderboard's bootstrap refits: FINETUNE_STUDIO_BOOTSTRAP_ROUNDS, else 200. The test suite sets fewer
    (the tables and charts are under test there, not the intervals' precision)."""
    raw = os.environ.get("FINETUNE_STUDIO_BOOTSTRAP_ROUNDS", "").strip()
    if not raw:
        return BOOTSTRAP_ROUNDS
    if not raw.isdigit() or int(raw) < 10:
        raise InvalidInput(f"FINETUNE_STUDIO_BOOTSTRAP_ROUNDS must be a whole number of at least 10, not {raw!r}.")
    return int(raw)


def results(session: Session, user: User, eval_set_id: int, *, bootstrap_rounds: int | None = None,
            seed: int = 0) -> dict:
    """Everything the results page and ``cli results`` show, with identities revealed (``bootstrap_rounds``:
    by default the setting above)."""
    require(user, "evaluate")
    es = get_eval_set(session, eval_set_id)
    project = session.get(Project, es.project_id)
    rubric = rubric_of(project)
    scores = scores_of(session, es.id)
    outputs = latest_outputs(session, es.id)
    systems = sorted({sys for _, sys in outputs} | {x for s in scores for x in (s.system_a, s.system_b)})
    labels = system_labels(session, systems)

    per_system: dict[str, dict[str, list[int]]] = {s: {c["name"]: [] for c in rubric} for s in systems}
    crit_ratings: dict[str, dict[int, dict]] = {c["name"]: {} for c in rubric}
    pref_ratings: dict[int, dict] = {}
    for s in scores:
        for crit, v in s.scores.items():
            for side, system in (("A", s.system_a), ("B", s.system_b)):
                if crit in per_system.get(system, {}) and v.get(side) is not None:
                    per_system[system][crit].append(v[side])
                    crit_ratings[crit].setdefault(s.reviewer_id, {})[(s.prompt_id, s.pair, system)] = v[side]
        pref_ratings.setdefault(s.reviewer_id, {})[(s.prompt_id, s.pair)] = _winner(s)

    means = []
    for system in systems:
        for crit in rubric:
            iv = stats.bootstrap_mean(per_system[system][crit["name"]], seed=seed)
            if iv.n:
                means.append({"system": system, "label": labels[system], "criterion": crit["name"],
                              "mean": iv.value, "lo": iv.lo, "hi": iv.hi, "n": iv.n})

    votes = _votes(scores)
    wtl = stats.win_tie_loss(votes)
    for row in wtl:
        row["label_a"], row["label_b"] = labels.get(row["system_a"]), labels.get(row["system_b"])
    rounds = bootstrap_rounds or bootstrap_rounds_setting()
    board = stats.bradley_terry_bootstrap(votes, rounds=rounds, seed=seed) if votes else []
    for row in board:
        row["label"] = labels.get(row["system"])

    agreement = []
    for crit in rubric:
        ratings = crit_ratings[crit["name"]]
        agreement.append({"criterion": crit["name"], "measure": "Krippendorff's alpha (ordinal)",
                          "alpha": stats.krippendorff_alpha(ratings, level="ordinal",
                                                            value_domain=range(crit["min"], crit["max"] + 1)),
                          "percent_agreement": stats.percent_agreement(ratings)})
    agreement.append({"criterion": "preference", "measure": "Krippendorff's alpha (nominal)",
                      "alpha": stats.krippendorff_alpha(pref_ratings, level="nominal"),
                      "percent_agreement": stats.percent_agreement(pref_ratings)})

    prompts = {p.id: p for p in eval_prompts(session, es.id)}
    perplexities: dict[str, float] = {}
    validation_ppl: dict[str, float] = {}
    for job in reversed(generation_jobs(session, es.id)):  # oldest first, newest wins
        for system, value in ((job.result or {}).get("perplexity") or {}).items():
            perplexities[system] = value
        for system, value in ((job.result or {}).get("validation_perplexity") or {}).items():
            validation_ppl[system] = value
    metrics = []
    for system in systems:
        pairs = [(o.text, prompts[pid].reference) for (pid, sysk), o in outputs.items()
                 if sysk == system and pid in prompts]
        row = {"system": system, "label": labels[system], "outputs": len(pairs)}
        row.update(stats.automatic_metrics([p for p, _ in pairs], [r for _, r in pairs]))
        row["references"] = row.pop("n")
        row["perplexity"] = perplexities.get(system)
        row["validation_perplexity"] = validation_ppl.get(system)
        toks = [o.n_new_tokens for (_, sysk), o in outputs.items() if sysk == system]
        row["mean_new_tokens"] = sum(toks) / len(toks) if toks else None
        metrics.append(row)

    differences = decoding_differences(output_decodings(session, es.id))
    checks = _numbered(check_results(session, es.id, seed=seed))
    listed = [{"system": s, "label": labels[s]} for s in systems]
    summary = side_by_side(listed, [c["name"] for c in rubric], checks=checks["by_system"], metrics=metrics,
                           means=means, wins=win_rates(votes), cost=cost_by_system(outputs.values()))
    return _no_nan({"eval_set": {"id": es.id, "name": es.name, "prompts": len(prompts),
                         "reviewers_per_item": es.reviewers_per_item},
            "systems": listed, "criteria": [c["name"] for c in rubric], "side_by_side": summary,
            "progress": review_progress(session, user, es.id), "means": means, "win_tie_loss": wtl,
            "leaderboard": board, "agreement": agreement, "metrics": metrics, "n_scores": len(scores),
            "checks": checks,
            "decoding": {"differences": differences, "text": describe_differences(differences, labels)}})


def retrieved_passages(session: Session, user: User, eval_set_id: int) -> list[dict]:
    """Per prompt (in order) and +RAG system, the answer and the passages it was given (Output.context): for
    engineers on Results, never for blind reviewers. Empty when no answer was given passages."""
    require(user, "evaluate")
    es = get_eval_set(session, eval_set_id)
    outputs = latest_outputs(session, es.id)
    labels = system_labels(session, sorted({system for (_, system), o in outputs.items() if o.context}))
    rows = []
    for prompt in eval_prompts(session, es.id):
        question = next((m["content"] for m in reversed(prompt.messages) if m.get("role") == "user"), "")
        for system in sorted(labels):
            output = outputs.get((prompt.id, system))
            if output is not None and output.context:
                rows.append({"prompt_number": prompt.position + 1, "prompt": question, "system": system,
                             "label": labels[system], "answer": output.text, "passages": list(output.context)})
    return rows


def _numbered(checks: dict) -> dict:
    """Each failing answer's prompt as people count it, from 1 (``position`` is the stored index, from 0)."""
    for row in checks["failures"]:
        row["prompt_number"] = row["position"] + 1
    return checks


def _no_nan(value):
    """NaN (a metric with no data) becomes None, so JSON output stays valid."""
    if isinstance(value, float) and value != value:
        return None
    if isinstance(value, dict):
        return {k: _no_nan(v) for k, v in value.items()}
    if isinstance(value, list):
        return [_no_nan(v) for v in value]
    return value


# ---------------------------------------------------------------- exports (DPO pairs, scores CSV, report)


def dpo_pairs(session: Session, user: User, eval_set_id: int) -> list[dict]:
    """Preference pairs in TRL's conversational format: ``prompt`` (messages), ``chosen``/``rejected``
    (one assistant message each). One pair per item, by majority of the reviewers' A/B preferences; items
    with only ties, both-bad votes or an even split give none (core.evaluate.pairs_from_votes.vote_pairs)."""
    require(user, "evaluate")
    return [{k: p[k] for k in ("prompt", "chosen", "rejected")}
            for p in vote_pairs(session, user, eval_set_id)["pairs"]]


def export_dpo(session: Session, user: User, eval_set_id: int, out_dir: str | Path | None = None) -> dict:
    """Write DPO pairs as ``dpo.jsonl`` and a ``datasets`` folder (``save_to_disk``) under ``out_dir``."""
    require(user, "evaluate")
    es = get_eval_set(session, eval_set_id)
    rows = dpo_pairs(session, user, es.id)
    if not rows:
        raise InvalidInput("No preference pairs yet: DPO pairs come from items where reviewers preferred A or B.")
    out = Path(out_dir) if out_dir else exports_dir() / f"evalset-{es.id}-dpo"
    out.mkdir(parents=True, exist_ok=True)
    jsonl = out / "dpo.jsonl"
    with open(jsonl, "w", encoding="utf-8") as fh:
        for row in rows:
            fh.write(json.dumps(row, ensure_ascii=False) + "\n")
    from datasets import Dataset

    disk = out / "dpo_dataset"
    Dataset.from_list(rows).save_to_disk(str(disk))
    return {"pairs": len(rows), "jsonl": str(jsonl), "dataset": str(disk)}


def scores_csv(session: Session, user: User, eval_set_id: int) -> str:
    """All scores as CSV text (systems revealed); text cells that a spreadsheet would run as a formula (a
    comment starting with "=") are neutralised with a leading quote (core.curate.formats.csv_safe_cell)."""
    require(user, "evaluate")
    es = get_eval_set(session, eval_set_id)
    rows = score_table(session, user, es.id)
    buf = io.StringIO()
    columns: list[str] = []
    for row in rows:
        columns += [k for k in row if k not in columns]
    writer = csv.DictWriter(buf, fieldnames=columns or ["prompt_id", "pair", "reviewer"])
    writer.writeheader()
    writer.writerows({key: csv_safe_cell(value) for key, value in row.items()} for row in rows)
    return buf.getvalue()


def side_by_side_csv(res: dict) -> str:
    """The systems side by side of a ``results()`` dict as CSV: pass rate, ROUGE-L, rubric means and win rate with
    their intervals, and the cost per answer (prompt tokens, seconds, new tokens)."""
    return systems_csv(res["side_by_side"])


def _fmt(value, digits: int = 2) -> str:
    if value is None or value != value:  # None or NaN
        return "n/a"
    return f"{value:.{digits}f}"


def comparison_report(session: Session, user: User, eval_set_id: int, *, bootstrap_rounds: int = 200) -> str:
    """A Markdown report of the comparison: leaderboard, means, win/tie/loss, agreement and metrics."""
    return report_markdown(results(session, user, eval_set_id, bootstrap_rounds=bootstrap_rounds))


def report_markdown(res: dict) -> str:
    """The Markdown comparison report of a ``results()`` dict."""
    es = res["eval_set"]
    lines = [f"# Comparison report: {es['name']}", "",
             f"{es['prompts']} prompts, {res['n_scores']} scores, {res['progress']['complete']} of "
             f"{res['progress']['items']} items with at least {es['reviewers_per_item']} reviewers.", ""]
    if (res.get("decoding") or {}).get("text"):
        lines += [f"Not like with like: the systems' answers were generated with different decoding settings "
                  f"({res['decoding']['text']}).", ""]
    if res.get("side_by_side"):
        lines += ["## Systems side by side, with the cost of an answer", ""]
        lines += markdown_table(display_rows(res["side_by_side"], res["criteria"]))
        lines += ["", "Win rate: the share of a system's blind comparisons it won. Costs are means per answer; "
                  "\"—\": not recorded (answers generated before prompt tokens were counted).", ""]
    if res["leaderboard"]:
        lines += ["## Leaderboard (Bradley-Terry, Elo scale, 95% bootstrap interval)", "",
                  "| system | rating | 95% interval | votes |", "|---|---:|---|---:|"]
        lines += [f"| {r['label']} | {r['rating']:.0f} | {r['lo']:.0f} to {r['hi']:.0f} | {r['n_votes']} |"
                  for r in res["leaderboard"]]
        lines.append("")
    if res["means"]:
        lines += ["## Mean scores (95% bootstrap interval)", "", "| system | criterion | mean | interval | n |",
                  "|---|---|---:|---|---:|"]
        lines += [f"| {r['label']} | {r['criterion']} | {r['mean']:.2f} | {r['lo']:.2f} to {r['hi']:.2f} | {r['n']} |"
                  for r in res["means"]]
        lines.append("")
    if res["win_tie_loss"]:
        lines += ["## Win / tie / loss", "", "| A | B | A wins | ties (incl. both bad) | B wins | n |",
                  "|---|---|---:|---:|---:|---:|"]
        lines += [f"| {r['label_a']} | {r['label_b']} | {r['a_win_rate']:.0%} | {r['tie_rate']:.0%} | "
                  f"{r['b_win_rate']:.0%} | {r['n']} |" for r in res["win_tie_loss"]]
        lines.append("")
    checks = res.get("checks") or {}
    if checks.get("by_system"):
        lines += [f"## Automatic checks ({checks['checked_prompts']} of {checks['prompts']} prompts have checks)", "",
                  "| system | prompts passing every check | 95% interval | checks passed |", "|---|---:|---|---:|"]
        lines += [f"| {r['label']} | {r['passed']}/{r['prompts']} = {r['pass_rate']:.2f} | {r['lo']:.2f} to "
                  f"{r['hi']:.2f} | {r['checks_passed']}/{r['checks']} |" for r in checks["by_system"]]
        lines.append("")
    lines += ["## Agreement between reviewers", "", "| criterion | measure | alpha | % agreement |",
              "|---|---|---:|---:|"]
    lines += [f"| {r['criterion']} | {r['measure']} | {_fmt(r['alpha'])} | {_fmt(r['percent_agreement'])} |"
              for r in res["agreement"]]
    lines += ["", "## Automatic metrics against references", "",
              "| system | outputs | references | ROUGE-L | BLEU | exact match | perplexity | validation perplexity |",
              "|---|---:|---:|---:|---:|---:|---:|---:|"]
    lines += [f"| {r['label']} | {r['outputs']} | {r['references']} | {_fmt(r['rouge_l'], 3)} | {_fmt(r['bleu'], 1)} "
              f"| {_fmt(r['exact_match'], 3)} | {_fmt(r['perplexity'])} | {_fmt(r['validation_perplexity'])} |"
              for r in res["metrics"]]
    return "\n".join(lines) + "\n"

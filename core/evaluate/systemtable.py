"""The systems side by side (Results, the comparison report, the systems CSV and bench/outcome.py): per system the
fact-check pass rate with its interval, ROUGE-L, the rubric means and the win rate with their intervals, and what
each answer cost: prompt tokens, seconds and new tokens per answer. Built for any number of systems, e.g. the five
of the fine-tune-or-RAG question (base, base+prompt, base+rag, run:N, run:N+rag).

A cost is the mean over the answers that recorded it: answers generated before prompt tokens were counted store 0,
so a system with none shows "—", never 0 (``DASH``). Pure functions over plain rows, cheap to import.
"""
from __future__ import annotations

import csv
import io
from typing import Iterable

from core.curate.formats import csv_safe_cell
from core.evaluate import stats

DASH = "—"
COST_FIELDS = {"prompt_tokens": "prompt tokens / answer", "seconds": "seconds / answer",
               "new_tokens": "new tokens / answer"}
"""Per answer cost -> its column's name."""


def _mean_recorded(values: list[float]) -> float | None:
    """The mean of the values that were recorded (> 0); None when no answer recorded one."""
    recorded = [v for v in values if v and v > 0]
    return sum(recorded) / len(recorded) if recorded else None


def cost_by_system(outputs: Iterable) -> dict[str, dict]:
    """Per system of ``outputs`` (Output rows, one per prompt): ``answers`` and the mean ``prompt_tokens``,
    ``seconds`` and ``new_tokens`` per answer (None when no answer of the system recorded it)."""
    by_system: dict[str, list] = {}
    for output in outputs:
        by_system.setdefault(output.system, []).append(output)
    return {system: {"answers": len(rows), "prompt_tokens": _mean_recorded([o.prompt_tokens for o in rows]),
                     "seconds": _mean_recorded([o.seconds for o in rows]),
                     "new_tokens": _mean_recorded([o.n_new_tokens for o in rows])}
            for system, rows in by_system.items()}


def win_rates(votes: Iterable[stats.Vote]) -> dict[str, dict]:
    """Per system: the share of its blind comparisons it won (ties and "both bad" are not wins), over every system
    it met, with a Wilson 95% interval (core.evaluate.stats.wilson)."""
    tally: dict[str, list[int]] = {}
    for first, second, outcome in votes:
        for system, won in ((first, outcome == "1"), (second, outcome == "2")):
            counts = tally.setdefault(system, [0, 0])
            counts[0] += won
            counts[1] += 1
    out = {}
    for system, (wins, n) in tally.items():
        iv = stats.wilson(wins, n)
        out[system] = {"wins": wins, "votes": n, "win_rate": iv.value, "lo": iv.lo, "hi": iv.hi}
    return out


def side_by_side(systems: list[dict], criteria: list[str], *, checks: list[dict], metrics: list[dict],
                 means: list[dict], wins: dict[str, dict], cost: dict[str, dict]) -> list[dict]:
    """One row of numbers per system (``systems``: {"system", "label"} in the order to show), from the parts of
    core.evaluate.results.results(): None where a system has no such figure."""
    by_check = {r["system"]: r for r in checks}
    by_metric = {r["system"]: r for r in metrics}
    by_mean = {(r["system"], r["criterion"]): r for r in means}
    rows = []
    for entry in systems:
        system = entry["system"]
        check, won, spent = by_check.get(system, {}), wins.get(system, {}), cost.get(system, {})
        row = {"system": system, "label": entry["label"], "answers": spent.get("answers", 0),
               "checked_prompts": check.get("prompts"), "passed": check.get("passed"),
               "pass_rate": check.get("pass_rate"), "pass_lo": check.get("lo"), "pass_hi": check.get("hi"),
               "rouge_l": by_metric.get(system, {}).get("rouge_l")}
        for crit in criteria:
            mean = by_mean.get((system, crit), {})
            row.update({f"{crit}_mean": mean.get("mean"), f"{crit}_lo": mean.get("lo"), f"{crit}_hi": mean.get("hi")})
        row.update({"votes": won.get("votes"), "win_rate": won.get("win_rate"), "win_lo": won.get("lo"),
                    "win_hi": won.get("hi")})
        row.update({key: spent.get(key) for key in COST_FIELDS})
        rows.append(row)
    return rows


def _number(value, digits: int) -> str:
    if value is None or value != value:  # None or NaN
        return DASH
    return f"{value:.{digits}f}"


def _with_interval(value, lo, hi, digits: int = 2) -> str:
    """"0.75 (0.50-1.00)"; "—" without a value."""
    if value is None or value != value:
        return DASH
    return f"{value:.{digits}f} ({_number(lo, digits)}-{_number(hi, digits)})"


def display_rows(rows: list[dict], criteria: list[str]) -> list[dict]:
    """``side_by_side`` rows as people read them (the page's table and the report's): rates and means with their
    intervals in one cell, costs rounded, "—" for every missing figure."""
    out = []
    for r in rows:
        passed = DASH if r["pass_rate"] is None else (
            f"{r['passed']}/{r['checked_prompts']} = {_with_interval(r['pass_rate'], r['pass_lo'], r['pass_hi'])}")
        shown = {"system": r["label"], "fact checks passed (95% interval)": passed,
                 "ROUGE-L": _number(r["rouge_l"], 3)}
        shown.update({f"{crit} mean (95% interval)": _with_interval(r[f"{crit}_mean"], r[f"{crit}_lo"],
                                                                    r[f"{crit}_hi"]) for crit in criteria})
        shown["win rate (95% interval)"] = DASH if r["win_rate"] is None else (
            f"{_with_interval(r['win_rate'], r['win_lo'], r['win_hi'])} of {r['votes']}")
        shown.update({name: _number(r[key], 1 if key != "seconds" else 2) for key, name in COST_FIELDS.items()})
        out.append(shown)
    return out


def markdown_table(rows: list[dict]) -> list[str]:
    """``display_rows`` as the lines of a Markdown table (pipes in names escaped)."""
    if not rows:
        return []
    head = list(rows[0])
    lines = ["| " + " | ".join(head) + " |", "|" + "|".join("---" if i == 0 else "---:" for i in range(len(head)))
             + "|"]
    lines += ["| " + " | ".join(str(r[k]).replace("|", "\\|") for k in head) + " |" for r in rows]
    return lines


def systems_csv(rows: list[dict]) -> str:
    """``side_by_side`` rows as CSV text, numbers unrounded and a missing figure empty; a name a spreadsheet would
    run as a formula is neutralised (core.curate.formats.csv_safe_cell)."""
    buf = io.StringIO()
    writer = csv.DictWriter(buf, fieldnames=list(rows[0]) if rows else ["system", "label"])
    writer.writeheader()
    writer.writerows({k: "" if v is None else csv_safe_cell(v) for k, v in row.items()} for row in rows)
    return buf.getvalue()

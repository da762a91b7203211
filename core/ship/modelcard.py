"""The model card every export writes: Hugging Face model-card metadata and the model's lineage.

Lineage is what a reader needs to trust (or question) a fine-tuned model: which frozen dataset version it learned
from (name, content hash, sizes per split) and how many people wrote and reviewed that data, the exact TrainConfig,
the final losses, how it fared against its base model in blind review (Bradley-Terry rating difference with a
bootstrap interval, win rate, rubric means) and on references (ROUGE-L), whether the export answers like the run
(the parity check) and what the project says the model is for. The card is rendered with huggingface_hub's
ModelCard, so the metadata block is the one the Hub reads.
"""
from __future__ import annotations

import json
import re
from pathlib import Path

import numpy as np
from sqlmodel import Session, select

from core.basemodel import is_embedded
from core.evaluate import stats
from core.evaluate.results import results
from core.evaluate.review import scores_of
from storage.models import (DatasetVersion, DatasetVersionItem, EvalPrompt, EvalSet, Example, ExampleRating, Job,
                            Output, PreferenceVersion, Project, User)

EMBEDDED_HUB_ID = "HuggingFaceTB/SmolLM2-135M-Instruct"  # what the embedded GGUF was made from
BOOTSTRAP_ROUNDS = 200


def hub_base_model(name: str | None) -> str:
    """The base model as the Hub names it (the embedded model's origin; a local folder stays a path)."""
    return EMBEDDED_HUB_ID if is_embedded(name) else str(name)


def _people(session: Session, version_id: int) -> dict:
    ids = list(session.exec(select(DatasetVersionItem.example_id).where(DatasetVersionItem.version_id == version_id)))
    annotators, reviewers = set(), set()
    for start in range(0, len(ids), 900):  # SQLite's bound-parameter limit
        chunk = ids[start:start + 900]
        for created, updated, reviewed in session.exec(
                select(Example.created_by, Example.updated_by, Example.reviewed_by).where(Example.id.in_(chunk))):
            annotators.update(u for u in (created, updated) if u)
            reviewers.update(u for u in (reviewed,) if u)
        annotators.update(session.exec(select(ExampleRating.user_id).where(ExampleRating.example_id.in_(chunk))))
    return {"annotators": len(annotators), "reviewers": len(reviewers)}


def _votes(scores) -> list[tuple[str, str, str]]:
    return [(s.system_a, s.system_b, {"A": "1", "B": "2"}.get(s.preference, s.preference)) for s in scores]


def rating_difference(votes, system: str, base: str, rounds: int = BOOTSTRAP_ROUNDS, seed: int = 0) -> dict:
    """Bradley-Terry rating of ``system`` minus ``base`` with a 95% bootstrap interval of the difference
    (votes resampled with replacement, as Chatbot Arena's ``get_bootstrap_result``)."""
    point = stats.bradley_terry(votes)
    diff = point[system] - point[base]
    rng = np.random.default_rng(seed)
    samples = []
    for _ in range(rounds if len(votes) > 1 else 0):
        fit = stats.bradley_terry([votes[k] for k in rng.integers(0, len(votes), len(votes))])
        if system in fit and base in fit:
            samples.append(fit[system] - fit[base])
    lo, hi = (float(np.percentile(samples, 2.5)), float(np.percentile(samples, 97.5))) if samples else (diff, diff)
    return {"difference": round(diff, 1), "lo": round(lo, 1), "hi": round(hi, 1), "n_votes": len(votes)}


def evaluation(session: Session, run: Job, user: User) -> dict | None:
    """The run against its base on the newest eval set that has the run's outputs (blind-review figures when
    that pair was scored), or None when the run was never evaluated."""
    system, base = f"run:{run.id}", "base"
    sets = session.exec(select(EvalSet.id).join(EvalPrompt, EvalPrompt.eval_set_id == EvalSet.id)
                        .join(Output, Output.prompt_id == EvalPrompt.id)
                        .where(EvalSet.project_id == run.project_id, Output.system == system)
                        .distinct().order_by(EvalSet.id.desc())).all()
    if not sets:
        return None
    scored = [es for es in sets if any({s.system_a, s.system_b} == {system, base} for s in scores_of(session, es))]
    es_id = (scored or sets)[0]
    res = results(session, user, es_id, bootstrap_rounds=BOOTSTRAP_ROUNDS)
    out: dict = {"eval_set": res["eval_set"], "system": system}
    pair_scores = [s for s in scores_of(session, es_id) if {s.system_a, s.system_b} == {system, base}]
    if pair_scores:
        out["bradley_terry"] = rating_difference(_votes(scores_of(session, es_id)), system, base)
        row = next(r for r in stats.win_tie_loss(_votes(pair_scores)))
        wins = row["a_wins"] if row["system_a"] == system else row["b_wins"]
        losses = row["b_wins"] if row["system_a"] == system else row["a_wins"]
        out["win_rate"] = {"wins": wins, "losses": losses, "ties": row["ties"] + row["both_bad"], "n": row["n"],
                           "rate": round(wins / row["n"], 3)}
    out["rubric_means"] = {}
    for m in res["means"]:
        if m["system"] in (system, base):
            out["rubric_means"].setdefault(m["criterion"], {})[m["system"]] = round(m["mean"], 2)
    out["rouge_l"] = {m["system"]: m["rouge_l"] for m in res["metrics"] if m["system"] in (system, base)}
    return out


def lineage(session: Session, run: Job) -> dict:
    """Everything the card says about where the model comes from (also stored in deploy.json)."""
    project = session.get(Project, run.project_id)
    metrics = (run.result or {}).get("metrics", {})
    out: dict = {"project": project.name, "run": {"id": run.id, "name": run.name}, "config": dict(run.config or {}),
                 "license": getattr(project, "license", "") or "",
                 "intended_use": getattr(project, "intended_use", "") or "",
                 "losses": {"train": metrics.get("train_loss"), "validation_first": metrics.get("eval_loss_first"),
                            "validation_last": metrics.get("eval_loss_last"), "steps": metrics.get("global_step")}}
    version = session.get(DatasetVersion, run.dataset_version_id) if run.dataset_version_id else None
    if version is not None:
        out["dataset"] = {"name": version.name, "hash": version.content_hash, "train": version.n_train,
                          "validation": version.n_validation, "test": version.n_test,
                          **_people(session, version.id)}
    pref_id = (run.config or {}).get("preference_version_id")
    prefs = session.get(PreferenceVersion, pref_id) if pref_id else None
    if prefs is not None:  # a DPO run learned from preference pairs, not from a dataset version
        out["preferences"] = {"name": prefs.name, "hash": prefs.content_hash, "pairs": prefs.n_pairs,
                              "init_from_run": (run.config or {}).get("init_from_run") or None}
    user = session.get(User, run.created_by) if run.created_by else None
    out["evaluation"] = evaluation(session, run, user) if user is not None else None
    return out


def _fmt(value, digits: int = 4) -> str:
    return "-" if value is None else f"{value:.{digits}f}" if isinstance(value, float) else str(value)


_MARKDOWN = re.compile(r"([\\`*_{}\[\]()<>#+\-.!|~&])")  # what makes Markdown or HTML (each escapable by "\\")


def md(value, *, code: bool = False) -> str:
    """``value`` as Markdown that shows it as typed, on one line: the one way the card writes names, paths and
    messages. Plain text backslash-escapes the characters Markdown acts on, so no HTML tag, entity, link, heading,
    emphasis or table cell is made of it; ``code`` writes a code span fenced with more backticks than the value
    holds in a row (its content is shown verbatim, HTML included, never rendered)."""
    text = " ".join(str(value).split())
    if not code:
        return _MARKDOWN.sub(r"\\\1", text)
    fence = "`" * (max((len(run) for run in re.findall(r"`+", text)), default=0) + 1)
    pad = " " if text.startswith("`") or text.endswith("`") else ""  # CommonMark strips one space each side
    return f"{fence}{pad}{text}{pad}{fence}"


def card_text(info: dict, *, library_name: str, what: str, parity: dict | None = None) -> str:
    """The README.md: metadata block, then lineage sections."""
    from huggingface_hub import ModelCardData

    cfg = info["config"]
    data = ModelCardData(base_model=hub_base_model(cfg.get("base_model")), library_name=library_name,
                         license=info["license"] or None, pipeline_tag="text-generation",
                         datasets=[info["dataset"]["name"]] if info.get("dataset") else None,
                         tags=["finetune-studio", "trl", "dpo" if cfg.get("method") == "dpo" else "sft",
                               cfg.get("method") or "lora"])
    intended = "\n".join(md(line) for line in (info["intended_use"] or "").splitlines())
    lines = [f"# {md(info['project'])}: run {info['run']['id']} ({md(info['run']['name'])})", "",
             f"{what}, fine-tuned from {md(cfg.get('base_model'), code=True)} with finetune-studio ("
             + ("TRL DPO on preference pairs, LoRA" if cfg.get("method") == "dpo"
                else f"TRL SFT, {md(cfg.get('method'))}")
             + ").", "", "## Intended use", "",
             intended or "Not stated: set it on Admin -> Project settings -> Intended use.", ""]
    lines += ["## Training data", ""]
    ds = info.get("dataset")
    prefs = info.get("preferences")
    if prefs:
        lines += [f"- Preference version: {md(prefs['name'], code=True)}, content hash `{prefs['hash']}`, "
                  f"{prefs['pairs']} pairs "
                  "(prompt, chosen, rejected)"]
        lines += [f"- Continued from run {prefs['init_from_run']}'s adapter (the DPO reference model)"
                  if prefs["init_from_run"] else "- A new LoRA adapter on the base model"]
        lines.append("")
    elif ds:
        lines += [f"- Dataset version: {md(ds['name'], code=True)}, content hash `{ds['hash']}`",
                  f"- Examples per split: train {ds['train']}, validation {ds['validation']}, test {ds['test']}",
                  f"- Written or edited by {ds['annotators']} annotator(s), approved by {ds['reviewers']} "
                  "reviewer(s)", ""]
    else:
        lines += ["- No dataset version is recorded for this run.", ""]
    losses = info["losses"]
    lines += ["## Training", "", f"- Final train loss: {_fmt(losses['train'])}",
              f"- Validation loss: {_fmt(losses['validation_first'])} (base) -> {_fmt(losses['validation_last'])} "
              "(end of training)", f"- Optimizer steps: {_fmt(losses['steps'])}", "", "TrainConfig:", "",
              # No backtick inside the fence (JSON's \u0060 is the same text), so no value can close it.
              "```json", json.dumps(cfg, indent=2, sort_keys=True).replace("`", "\\u0060"), "```", ""]
    lines += _evaluation_lines(info.get("evaluation"))
    if parity:
        lines += ["## Parity with the run", "",
                  f"Greedy answers to the same {_prompts(parity)}, by the run and by this export loaded as a user "
                  "loads it:", ""]
        for kind, verdict in parity.get("checks", {}).items():
            lines.append(f"- {md(kind)}: {md(verdict.get('summary') or verdict.get('error'))}")
        lines.append("")
    return f"---\n{data.to_yaml()}\n---\n\n" + "\n".join(lines)


def _prompts(parity: dict) -> str:
    """"6 prompts (the first 6 of 96 of the test split)" / "6 prompts (eval set held-out)"."""
    n, available = len(parity.get("prompts") or []), parity.get("prompts_available")
    part = f"the first {n} of {available} of the " if available and available > n else ""
    return f"{n} prompts ({part}{md(parity.get('prompts_from', ''))})"


def _evaluation_lines(ev: dict | None) -> list[str]:
    lines = ["## Evaluation against the base model", ""]
    if not ev:
        return lines + ["Not evaluated yet: generate outputs for this run on the Generate page and review them.", ""]
    es = ev["eval_set"]
    lines.append(f"- Eval set {md(es['name'], code=True)} ({es['prompts']} prompts)")
    bt = ev.get("bradley_terry")
    if bt:
        lines.append(f"- Bradley-Terry rating difference (run - base): {bt['difference']:+.1f} "
                     f"(95% interval {bt['lo']:+.1f} to {bt['hi']:+.1f}, {bt['n_votes']} votes)")
        wr = ev["win_rate"]
        lines.append(f"- Win rate against the base: {wr['rate']:.0%} ({wr['wins']} wins, {wr['ties']} ties, "
                     f"{wr['losses']} losses)")
    else:
        lines.append("- Not reviewed blind against the base yet.")
    if ev.get("rubric_means"):
        lines += ["", "| criterion | run | base |", "| --- | --- | --- |"]
        for crit, by in ev["rubric_means"].items():
            lines.append(f"| {md(crit)} | {_fmt(by.get(ev['system']), 2)} | {_fmt(by.get('base'), 2)} |")
    rouge = ev.get("rouge_l") or {}
    lines += ["", f"- ROUGE-L against the references: run {_fmt(rouge.get(ev['system']), 3)}, "
                  f"base {_fmt(rouge.get('base'), 3)}", ""]
    return lines


def write_card(folder: str | Path, info: dict, *, library_name: str, what: str, parity: dict | None = None) -> Path:
    path = Path(folder) / "README.md"
    path.write_text(card_text(info, library_name=library_name, what=what, parity=parity), encoding="utf-8")
    return path

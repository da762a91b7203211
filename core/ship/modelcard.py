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
from collections import Counter
from pathlib import Path

import numpy as np
from sqlmodel import Session, func, select

from core.evaluate import stats
from core.evaluate.results import results
from core.evaluate.review import scores_of
from core.systems import BASE, run_key
from core.train.export import EMBEDDED_HUB_ID, base_label, hub_id, portable_base
from storage.models import (DatasetVersion, DatasetVersionItem, EvalPrompt, EvalSet, Example, ExampleRating, Job,
                            Output, PreferencePair, PreferenceVersion, Project, User)

__all__ = ["EMBEDDED_HUB_ID", "card_text", "lineage", "write_card"]
BOOTSTRAP_ROUNDS = 200


def training_system_prompt(session: Session, version_id: int) -> str:
    """The system prompt the model was trained with: the one most training examples of the version carry ("" when
    most carry none, and the chat template's default applied)."""
    counts = session.exec(select(DatasetVersionItem.system, func.count()).where(
        DatasetVersionItem.version_id == version_id, DatasetVersionItem.split == "train")
        .group_by(DatasetVersionItem.system).order_by(func.count().desc(), DatasetVersionItem.system)).first()
    return counts[0] if counts else ""


def preference_system_prompt(session: Session, version_id: int) -> str:
    """The system prompt most pairs of a preference version open with ("" when most open with none)."""
    counts = Counter(p[0].get("content") or "" if p and isinstance(p[0], dict) and p[0].get("role") == "system"
                     else "" for p in session.exec(select(PreferencePair.prompt)
                                                   .where(PreferencePair.version_id == version_id)))
    return min(counts.items(), key=lambda kv: (-kv[1], kv[0]))[0] if counts else ""


def trained_system_prompt(session: Session, run: Job) -> str:
    """The system prompt ``run`` was trained with: its dataset version's; for a DPO run, its preference pairs',
    else that of the run it continued (the SFT run whose adapter it kept training); "" when none has one (the chat
    template's default then applies)."""
    seen: set[int] = set()
    while run is not None and run.id not in seen:
        seen.add(run.id)
        config = run.config or {}
        prompt = (preference_system_prompt(session, config["preference_version_id"])
                  if config.get("preference_version_id") else "")
        if prompt or run.dataset_version_id:
            return prompt or training_system_prompt(session, run.dataset_version_id)
        run = session.get(Job, config["init_from_run"]) if config.get("init_from_run") else None
    return ""


def _people(session: Session, version_id: int) -> dict:
    ids = list(session.exec(select(DatasetVersionItem.example_id).where(DatasetVersionItem.version_id == version_id)))
    annotators: set[int] = set()
    reviewers: set[int] = set()
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
    system, base = run_key(run.id), BASE
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
    result = run.result or {}
    metrics, trained = result.get("metrics", {}), result.get("dataset", {})
    base = (run.config or {}).get("base_model")
    out: dict = {"project": project.name, "run": {"id": run.id, "name": run.name}, "config": dict(run.config or {}),
                 "license": getattr(project, "license", "") or "",
                 "intended_use": getattr(project, "intended_use", "") or "",
                 "base": {"hub_id": hub_id(base), "label": base_label(base), "adapter_note": portable_base(base)[1]},
                 "losses": {"train": metrics.get("train_loss"), "train_last": metrics.get("train_loss_last"),
                            "validation_first": metrics.get("eval_loss_first"),
                            "validation_last": metrics.get("eval_loss_last"), "steps": metrics.get("global_step")},
                 "trained_on": {k: trained.get(k) for k in ("n_train", "n_train_available", "n_validation",
                                                            "n_validation_available")},
                 "versions": dict(result.get("versions") or {}), "system_prompt": ""}
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
    out["system_prompt"] = trained_system_prompt(session, run)
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


def card_text(info: dict, *, library_name: str, what: str, parity: dict | None = None, name: str = "",
              folder: str | Path | None = None) -> str:
    """The README.md, built with huggingface_hub's ModelCard: the metadata block the Hub (and llama.cpp's GGUF
    converter) reads, then lineage sections. ``name`` is the model's name; ``folder`` where the card will lie (for
    the quick-start snippet)."""
    from huggingface_hub import ModelCard, ModelCardData

    cfg, base = info["config"], info.get("base") or {"hub_id": hub_id(info["config"].get("base_model")),
                                                      "label": base_label(info["config"].get("base_model"))}
    adapter = library_name == "peft"
    data = ModelCardData(base_model=base["hub_id"], library_name=library_name, model_name=name or None,
                         license=info["license"] or None, pipeline_tag="text-generation",
                         datasets=[info["dataset"]["name"]] if info.get("dataset") else None,
                         tags=["finetune-studio", "trl", "dpo" if cfg.get("method") == "dpo" else "sft",
                               cfg.get("method") or "lora"])
    if base["hub_id"]:
        relation = "adapter" if adapter else "merge" if cfg.get("method") != "full" else "finetune"
        data.base_model_relation = relation  # type: ignore[attr-defined]  # a card field huggingface_hub passes on
    shown = {**cfg, "base_model": base["label"]} if "base_model" in cfg else cfg  # a name, not this machine's path
    intended = "\n".join(md(line) for line in (info["intended_use"] or "").splitlines())
    lines = [f"# {md(info['project'])}: run {info['run']['id']} ({md(info['run']['name'])})", "",
             f"{what}, fine-tuned from {md(base['label'], code=True)} with finetune-studio ("
             + ("TRL DPO on preference pairs, LoRA" if cfg.get("method") == "dpo"
                else f"TRL SFT, {md(cfg.get('method'))}")
             + ")." + ("" if base["hub_id"] else " The base model is a local folder with no Hugging Face Hub name."),
             "", "## Intended use", "",
             intended or "Not stated: set it on Admin -> Project settings -> Intended use.", ""]
    lines += _data_lines(info)
    losses = info["losses"]
    lines += ["## Training", "", f"- Train loss, mean over all training steps: {_fmt(losses['train'])}",
              f"- Train loss at the last logged step: {_fmt(losses.get('train_last'))}",
              f"- Validation loss: {_fmt(losses['validation_first'])} (base) -> {_fmt(losses['validation_last'])} "
              "(end of training)", f"- Optimizer steps: {_fmt(losses['steps'])}", "", "TrainConfig:", "",
              # No backtick inside the fence (JSON's \u0060 is the same text), so no value can close it.
              "```json", _json(shown), "```", ""]
    lines += _evaluation_lines(info.get("evaluation"))
    if parity:
        lines += ["## Parity with the run", "",
                  f"Greedy answers to the same {_prompts(parity)}, by the run and by this export loaded as a user "
                  "loads it:", ""]
        for kind, verdict in parity.get("checks", {}).items():
            lines.append(f"- {md(kind)}: {md(verdict.get('summary') or verdict.get('error'))}")
        lines.append("")
    lines += _quick_start(info, adapter, folder)
    versions = info.get("versions") or {}
    lines += ["## Framework versions", "", *([f"- {md(k)}: {md(v, code=True)}" for k, v in sorted(versions.items())]
                                           or ["- Not recorded by the run."]), ""]
    return str(ModelCard(f"---\n{data.to_yaml()}\n---\n\n" + "\n".join(lines)))


def _json(value) -> str:
    return json.dumps(value, indent=2, sort_keys=True, ensure_ascii=False).replace("`", "\\u0060")


def _data_lines(info: dict) -> list[str]:
    lines = ["## Training data", ""]
    ds, prefs, trained = info.get("dataset"), info.get("preferences"), info.get("trained_on") or {}
    if prefs:
        lines += [f"- Preference version: {md(prefs['name'], code=True)}, content hash `{prefs['hash']}`, "
                  f"{prefs['pairs']} pairs (prompt, chosen, rejected)"]
        lines += [f"- Continued from run {prefs['init_from_run']}'s adapter (the DPO reference model)"
                  if prefs["init_from_run"] else "- A new LoRA adapter on the base model"]
    elif ds:
        lines += [f"- Dataset version: {md(ds['name'], code=True)}, content hash `{ds['hash']}`",
                  f"- Examples per split of the version: train {ds['train']}, validation {ds['validation']}, "
                  f"test {ds['test']}",
                  f"- Written or edited by {ds['annotators']} annotator(s), approved by {ds['reviewers']} "
                  "reviewer(s)"]
    else:
        lines += ["- No dataset version is recorded for this run."]
    n, available = trained.get("n_train"), trained.get("n_train_available")
    if n is not None:
        sample = f" (a seeded random sample of the {available} available)" if available and available > n else ""
        lines.append(f"- Trained on {n} examples{sample}; validation loss on {trained.get('n_validation')}")
    if info.get("system_prompt"):
        lines.append(f"- System prompt of the training examples: {md(info['system_prompt'], code=True)}")
    return lines + [""]


def _quick_start(info: dict, adapter: bool, folder: str | Path | None) -> list[str]:
    """A snippet that loads this folder and answers with the system prompt the model was trained with."""
    where = json.dumps(str(folder or "path/to/this/folder"), ensure_ascii=False)
    messages = ([{"role": "system", "content": info["system_prompt"]}] if info.get("system_prompt") else [])
    messages.append({"role": "user", "content": "Hello!"})
    load = (["from peft import AutoPeftModelForCausalLM", "from transformers import AutoTokenizer", "",
             f"model = AutoPeftModelForCausalLM.from_pretrained({where})  # loads the base model it names too"]
            if adapter else ["from transformers import AutoModelForCausalLM, AutoTokenizer", "",
                             f"model = AutoModelForCausalLM.from_pretrained({where})"])
    code = [*load, f"tokenizer = AutoTokenizer.from_pretrained({where})",
            f"messages = {json.dumps(messages, ensure_ascii=False)}",
            "inputs = tokenizer.apply_chat_template(messages, add_generation_prompt=True, return_tensors=\"pt\", "
            "return_dict=True)", "out = model.generate(**inputs, max_new_tokens=256, do_sample=False)",
            "print(tokenizer.decode(out[0][inputs[\"input_ids\"].shape[1]:], skip_special_tokens=True))"]
    note = [md((info.get("base") or {}).get("adapter_note") or ""), ""] if adapter else []
    return (["## Quick start", "", *note, "```python", *(line.replace("`", "\\u0060") for line in code), "```", ""])


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


def write_card(folder: str | Path, info: dict, *, library_name: str, what: str, parity: dict | None = None,
               name: str = "", final: str | Path | None = None) -> Path:
    """Write README.md into ``folder`` (``final``: where that folder will be once the export is in place)."""
    path = Path(folder) / "README.md"
    path.write_text(card_text(info, library_name=library_name, what=what, parity=parity, name=name,
                              folder=final or folder), encoding="utf-8")
    return path

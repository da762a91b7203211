"""Generated-drafts jobs on the pages: one card per job (progress, what it made and withheld, Cancel / Resume), and
the Results page's paraphrase launcher: K rewordings of each prompt a run failed on, written by a chosen model, as
drafts for the experts (core.evaluate.docdrafts; the CLI's ``docs paraphrase``).
"""
from __future__ import annotations

from typing import Callable

import streamlit as st
from sqlmodel import Session

from core.curate.screening import LEAK_REASONS, REASONS
from core.evaluate.docdrafts import (failure_sources, launch_generated_drafts, paraphrase_jobs,
                                     resume_generated_drafts)
from core.evaluate.failures import RULE_WORDS, RULES, run_choices
from core.evaluate.review import rubric_of
from core.evaluate.systems import available_systems
from core.jobs.queue import LIVE, reconcile
from storage.models import Job, Project, User
from ui.frame import db, flash, live_fragment, md_literal, run_action
from ui.jobcontrols import job_controls


def draft_job_card(user: User, job: Job, resume: Callable, *, unit: str, asked: str, resume_help: str) -> None:
    """A generated-drafts job: its progress over ``unit``s (chunks, failing prompts) while it runs; once it ended,
    the drafts it made, the model answers that held no ``asked`` (question, paraphrase), what the gate withheld and,
    apart, how many the leakage check kept out of the data; then Cancel / Resume (``resume``: the stage's resume
    function, as ui.jobcontrols.job_controls takes it)."""
    res = job.result or {}
    progress = res.get("progress") or {}
    withheld = res.get("withheld") or {}
    with st.container(border=True):
        st.markdown(f"**Job {job.id}** · {md_literal(job.name)} · {job.status}")
        if job.status in LIVE:
            done, total = progress.get("done", 0), progress.get("total", 0)
            st.progress(min(1.0, done / total) if total else 0.0, text=f"{done}/{total} {unit}s")
        elif "drafts" in res:
            held = ", ".join(f"{n} {REASONS[k]}" for k, n in withheld.items() if n) or "none"
            st.caption(f"{res['drafts']} draft(s) made from {res.get('sources', 0)} {unit}(s); "
                       f"{res.get('unparseable', 0)} model answer(s) held no {asked}; withheld: {held}.")
            leaked = sum(withheld.get(k, 0) for k in LEAK_REASONS)
            st.caption(f"Withheld by the leakage check: {leaked} (repeats of an eval prompt or of a validation/test "
                       "item never reach the data, so never training).")
        if job.error:
            st.caption(job.error.splitlines()[0])
        job_controls(user, job, resume, key=f"gendrafts_{job.id}", resume_help=resume_help)


def paraphrase_section(user: User, project: Project, es_id: int, labels: dict[str, str]) -> None:
    """Launch a paraphrase job for the eval set's failures and follow its jobs (engineers: the page's own right)."""
    st.subheader("Paraphrase failures into new drafts")
    with db() as s:
        runs = run_choices(s, user, es_id)
        models = available_systems(s, user, project.id)
    if not runs:
        st.caption("No fine-tuned run has outputs in this eval set yet: paraphrases are of the prompts a run failed.")
        return
    st.caption("A background job asks a model for K rewordings of each prompt the chosen run failed on; each becomes "
               "a draft in Annotate, its answer to write, keeping the failing prompt's lineage. Every rewording "
               "passes the import's checks first: one that repeats an eval prompt or a validation/test item is "
               "withheld and counted, never stored.")
    writers = {m["system"]: m["label"] for m in models}
    with st.form("paraphrase_failures"):
        c1, c2 = st.columns(2)
        run = c1.selectbox("Failures of", runs, format_func=lambda k: labels.get(k, k), key="para_run")
        rule = c2.radio("Prompts where the run", RULES, format_func=RULE_WORDS.get, key="para_rule")
        c1, c2, c3, c4 = st.columns(4)
        criterion = c1.selectbox("Criterion (score rule)", [c["name"] for c in rubric_of(project)], key="para_crit")
        threshold = c2.number_input("At or below (mean score)", value=2.0, step=0.5, key="para_threshold")
        per_prompt = c3.number_input("Paraphrases per prompt (K)", 1, 10, 3, key="para_k")
        writer = c4.selectbox("Written by", list(writers), format_func=writers.get, key="para_model")
        if st.form_submit_button("Paraphrase failures", icon=":material/auto_awesome:"):
            by_score = rule != "lost_to_base"
            with db() as s:
                sources = run_action(failure_sources, s, user, es_id, run, rule=rule,
                                     criterion=criterion if by_score else None,
                                     threshold=threshold if by_score else None)
                job = None if sources is None else run_action(
                    launch_generated_drafts, s, user, project.id, writer, "paraphrases", sources,
                    per_source=int(per_prompt))
            if job is not None:
                flash(f"Job {job.id} {job.status}: {int(per_prompt)} paraphrases of each of {len(sources)} "
                      "failing prompt(s).")
                st.rerun()
    _paraphrase_jobs(user, project, es_id)


def draft_jobs_panel(user: User, jobs_of: Callable[[Session], list[Job]], *, unit: str, asked: str,
                     resume_help: str) -> None:
    """The cards of the jobs ``jobs_of(session)`` lists, redrawn every 2 s while the page is open (a job's progress,
    then what it made, without a click), as the other pages follow their jobs."""

    @live_fragment("2s", "evaluate")
    def panel() -> None:
        with db() as s:
            reconcile(s)
            jobs = jobs_of(s)
        for job in jobs:
            draft_job_card(user, job, resume_generated_drafts, unit=unit, asked=asked, resume_help=resume_help)

    panel()


def _paraphrase_jobs(user: User, project: Project, es_id: int) -> None:
    draft_jobs_panel(user, lambda s: paraphrase_jobs(s, project.id, es_id), unit="failing prompt",
                     asked="paraphrase", resume_help="A new job that skips the prompts that already gave drafts.")

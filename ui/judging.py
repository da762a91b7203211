"""The Results page's LLM-judge section: a separate rater beside the reviewers, never mixed into their figures.

Pick a judge, read its prompts, run a judge job (the same Cancel / Resume controls as generation jobs), then its
own leaderboard, position bias and unparseable answers, and its agreement with the reviewers with the
disagreements to read. A judge below its bar is marked "not yet trusted" on every figure it shows.
"""
from __future__ import annotations

import pandas as pd
import streamlit as st

from core.evaluate.judgeresults import judge_results
from core.evaluate.judges import list_judges
from core.evaluate.judging import (MODES, judging_jobs, judging_progress, launch_judging, prompt_template,
                                   resume_judging)
from core.evaluate.review import rubric_of
from core.jobs.queue import LIVE, reconcile
from storage.models import User
from ui.frame import db, live_fragment, md_literal, run_action
from ui.jobcontrols import job_controls


def _table(rows: list[dict], columns: dict[str, str], digits: int = 2) -> None:
    frame = pd.DataFrame(rows, columns=list(columns)).round(digits).rename(columns=columns)
    st.dataframe(frame, hide_index=True, width="stretch", placeholder="—")


def _figure(f: dict | None, digits: int = 2) -> str:
    """"0.71 (0.55 to 0.84)", or "—" where the figure is undefined."""
    if not f or f.get("value") is None:
        return "—"
    return f"{f['value']:.{digits}f} ({f['lo']:.{digits}f} to {f['hi']:.{digits}f})"


def _jobs(user: User, es_id: int) -> None:
    @live_fragment("2s", "evaluate")
    def panel() -> None:
        with db() as s:
            reconcile(s)
            jobs = judging_jobs(s, user, es_id)
        live = {j.id for j in jobs if j.status in LIVE}
        ended = set(st.session_state.get("judge_live_ids", ())) - live
        st.session_state["judge_live_ids"] = live
        if ended:
            st.rerun(scope="app")  # new verdicts: redraw the figures
        for job in jobs[:5]:
            with st.container(border=True):
                c1, c2 = st.columns([4, 1])
                c1.markdown(f"**Judge job {job.id}** · `{job.status}`")
                p = judging_progress(job)
                if job.status in LIVE:
                    c1.progress(min(1.0, p["done"] / p["total"]) if p["total"] else 0.0,
                                text=f"{p['done']}/{p['total']} answers · {p['unparseable']} unparseable")
                else:
                    c1.caption(f"{p['done']}/{p['total']} answers · {p['unparseable']} unparseable"
                               + (f" · {job.error.splitlines()[0]}" if job.error else ""))
                job_controls(user, job, resume_judging, key=f"_judge{job.id}", container=c2,
                             resume_help="A new job that skips the verdicts already stored.")
    panel()


def _launch(user: User, project, es_id: int, judge_id: int) -> None:
    with st.form("judge_launch"):
        c1, c2, c3 = st.columns([2, 3, 1])
        modes = c1.multiselect("What the judge does", MODES, default=list(MODES))
        criteria = c2.multiselect("Rubric criteria", [c["name"] for c in rubric_of(project)],
                                  help="Empty: every criterion of the project's rubric.")
        max_tokens = c3.number_input("Answer tokens", 8, 8192, 512)
        if st.form_submit_button("Run the judge on this eval set"):
            with db() as s:
                job = run_action(launch_judging, s, user, es_id, judge_id, modes=modes, criteria=criteria,
                                 max_tokens=int(max_tokens))
            if job is not None:
                st.success(f"Judge job {job.id} queued.")


def judge_section(user: User, project, es_id: int) -> None:
    """The whole section, for the Results page."""
    st.subheader("LLM judge (a separate rater)")
    st.caption("The figures above are the reviewers' alone. A judge's verdicts stand here beside them, never mixed "
               "in; read its agreement with the reviewers before leaning on it.")
    with db() as s:
        judges = list_judges(s, user)
    if not judges:
        st.caption("No judge registered: an admin registers one (any OpenAI-compatible endpoint, this app's own "
                   "serve-model too) on the Admin page.")
        return
    names = {j.id: j.name for j in judges}
    judge_id = st.selectbox("Judge", list(names), format_func=names.get, key="judge_pick")
    with st.expander("The judge's prompts (core/evaluate/judge_prompts)"):
        for mode in MODES:
            st.caption(mode)
            st.code(prompt_template(mode), language=None, wrap_lines=True)
    _launch(user, project, es_id, judge_id)
    _jobs(user, es_id)
    with db() as s:
        res = run_action(judge_results, s, user, es_id, judge_id)
    if not res or not res["counts"]["answers"]:
        st.caption("No verdicts of this judge on this eval set's current outputs yet.")
        return
    trust, c = res["trust"], res["counts"]
    mark = "" if trust["trusted"] else f" ({trust['label']})"
    if trust["trusted"]:
        st.success(f"Judge {md_literal(res['judge']['name'])} is trusted on this eval set: {trust['reason']}")
    else:
        st.warning(f"Judge {md_literal(res['judge']['name'])} is **not yet trusted**: {md_literal(trust['reason'])}")
    cols = st.columns(4)
    cols[0].metric("Judge answers", c["answers"])
    cols[1].metric("Unparseable", c["unparseable"], help="Answers without a verdict or grade in the asked format: "
                   "counted, never guessed.")
    cols[2].metric("Pairs with a verdict", f"{c['items_with_verdict']} / {c['pairwise_items']}",
                   help="Asked in both orders; an item with an unparseable answer in either order has no verdict.")
    cols[3].metric("Position bias", "—" if c["position_bias"] is None else f"{c['position_bias']:.0%}",
                   help=f"Share of items whose verdict flipped with the order (counted as ties): "
                        f"{c['favoured_first_shown']} favoured the answer shown first, {c['favoured_second_shown']} "
                        "the one shown second.")
    if res["leaderboard"]:
        st.markdown(f"**Judge leaderboard{mark}** (Bradley-Terry on both-orders verdicts, 95% bootstrap interval)")
        _table(res["leaderboard"], {"label": "system", "rating": "rating", "lo": "95% low", "hi": "95% high",
                                    "n_votes": "verdicts"}, digits=0)
    if res["means"]:
        st.markdown(f"**Judge's mean grade per criterion{mark}**")
        _table(res["means"], {"label": "system", "criterion": "criterion", "mean": "mean", "lo": "95% low",
                              "hi": "95% high", "n": "grades"})
    st.markdown(f"**Agreement with the reviewers{mark}** (items both judged; 95% bootstrap intervals)")
    if not res["agreement"]:
        st.caption("No item judged by both the reviewers and this judge yet.")
    else:
        _table([{"criterion": r["criterion"], "n": r["n"], "percent": _figure(r["percent"]),
                 "without_ties": _figure(r.get("percent_without_ties")), "kappa": _figure(r["kappa"]),
                 "spearman": _figure(r.get("spearman"))} for r in res["agreement"]],
               {"criterion": "criterion", "n": "items", "percent": "% agreement",
                "without_ties": "% agreement without ties", "kappa": "Cohen's kappa", "spearman": "Spearman"})
        st.caption(f"The preference compares the reviewers' majority with the judge's both-orders verdict; a "
                   f"criterion compares the reviewers' mean score (rounded for % and kappa) with the judge's grade. "
                   f"Trusted from kappa {res['judge']['min_kappa']:g} on {res['judge']['min_items']} items "
                   "(set by an admin).")
    with st.expander(f"Disagreements to read ({len(res['disagreements'])})"):
        _table(res["disagreements"], {"prompt_number": "prompt #", "prompt": "prompt", "criterion": "criterion",
                                      "about": "system(s)", "reviewers": "reviewers", "judge": "judge",
                                      "judge_answer": "judge's answer"})
    with st.expander(f"Unparseable answers ({len(res['unparseable'])})"):
        _table(res["unparseable"], {"mode": "mode", "criterion": "criterion", "shown": "shown",
                                    "answer": "judge's answer"})

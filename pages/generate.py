"""Generate: eval sets and generation jobs (engineers and up).

Create an eval set from a dataset version's test split or an uploaded prompt file, then generate one answer
per prompt for the base model and any finished runs. Jobs run in the background; progress updates live.
"""
import pandas as pd
import streamlit as st

from core.curate.datasets import list_versions
from core.evaluate.evalsets import (create_eval_set_from_file, create_eval_set_from_version, generation_progress,
                                   launch_generation, list_eval_sets, resume_generation)
from core.evaluate.generate_config import describe_decoding
from core.evaluate.systems import available_systems, default_systems, system_labels
from core.jobs.notices import show_job_notices
from core.jobs.queue import LIVE, cancel, list_jobs, reconcile
from core.webui import db, flash, require_page, require_project, run_action
from storage.models import JobStatus

user = require_page("evaluate")
project = require_project()
st.title("Generate")

with db() as s:
    sets = list_eval_sets(s, user, project.id)
    systems = available_systems(s, user, project.id)
    versions = list_versions(s, project)
    names_of = system_labels(s, {k for r in sets for k in r["systems"]})

# ---------------------------------------------------------------- eval sets
st.subheader("Eval sets")
if sets:
    st.dataframe(pd.DataFrame([{"id": r["id"], "name": r["name"], "source": r["source"], "prompts": r["prompts"],
                                "with reference": r["references"], "systems with outputs": ", ".join(names_of[k] for k in r["systems"]),
                                "scores": r["scores"], "reviewers per item": r["reviewers_per_item"]}
                               for r in sets]), hide_index=True, width="stretch")
else:
    st.info("No eval set yet: freeze one from a dataset version's test split or upload prompts below.")

with st.expander("New eval set", expanded=not sets):
    from_version, from_file = st.tabs(["From a dataset version", "Upload prompts"])
    with from_version:
        if not versions:
            st.caption("No dataset version yet: freeze one on the Datasets page.")
        else:
            with st.form("evalset_version", clear_on_submit=True):
                vnames = {v.id: f"{v.name} ({v.n_test} test, {v.n_validation} validation)" for v in versions}
                vid = st.selectbox("Dataset version", list(vnames), format_func=vnames.get)
                split = st.selectbox("Split", ["test", "validation"],
                                     help="The test split was never trained on; use it for a fair comparison.")
                c1, c2 = st.columns(2)
                name = c1.text_input("Eval set name")
                k = c2.number_input("Reviewers per item", 1, 20, 2,
                                    help="Every item gets this many reviewers before any gets one more.")
                if st.form_submit_button("Create eval set", type="primary"):
                    with db() as s:
                        if run_action(create_eval_set_from_version, s, user, project.id, vid, name, split=split,
                                      reviewers_per_item=int(k), success="Eval set created.") is not None:
                            st.rerun()
    with from_file:
        with st.form("evalset_file", clear_on_submit=True):
            upload = st.file_uploader("Prompts (.jsonl or .csv)", type=["jsonl", "csv", "json"],
                                      help="A 'prompt' field (text, or chat messages in JSONL) and an optional "
                                           "'reference' answer; an optional 'system' prompt.")
            c1, c2 = st.columns(2)
            name = c1.text_input("Eval set name", key="file_set_name")
            k = c2.number_input("Reviewers per item", 1, 20, 2, key="file_set_k")
            if st.form_submit_button("Create eval set", type="primary"):
                if upload is None:
                    st.error("Choose a file first.")
                else:
                    with db() as s:
                        if run_action(create_eval_set_from_file, s, user, project.id, name, upload.getvalue(),
                                      upload.name, reviewers_per_item=int(k), success="Eval set created.") is not None:
                            st.rerun()

# ---------------------------------------------------------------- launch
st.subheader("Generate outputs")
if not sets:
    st.caption("Create an eval set first.")
else:
    # No st.form here: the decoding choice must enable or disable the sampling sliders as it changes.
    names = {r["id"]: f"{r['name']} ({r['prompts']} prompts)" for r in sets}
    es_id = st.selectbox("Eval set", list(names), format_func=names.get, key="gen_eval_set")
    labels = {row["system"]: row["label"] + (f" — base: {row['base_model']}" if row["base_model"] else "")
              for row in systems}
    chosen = st.multiselect("Systems", list(labels), default=default_systems(systems), format_func=labels.get,
                            key="gen_systems",
                            help="The base model and finished training runs; each run's adapter is switched on one "
                                 "loaded copy of its base model. Preselected: the base model and the newest run.")
    mode = st.radio("Decoding", ["Greedy", "Sampling"], horizontal=True, key="gen_mode",
                    help="Greedy is deterministic and best for comparing systems; temperature and top-p apply to "
                         "sampling only.")
    greedy = mode == "Greedy"
    c1, c2, c3, c4 = st.columns(4)
    temperature = c1.slider("Temperature", 0.05, 2.0, 0.7, 0.05, key="gen_temperature", disabled=greedy)
    top_p = c2.slider("Top-p", 0.05, 1.0, 0.9, 0.05, key="gen_top_p", disabled=greedy)
    max_new = c3.number_input("Max new tokens", 1, 8192, 256, key="gen_max_new")
    seed = c4.number_input("Seed", 0, 2**31 - 1, 0, key="gen_seed")
    c1, c2, c3 = st.columns(3)
    batch = c1.number_input("Batch size", 1, 256, 8, key="gen_batch", help="Larger is faster until memory runs out.")
    base_model = c2.text_input("Base model (optional)", key="gen_base_model",
                               placeholder="the runs' base model, else the embedded one")
    ppl = c3.checkbox("Perplexity on references", value=True, key="gen_ppl")
    if st.button("Start generation", type="primary", key="gen_start"):
        decoding = {"do_sample": not greedy, "temperature": temperature, "top_p": top_p,
                    "max_new_tokens": int(max_new), "seed": int(seed)}
        with db() as s:
            job = run_action(launch_generation, s, user, es_id, chosen, decoding=decoding,
                             base_model=base_model.strip() or None, batch_size=int(batch), perplexity=ppl)
        if job is not None:
            # A toast, not a box: "running" is true for a moment only; the live list below carries on.
            flash(f"Generation job {job.id} {'started' if job.status == JobStatus.running.value else 'queued'}.")
            st.rerun()


# ---------------------------------------------------------------- jobs, live
def _eta(seconds: float | None) -> str:
    if seconds is None:
        return ""
    return f" · about {int(seconds // 60)}m {int(seconds % 60):02d}s left"


@st.fragment(run_every="2s")
def jobs_panel() -> None:
    with db() as s:
        reconcile(s)
        jobs = list_jobs(s, project.id, kind="generate", user=user)[:20]
        progress = {j.id: generation_progress(s, j) for j in jobs if j.status in LIVE}
    # A job that just ended changes the eval-set table above (its systems with outputs): redraw the whole page.
    live_ids = set(progress)
    ended = set(st.session_state.get("gen_live_ids", ())) - live_ids
    st.session_state["gen_live_ids"] = live_ids
    if ended:
        st.rerun(scope="app")  # before any toast: a toast drawn right before a rerun is lost
    show_job_notices(user, project.id)  # a toast when any job of the project ends
    if not jobs:
        st.caption("No generation jobs yet.")
        return
    for job in jobs:
        with st.container(border=True):
            c1, c2 = st.columns([4, 1])
            c1.markdown(f"**Job {job.id}** · `{job.status}`")
            c1.text(job.name)
            if job.status in LIVE:
                p = progress[job.id]
                done, total = p["done"], p["total"]
                detail = [] if job.status != JobStatus.running.value else [p["stage"]]
                if p.get("tokens_per_s") and p["stage"] == "generating":
                    detail.append(f"{p['tokens_per_s']} tokens/s")
                c1.progress(min(1.0, done / total) if total else 0.0,
                            text=f"{done}/{total} outputs" + "".join(f" · {d}" for d in detail) + _eta(p["eta_s"]))
            elif job.status == JobStatus.succeeded.value:
                res = job.result or {}
                c1.caption(f"{res.get('done', 0)} outputs · {res.get('new_tokens', 0)} new tokens in "
                           f"{res.get('seconds', 0)} s · {describe_decoding(res.get('decoding', {}))}")
            elif job.error:
                c1.text(job.error.splitlines()[0])
            if job.status in LIVE:
                if c2.button("Cancel", key=f"gen_cancel_{job.id}"):
                    with db() as s:
                        run_action(cancel, s, user, job.id, success="Cancel requested.")
            elif job.status in (JobStatus.failed.value, JobStatus.canceled.value):
                if c2.button("Resume", key=f"gen_resume_{job.id}",
                             help="A new job that skips the outputs already written."):
                    with db() as s:
                        run_action(resume_generation, s, user, job.id, success="Resumed.")


st.subheader("Generation jobs")
jobs_panel()

"""Datasets: freeze versions of the approved examples, read their stats, export them."""
from pathlib import Path

import altair as alt
import pandas as pd
import streamlit as st

from core.accounts import can
from core.curate.curation import list_tags
from core.curate.datasets import export_file, list_versions, stats, token_histogram
from core.curate.leakage import freeze_checked
from core.curate.formats import EXPORT_FORMATS, FORMAT_LABELS
from core.evaluate.drafting import (draft_edit_stats, drafting_jobs, launch_drafting, needs_answer_ids,
                                    resume_drafting)
from core.evaluate.systems import available_systems
from core.jobs.queue import get_job
from core.curate.preference_versions import import_preference_file, list_preference_versions, source_text
from ui.jobcontrols import job_controls
from ui.frame import db, flash, md_literal, require_page, require_project, run_action

user = require_page("curate")
project = require_project()
st.title("Datasets")


def overlap_report(report: dict) -> None:
    """What the freeze found overlapping (core.curate.leakage.freeze_checked): examples that repeat an eval prompt,
    and validation/test items that repeat a train item. Ids and numbers in the messages; texts stay in tables."""
    eval_leaks, split_leaks = report["eval_leaks"], report["split_leaks"]
    st.caption("Overlaps found when freezing the version " + md_literal(report["name"]) + ":")
    if not eval_leaks and not split_leaks:
        st.caption("No example repeats an eval prompt, and no validation or test item repeats a train item.")
    if eval_leaks:
        st.warning(f"{len(eval_leaks)} train/validation example(s) repeat an eval prompt: a training run on this "
                   "version is refused until they are excluded (the Train page offers it in one click).")
        st.dataframe(pd.DataFrame([{"example": x["example_id"], "split": x["split"], "eval set": x["eval_set"],
                                    "eval set id": x["eval_set_id"], "eval prompt": x["eval_prompt_id"],
                                    "match": x["kind"], "similarity": x["similarity"]} for x in eval_leaks]),
                     hide_index=True, width="stretch")
    if split_leaks:
        st.warning(f"{len(split_leaks)} validation/test item(s) repeat a train item, so their scores overstate "
                   "what the model learned.")
        st.dataframe(pd.DataFrame([{"example": x["example_id"], "split": x["split"],
                                    "repeats train example": x["train_example_id"], "match": x["kind"],
                                    "similarity": x["similarity"], "train items it repeats": x["train_matches"]}
                                   for x in split_leaks]), hide_index=True, width="stretch")


with db() as s:
    versions = list_versions(s, project)

if can(user, "freeze"):
    with st.form("freeze"):
        st.subheader("Freeze a version of the approved examples")
        name = st.text_input("Name", value=f"v{len(versions) + 1}")
        c1, c2, c3, c4 = st.columns(4)
        train = c1.number_input("Train", 0.0, 1.0, 0.8, 0.05)
        validation = c2.number_input("Validation", 0.0, 1.0, 0.1, 0.05)
        test = c3.number_input("Test", 0.0, 1.0, 0.1, 0.05)
        seed = c4.number_input("Seed", 0, 2**31 - 1, 0, help="Splits depend only on the example id and this seed.")
        if st.form_submit_button("Freeze", type="primary"):
            with db() as s:
                report = run_action(freeze_checked, s, user, project, name,
                                    fractions={"train": train, "validation": validation, "test": test}, seed=int(seed))
            if report is not None:
                v = report["version"]
                st.success(f"Froze {md_literal(v.name)}: {v.n_train} train, {v.n_validation} validation, "
                           f"{v.n_test} test.")
                versions = [v] + versions
                st.session_state["freeze_report"] = {"project": project.id, "name": v.name,
                                                     "eval_leaks": report["eval_leaks"],
                                                     "split_leaks": report["split_leaks"]}
    last = st.session_state.get("freeze_report")
    if last and last["project"] == project.id:  # kept until the next freeze: other actions here do not hide it
        overlap_report(last)

st.subheader("Versions")
if versions:
    st.dataframe(pd.DataFrame([{"id": v.id, "name": v.name, "train": v.n_train, "validation": v.n_validation,
                                "test": v.n_test, "seed": v.seed, "content hash": v.content_hash[:16],
                                "created": v.created_at} for v in versions]), hide_index=True, width="stretch")
else:
    st.info("No versions yet.")

st.subheader("Stats")
chosen = st.selectbox("For", [None] + [v.id for v in versions], key="stats_for",
                      format_func=lambda i: "all examples of the project" if i is None
                      else f"version {next(v.name for v in versions if v.id == i)} only")
with db() as s:
    data = stats(s, project, chosen)


def _bars(counts: dict, what: str) -> alt.Chart:
    """Horizontal bars, biggest first, labels in full (tag and user names are data, shown as data)."""
    frame = pd.DataFrame({what: list(counts) or ["(none)"], "examples": list(counts.values()) or [0]})
    return alt.Chart(frame).mark_bar().encode(
        x=alt.X("examples:Q", title="examples"), y=alt.Y(f"{what}:N", sort="-x", title=None,
                                                         axis=alt.Axis(labelLimit=0)),
        tooltip=[what, "examples"])


c = st.columns(3)
for col, key, what in ((c[0], "by_status", "status"), (c[1], "by_tag", "tag"), (c[2], "by_annotator", "annotator")):
    col.caption(f"By {what}")
    col.altair_chart(_bars(data[key], what), width="stretch")
bins = token_histogram(data["token_lengths"])
if bins:
    st.caption(f"Token lengths ({len(data['token_lengths']):,} examples; max length {project.max_length})")
    st.altair_chart(alt.Chart(pd.DataFrame(bins)).mark_bar().encode(
        x=alt.X("start:Q", bin="binned", title="tokens"), x2="end:Q", y=alt.Y("examples:Q", title="examples"),
        tooltip=[alt.Tooltip("start:Q", title="from"), alt.Tooltip("end:Q", title="to"), "examples:Q"]),
        width="stretch")
m = st.columns(3)
m[0].metric("Exact duplicates skipped on import", data["exact_duplicates_skipped"])
m[1].metric("Near duplicates flagged", data["near_duplicates_flagged"])
if data["per_split"]:
    m[2].metric("Per split", " / ".join(f"{data['per_split'].get(k, 0)}" for k in ("train", "validation", "test")),
                help="train / validation / test")

st.subheader("Export")
e1, e2 = st.columns(2)
what = e1.selectbox("What", [("version", v.id) for v in versions] + [("status", s) for s in
                    ("approved", "submitted", "draft", "rejected")],
                    format_func=lambda w: f"Version {next(v.name for v in versions if v.id == w[1])}"
                    if w[0] == "version" else f"All {w[1]} examples")
fmt = e2.selectbox("Format", EXPORT_FORMATS, format_func=lambda f: FORMAT_LABELS.get(f, f))
st.caption("The download is a zip with a file per split (train, validation, test; a selection of examples gets the "
           "default 80/10/10 split), a README.md that `datasets.load_dataset(folder)` reads the splits from, and "
           "for Alpaca, ShareGPT and chat JSONL a LLaMA-Factory `dataset_info.json` (dataset_dir: the folder; "
           "dataset: train; eval_dataset: validation).")
if st.button("Prepare export"):
    with db() as s:
        path = run_action(export_file, s, user, project, fmt, version_id=what[1] if what[0] == "version" else None,
                          status=what[1] if what[0] == "status" else None)
    if path is not None:
        st.session_state["export_prepared"] = {"path": str(path), "for": [list(what), fmt]}
prepared = st.session_state.get("export_prepared")
# Offered only for the selection it was made from: after a change of format or data, prepare again.
if prepared and prepared["for"] == [list(what), fmt] and Path(prepared["path"]).exists():
    path = Path(prepared["path"])
    st.text(f"Ready: {path.name}")
    st.download_button("Download the export", path.read_bytes(), file_name=path.name, type="primary",
                       key="export_download")
elif prepared:
    st.caption("The selection changed: prepare the export again to download it.")

# ---------------------------------------------------------------- model-drafted answers
st.subheader("Model-drafted answers")
with db() as s:
    waiting = len(needs_answer_ids(s, project.id))
    edits = draft_edit_stats(s, user, project.id)
st.metric("Examples that need an answer", waiting,
          help="Drafts whose answer is still empty: prompt-only records from an import, or sent back empty")
if edits:
    st.dataframe(pd.DataFrame(edits)[["label", "submitted", "mean_edit_distance", "unchanged", "waiting"]].rename(
        columns={"label": "drafted by", "submitted": "drafts submitted by experts",
                 "mean_edit_distance": "mean edit distance", "unchanged": "kept unchanged",
                 "waiting": "drafts not yet submitted"}), hide_index=True, width="stretch")
    st.caption("How much the experts changed each system's drafts before submitting them: the normalised "
               "character-level Levenshtein distance between the drafted and the submitted answer (0 = kept as "
               "drafted, 1 = rewritten), averaged over the drafts. Lower means the model is closer to the experts.")
if can(user, "evaluate"):
    with db() as s:
        systems = available_systems(s, user, project.id)
        jobs = drafting_jobs(s, user, project.id)
        tags = list_tags(s, project)
    names = {r["system"]: r["label"] for r in systems}
    c1, c2, c3, c4 = st.columns(4)
    system = c1.selectbox("Draft with", list(names), format_func=names.get, key="draft_system")
    tag = c2.selectbox("Only examples tagged", [""] + tags, format_func=lambda t: t or "(any tag)", key="draft_tag")
    limit = c3.number_input("At most (0: all)", 0, 100_000, 0, key="draft_limit")
    max_new = c4.number_input("Longest answer (tokens)", 1, 8192, 256, key="draft_max_new")
    if st.button("Draft answers", disabled=not waiting,
                 help="A background job writes the chosen system's answer into each example that needs one; "
                      "annotators then edit and submit it on Annotate."):
        with db() as s:
            job = run_action(launch_drafting, s, user, project.id, system, tag=tag or None, limit=int(limit) or None,
                             decoding={"max_new_tokens": int(max_new)})
            jobs = drafting_jobs(s, user, project.id) if job is not None else jobs
        if job is not None:
            st.success(f"Draft-answers job {job.id} {job.status} for {len(job.config['example_ids'])} examples.")
    if jobs:
        st.dataframe(pd.DataFrame(jobs), hide_index=True, width="stretch")
        with db() as s:
            newest = get_job(s, jobs[0]["job"])
        job_controls(user, newest, resume_drafting, key="_draft_job", noun=f"draft-answers job {newest.id}",
                     cancel_help="Answers drafted so far are kept.", resume_help="Drafts only what is still empty.")

# ---------------------------------------------------------------- preference versions (DPO)
if can(user, "train"):
    st.subheader("Preference versions (for DPO)")
    st.caption("Frozen pairs of a prompt, a chosen and a rejected answer that a DPO run learns from (Train, method "
               "DPO). Freeze them from reviewers' votes on the Results page, or import a preference file here: "
               "JSONL or Parquet rows with prompt, chosen and rejected, as text or as lists of chat messages.")
    with db() as s:
        prefs = list_preference_versions(s, user, project.id)
    if prefs:
        st.dataframe(pd.DataFrame([{"id": v["id"], "name": v["name"], "pairs": v["pairs"],
                                    "from": source_text(v["sources"]), "created": v["created_at"]} for v in prefs]),
                     hide_index=True, width="stretch")
    else:
        st.caption("No preference versions yet.")
    with st.form("prefs_import", clear_on_submit=True):
        upload = st.file_uploader("Preference file", type=["jsonl", "parquet"], key="prefs_file")
        c1, c2 = st.columns([3, 2])
        pref_name = c1.text_input("Name", value=f"prefs-{len(prefs) + 1}", key="prefs_name")
        skip_bad = c2.checkbox("Skip bad rows", help="Leave rows without prompt, chosen or rejected out (they are "
                                                     "counted); otherwise the first bad row stops the import.")
        if st.form_submit_button("Import and freeze"):
            if upload is None:
                st.error("Choose a preference file first.")
            else:
                with db() as s:
                    pv = run_action(import_preference_file, s, user, project.id, pref_name, upload.getvalue(),
                                    upload.name, skip_bad=skip_bad)
                if pv is not None:
                    flash(f"Preference version {md_literal(pv.name)} frozen: {pv.n_pairs} pairs.")
                    st.rerun()

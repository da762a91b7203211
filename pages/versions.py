"""Datasets: freeze versions of the approved examples, read their stats, export them."""
from pathlib import Path

import altair as alt
import pandas as pd
import streamlit as st

from core.accounts import can
from core.curate.datasets import export_file, freeze_version, list_versions, stats, token_histogram
from core.curate.formats import EXPORT_FORMATS, FORMAT_LABELS
from core.curate.preferences import import_preference_file, list_preference_versions, source_text
from core.webui import db, flash, md_literal, require_page, require_project, run_action

user = require_page("curate")
project = require_project()
st.title("Datasets")

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
                v = run_action(freeze_version, s, user, project, name,
                               fractions={"train": train, "validation": validation, "test": test}, seed=int(seed))
            if v is not None:
                st.success(f"Froze {md_literal(v.name)}: {v.n_train} train, {v.n_validation} validation, {v.n_test} test.")
                versions = [v] + versions

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

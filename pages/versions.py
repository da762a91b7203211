"""Datasets: freeze versions of the approved examples, read their stats, export them."""
import numpy as np
import pandas as pd
import streamlit as st

from core.accounts import can
from core.curate.datasets import export_file, freeze_version, list_versions, stats
from core.curate.formats import EXPORT_FORMATS, FORMAT_LABELS
from core.webui import db, require_page, require_project, run_action

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
                st.success(f"Froze {v.name}: {v.n_train} train, {v.n_validation} validation, {v.n_test} test.")
                versions = [v] + versions

st.subheader("Versions")
if versions:
    st.dataframe(pd.DataFrame([{"id": v.id, "name": v.name, "train": v.n_train, "validation": v.n_validation,
                                "test": v.n_test, "seed": v.seed, "content hash": v.content_hash[:16],
                                "created": v.created_at} for v in versions]), hide_index=True, width="stretch")
else:
    st.info("No versions yet.")

st.subheader("Stats")
chosen = st.selectbox("For", [None] + [v.id for v in versions],
                      format_func=lambda i: "all examples of the project" if i is None
                      else next(v.name for v in versions if v.id == i))
with db() as s:
    data = stats(s, project, chosen)
c = st.columns(3)
c[0].caption("By status")
c[0].bar_chart(pd.Series(data["by_status"], name="examples"))
c[1].caption("By tag")
c[1].bar_chart(pd.Series(data["by_tag"] or {"(none)": 0}, name="examples"))
c[2].caption("By annotator")
c[2].bar_chart(pd.Series(data["by_annotator"] or {"(none)": 0}, name="examples"))
lengths = data.get("version_token_lengths") if chosen else data["token_lengths"]
if lengths:
    counts, edges = np.histogram(lengths, bins=min(30, max(1, len(set(lengths)))))
    st.caption(f"Token lengths ({len(lengths):,} examples; max length {project.max_length})")
    st.bar_chart(pd.DataFrame({"examples": counts}, index=[f"{int(lo)}-{int(hi)}" for lo, hi in
                                                             zip(edges[:-1], edges[1:])]))
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
        st.session_state["export_path"] = str(path)
if st.session_state.get("export_path"):
    from pathlib import Path

    path = Path(st.session_state["export_path"])
    if path.exists():
        st.download_button(f"Download {path.name}", path.read_bytes(), file_name=path.name, type="primary")

"""Import: upload a file (or name one on the server), check the detected format, import, read the report."""
from pathlib import Path

import pandas as pd
import streamlit as st

from core.curate.formats import CSV_FIELDS, FILE_FORMATS, FORMAT_LABELS, csv_columns, detect_format, guess_csv_mapping
from core.accounts import can
from core.curate.importing import check_import_path, import_file, import_history, report_level, save_upload
from core.errors import StudioError
from core.workspace import import_roots
from ui.frame import db, md_literal, require_page, require_project, run_action

user = require_page("curate")
project = require_project()
st.title("Import")
st.caption(f"Into project **{md_literal(project.name)}**. Alpaca, ShareGPT, chat JSONL, TRL prompt/completion "
           "(JSON Lines or JSON arrays), CSV, Parquet, a folder saved with datasets' save_to_disk, or an unzipped "
           "export folder of this app (its split files import as one dataset).")

# Reading files on the server by path is for engineers, inside the folders an admin chose (core decides).
sources = ["Upload a file"] + (["A path on the server (big files, dataset folders)"]
                               if can(user, "import_server_files") else [])
source = st.radio("Source", sources, horizontal=True)
path = source_key = None  # source_key names this file: a report is shown only beside the file it was made for
if source == "Upload a file":
    upload = st.file_uploader("File", type=["jsonl", "json", "csv", "parquet", "txt"])
    if upload is not None:
        source_key = f"upload:{upload.file_id}"  # each upload has its own id, even of a same-named, same-size file
        if st.session_state.get("import_upload_key") != source_key:
            st.session_state["import_upload_key"] = source_key
            st.session_state["import_upload_path"] = str(save_upload(upload.name, upload.getvalue()))
        path = Path(st.session_state["import_upload_path"])
else:
    roots = import_roots()
    st.caption("Files and dataset folders inside: " + ", ".join(f"`{r}`" for r in roots)
               + " (relative paths start in the first).")
    typed = st.text_input("Path", placeholder="conversations.jsonl")
    if typed.strip():
        # A missing file is refused by the same rule, with the same words as a path outside the folders.
        path = run_action(check_import_path, user, roots[0] / Path(typed.strip()).expanduser())
        source_key = f"path:{path}"

if path is None:
    st.stop()

try:
    detected = detect_format(path)
except StudioError as err:
    detected = None
    st.warning(str(err))
options = ["auto"] + FILE_FORMATS
chosen = st.selectbox("Format", options, format_func=lambda f: f"Detected: {FORMAT_LABELS[detected]}"
                      if f == "auto" and detected else ("Detect" if f == "auto" else FORMAT_LABELS[f]))
fmt = detected if chosen == "auto" else chosen
mapping = None
if fmt == "csv":
    columns = run_action(csv_columns, path) or []
    st.caption("Map the CSV columns (instruction and output are needed unless a conversation column holds "
               "whole conversations as JSON; without an output column every row is a prompt that needs an answer).")
    cols = st.columns(4)
    mapping = {}
    guessed = guess_csv_mapping(columns)
    for i, field in enumerate(CSV_FIELDS):
        guess = guessed.get(field)
        picked = cols[i % 4].selectbox(field, ["(none)"] + columns,
                                       index=(columns.index(guess) + 1) if guess else 0, key=f"map_{field}")
        if picked != "(none)":
            mapping[field] = picked
strict = st.checkbox("Strict: import nothing unless every record is valid")

if st.button("Import", type="primary", disabled=fmt is None):
    bar = st.progress(0.0, text="Reading...")
    with db() as s:
        report = run_action(import_file, s, user, project, path, fmt, strict=strict, mapping=mapping,
                            filename=path.name,
                            progress=lambda fraction, message: bar.progress(min(1.0, fraction), text=message))
    bar.empty()  # its last line is the report's message: the report below says it once
    if report is not None:
        st.session_state["import_report"] = {**report.as_dict(), "source_key": source_key}

report = st.session_state.get("import_report")
if report and report.get("source_key") == source_key:
    st.subheader("Report")
    # Green only when everything read came in; rejected records, a cut-off file or nothing new say so.
    getattr(st, report_level(report))(report["message"])
    with st.container(horizontal=True, gap="medium"):  # each figure as wide as its label; wraps when narrow
        st.metric("Read", report["n_read"], width="content")
        st.metric("Imported", report["n_imported"], width="content")
        st.metric("Rejected", report["n_rejected"], width="content")
        st.metric("Duplicates skipped", report["n_duplicates"], width="content",
                  help="Records with exactly the text of an example already in the project")
        st.metric("Near duplicates", report["n_near_duplicates"], width="content",
                  help="Imported, and flagged for review as close to an existing example")
        if report.get("n_repaired"):
            st.metric("Repaired", report["n_repaired"], width="content",
                      help="ShareGPT conversations kept after dropping leading assistant messages or a trailing "
                           "user message (FastChat's rule for split dumps); strict mode rejects them instead")
        if report.get("n_needs_answer"):
            st.metric("Need an answer", report["n_needs_answer"], width="content",
                      help="Prompt-only records (no answer field, or messages ending on the user), imported as "
                           "drafts whose answer is still to be written: on Annotate, or drafted by a model on the "
                           "Datasets page")
    st.caption(f"Format: {report['format']} · encoding: {report['encoding'] or 'n/a'}")
    if report["ended_early"]:
        st.warning(f"The {report['ended_early']}: the last record was cut off; every complete record before it "
                   "was kept.")
    if report["rejected"]:
        st.dataframe(pd.DataFrame(report["rejected"]), hide_index=True, width="stretch")
        if report["n_rejected"] > len(report["rejected"]):
            st.caption(f"First {len(report['rejected'])} of {report['n_rejected']} rejected records shown.")

with st.expander("Earlier imports"):
    with db() as s:
        history = import_history(s, project)
    if history:
        st.dataframe(pd.DataFrame(history).drop(columns=["id"]), hide_index=True, width="stretch",
                     column_config={"when": st.column_config.DatetimeColumn(format="YYYY-MM-DD HH:mm")})
    else:
        st.caption("No imports yet.")

"""Documents: the project's knowledge (FAQ, policies, the fact sheet) as searchable chunks; upload, read, delete."""
import pandas as pd
import streamlit as st

from core.accounts import can
from core.curate.docparse import KIND_WORDS, KINDS
from core.curate.documents import add_document, chunks_of, delete_document, list_documents, search, versions_of
from core.errors import StudioError
from core.evaluate.augment import set_team_prompt, suggested_team_prompt
from core.evaluate.docdrafts import chunk_sources, generated_drafts_jobs, launch_generated_drafts
from core.evaluate.systems import available_systems
from ui.frame import db, flash, md_literal, require_page, require_project, run_action
from ui.draftjobs import draft_jobs_panel

user = require_page("curate")
project = require_project()
st.title("Documents")
st.caption("What the team already knows, kept as passages (chunks) the app can search: the source of drafts "
           "generated from documents and of the context a +RAG system puts before each question. Uploading a name "
           "that exists makes its next version; only the newest version is searched.")

if can(user, "curate"):
    with st.form("add_documents", clear_on_submit=True):
        files = st.file_uploader("Documents", type=sorted({k.lstrip(".") for k in KINDS}), accept_multiple_files=True,
                                 help="Markdown, plain text, HTML or PDF (text PDFs: a scanned PDF needs OCR first).")
        if st.form_submit_button("Add", type="primary", icon=":material/note_add:"):
            if not files:
                st.error("Choose one or more files first.")
            for upload in files or []:
                with db() as s:
                    try:
                        doc = add_document(s, user, project, upload.name, upload.getvalue())
                    except StudioError as err:
                        st.error(f"{md_literal(upload.name)}: {err}")
                        continue
                flash(f"Added {doc.name} (version {doc.version}, {doc.n_chunks} chunks).")

with db() as s:
    docs = list_documents(s, project)

query = st.text_input("Search the documents", placeholder="e.g. how long does a refund take?", key="documents_q")
if query.strip():
    with db() as s:
        hits = search(s, project, query, k=10)
    if hits:
        st.dataframe(pd.DataFrame([{"passage": h.label, "section": h.heading, "score": round(h.score, 3),
                                    "text": h.text} for h in hits]), hide_index=True, width="stretch",
                     column_config={"text": st.column_config.TextColumn(width="large")})
    else:
        st.caption("No passage matches any word of the search.")

if can(user, "evaluate"):
    with st.container(border=True):  # not an expander: those are the document's passages below
        st.markdown("**Prompted and +RAG systems**")
        st.caption("Generate and the Playground offer every system also as +prompt (the team prompt below as its "
                   "system prompt) and +rag (the passages that best match each question, from these documents). "
                   "An example's own system prompt follows either.")
        with db() as s:
            suggestion = project.team_prompt or suggested_team_prompt(s, project)
        if not project.team_prompt:
            st.caption("No team prompt yet, so no +prompt system can answer" + (": the text below is a suggestion "
                       "(the fact sheet), used once saved." if suggestion else "."))
        with st.form("team_prompt"):
            team_prompt = st.text_area("Team prompt for +prompt systems", suggestion, height=120,
                                       help="Empty: no +prompt systems. Suggested while unset: the fact sheet's "
                                            "text.")
            top_k = st.number_input("Passages per question for +rag systems", 1, 20, int(project.rag_top_k or 3))
            if st.form_submit_button("Save"):
                with db() as s:
                    if run_action(set_team_prompt, s, user, project, team_prompt=team_prompt, rag_top_k=int(top_k),
                                  success="Saved the team prompt and passages per question.") is not None:
                        st.rerun()

if not docs:
    st.info("No documents yet. Add the FAQ, policies or fact sheets your answers must agree with.")
    st.stop()

st.subheader(f"{len(docs)} document(s)")
st.dataframe(pd.DataFrame([{"name": d.name, "version": d.version, "kind": KIND_WORDS[d.kind], "chunks": d.n_chunks,
                            "size (KiB)": round(d.size_bytes / 1024, 1), "added": d.created_at} for d in docs]),
             hide_index=True, width="stretch")

names = [d.name for d in docs]
pick = st.selectbox("Read a document", names, key="documents_pick")
with db() as s:
    versions = versions_of(s, project, pick)
    shown = st.selectbox("Version", versions, format_func=lambda d: f"version {d.version} ({d.created_at:%Y-%m-%d})",
                         key=f"documents_version_{pick}") if len(versions) > 1 else versions[0]
    chunks = chunks_of(s, shown)
st.caption(f"{len(chunks)} chunk(s); the passage names (§) are the ones drafts and answers cite.")
for chunk in chunks:
    with st.expander(f"§{chunk.ordinal} {chunk.heading}".strip()):
        st.text(chunk.text)

if can(user, "curate"):
    with st.popover("Delete this document", icon=":material/delete:"):
        st.write(f"Take **{md_literal(pick)}** (all {len(versions)} version(s)) out of the list and of search. "
                 "Drafts already made from it keep their origin.")
        if st.button("Delete", type="primary", key="documents_delete"):
            with db() as s:
                if run_action(delete_document, s, user, project, pick,
                              success=f"Deleted {pick}.") is not None:
                    st.session_state.pop("documents_pick", None)
                    st.rerun()

if can(user, "evaluate"):
    st.subheader("Generate drafts from documents")
    st.caption("A background job asks a model for questions a customer could ask about each chunk, then answers "
               "each from that chunk alone. Every question passes the import's checks first: a repeat of an eval "
               "prompt or of a validation/test item is withheld and counted, never stored. The rest land in "
               "Annotate as drafts marked \"Generated from <document> §<chunk>\", for the experts to fix or approve.")
    with db() as s:
        systems = available_systems(s, user, project.id)
    labels = {r["system"]: r["label"] for r in systems}
    by_id = {d.id: d for d in docs}
    with st.form("generate_drafts"):
        chosen = st.multiselect("Documents", list(by_id), default=list(by_id)[:1], format_func=lambda i: by_id[i].name)
        c1, c2, c3, c4 = st.columns(4)
        system = c1.selectbox("Model", list(labels), format_func=labels.get)
        per_chunk = c2.number_input("Questions per chunk", 1, 10, 2)
        max_chunks = c3.number_input("At most chunks (0: all)", 0, 100_000, 0)
        max_new = c4.number_input("Longest answer (tokens)", 16, 4096, 160)
        if st.form_submit_button("Generate drafts", icon=":material/auto_awesome:"):
            with db() as s:
                sources = run_action(chunk_sources, s, project, chosen, int(max_chunks))
                if sources is not None:
                    job = run_action(launch_generated_drafts, s, user, project.id, system, "documents", sources,
                                     per_source=int(per_chunk), decoding={"max_new_tokens": int(max_new)})
                    if job is not None:
                        flash(f"Job {job.id} {job.status}: questions from {len(sources)} chunk(s).")
                        st.rerun()
    draft_jobs_panel(user, lambda s: generated_drafts_jobs(s, project.id)[:5], unit="chunk", asked="question",
                     resume_help="A new job that skips the chunks that already gave drafts.")

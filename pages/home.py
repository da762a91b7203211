"""Home: where the current project stands and what to do next."""
import streamlit as st

from core.accounts import can
from core.projects import inert_markdown, project_summary
from ui.frame import current_project, db, md_literal, require_page

user = require_page(None)
st.title("finetune-studio")
st.caption(f"Welcome, {md_literal(user.username)}.")
if not can(user, "curate"):  # an agent: the Pilot page is all they use
    st.info("You take part in pilots: open the Pilot page in the sidebar, ask the model customers' questions and "
            "rate its answers.")
    st.stop()
project = current_project()
if project is None:
    st.info("No project yet. An admin can create one on the Admin page.")
    st.stop()
st.header(md_literal(project.name))
if project.description:
    st.text(project.description)
with db() as s:
    summary = project_summary(s, project)
cols = st.columns(5)
cols[0].metric("Examples", summary["examples"])
cols[1].metric("Approved", summary["by_status"].get("approved", 0))
cols[2].metric("Dataset versions", summary["versions"])
cols[3].metric("Training runs", summary["runs"])
cols[4].metric("Eval sets", summary["eval_sets"])
if project.guidelines:
    # Admin-written Markdown by design (Admin -> Project settings), rendered as the Annotate page renders it:
    # images as their alt text, so reading them fetches nothing from another host.
    with st.expander("Guidelines and fact sheet", expanded=False):
        st.markdown(inert_markdown(project.guidelines))
st.subheader("The loop")
st.markdown(
    "1. **Curate** — import examples, edit them on *Annotate*, approve them on *Review data*.\n"
    "2. **Freeze** a dataset version on *Datasets*; export it in any format.\n"
    "3. **Train** the base model on a version from *Train*; watch and compare runs on *Runs*.\n"
    "4. **Evaluate** — generate outputs on *Generate*, score them blind on *Compare*, read *Results*.\n"
    "5. **Ship** — talk to a model on *Playground*; export it from *Runs* (adapter, merged, Ollama, vLLM) with a "
    "parity check."
)

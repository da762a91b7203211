"""Review data: approve or reject submitted examples (a rejection needs a reason the annotator will see)."""
import streamlit as st

from core.curate import curation as cur
from core.webui import db, require_page, require_project, run_action

user = require_page("review_data")
project = require_project()
st.title("Review data")

with db() as s:
    counts = cur.status_counts(s, project)
    agreement = cur.agreement(s, project) if project.annotators_per_example > 1 else None
c = st.columns(4)
for col, name in zip(c, cur.STATUSES):
    col.metric(name.capitalize(), f"{counts.get(name, 0):,}")
if agreement is not None:
    alpha = agreement["alpha"]
    st.metric("Annotator agreement (Krippendorff's alpha, ordinal)",
              "not enough ratings yet" if alpha is None else f"{alpha:.2f}",
              help=f"{agreement['n_items']} examples rated by 2+ of {agreement['n_annotators']} annotators.")

after = st.session_state.get("rv_after")
with db() as s:
    page = cur.queue_page(s, project, status="submitted", after_id=after, limit=20)
    if not page and after:
        st.session_state["rv_after"] = after = None
        page = cur.queue_page(s, project, status="submitted", limit=20)
if not page:
    st.success("Nothing waiting for review.")
    st.stop()

ex = page[0]
st.subheader(f"Example #{ex.id}")
st.caption(f"Tags: {', '.join(ex.tags) or '-'} · {ex.token_count} tokens"
           + (f" · near duplicate of #{ex.near_duplicate_of}" if ex.near_duplicate_of else ""))
if ex.system:
    st.caption("System prompt")
    st.text(ex.system)
for i, turn in enumerate(ex.turns):
    st.caption("User" if turn["role"] == "user" else "Assistant")
    st.code(turn["content"] + (f"\n\n{ex.input}" if i == 0 and ex.input else ""), language=None, wrap_lines=True)
if ex.note:
    st.caption("Annotator's note")
    st.text(ex.note)

reason = st.text_input("Reason (needed to reject; the annotator sees it)", key=f"reason_{ex.id}")
b1, b2, b3 = st.columns(3)
if b1.button("Approve", type="primary", shortcut="Alt+A", width="stretch"):
    with db() as s:
        if run_action(cur.review_example, s, user, ex.id, "approve", expected_version=ex.version,
                      success=f"Approved #{ex.id}.") is not None:
            st.rerun()
if b2.button("Reject", shortcut="Alt+X", width="stretch"):
    with db() as s:
        if run_action(cur.review_example, s, user, ex.id, "reject", reason, expected_version=ex.version,
                      success=f"Rejected #{ex.id}.") is not None:
            st.rerun()
if b3.button("Skip", shortcut="Alt+Right", width="stretch"):
    st.session_state["rv_after"] = ex.id
    st.rerun()
st.caption("Shortcuts: Alt+A approve · Alt+X reject · Alt+→ skip")

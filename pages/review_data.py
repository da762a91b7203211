"""Review data: approve or reject submitted examples (a rejection needs a reason the annotator will see).

A resubmitted example shows why it was rejected before, its history and what changed since the last review.
A reviewer may fix a small mistake and approve in one step (recorded in the history), and approve every
example matching the filters at once, after confirming how many. Example text, tags, notes and reasons are
user-written: they are shown with st.text / st.code / tables, never as Markdown.
"""
import pandas as pd
import streamlit as st

from core.accounts import list_users
from ui.browser import commit_typing_before_shortcuts
from core.curate import curation as cur
from core.curate.history import review_context
from ui.frame import db, flash, require_page, require_project, run_action

user = require_page("review_data")
project = require_project()
st.title("Review data")

with db() as s:
    counts = cur.status_counts(s, project)
    agreement = cur.agreement(s, project) if project.annotators_per_example > 1 else None
    tags = cur.list_tags(s, project)
    people = {u.id: u.username for u in list_users(s)}
with st.container(horizontal=True, gap="medium"):
    for name in cur.STATUSES:
        st.metric(name.capitalize(), f"{counts.get(name, 0):,}", width="content")
if agreement is not None:
    alpha = agreement["alpha"]
    st.metric("Annotator agreement (Krippendorff's alpha, ordinal)",
              "not enough ratings yet" if alpha is None else f"{alpha:.2f}",
              help=f"{agreement['n_items']} examples rated by 2+ of {agreement['n_annotators']} annotators.")

with st.container(horizontal=True, gap="small"):  # fixed widths wrap onto a second row in a narrow window
    tag = st.selectbox("Tag", ["(any)"] + tags, key="rv_tag", width=180)
    annotator = st.selectbox("Annotator", [None] + list(people), key="rv_annotator", width=180,
                             format_func=lambda i: "(anyone)" if i is None else people[i])
    search = st.text_input("Search text", key="rv_search", width=260)
filters = dict(tag=None if tag == "(any)" else tag, annotator=annotator, search=search or None)
filter_key = repr(sorted((k, str(v)) for k, v in filters.items()))
if st.session_state.get("rv_filter_key") != filter_key:  # new filters: from the start, no pending bulk approve
    st.session_state.update(rv_filter_key=filter_key, rv_after=None, rv_bulk=None)

after = st.session_state.get("rv_after")
with db() as s:
    page = cur.queue_page(s, project, status="submitted", after_id=after, limit=20, **filters)
    if not page and after:
        st.session_state["rv_after"] = after = None
        page = cur.queue_page(s, project, status="submitted", limit=20, **filters)
    matching = cur.count_submitted(s, project, **filters)
if not page:
    st.session_state["rv_shown"] = None
    st.success("Nothing waiting for review" + (" with these filters." if any(filters.values()) else "."))
    st.stop()

# Bulk approve: say how many, then ask once more with that number.
bulk = st.session_state.get("rv_bulk")
fixing_first = bool(st.session_state.get(f"rv_fix_{page[0].id}_{page[0].version}"))  # it would drop that fix
bulk_help = "Approve or turn off your fix of the example below first." if fixing_first else None
if bulk is None:
    if st.button(f"Approve all {matching:,} matching examples…", icon=":material/done_all:",
                 disabled=fixing_first, help=bulk_help):
        st.session_state["rv_bulk"] = matching
        st.rerun()
else:
    st.warning(f"Approve all {bulk:,} submitted examples that match these filters, without opening each one?")
    with st.container(horizontal=True, gap="small"):
        if st.button(f"Yes, approve {bulk:,}", type="primary", disabled=fixing_first, help=bulk_help):
            with db() as s:
                done = run_action(cur.approve_selection, s, user, project, expected=bulk, **filters)
            st.session_state["rv_bulk"] = None
            if done is not None:
                flash(f"Approved {done:,} examples.")
                st.rerun()
        if st.button("Cancel"):
            st.session_state["rv_bulk"] = None
            st.rerun()

ex = page[0]
with db() as s:
    past = review_context(s, ex)
st.subheader(f"Example #{ex.id}")
st.text(f"Version {ex.version} · {ex.token_count} tokens · last edited by {people.get(ex.updated_by, '?')}"
        + (f" · near duplicate of #{ex.near_duplicate_of}" if ex.near_duplicate_of else "")
        + "\nTags: " + (", ".join(ex.tags) or "-"))
if past.last_rejection is not None:
    r = past.last_rejection
    st.warning("Rejected before. The reason given then:", icon=":material/undo:")
    st.text(f"{r.reason}\n(version {r.version}, {people.get(r.user_id, '?')}, {r.at:%Y-%m-%d %H:%M} UTC)")
if past.diff:
    st.caption(f"What changed since version {past.last_review.version} ({past.last_review.action})")
    st.code("\n".join(past.diff), language="diff", wrap_lines=True)
if past.steps:
    with st.expander(f"History ({len(past.steps)} step{'s' if len(past.steps) != 1 else ''})"):
        st.dataframe(pd.DataFrame([{"version": r.version, "step": r.action, "status": r.status,
                                    "who": people.get(r.user_id, "?"), "when (UTC)": f"{r.at:%Y-%m-%d %H:%M}",
                                    "reason": r.reason} for r in past.steps]), hide_index=True, width="stretch")

fixing = st.toggle("Fix it myself (then approve)", key=f"rv_fix_{ex.id}_{ex.version}")
fix = None  # the text as the reviewer typed it: what Approve approves (core refuses a Reject that would drop it)
if not fixing:
    if ex.system:
        st.caption("System prompt")
        st.text(ex.system)
    for i, turn in enumerate(ex.turns):
        st.caption("User" if turn["role"] == "user" else "Assistant")
        st.code(turn["content"] + (f"\n\n{ex.input}" if i == 0 and ex.input else ""), language=None, wrap_lines=True)
    if ex.note:
        st.caption("Annotator's note")
        st.text(ex.note)
else:
    k = f"{ex.id}_{ex.version}"
    system = st.text_area("System prompt", ex.system, key=f"rv_sys_{k}", height=68)
    turns = [{"role": t["role"], "content": st.text_area("User" if t["role"] == "user" else "Assistant",
                                                        t["content"], key=f"rv_turn{i}_{k}")}
             for i, t in enumerate(ex.turns)]
    input_text = st.text_area("Input (optional)", ex.input, key=f"rv_inp_{k}", height=68) if ex.input else ""
    tag_text = st.text_input("Tags (comma separated)", ", ".join(ex.tags), key=f"rv_tags_{k}")
    note = st.text_input("Note", ex.note, key=f"rv_note_{k}")
    fix = dict(system=system, turns=turns, input=input_text, note=note,
               tags=[t.strip() for t in tag_text.split(",") if t.strip()])
    st.caption("Approve (Alt+A) approves the text as you fixed it, recorded in the history.")
fixed = fix is not None and cur.fix_changes(ex, fix)

reason = st.text_input("Reason (needed to reject; the annotator sees it)", key=f"reason_{ex.id}")
with st.container(horizontal=True, gap="small"):
    approve = st.button("Approve", type="primary", shortcut="Alt+A")
    reject = st.button("Reject", shortcut="Alt+X")
    skip = st.button("Skip", shortcut="Alt+Right")
# A click acts on the example the reviewer saw: a shortcut pressed while typing a search, or after another
# reviewer's step, reaches the server with a list whose first example was never drawn for this reviewer.
unseen = st.session_state.get("rv_shown") not in (None, (ex.id, ex.version))
if (approve or reject or skip) and unseen:
    st.warning(f"The list changed before your click (new filters, or another reviewer's step): nothing was "
               f"{'approved' if approve else 'rejected' if reject else 'skipped'}: look at #{ex.id}, then decide.")
elif approve or reject:
    with db() as s:
        done = "Fixed and approved" if approve and fixed else "Approved" if approve else "Rejected"
        if run_action(cur.review_example, s, user, ex.id, "approve" if approve else "reject",
                      reason if reject else "", expected_version=ex.version, fix=fix,
                      success=f"{done} #{ex.id}.") is not None:
            st.rerun()
elif skip and fixed:
    st.error(f"You changed #{ex.id}: skipping would drop your fix. Approve it, or turn off "
             "\"Fix it myself\" to drop the fix, then skip.")
elif skip:
    st.session_state["rv_after"] = ex.id
    st.rerun()
st.session_state["rv_shown"] = (ex.id, ex.version)
st.caption(f"{matching:,} waiting with these filters · Shortcuts: Alt+A approve · Alt+X reject · Alt+→ skip")
with st.sidebar:  # sends the text typed right before a shortcut (a reason, a fix) to the server before it acts
    commit_typing_before_shortcuts(["Alt+A", "Alt+X", "Alt+Right"], key="review_keys")

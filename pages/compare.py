"""Compare: blind side-by-side review (reviewers and up).

Two answers to one prompt, labelled A and B. Which answer is A was randomised for this item and this reviewer;
nothing on this page names a model, run or system. Everything is operable from the keyboard.
"""
import streamlit as st

from ui.browser import rubric_draft, rubric_sheet
from core.evaluate.evalsets import list_eval_sets
from core.evaluate.review import (PREFERENCE_WORDS, PREFERENCES, START_WORDS, get_item, my_scored_items,
                                  next_item, send_back_options, send_back_to_annotation, submit_score)
from ui.frame import db, require_page, require_project, run_action

PREF_KEYS = {"A": "A", "B": "B", "tie": "T", "both_bad": "X"}

user = require_page("score")
project = require_project()
st.title("Compare")

with db() as s:
    sets = [row for row in list_eval_sets(s, user, project.id) if row["n_systems"] >= 2]
if not sets:
    st.info("Nothing to review yet: an engineer creates an eval set and generates answers on the Generate page.")
    st.stop()
names = {row["id"]: row["name"] for row in sets}
head_left, head_right = st.columns(2, vertical_alignment="bottom")  # one row: the scores stay in view below
es_id = head_left.selectbox("Eval set", list(names), format_func=names.get, key="cmp_eval_set")
skipped = st.session_state.setdefault("cmp_skipped", {}).setdefault(es_id, [])
revisit = st.session_state.get("cmp_revisit")

with db() as s:
    if revisit and revisit[0] == es_id:
        item = run_action(get_item, s, user, es_id, revisit[1], revisit[2])
    else:
        item = run_action(next_item, s, user, es_id, exclude=skipped)
    mine = my_scored_items(s, user, es_id)


def scored_items_panel() -> None:
    """Reopen any item this reviewer scored, to change the score; shown even when nothing is left to score."""
    if not mine:
        return
    with st.expander(f"Your scored items ({len(mine)})", expanded=item is None):
        labels = {i: f"{row['excerpt']} ({row['updated_at']:%Y-%m-%d %H:%M})" for i, row in enumerate(mine)}
        pick = st.selectbox("Open an item to change your score", list(labels), format_func=labels.get,
                            key="cmp_revisit_pick")
        if st.button("Open", key="cmp_revisit_open"):
            st.session_state["cmp_revisit"] = (es_id, mine[pick]["prompt_id"], mine[pick]["pair"])
            st.rerun()


if item is None:
    if skipped:
        st.info(f"You skipped {len(skipped)} item(s) and scored all the others.")
        if st.button("Review the skipped items", key="cmp_unskip"):
            skipped.clear()
            st.rerun()
    else:
        st.success("You have scored every item of this eval set. Thank you!")
    scored_items_panel()
    st.stop()

# ---- the draft of this item: the sheet's scores and preference live in the browser (ui.browser.rubric_sheet),
# so every key press shows at once and none waits on a rerun; the server keeps the saved answers to start from.
old = item.existing or {}
if st.session_state.get("cmp_comment_token") != item.token:
    st.session_state["cmp_comment_token"] = item.token
    st.session_state[f"cmp_comment_{item.token}"] = old.get("comment", "")
lo, hi = min(c["min"] for c in item.rubric), max(c["max"] for c in item.rubric)
SHEET_TEXTS = {
    "next": f"Next: {{criterion}} for {{side}}. Type {lo}–{hi}; ↑/↓ change row.",
    "all_scored": "Every row is scored. Press ↑ or click a row's letter to change one.",
    "out_of_range": "{value} is not a score for {criterion} ({min}–{max}): nothing was recorded.",
    "refused_all_scored": "Every row is scored, so {value} was not recorded: press ↑ or click a row's letter "
                          "to change one.",
    "overall": "Overall",
    "wait": "Submitting this item: keys wait for the next one.",
}


def _skip() -> None:
    skipped.append((item.prompt_id, item.pair))
    st.session_state.pop("cmp_revisit", None)


head_right.progress(min(1.0, item.done_by_me / max(1, item.total_items)),
                   text=f"You have scored {item.done_by_me} of {item.total_items} items.")

# ---- the prompt, the reference and the two answers on the left, the score sheet on the right, so the sheet is in
# view without scrolling. All text is shown as plain text, never as markdown or HTML, so nothing in a prompt or a
# model's answer (an image link, say) is rendered or fetched.
left, right = st.columns([5, 4], gap="medium")
with left:
    with st.container(border=True):
        for msg in item.messages:
            if msg["role"] == "system":
                st.caption("System prompt")
                st.text(msg["content"])
            else:
                with st.chat_message(msg["role"]):
                    st.text(msg["content"])
        if item.reference:
            st.caption("Reference answer")
            st.text(item.reference)
    col_a, col_b = st.columns(2)
    for col, label, text in ((col_a, "A", item.text_a), (col_b, "B", item.text_b)):
        with col:
            st.markdown(f"**Answer {label}**")
            with st.container(border=True, height=260):
                if text.strip():
                    st.text(text)
                else:
                    st.caption("(empty answer)")
    if item.decoding_note:  # values only: which answer had which setting is not said
        st.warning(f"The two answers were generated with different settings ({item.decoding_note}): a difference "
                   "in length or style may come from the settings rather than from the answer's quality.")

with right:
    sheet_box = st.container()  # drawn last: a submit that succeeds moves on without redrawing it
    actions = st.container(horizontal=True)
    submitted = actions.button("Submit and next", type="primary", key="cmp_submit", shortcut="Ctrl+Enter")
    actions.button("Skip", key="cmp_skip", shortcut="S", on_click=_skip)
    if item.existing:  # below the buttons, so the sheet stays where it always is
        st.info("You scored this item before: your answers are filled in, and submitting again updates them.")
    st.caption(f"Keys: {lo}–{hi} score the highlighted row (▶) and move on · ↑/↓ change row · A / B / T / X "
               "overall preference · Ctrl+Enter submit and next · S skip.")
    comment = st.text_area("Comment (optional)", key=f"cmp_comment_{item.token}", height=68,
                           placeholder="What is wrong or missing? Used when sending the item back to annotation.")

sheet_key = f"cmp_sheet_{item.token}"
saved_scores = {c: dict(v) for c, v in (old.get("scores") or {}).items()}
sheet = rubric_draft(sheet_key, item.token) or {"scores": saved_scores, "pref": old.get("preference")}
if submitted:
    with db() as s:
        saved = run_action(submit_score, s, user, es_id, item.prompt_id, item.pair, scores=sheet["scores"],
                           preference=sheet["pref"] or "", comment=comment, success="Saved.")
    if saved is not None:
        st.session_state.pop("cmp_revisit", None)
        st.rerun()
    # Refused: a new run number reopens the sheet, which held its keys back while the submit was on its way.
    st.session_state["cmp_sheet_run"] = st.session_state.get("cmp_sheet_run", 0) + 1
with sheet_box:
    rubric_sheet(sheet_key, token=item.token, rubric=[{**c, "label": c["name"].capitalize()} for c in item.rubric],
                 scores=saved_scores, pref=old.get("preference"),
                 prefs=[{"value": p, "label": PREFERENCE_WORDS[p], "key": PREF_KEYS[p]} for p in PREFERENCES],
                 texts=SHEET_TEXTS, run=st.session_state.get("cmp_sheet_run", 0),
                 lock_on=[".st-key-cmp_submit", ".st-key-cmp_skip"])

# ---- send back: a new draft example of this prompt for the annotators, traced to this review
with st.expander("Send back to annotation"):
    with db() as s:
        options = run_action(send_back_options, s, user, es_id, item.prompt_id)
    if options:
        if options["leak"]:
            st.warning(options["leak"])
        start = st.radio("Start the draft from", options["starts"], format_func=START_WORDS.get, horizontal=True,
                         index=options["starts"].index(options["default"]), key=f"cmp_start_{item.token}")
        st.caption("Your comment above goes with the draft, whole, as its note; the draft records this eval set, "
                   "prompt and you as its origin.")
        if st.button("Send back", key="cmp_send_back",
                     help="Adds this prompt to the annotation queue as a new draft example to fix."):
            with db() as s:
                example = run_action(send_back_to_annotation, s, user, es_id, item.prompt_id, item.pair,
                                     comment=comment, start=start)
            if example is not None:
                st.success(f"Sent back to the annotation queue as example #{example.id}.")

# ---- revisit an earlier item
scored_items_panel()

"""Compare: blind side-by-side review (reviewers and up).

Two answers to one prompt, labelled A and B. Which answer is A was randomised for this item and this reviewer;
nothing on this page names a model, run or system. Everything is operable from the keyboard.
"""
import streamlit as st

from core.evaluate.evalsets import list_eval_sets
from core.evaluate.review import (PREFERENCE_WORDS, PREFERENCES, START_WORDS, get_item, my_scored_items,
                                  next_item, send_back_options, send_back_to_annotation, submit_score)
from core.webui import db, require_page, require_project, run_action

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
es_id = st.selectbox("Eval set", list(names), format_func=names.get, key="cmp_eval_set")
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

# ---- the draft of this item lives in session_state until it is submitted
rubric = item.rubric
slots = [(c["name"], side) for c in rubric for side in ("A", "B")]
draft = st.session_state.get("cmp_draft")
if not draft or draft.get("token") != item.token:
    old = item.existing or {}
    draft = {"token": item.token, "scores": {c: dict(v) for c, v in (old.get("scores") or {}).items()},
             "pref": old.get("preference"), "focus": 0}
    st.session_state["cmp_draft"] = draft
    st.session_state[f"cmp_comment_{item.token}"] = old.get("comment", "")


def _set_score(criterion: str, side: str, value: int) -> None:
    draft["scores"].setdefault(criterion, {})[side] = value
    draft["focus"] = min(slots.index((criterion, side)) + 1, len(slots) - 1)


def _move(step: int) -> None:
    draft["focus"] = (draft["focus"] + step) % len(slots)


def _set_pref(pref: str) -> None:
    draft["pref"] = pref


def _skip() -> None:
    skipped.append((item.prompt_id, item.pair))
    st.session_state.pop("cmp_revisit", None)


st.progress(min(1.0, item.done_by_me / max(1, item.total_items)),
            text=f"You have scored {item.done_by_me} of {item.total_items} items.")
if item.existing:
    st.info("You scored this item before: your answers are filled in, and submitting again updates them.")

# ---- the prompt, the reference, the two answers: all shown as plain text, never as markdown or HTML, so
# nothing in a prompt or a model's answer (an image link, say) is rendered or fetched.
with st.container(border=True):
    for msg in item.messages:
        if msg["role"] == "system":
            st.caption("System prompt")
            st.text(msg["content"])
        else:
            with st.chat_message(msg["role"]):
                st.text(msg["content"])
    if item.reference:
        with st.expander("Reference answer"):
            st.text(item.reference)

col_a, col_b = st.columns(2)
for col, label, text in ((col_a, "A", item.text_a), (col_b, "B", item.text_b)):
    with col:
        st.subheader(f"Answer {label}")
        with st.container(border=True, height=320):
            if text.strip():
                st.text(text)
            else:
                st.caption("(empty answer)")

# ---- rubric: one row of score buttons per criterion and answer; digits score the highlighted row
st.subheader("Scores")
focus_slot = slots[draft["focus"]]
for crit in rubric:
    name = crit["name"]
    st.markdown(f"**{name.capitalize()}** — {crit['description']}")
    cols = st.columns(2)
    for col, side in zip(cols, ("A", "B")):
        focused = (name, side) == focus_slot
        chosen = draft["scores"].get(name, {}).get(side)
        row = col.container(horizontal=True)
        row.markdown(f"{'▶ ' if focused else ''}{side}:")
        for value in range(crit["min"], crit["max"] + 1):
            row.button(str(value), key=f"cmp_score_{name}_{side}_{value}",
                       type="primary" if chosen == value else "secondary",
                       shortcut=str(value) if focused and 0 <= value <= 9 else None,
                       on_click=_set_score, args=(name, side, value))
nav = st.container(horizontal=True)
nav.button("Previous field", key="cmp_prev_field", shortcut="Up", on_click=_move, args=(-1,))
nav.button("Next field", key="cmp_next_field", shortcut="Down", on_click=_move, args=(1,))

st.subheader("Overall")
prefs = st.container(horizontal=True)
for pref in PREFERENCES:
    prefs.button(PREFERENCE_WORDS[pref], key=f"cmp_pref_{pref}", shortcut=PREF_KEYS[pref],
                 type="primary" if draft["pref"] == pref else "secondary", on_click=_set_pref, args=(pref,))
comment = st.text_area("Comment (optional)", key=f"cmp_comment_{item.token}",
                       placeholder="What is wrong or missing? Used when sending the item back to annotation.")

actions = st.container(horizontal=True)
submitted = actions.button("Submit and next", type="primary", key="cmp_submit", shortcut="Ctrl+Enter")
actions.button("Skip", key="cmp_skip", shortcut="S", on_click=_skip)
st.caption("Keys: 1–5 score the highlighted row (▶) and move on · ↑/↓ change row · A / B / T / X overall "
           "preference · Ctrl+Enter submit and next · S skip.")

if submitted:
    with db() as s:
        saved = run_action(submit_score, s, user, es_id, item.prompt_id, item.pair, scores=draft["scores"],
                           preference=draft["pref"] or "", comment=comment, success="Saved.")
    if saved is not None:
        st.session_state.pop("cmp_draft", None)
        st.session_state.pop("cmp_revisit", None)
        st.rerun()

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

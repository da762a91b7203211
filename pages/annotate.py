"""Annotate: a queue of examples, an editor for each, live quality hints, and a form for new examples.

All example text is shown with text widgets (text_area, st.text, st.code), never as markdown.

Which example is open is ``q_current`` alone: the queue list is drawn from it (a click moves it through a
callback), and every editor widget is keyed by the example's id and the version it was opened at, so text
typed for #62 can only ever be saved on #62. Save & next, Skip and Previous move ``q_current`` and rerun.
"""
import pandas as pd
import streamlit as st

from core.accounts import list_users
from core.browser import commit_typing_before_shortcuts, live_hints
from core.curate import curation as cur
from core.curate.dedup import record_text
from core.errors import Conflict, StudioError
from core.evaluate.review import START_WORDS
from core.webui import db, flash, md_literal, require_page, require_project, run_action

user = require_page("curate")
project = require_project()


@st.cache_resource(show_spinner="Loading the base model's tokenizer...")
def _token_counter():
    return cur.default_token_counter()


count_tokens, counter_label = _token_counter()
st.title("Annotate")

with st.expander("Guidelines", expanded=False):
    # Written by an admin on the Admin page, so markdown is intended here (never user example text).
    st.markdown(project.guidelines or "_No guidelines yet._")

with db() as s:
    tags = cur.list_tags(s, project)
    people = {u.id: u.username for u in list_users(s)}
with st.container(horizontal=True, gap="small"):  # fixed widths wrap onto a second row in a narrow window
    statuses = st.multiselect("Status", cur.STATUSES, default=["draft", "rejected"], key="q_status", width=300)
    tag = st.selectbox("Tag", ["(any)"] + tags, key="q_tag", width=180)
    annotator = st.selectbox("Annotator", [None] + list(people), format_func=lambda i: "(anyone)" if i is None
                             else people[i], key="q_annotator", width=180)
    search = st.text_input("Search text", key="q_search", width=260)
filters = dict(status=statuses or None, tag=None if tag == "(any)" else tag, annotator=annotator,
               search=search or None)
filter_key = repr(sorted((k, str(v)) for k, v in filters.items()))
if st.session_state.get("q_filter_key") != filter_key:  # new filters: back to the first page
    st.session_state.update(q_filter_key=filter_key, q_cursor=[], q_current=None)

cursor = st.session_state.setdefault("q_cursor", [])  # the after-id of each page shown so far (keyset paging)
with db() as s:
    page = cur.queue_page(s, project, after_id=cursor[-1] if cursor else None, **filters)
    counts = cur.status_counts(s, project)
st.caption(" · ".join(f"{k}: {v:,}" for k, v in counts.items()) + f" · tokens: {counter_label}")

queue_tab, new_tab = st.tabs(["Queue", "New example"])
with queue_tab:
    if not page:
        st.info("Nothing in this queue. Change the filters, import data, or write a new example.")
    else:
        ids = [e.id for e in page]
        current = st.session_state.get("q_current")
        if current not in ids:
            current = st.session_state["q_current"] = ids[0]
        # Radio options are rendered as Markdown: the excerpt is user text, so it is escaped to show as typed.
        labels = {e.id: f"#{e.id} · {e.status}{' · sent back' if e.source == 'review_feedback' else ''}"
                        f"{' · failure' if e.source == 'eval_failure' else ''}"
                        f"{' · model draft' if (e.origin or {}).get('drafted') else ''} · "
                        f"{md_literal(cur.excerpt(e, 48))}" for e in page}

        def _picked(widget_key: str) -> None:
            st.session_state["q_current"] = st.session_state[widget_key]

        left, right = st.columns([1, 2.4])
        with left:
            pick_key = f"q_pick_{ids[0]}"
            st.session_state[pick_key] = current  # the list shows q_current, never a stale click of its own
            st.radio("Examples", ids, key=pick_key, on_change=_picked, args=(pick_key,),
                     format_func=lambda i: labels[i])
            with st.container(horizontal=True, gap="small"):
                if st.button("Previous page", disabled=not cursor):
                    cursor.pop()
                    st.session_state["q_current"] = None
                    st.rerun()
                if st.button("Next page", disabled=len(page) < cur.PAGE_SIZE):
                    cursor.append(ids[-1])
                    st.session_state["q_current"] = None
                    st.rerun()
        with right:
            with db() as s:
                ex = cur.get_example(s, current, project)
            st.subheader(f"Example #{ex.id} · {ex.status}")
            if ex.status == "rejected" and ex.reject_reason:
                st.error("Rejected by the reviewer:")
                st.text(ex.reject_reason)
            if ex.source == "review_feedback" and ex.origin:
                # Where a sent-back draft came from, and the reviewer's whole comment (the Note field is one
                # line). Names and comments are user text: st.text, never markdown.
                o = ex.origin
                st.info("Sent back from a blind review on the Compare page.", icon=":material/undo:")
                st.text(f"Eval set {o.get('eval_set')} (#{o.get('eval_set_id')}), prompt #{o.get('prompt_id')}, "
                        f"reviewer {o.get('reviewer')}; the draft started from: "
                        f"{START_WORDS.get(o.get('start'), o.get('start'))}")
                if o.get("comment"):
                    st.text(f"Reviewer's comment: {o['comment']}")
                if o.get("test_split_example_id"):
                    st.warning(f"This prompt is test-split example #{int(o['test_split_example_id'])}: fix that "
                               "example itself and keep this draft out of training data.")
            if ex.source == "eval_failure" and ex.origin:
                o = ex.origin
                st.info("Sent to annotation from the failures of a fine-tuned run on the Results page.",
                        icon=":material/undo:")
                st.text(f"Eval set {o.get('eval_set')}, prompt #{o.get('position')}, run {o.get('run_label')}: "
                        f"{'; '.join(o.get('caught') or [])}; the draft started from the {o.get('start')} answer")
            drafted = (ex.origin or {}).get("drafted")
            if isinstance(drafted, dict):
                # The system's label holds a run's name (user text): escaped for the Markdown of the message.
                st.info(f"Drafted by {md_literal(drafted.get('label') or drafted.get('system'))} — edit before "
                        "submitting.", icon=":material/smart_toy:")
            conflict = st.session_state.get("q_conflict")
            if conflict and conflict["id"] != ex.id:
                conflict = None
            # The version this user started editing from: a save by someone else in between must not
            # silently replace the form (widget keys stay), and our save is then refused as stale.
            bases = st.session_state.setdefault("q_base", {})
            base = bases.setdefault(ex.id, ex.version)
            draft = conflict["attempted"] if conflict else cur.record_of(ex)
            wkey = f"{ex.id}_{base}"
            fields: list[dict] = []  # each text area the live hints count, found on the page by its label

            def area(label: str, role: str, value: str, key: str, **kw) -> str:
                text = st.text_area(label, value, key=key, **kw)
                fields.append({"label": label, "role": role, "value": text})
                return text

            system = area("System prompt", "system", draft["system"], f"sys_{wkey}", height=68)
            if len(draft["turns"]) == 2:
                instruction = area("Instruction", "user", draft["turns"][0]["content"], f"ins_{wkey}")
                input_text = area("Input (optional)", "input", draft["input"], f"inp_{wkey}", height=68)
                response = area("Response", "assistant", draft["turns"][1]["content"], f"res_{wkey}", height=180)
                turns = [{"role": "user", "content": instruction}, {"role": "assistant", "content": response}]
            else:
                input_text = draft["input"]
                turns = [{"role": t["role"], "content": area(f"Turn {i + 1}: {t['role']}", t["role"], t["content"],
                                                             f"turn{i}_{wkey}")}
                         for i, t in enumerate(draft["turns"])]
            c1, c2 = st.columns(2)
            tag_text = c1.text_input("Tags (comma separated)", ", ".join(draft["tags"]), key=f"tags_{wkey}")
            note = c2.text_input("Note", draft["note"], key=f"note_{wkey}")
            record = {"system": system, "turns": turns, "input": input_text,
                      "tags": [t.strip() for t in tag_text.split(",") if t.strip()], "note": note}

            with db() as s:
                tokens, hints = cur.example_hints(s, project, ex, record, count_tokens)
            live_hints(f"hints_{wkey}", fields=fields,
                       tokens=tokens, estimate=cur.estimate_tokens(record_text(record)),
                       max_length=project.max_length, short_words=cur.SHORT_RESPONSE_WORDS,
                       line=cur.HINT_TEXTS["line"].format(tokens=tokens, max=project.max_length, label=counter_label),
                       hints=[{"level": h.level, "text": h.text, "kind": h.kind} for h in hints],
                       texts=cur.HINT_TEXTS)

            if conflict:
                st.error(conflict["message"])
                a, b = st.columns(2)
                a.caption("Saved by someone else (now in the database)")
                a.code("\n\n".join([f"[system] {conflict['current']['system']}"] + [
                    f"[{t['role']}] {t['content']}" for t in conflict["current"]["turns"]]), language=None,
                    wrap_lines=True)
                b.caption("Your edit (still in the form above)")
                b.code("\n\n".join([f"[system] {conflict['attempted']['system']}"] + [
                    f"[{t['role']}] {t['content']}" for t in conflict["attempted"]["turns"]]), language=None,
                    wrap_lines=True)

            def _save(submit: bool):
                """The saved example, or None (a conflict or an error is shown)."""
                with db() as s:
                    try:
                        saved = cur.save_example(s, user, ex.id, expected_version=base, system=record["system"],
                                                 turns=record["turns"], input=record["input"], tags=record["tags"],
                                                 note=record["note"], submit=submit, count_tokens=count_tokens)
                    except Conflict as err:
                        # Show both; the form now starts from the current version, pre-filled with the edit.
                        st.session_state["q_conflict"] = {"id": ex.id, "message": str(err),
                                                          "current": err.current, "attempted": err.attempted}
                        bases[ex.id] = err.current["version"]
                        st.rerun()
                    except StudioError as err:
                        st.error(str(err))
                        return None
                st.session_state.pop("q_conflict", None)
                bases[ex.id] = saved.version
                return saved

            def _go(step: int) -> str:
                """Open the example ``step`` away in this queue; says so when there is none."""
                pos = ids.index(ex.id) + step
                if 0 <= pos < len(ids):
                    st.session_state["q_current"] = ids[pos]
                    bases.pop(ids[pos], None)  # open it fresh from the database
                    return ""
                if pos >= len(ids) and len(page) == cur.PAGE_SIZE:
                    cursor.append(ids[-1])
                    st.session_state["q_current"] = None
                    return ""
                if pos < 0 and cursor:
                    cursor.pop()
                    st.session_state["q_current"] = None
                    return ""
                return " This is the last example in the queue." if step > 0 else " This is the first one."

            # Natural-width buttons that wrap on a narrow window instead of cutting their labels short.
            with st.container(horizontal=True, gap="small"):
                save_next = st.button("Save & next", type="primary", shortcut="Ctrl+Enter")
                submit = st.button("Submit", shortcut="Ctrl+Shift+Enter")
                skip = st.button("Skip", shortcut="Alt+Right")
                previous = st.button("Previous", shortcut="Alt+Left")
            if (save_next or submit) and (saved := _save(bool(submit))) is not None:
                done = f"Submitted #{ex.id} for review" if submit else f"Saved #{ex.id}"
                flash(f"{done} (version {saved.version})." + _go(1))
                st.rerun()
            if skip or previous:
                st.session_state.pop("q_conflict", None)
                said = _go(1 if skip else -1)
                if said:
                    flash(said.strip())
                st.rerun()
            st.caption("Shortcuts: Ctrl+Enter save & next · Ctrl+Shift+Enter submit · Alt+→ skip · Alt+← previous")
            with st.sidebar:  # the listener has no looks; the sidebar keeps the editor's spacing as it was
                commit_typing_before_shortcuts(["Ctrl+Enter", "Ctrl+Shift+Enter"], key="annotate_keys")

            if project.annotators_per_example > 1:
                st.divider()
                st.caption(f"Multi-annotator mode: {project.annotators_per_example} annotators rate each example.")
                rating = st.radio("Your quality rating", list(cur.RATING_LABELS), horizontal=True,
                                  format_func=lambda r: f"{r} {cur.RATING_LABELS[r]}", key=f"rate_{ex.id}")
                if st.button("Save rating"):
                    with db() as s:
                        run_action(cur.rate_example, s, user, ex.id, rating, success="Rating saved.")

with new_tab:
    with st.form("new_example", clear_on_submit=True):
        n_system = st.text_area("System prompt (optional)", height=68)
        n_instruction = st.text_area("Instruction")
        n_input = st.text_area("Input (optional)", height=68)
        n_response = st.text_area("Response", height=160)
        n_tags = st.text_input("Tags (comma separated)")
        n_note = st.text_input("Note")
        submit_now = st.checkbox("Submit for review now")
        if st.form_submit_button("Create example", type="primary"):
            with db() as s:
                created = run_action(
                    cur.create_example, s, user, project, system=n_system, input=n_input,
                    turns=[{"role": "user", "content": n_instruction}, {"role": "assistant", "content": n_response}],
                    tags=[t for t in n_tags.split(",")], note=n_note, submit=submit_now, count_tokens=count_tokens)
            if created is not None:
                st.success(f"Created example #{created.id}.")
                if created.near_duplicate_of:
                    st.warning(f"It is a near duplicate of example #{created.near_duplicate_of}.")

if not page:
    st.stop()
with st.expander("This page as a table"):
    st.dataframe(pd.DataFrame([{"id": e.id, "status": e.status, "tags": ", ".join(e.tags),
                                "tokens": e.token_count, "near duplicate of": e.near_duplicate_of,
                                "first user message": cur.excerpt(e, 120)} for e in page]), hide_index=True,
                 width="stretch")

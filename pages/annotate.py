"""Annotate: a queue of examples, an editor for each, live quality hints, and a form for new examples.

All example text is shown with text widgets (text_area, st.text, st.code), never as markdown.

Which example is open is ``q_current`` alone: the queue list is drawn from it (a click moves it through a
callback), and every editor widget is keyed by the example's id and the version it was opened at, so text
typed for #62 can only ever be saved on #62. Save & next, Skip and Previous move ``q_current`` and rerun.

Typed text is never dropped: an edit not saved yet is kept per example in ``q_unsaved`` (with the version it
was made from) when Skip, Previous, the list or a filter change moves away, and is put back, marked "unsaved
changes", when that example is opened again in this browser session. The open example and the filters are
kept in the URL, so a reload (F5) comes back to them. The editor (Instruction, Response, buttons) comes first
so it fits a 1024x768 window; the guidelines open in a popover over the page.
"""
import pandas as pd
import streamlit as st

from core.accounts import list_users
from ui.browser import commit_typing_before_shortcuts, live_hints
from core.curate import curation as cur
from core.curate.dedup import record_text
from core.curate.origins import describe, sees_systems
from core.curate.tokencount import current_token_counter
from core.errors import Conflict, StudioError
from core.projects import inert_markdown
from ui.frame import db, flash, md_literal, require_page, require_project, run_action

user = require_page("curate")
project = require_project()
SHORTCUTS = {"save": "Ctrl+Enter", "submit": "Ctrl+Shift+Enter", "skip": "Alt+Right", "previous": "Alt+Left"}
DEFAULT_STATUSES = ["draft", "rejected"]

# Never waits on the base model: the estimate (labelled so) until the server's tokenizer has loaded.
count_tokens, counter_label, _ = current_token_counter()
st.title("Annotate")

with db() as s:
    tags = cur.list_tags(s, project)
    people = {u.id: u.username for u in list_users(s)}


def _from_url() -> None:
    """The filters and the open example of the URL, on a session's first run (a reload); bad values are dropped."""
    url = st.query_params
    status = url.get("status")
    st.session_state["q_status"] = DEFAULT_STATUSES if status is None else [
        x for x in dict.fromkeys(status.split(",")) if x in cur.STATUSES]
    st.session_state["q_tag"] = url.get("tag") if url.get("tag") in tags else "(any)"
    who = url.get("annotator", "")
    st.session_state["q_annotator"] = int(who) if who.isdigit() and int(who) in people else 0
    st.session_state["q_search"] = url.get("search", "")[:200]
    example = url.get("example", "")
    st.session_state["q_url_example"] = int(example) if example.isdigit() else None


if "q_status" not in st.session_state:  # a new session (a reload) or back from another page
    _from_url()
# The filters sit above the queue list, in its column: the editor column starts right under the tabs and keeps
# the instruction, the response and the buttons in a 1024x768 window.
queue_tab, new_tab = st.tabs(["Queue", "New example"])
with queue_tab:
    left, right = st.columns([1, 2.4])
with left:
    statuses = st.multiselect("Status", cur.STATUSES, key="q_status")
    tag = st.selectbox("Tag", ["(any)"] + tags, key="q_tag")
    annotator = st.selectbox("Annotator", [0] + list(people), format_func=lambda i: people.get(i, "(anyone)"),
                             key="q_annotator") or None  # 0: anyone (None would show as no choice at all)
    search = st.text_input("Search text", key="q_search")
    with st.popover("Guidelines", icon=":material/menu_book:"):  # over the page: never pushes the editor away
        # Written by an admin on the Admin page, so markdown is intended here (never user example text).
        st.markdown(inert_markdown(project.guidelines) or "_No guidelines yet._")  # images as alt text
filters = dict(status=statuses or None, tag=None if tag == "(any)" else tag, annotator=annotator,
               search=search or None)
filter_key = repr(sorted((k, str(v)) for k, v in filters.items()))
if st.session_state.get("q_filter_key") != filter_key:  # new filters: back to the first page, same example if there
    st.session_state.update(q_filter_key=filter_key, q_cursor=[])

cursor = st.session_state.setdefault("q_cursor", [])  # the after-id of each page shown so far (keyset paging)
unsaved = st.session_state.setdefault("q_unsaved", {})  # example id -> {"base": version, "record": the edit}


def _record_in_state(o: dict) -> dict | None:
    """The record the editor of ``o`` (``q_open``) holds in its widgets' state; None when they are not there."""
    ss, w = st.session_state, o["wkey"]
    keys = [f"ins_{w}", f"res_{w}"] if o["pair"] else [f"turn{i}_{w}" for i in range(len(o["roles"]))]
    if any(k not in ss for k in keys + [f"sys_{w}", f"tags_{w}", f"note_{w}"] + [f"inp_{w}"] * o["pair"]):
        return None
    return {"system": ss[f"sys_{w}"], "turns": [{"role": r, "content": ss[k]} for r, k in zip(o["roles"], keys)],
            "input": ss[f"inp_{w}"] if o["pair"] else o["input"], "note": ss[f"note_{w}"],
            "tags": [t.strip() for t in ss[f"tags_{w}"].split(",") if t.strip()]}


# Text typed in the same moment as a filter change or a click elsewhere arrives with this run: keep it before
# anything moves away from the example it was typed for.
opened = st.session_state.get("q_open")
if opened and (typed := _record_in_state(opened)) is not None and typed != opened["record"]:
    unsaved[opened["id"]] = {"base": opened["base"], "record": typed}
with db() as s:
    linked = st.session_state.pop("q_url_example", None)
    if linked is not None:  # the example of a reloaded URL: open it on its page if it is still in this queue
        hit = cur.queue_page(s, project, after_id=linked - 1, limit=1, **filters)
        if hit and hit[0].id == linked:
            st.session_state.update(q_current=linked, q_cursor=[linked - 1] if linked > 1 else [])
            cursor = st.session_state["q_cursor"]
        else:
            st.toast(f"Example #{linked} of the link is not in this queue any more; showing the first one.")
    page = cur.queue_page(s, project, after_id=cursor[-1] if cursor else None, **filters)
    counts = cur.status_counts(s, project)
left.caption(" · ".join(f"{k}: {v:,}" for k, v in counts.items()) + f" · tokens: {counter_label}")
elsewhere = sorted(set(unsaved) - {e.id for e in page})
if elsewhere:
    left.caption("Unsaved edits kept for " + ", ".join(f"#{i}" for i in elsewhere) + " (not in this view of the "
               "queue: change the filters or the page to open them and save).")


def _keep_in_url(current: int | None) -> None:
    """Filters and the open example in the URL (only what differs from the defaults), so F5 comes back here."""
    want = {"status": ",".join(statuses) if statuses != DEFAULT_STATUSES else None,
            "tag": filters["tag"], "annotator": str(annotator) if annotator else None, "search": search or None,
            "example": str(current) if current else None}
    want = {k: v for k, v in want.items() if v is not None}
    if dict(st.query_params) != want:
        st.query_params.from_dict(want)


with queue_tab:
    if not page:
        _keep_in_url(None)
        right.info("Nothing in this queue. Change the filters, import data, or write a new example.")
    else:
        ids = [e.id for e in page]
        current = st.session_state.get("q_current")
        if current not in ids:
            current = st.session_state["q_current"] = ids[0]
        _keep_in_url(current)
        # Radio options are rendered as Markdown: the excerpt is user text, so it is escaped to show as typed.
        labels = {e.id: f"#{e.id} · {e.status}{' · sent back' if e.source == 'review_feedback' else ''}"
                        f"{' · failure' if e.source == 'eval_failure' else ''}"
                        f"{' · generated' if e.source in ('document', 'paraphrase') else ''}"
                        f"{' · model draft' if (e.origin or {}).get('drafted') else ''}"
                        f"{' · unsaved changes' if e.id in unsaved else ''} · "
                        f"{md_literal(cur.excerpt(e, 48))}" for e in page}

        def _picked(widget_key: str) -> None:
            st.session_state["q_current"] = st.session_state[widget_key]

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
            conflict = st.session_state.get("q_conflict")
            if conflict and conflict["id"] != ex.id:
                conflict = None
            # The version this user started editing from: a save by someone else in between must not
            # silently replace the form (widget keys stay), and our save is then refused as stale. An edit
            # kept from earlier in this session comes back with the version it was made from.
            bases = st.session_state.setdefault("q_base", {})
            kept = unsaved.get(ex.id)
            base = bases.setdefault(ex.id, kept["base"] if kept else ex.version)
            draft = conflict["attempted"] if conflict else kept["record"] if kept else cur.record_of(ex)
            resets = st.session_state.setdefault("q_reset", {})  # a discarded edit: new widgets, the saved text
            wkey = f"{ex.id}_{base}" + (f"_{resets[ex.id]}" if ex.id in resets else "")
            heading = st.empty()
            # A draft from an eval item names no system, score or start below engineer while its review is blind.
            blind = not sees_systems(user, ex.origin or {})
            origin_line = describe(ex.source, ex.origin or {}, blind=blind)
            if ex.status == "rejected" and ex.reject_reason:
                st.error("Rejected by the reviewer:")
                st.text(ex.reject_reason)
            if origin_line:  # names and comments are user text: st.text, never markdown
                st.text(origin_line)
                o = ex.origin
                if o.get("comment"):
                    st.text(f"Reviewer's comment: {o['comment']}")
                if o.get("test_split_example_id"):
                    st.warning(f"This prompt is test-split example #{int(o['test_split_example_id'])}: fix that "
                               "example itself and keep this draft out of training data.")
            drafted = (ex.origin or {}).get("drafted")
            if isinstance(drafted, dict):
                # The system's label holds a run's name (user text): escaped for the Markdown of the message.
                by = "a model" if blind else md_literal(drafted.get('label') or drafted.get('system'))
                st.info(f"Drafted by {by} — edit before submitting.", icon=":material/smart_toy:")
            if conflict:  # above the editor and its buttons, so both versions are in view
                st.error(conflict["message"])
                a, b = st.columns(2)
                same_system = conflict["current"]["system"] == conflict["attempted"]["system"]
                for col, title, rec in ((a, "Saved by someone else (now in the database)", conflict["current"]),
                                        (b, "Your edit (still in the form below)", conflict["attempted"])):
                    col.caption(title)  # a shared system prompt is left out: it would fill the box
                    col.code("\n\n".join([f"[{t['role']}] {t['content']}" for t in rec["turns"]] + (
                        [] if same_system else [f"[system] {rec['system']}"])), language=None, wrap_lines=True,
                        height=160)
            fields: list[dict] = []  # each text area the live hints count, found on the page by its label

            def area(label: str, role: str, value: str, key: str, **kw) -> str:
                text = st.text_area(label, value, key=key, **kw)
                fields.append({"label": label, "role": role, "value": text})
                return text

            # The instruction, the response and the buttons first: they fit a 1024x768 window.
            if len(draft["turns"]) == 2:
                instruction = area("Instruction", "user", draft["turns"][0]["content"], f"ins_{wkey}", height=90)
                response = area("Response", "assistant", draft["turns"][1]["content"], f"res_{wkey}", height=180)
                turns = [{"role": "user", "content": instruction}, {"role": "assistant", "content": response}]
            else:
                turns = [{"role": t["role"], "content": area(f"Turn {i + 1}: {t['role']}", t["role"], t["content"],
                                                             f"turn{i}_{wkey}")}
                         for i, t in enumerate(draft["turns"])]
            # Natural-width buttons that wrap on a narrow window instead of cutting their labels short.
            with st.container(horizontal=True, gap="small", vertical_alignment="center"):
                save_next = st.button("Save & next", type="primary", shortcut=SHORTCUTS["save"])
                submit = st.button("Submit", shortcut=SHORTCUTS["submit"])
                skip = st.button("Skip", shortcut=SHORTCUTS["skip"])
                previous = st.button("Previous", shortcut=SHORTCUTS["previous"])
                discard = st.button("Discard my changes", type="tertiary")
                st.caption("Ctrl+Enter save & next · Ctrl+Shift+Enter submit · Alt+→ skip · Alt+← previous")
            hints_box = st.container()
            system = area("System prompt", "system", draft["system"], f"sys_{wkey}", height=68)
            input_text = area("Input (optional)", "input", draft["input"], f"inp_{wkey}", height=68) if len(
                draft["turns"]) == 2 else draft["input"]
            c1, c2 = st.columns(2)
            tag_text = c1.text_input("Tags (comma separated)", ", ".join(draft["tags"]), key=f"tags_{wkey}")
            note = c2.text_area("Note", draft["note"], key=f"note_{wkey}", height=68)
            record = {"system": system, "turns": turns, "input": input_text,
                      "tags": [t.strip() for t in tag_text.split(",") if t.strip()], "note": note}
            st.session_state["q_open"] = {"id": ex.id, "base": base, "wkey": wkey, "pair": len(turns) == 2,
                                          "roles": [t["role"] for t in turns], "input": input_text, "record": record}
            changed = not cur.is_unchanged(ex, record)
            if changed:  # kept whatever moves away next: Skip, Previous, the list, the filters
                unsaved[ex.id] = {"base": base, "record": record}
            else:
                unsaved.pop(ex.id, None)
            heading.subheader(f"Example #{ex.id} · {ex.status}{' · unsaved changes' if changed else ''}")

            with db() as s:
                tokens, hints = cur.example_hints(s, project, ex, record, count_tokens)
            with hints_box:
                live_hints(f"hints_{wkey}", fields=fields,
                           tokens=tokens, estimate=cur.estimate_tokens(record_text(record)),
                           max_length=project.max_length, short_words=cur.SHORT_RESPONSE_WORDS,
                           line=cur.HINT_TEXTS["line"].format(tokens=tokens, max=project.max_length,
                                                              label=counter_label),
                           hints=[{"level": h.level, "text": h.text, "kind": h.kind} for h in hints],
                           texts=cur.HINT_TEXTS)

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
                        unsaved[ex.id] = {"base": err.current["version"], "record": err.attempted}
                        st.rerun()
                    except StudioError as err:
                        st.error(str(err))
                        return None
                st.session_state.pop("q_conflict", None)
                unsaved.pop(ex.id, None)
                bases[ex.id] = saved.version
                return saved

            def _go(step: int) -> str:
                """Open the example ``step`` away in this queue; says so when there is none."""
                pos = ids.index(ex.id) + step
                if 0 <= pos < len(ids):
                    st.session_state["q_current"] = ids[pos]
                    if ids[pos] not in unsaved:
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

            if (save_next or submit) and (saved := _save(bool(submit))) is not None:
                if saved.version == base and not submit:
                    done = f"No changes to save on #{ex.id} (still version {saved.version})"
                else:
                    done = f"Submitted #{ex.id} for review" if submit else f"Saved #{ex.id}"
                    done += f" (version {saved.version})"
                flash(f"{done}." + _go(1))
                st.rerun()
            if skip or previous:
                st.session_state.pop("q_conflict", None)
                said = _go(1 if skip else -1)
                if changed:
                    said = f" #{ex.id}'s unsaved edit is kept (not saved): open it again to save it." + said
                if said:
                    flash(said.strip())
                st.rerun()
            if discard:  # back to the saved text
                unsaved.pop(ex.id, None)
                st.session_state.pop("q_conflict", None)
                bases.pop(ex.id, None)
                st.session_state.pop("q_open", None)
                resets[ex.id] = resets.get(ex.id, 0) + 1
                flash(f"Discarded the unsaved edit of #{ex.id}.")
                st.rerun()
            with st.sidebar:  # the listener has no looks; the sidebar keeps the editor's spacing as it was
                # Every shortcut sends the text being typed first: Skip and Previous then keep it (q_unsaved).
                commit_typing_before_shortcuts(list(SHORTCUTS.values()), key="annotate_keys")

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
        n_note = st.text_area("Note", height=68)
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

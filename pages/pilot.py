"""Pilot: support agents ask a piloted system customers' questions and rate each answer (agents and up).

The agent picks a running pilot (a blind pilot's system is not named), asks as customers do (free text, several
turns), and after each answer records the project's rubric scores, whether they would escalate to a human and,
optionally, the answer they would have given. Answers come through the Playground's endpoint, as there. Engineers
and admins create pilots here; what the pilots measured is on the Results page.
"""
import uuid
from datetime import datetime, time, timedelta, timezone

import pandas as pd
import streamlit as st

from core.accounts import can
from core.errors import StudioError
from core.evaluate.generate_config import Decoding
from core.evaluate.review import rubric_of
from core.ship import client
from core.ship.pilots import active_pilots, create_pilot, list_pilots, pilot_system, rate_exchange, record_exchange
from core.ship.playground import chat_messages, systems
from core.ship.serving import playground_server, server_status
from storage.models import JobStatus
from ui.frame import db, flash, live_fragment, md_literal, require_page, require_project, run_action

user = require_page("pilot")
project = require_project()
st.title("Pilot")
engineer = can(user, "evaluate")


def create_form() -> None:
    """Engineers and admins: a new pilot of a system of this project, for a window of days, blind or not."""
    with db() as s:
        options = run_action(systems, s, user, project.id) or []
        pilots = run_action(list_pilots, s, user, project.id) or []
    labels = {o.key: o.label for o in options}
    with st.expander("Create a pilot", expanded=not pilots):
        with st.form("pilot_create"):
            name = st.text_input("Name", placeholder="e.g. run 3, weeks 1-3")
            system = st.selectbox("System", list(labels), format_func=labels.get)
            c1, c2 = st.columns(2)
            today = datetime.now(timezone.utc).date()
            start = c1.date_input("First day (UTC)", today)
            end = c2.date_input("Last day (UTC)", today + timedelta(days=20))
            blind = st.checkbox("Blind: agents are not told which system answers")
            if st.form_submit_button("Create pilot", type="primary"):
                with db() as s:
                    made = run_action(create_pilot, s, user, project.id, name=name, system=system or "",
                                      starts_at=datetime.combine(start, time.min, timezone.utc),
                                      ends_at=datetime.combine(end + timedelta(days=1), time.min, timezone.utc),
                                      blind=blind)
                if made is not None:
                    flash(f"Pilot {made.name} created.")
                    st.rerun()
    if pilots:
        st.dataframe(pd.DataFrame([{"pilot": p.name, "system": labels.get(p.system, p.system),
                                    "from": f"{p.starts_at:%Y-%m-%d}", "until": f"{p.ends_at:%Y-%m-%d %H:%M}",
                                    "blind": "yes" if p.blind else "no"} for p in pilots]),
                     hide_index=True, width="stretch")


if engineer:
    create_form()

with db() as s:
    running = run_action(active_pilots, s, user, project.id) or []
if not running:
    st.info("No pilot is running in this project now." + ("" if engineer else " An engineer or admin starts one."))
    st.stop()
names = {p["id"]: f"{p['name']} ({p['system_label']})" for p in running}
pilot_id = st.selectbox("Pilot", list(names), format_func=names.get, key="pl_pilot")
state = st.session_state.get("pl_chat")
if not state or state["pilot"] != pilot_id or state["project"] != project.id:
    state = {"pilot": pilot_id, "project": project.id, "conversation": uuid.uuid4().hex, "turns": [], "outbox": False}
    st.session_state["pl_chat"] = state
if st.button("New conversation", icon=":material/restart_alt:"):
    state.update(conversation=uuid.uuid4().hex, turns=[], outbox=False)
    st.rerun()
rubric = rubric_of(project)


def rating_form(i: int, msg: dict) -> None:
    """The agent's verdict on one answer: a score per criterion, escalate yes/no, a corrected answer."""
    if msg.get("rated"):
        st.caption("Rated: " + ", ".join(f"{k} {v}" for k, v in msg["rated"]["ratings"].items())
                   + f"; escalate: {'yes' if msg['rated']['escalate'] else 'no'}")
        return
    with st.form(f"pl_rate_{state['conversation']}_{i}"):
        cols = st.columns(len(rubric))
        ratings = {}
        for col, crit in zip(cols, rubric):
            low, high = int(crit.get("min", 1)), int(crit.get("max", 5))
            ratings[crit["name"]] = col.radio(md_literal(crit["name"].capitalize()), list(range(low, high + 1)),
                                              index=None, horizontal=True, help=crit.get("description"))
        escalate = st.radio("Would you escalate this to a human?", ["No", "Yes"], index=None, horizontal=True)
        correction = st.text_area("Corrected answer (optional)", help="The answer the customer should have got.")
        if st.form_submit_button("Save rating"):
            if escalate is None:
                st.error("Say whether you would escalate this to a human.")
                return
            with db() as s:
                row = run_action(rate_exchange, s, user, msg["exchange_id"],
                                 ratings={k: v for k, v in ratings.items() if v is not None},
                                 escalate=escalate == "Yes", correction=correction)
            if row is not None:
                msg["rated"] = {"ratings": row.ratings, "escalate": row.escalate}
                flash("Rating saved.")
                st.rerun()


for i, msg in enumerate(state["turns"]):
    with st.chat_message(msg["role"]):
        st.text(msg["content"])
        if msg.get("error"):
            st.error(md_literal(msg["error"]))
        if msg["role"] == "assistant" and msg.get("exchange_id"):
            rating_form(i, msg)

question = st.chat_input("Ask as a customer would")
if question:
    state["turns"].append({"role": "user", "content": question})
    with st.chat_message("user"):
        st.text(question)
    state["outbox"] = True


@live_fragment("2s", "pilot")
def wait_for_endpoint(job_id: int) -> None:
    """Poll the shared endpoint until it answers, then rerun the page to send the question."""
    with db() as s:
        status = server_status(s, job_id)
    if status["endpoint"] and client.health(status["endpoint"]["url"]):
        st.rerun()
    elif status["job"].status in (JobStatus.queued.value, JobStatus.running.value):
        st.info("Starting the model endpoint; the answer follows when it is up.")
    else:
        st.error("The model endpoint stopped: " + md_literal(((status["job"].error or status["job"].status)
                                                              .splitlines() or [""])[0]))


def answer(url: str) -> None:
    """Ask the pilot's system (the same endpoint and generation path as the Playground), record the exchange."""
    messages = chat_messages(project.default_system_prompt, [t for t in state["turns"]])
    got = client.Answer()
    with st.chat_message("assistant"):
        holder = st.empty()
        try:
            with db() as s:
                key = pilot_system(s, user, pilot_id)
            client.load(url, key)
            for _ in client.stream_answer(url, key, messages, Decoding(), got):
                holder.text(got.text)
        except StudioError as err:
            state["outbox"] = False
            state["turns"].append({"role": "assistant", "content": got.text, "error": str(err)})
            st.rerun()
    with db() as s:
        row = run_action(record_exchange, s, user, pilot_id, conversation_id=state["conversation"],
                         turn_index=sum(1 for t in state["turns"] if t["role"] == "assistant"), messages=messages,
                         answer=got.text, completion_id=got.completion_id)
    state["turns"].append({"role": "assistant", "content": got.text, "exchange_id": row.id if row else None})
    state["outbox"] = False
    st.rerun()


if state["outbox"]:
    with db() as s:
        job = run_action(playground_server, s, user, project.id, action="pilot")
        status = server_status(s, job.id) if job is not None else None
    endpoint = status["endpoint"] if status else None
    if endpoint and client.health(endpoint["url"]):
        answer(endpoint["url"])
    elif job is not None and job.status in (JobStatus.queued.value, JobStatus.running.value):
        wait_for_endpoint(job.id)
    elif job is not None:
        state["outbox"] = False
        st.error("The model endpoint could not start: " + md_literal(((job.error or job.status).splitlines()
                                                                      or [""])[0]))

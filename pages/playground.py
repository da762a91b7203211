"""Playground: talk to a base model, a finished run or a merged export, plain or with the team prompt (+prompt) or
retrieved passages (+rag), or to two side by side (engineers and up).

The page loads no model: it talks to the workspace's local OpenAI-compatible endpoint (a serving job, started with
the first message and ended by itself when idle) and streams each answer in as it is generated. Answers are shown
as plain text. Any exchange can become a draft example in the annotation queue ("Save as example").
"""
import queue
import threading
from dataclasses import asdict

import streamlit as st

from core.errors import StudioError
from core.evaluate.generate_config import Decoding
from core.ship import client
from core.ship.playground import chat_request, save_exchange, systems, waiting_text
from core.ship.serving import DEFAULT_IDLE_S, find_playground_server, playground_server, server_status, stop_server
from core.systems import SystemKey
from storage.models import JobStatus
from ui.frame import db, flash, live_fragment, md_literal, require_page, require_project, run_action

user = require_page("evaluate")
project = require_project()
st.title("Playground")

if st.session_state.get("pg_project") != project.id:  # a chat belongs to one project
    st.session_state.update(pg_project=project.id, pg_chats={0: [], 1: []}, pg_outbox=None, pg_streaming=None,
                            pg_chat_no=0)
chats = st.session_state["pg_chats"]

with db() as s:
    options = run_action(systems, s, user, project.id, variants=True) or []
labels = {o.key: o.label for o in options}
keys = list(labels)

c1, c2, c3 = st.columns([1, 2, 2])
side_by_side = c1.radio("Systems", ["One", "Side by side"], key="pg_mode") == "Side by side"
panes = [c2.selectbox("System", keys, format_func=labels.get, key="pg_sys_0")]
if side_by_side:
    plain = [i for i, k in enumerate(keys) if not SystemKey.parse(k).variant]  # the second plain system, if any
    panes.append(c3.selectbox("Second system", keys, index=plain[1] if len(plain) > 1 else 0, format_func=labels.get,
                              key="pg_sys_1"))

with st.expander("System prompt and decoding"):
    system_prompt = st.text_area("System prompt", project.default_system_prompt, key=f"pg_prompt_{project.id}",
                                 help="The project's default (Admin -> Project settings); edit it for this chat.")
    d1, d2, d3, d4, d5 = st.columns(5)
    sample = d1.radio("Decoding", ["Greedy", "Sample"], key="pg_decoding") == "Sample"
    temperature = d2.number_input("Temperature", 0.05, 5.0, 0.7, 0.05, disabled=not sample)
    top_p = d3.number_input("Top-p", 0.05, 1.0, 0.9, 0.05, disabled=not sample)
    max_new = d4.number_input("Max new tokens", 1, 8192, 256, 16)
    seed = d5.number_input("Seed", 0, 2**31 - 1, 0, disabled=not sample)
decoding = run_action(Decoding, do_sample=sample, temperature=temperature, top_p=top_p,
                      max_new_tokens=int(max_new), seed=int(seed)) or Decoding()


def stats_line(msg: dict) -> str:
    """Numbers only (no user text): tokens, speed, time to first token, why it ended."""
    parts = []
    if msg.get("tokens"):
        parts.append(f"{msg['tokens']} tokens")
    if msg.get("tokens_per_s"):
        parts.append(f"{msg['tokens_per_s']:.1f} tokens/s")
    if msg.get("first_token_s") is not None:
        parts.append(f"first token after {msg['first_token_s']:.2f} s")
    parts.append({"stop": "end of turn", "length": "max new tokens"}.get(msg.get("finish"), "stopped"))
    return " · ".join(parts)


def finished(state: dict) -> dict:
    """An answer as the chat keeps it, from the streaming state of one pane."""
    answer = state["answer"]
    return {"role": "assistant", "content": answer.text, "system": state["system"], "label": state["label"],
            "system_prompt": state["system_prompt"], "decoding": state["decoding"],
            "tokens": answer.completion_tokens, "tokens_per_s": answer.tokens_per_s,
            "first_token_s": answer.first_token_s, "finish": answer.finish_reason, "error": state.get("error"),
            "context": state.get("context") or []}


# A Stop (or any click) during streaming ends that run: keep what had arrived, marked as stopped.
if st.session_state.get("pg_streaming"):
    for pane, state in st.session_state.pop("pg_streaming").items():
        chats[pane].append(finished(state))
    st.session_state["pg_outbox"] = None

b1, b2, b3 = st.columns([1, 1, 4])
if b1.button("New chat", icon=":material/restart_alt:"):
    st.session_state.update(pg_chats={0: [], 1: []}, pg_outbox=None, pg_chat_no=st.session_state["pg_chat_no"] + 1)
    st.rerun()
stop_slot, note_slot = b2.empty(), b3.empty()  # filled once this run knows whether an endpoint is live


def serving_controls() -> None:
    """"Stop serving" and what the endpoint is doing, drawn after this run may have queued the endpoint, so the
    button is there in the same interaction that started it."""
    with db() as s:
        live = find_playground_server(s)
    if live is None:
        return
    if stop_slot.button("Stop serving", key="pg_stop_serving", help="End the model endpoint now and free the device."):
        with db() as s:
            run_action(stop_server, s, user, live.id, success="The model endpoint is stopping.")
        st.session_state["pg_outbox"] = None  # a message still waiting for it is not sent (it would start another)
        st.rerun()
    note_slot.caption(f"Model endpoint: serving job {live.id}, {live.status}; it stops after "
                      f"{int(DEFAULT_IDLE_S // 60)} minutes without requests.")


columns = st.columns(len(panes))


def save_box(pane: int, i: int, msg: dict) -> None:
    with st.expander("Save as example"):
        chat_no = st.session_state["pg_chat_no"]
        edited = st.text_area("Answer (edit it first)", msg["content"], key=f"pg_edit_{chat_no}_{pane}_{i}")
        if st.button("Save as example", key=f"pg_save_{chat_no}_{pane}_{i}"):
            with db() as s:
                ex = run_action(save_exchange, s, user, project, system_label=msg["label"],
                                system_prompt=msg["system_prompt"], turns=chats[pane][:i], answer=edited,
                                generated=msg["content"], decoding=Decoding(**msg["decoding"]))
            if ex is not None:
                flash(f"Saved as draft example #{ex.id} in the annotation queue.")
                st.rerun()


for pane, key in enumerate(panes):
    with columns[pane]:
        st.text(labels.get(key, key))
        for i, msg in enumerate(chats[pane]):
            with st.chat_message(msg["role"]):
                st.text(msg["content"])
                if msg["role"] == "assistant":
                    if msg.get("error"):
                        st.error(md_literal(msg["error"]))
                    st.caption(stats_line(msg))
                    if msg.get("context"):
                        with st.expander(f"Passages given ({len(msg['context'])})"):
                            for n, chunk in enumerate(msg["context"], 1):
                                st.text(f"[{n}] {chunk['document']} §{chunk['chunk']} {chunk['heading']}\n"
                                        f"{chunk['text']}")
                    if msg["content"].strip():
                        save_box(pane, i, msg)

prompt = st.chat_input("Message both systems" if side_by_side else "Message the model", disabled=not keys)
if prompt:
    for pane in range(len(panes)):
        chats[pane].append({"role": "user", "content": prompt})
        with columns[pane], st.chat_message("user"):
            st.text(prompt)
    st.session_state["pg_outbox"] = list(panes)


@live_fragment("2s", "evaluate")
def wait_for_endpoint(job_id: int) -> None:
    """Poll the serving job until it answers, then rerun the page to send the message."""
    with db() as s:
        status = server_status(s, job_id)
    job = status["job"]
    if status["endpoint"] and client.health(status["endpoint"]["url"]):
        st.rerun()
    elif job.status in (JobStatus.queued.value, JobStatus.running.value):
        with db() as s:
            st.info(waiting_text(s, job_id))  # no user text: jobs by kind and number
    else:
        st.error("The model endpoint stopped: " + md_literal(((job.error or job.status).splitlines() or [""])[0]))


def stream(url: str, targets: list[str], requests: dict) -> None:
    """Send the chat to each pane's system at once and stream the answers in; a rerun (Stop) ends it.
    ``requests``: pane -> (the plain system asked, core.evaluate.augment.Augmented: messages and passages)."""
    pieces: queue.Queue = queue.Queue()
    cancel = threading.Event()
    states = {}
    holders = {}
    for pane, key in enumerate(targets):
        states[pane] = {"answer": client.Answer(), "system": key, "label": labels.get(key, key),
                        "system_prompt": system_prompt, "decoding": asdict(decoding),
                        "context": requests[pane][1].context}
        with columns[pane], st.chat_message("assistant"):
            holders[pane] = st.empty()
    st.session_state["pg_streaming"] = states

    def read(pane: int) -> None:
        state = states[pane]
        asked, sent = requests[pane]
        gen = client.stream_answer(url, asked, sent.messages, decoding, state["answer"])
        try:
            for _ in gen:
                pieces.put(pane)
                if cancel.is_set():
                    break
        except StudioError as err:
            state["error"] = str(err)
        finally:
            gen.close()  # closes the connection: the endpoint stops generating
            pieces.put(-1 - pane)

    threads = [threading.Thread(target=read, args=(pane,), daemon=True) for pane in states]
    for t in threads:
        t.start()
    open_panes = set(states)
    try:
        while open_panes:
            try:
                item = pieces.get(timeout=0.2)
            except queue.Empty:
                continue
            if item < 0:
                open_panes.discard(-1 - item)
                continue
            holders[item].text(states[item]["answer"].text)
    finally:
        cancel.set()
    for pane, state in st.session_state.pop("pg_streaming").items():
        chats[pane].append(finished(state))
    st.session_state["pg_outbox"] = None
    st.rerun()


targets = st.session_state.get("pg_outbox")
if targets:
    with db() as s:
        job = run_action(playground_server, s, user, project.id)
        status = server_status(s, job.id) if job is not None else None
serving_controls()
if targets:
    endpoint = status["endpoint"] if status else None
    if endpoint and client.health(endpoint["url"]):
        st.button("Stop", icon=":material/stop_circle:", key="pg_stop", help="Stop the answers; keep what arrived.")
        try:
            with db() as s:  # +prompt / +rag: the plain system, sent the team prompt or the retrieved passages
                requests = {pane: chat_request(s, project, key, system_prompt, chats[pane])
                            for pane, key in enumerate(targets)}
            with st.spinner("Loading the model..."):
                for key in dict.fromkeys(asked for asked, _ in requests.values()):
                    client.load(endpoint["url"], key)
        except StudioError as err:
            st.session_state["pg_outbox"] = None
            st.error(md_literal(str(err)))
            st.stop()
        stream(endpoint["url"], targets, requests)
    elif job is not None and job.status in (JobStatus.queued.value, JobStatus.running.value):
        wait_for_endpoint(job.id)
    elif job is not None:
        st.session_state["pg_outbox"] = None
        reason = ((job.error or job.status).splitlines() or [""])[0]
        st.error("The model endpoint could not start: " + md_literal(reason))

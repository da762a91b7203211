"""Log in. The address the browser asked for (e.g. /annotate) stays in the URL, so that page opens after log-in."""
import streamlit as st

from core.accounts import authenticate
from ui.frame import client_address, db, login, run_action

st.title("finetune-studio")
st.caption("Curate examples, fine-tune a model on them, and review it blind.")
with st.form("login"):
    username = st.text_input("Username")
    password = st.text_input("Password", type="password")
    submitted = st.form_submit_button("Log in", type="primary")
if submitted:
    with db() as s:
        user = run_action(authenticate, s, username, password, client=client_address())
    if user is not None:
        login(user)
        st.rerun()
st.caption("First start: the admin's one-time password was printed in the terminal that started the app.")

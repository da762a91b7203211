"""Your account: change your password."""
import streamlit as st

from core.accounts import authenticate, set_password
from ui.frame import client_address, db, md_literal, require_page, run_action

user = require_page(None)
st.title("Account")
st.write(f"**{md_literal(user.username)}** · role **{user.role}**")
with st.form("password", clear_on_submit=True):
    old = st.text_input("Current password", type="password")
    new = st.text_input("New password", type="password")
    again = st.text_input("New password again", type="password")
    if st.form_submit_button("Change password"):
        if new != again:
            st.error("The two new passwords differ.")
        else:
            with db() as s:
                if run_action(authenticate, s, user.username, old, client=client_address()) is not None:
                    if run_action(set_password, s, user, user.username, new,
                                  keep_session=st.session_state.get("login_session_id")) is not None:
                        st.success("Password changed. Your other signed-in browsers must log in again.")

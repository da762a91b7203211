"""Admin: users and roles; projects, guidelines and rubric; LLM judges (endpoints, the key's variable, trust bar);
compute targets (Ray and Slurm clusters runs may go to)."""
import json

import pandas as pd
import streamlit as st

from core.accounts import ROLE_ORDER, create_user, generate_password, list_users, reset_password, set_active, set_role
from core.evaluate.judges import add_judge, check_judge, list_judges, remove_judge, set_trust_bar, verdict_counts
from core.jobs.targets import TARGET_KINDS
from core.jobs.targets.registry import add_target, check_target, list_targets, remove_target, update_target
from core.projects import create_project, update_project
from ui.frame import current_project, db, flash, md_literal, require_page, run_action

user = require_page("manage_users")
st.title("Admin")
users_tab, project_tab, new_tab, judges_tab, targets_tab = st.tabs(["Users", "Project settings", "New project",
                                                                    "Judges", "Compute targets"])

with users_tab:
    with db() as s:
        users = list_users(s)
    st.dataframe(
        pd.DataFrame([{"username": u.username, "role": u.role, "active": u.active,
                       "last login (UTC)": f"{u.last_login_at:%Y-%m-%d %H:%M}" if u.last_login_at else "never"}
                      for u in users]),
        hide_index=True, width="stretch",
    )
    with st.form("add_user", clear_on_submit=True):
        st.subheader("Add a user")
        c1, c2 = st.columns(2)
        name = c1.text_input("Username")
        role = c2.selectbox("Role", ROLE_ORDER, index=ROLE_ORDER.index("annotator"))
        if st.form_submit_button("Create user"):
            password = generate_password()
            with db() as s:
                if run_action(create_user, s, user, name, password, role) is not None:
                    st.success(f"Created {md_literal(name)}. One-time password (shown once): `{password}`")
    st.subheader("Change a user")
    c1, c2, c3 = st.columns(3)
    target = c1.selectbox("User", [u.username for u in users])
    name = md_literal(target)
    new_role = c2.selectbox("New role", ROLE_ORDER, key="new_role")
    if c2.button("Set role"):
        with db() as s:
            if run_action(set_role, s, user, target, new_role) is not None:
                st.session_state["admin_done"] = {"message": f"{name} is now {new_role}."}
                st.rerun()
    enabled = next((u.active for u in users if u.username == target), True)
    with c3.container(horizontal=True, gap="small"):
        toggle_active = st.button("Disable" if enabled else "Enable")
        reset = st.button("Reset password")
    if toggle_active and not enabled:
        with db() as s:
            if run_action(set_active, s, user, target, True) is not None:
                st.session_state["admin_done"] = {"message": f"Enabled {name}: they can log in again."}
                st.rerun()
    elif toggle_active or reset:  # destructive: asked once more, naming the user
        st.session_state["admin_confirm"] = ("reset" if reset else "disable", target)
        st.rerun()

    confirm = st.session_state.get("admin_confirm")
    if confirm is not None and confirm[1] != target:  # another user picked: the question was about someone else
        confirm = st.session_state["admin_confirm"] = None
    if confirm is not None:
        action = confirm[0]
        st.warning(f"Disable {name}? They are signed out of every browser and cannot log in until enabled again."
                   if action == "disable" else f"Reset {name}'s password? They are signed out of every browser; "
                   "you get a one-time password to hand over.")
        with st.container(horizontal=True, gap="small"):
            yes = st.button(f"Yes, disable {name}" if action == "disable" else f"Yes, reset {name}'s password",
                            type="primary")
            no = st.button("Cancel", key="admin_cancel")
        if yes or no:
            st.session_state["admin_confirm"] = None
        if yes:
            with db() as s:
                result = run_action(set_active if action == "disable" else reset_password, s, user, target,
                                    *([False] if action == "disable" else []))
            if result is not None:
                st.session_state["admin_done"] = (
                    {"message": f"Disabled {name}: signed out of every browser; they cannot log in until enabled "
                                "again."} if action == "disable" else
                    {"message": f"New password for {name}, shown once: hand it over (they can change it on the "
                                "Account page). They were signed out of every browser.", "password": result})
                st.rerun()
        elif no:
            st.rerun()
    done = st.session_state.pop("admin_done", None)  # what the last change did, said once (a password too)
    if done is not None:
        st.success(done["message"])
        if done.get("password"):
            st.code(done["password"], language=None)

with project_tab:
    project = current_project()
    if project is None:
        st.info("No project yet.")
    else:
        st.subheader(md_literal(project.name))
        with st.form("project_settings"):
            guidelines = st.text_area("Guidelines (markdown, shown beside the editor)", project.guidelines,
                                      height=220)
            c1, c2 = st.columns(2)
            max_length = c1.number_input("Max length (tokens)", 16, 131072, project.max_length)
            per_example = c2.number_input("Annotators per example", 1, 10, project.annotators_per_example,
                                          help="More than 1 turns on multi-annotator mode and agreement figures.")
            system_prompt = st.text_area("Default system prompt", project.default_system_prompt, height=90,
                                         help="The Playground starts every chat with it (editable there).")
            c3, c4 = st.columns([1, 3])
            license_id = c3.text_input("License", project.license,
                                       help="Model-card license identifier, e.g. apache-2.0, mit or other.")
            intended_use = c4.text_area("Intended use", project.intended_use, height=90,
                                        help="What the model is for and not for; every export's model card says it.")
            st.caption("Rubric used on the Compare page")
            rubric = st.data_editor(pd.DataFrame(project.rubric, columns=["name", "description", "min", "max"]),
                                    num_rows="dynamic", hide_index=True, width="stretch")
            if st.form_submit_button("Save project settings", type="primary"):
                rows = [r for r in rubric.to_dict("records") if str(r.get("name") or "").strip()]
                with db() as s:
                    run_action(update_project, s, user, project, guidelines=guidelines, rubric=rows,
                               max_length=int(max_length), annotators_per_example=int(per_example),
                               default_system_prompt=system_prompt, license=license_id,
                               intended_use=intended_use, success="Saved.")

with new_tab:
    with st.form("new_project", clear_on_submit=True):
        name = st.text_input("Name")
        description = st.text_area("Description")
        if st.form_submit_button("Create project"):
            with db() as s:
                created = run_action(create_project, s, user, name, description)
            if created is not None:
                st.session_state["project_id"] = created.id
                st.success(f"Created {md_literal(created.name)}.")

with judges_tab:
    st.caption("An LLM judge is any OpenAI-compatible endpoint (this app's own `finetune-studio serve-model` prints "
               "one). Its figures stand beside the reviewers' on Results and count as trusted only once its "
               "agreement with them reaches the bar set here.")
    with db() as s:
        judges = list_judges(s, user)
        counts = verdict_counts(s)
    if judges:
        st.dataframe(pd.DataFrame([{"name": j.name, "base URL": j.base_url, "model": j.model or "—",
                                    "API key variable": j.api_key_env or "—", "trusted from kappa": j.min_kappa,
                                    "on items": j.min_items, "verdicts": counts.get(j.id, 0)} for j in judges]),
                     hide_index=True, width="stretch")
    with st.form("add_judge", clear_on_submit=True):
        st.subheader("Register a judge")
        c1, c2 = st.columns(2)
        judge_name = c1.text_input("Name", key="judge_name")
        base_url = c2.text_input("Base URL", placeholder="http://127.0.0.1:8000/v1", key="judge_url")
        c1, c2 = st.columns(2)
        judge_model = c1.text_input("Model", key="judge_model",
                                    help="The model name the endpoint expects (serve-model prints it).")
        key_env = c2.text_input("API key environment variable", placeholder="JUDGE_API_KEY", key="judge_key_env",
                                help="The NAME of the variable holding the key where the app runs; the key itself "
                                     "is never stored. Empty: no key.")
        c1, c2 = st.columns(2)
        min_kappa = c1.number_input("Trusted from kappa", -1.0, 1.0, 0.6, 0.05)
        min_items = c2.number_input("On at least (items)", 1, 100000, 30)
        if st.form_submit_button("Register judge"):
            with db() as s:
                added = run_action(add_judge, s, user, judge_name, base_url, judge_model, key_env,
                                   min_kappa=min_kappa, min_items=int(min_items),
                                   success=f"Registered judge {md_literal(judge_name.strip())}.")
            if added is not None:
                st.rerun()  # the table above lists it
    if judges:
        st.subheader("Check, tune or remove a judge")
        by_id = {j.id: j for j in judges}
        pick = st.selectbox("Judge", list(by_id), format_func=lambda i: by_id[i].name, key="judge_admin_pick")
        c1, c2, c3 = st.columns(3)
        if c1.button("Check", help="Send one tiny request and show the answer or the error."):
            with db() as s:
                checked = run_action(check_judge, s, user, pick)
            if checked is not None:
                st.success(f"{md_literal(checked['judge'])} answered in {checked['seconds']} s:")
                st.code(checked["answer"] or "(an empty answer)", language=None, wrap_lines=True)
        bar_kappa = c2.number_input("Kappa", -1.0, 1.0, float(by_id[pick].min_kappa), 0.05, key="judge_bar_kappa")
        bar_items = c2.number_input("Items", 1, 100000, int(by_id[pick].min_items), key="judge_bar_items")
        if c2.button("Set trust bar"):
            with db() as s:
                run_action(set_trust_bar, s, user, pick, min_kappa=bar_kappa, min_items=int(bar_items),
                           success="Trust bar saved.")
        sure = c3.checkbox(f"Also delete its {counts.get(pick, 0)} verdicts", key="judge_remove_sure")
        if c3.button("Remove judge", disabled=not sure):
            with db() as s:
                if run_action(remove_judge, s, user, pick) is not None:
                    flash(f"Removed judge {md_literal(by_id[pick].name)} and its verdicts.")
                    st.rerun()

@st.cache_data(ttl=30, show_spinner="Asking each target what it offers...")
def _offer(kind: str, name: str, settings_json: str) -> str:
    """What a target offers now, in words (cached 30 s: an unreachable cluster may take seconds to say so)."""
    from storage.models import ComputeTarget

    return check_target(ComputeTarget(name=name, kind=kind, settings=json.loads(settings_json))).describe()


with targets_tab:
    st.caption("Where runs may go besides this machine: a Ray cluster (its dashboard address) or a Slurm cluster. "
               "Cluster nodes need the workspace on a shared filesystem and a PostgreSQL database they reach "
               "(README: Running on a cluster).")
    with db() as s:
        targets = list_targets(s)
    for t in targets:
        offer = _offer(t.kind, t.name, json.dumps(t.settings))
        st.markdown(f"**{md_literal(t.name)}** ({t.kind}): {md_literal(offer)}")
        st.code(json.dumps(t.settings, indent=1), language="json")
    if targets and st.button("Check again", help="Ask every target what it offers now."):
        _offer.clear()
        st.rerun()
    with st.form("add_target", clear_on_submit=False):
        st.subheader("Add a target")
        c1, c2 = st.columns(2)
        t_name = c1.text_input("Name", key="target_name")
        t_kind = c2.selectbox("Kind", [k for k in TARGET_KINDS if k != "local"] + ["local"], key="target_kind")
        t_settings = st.text_area("Settings (JSON)", '{"address": "http://head-node:8265"}', key="target_settings",
                                  help="Ray: address (dashboard URL), cpus_per_node, gpus_per_node, "
                                       "resources_per_node, python, pythonpath, master_port, same_host. "
                                       "Slurm: partition, nodes, gpus_per_node, time_limit, account.")
        if st.form_submit_button("Add target"):
            with db() as s:
                if run_action(add_target, s, user, t_name, t_kind, t_settings) is not None:
                    st.session_state["target_done"] = f"Added target {md_literal(t_name.strip())}."
                    st.rerun()
    if targets:
        st.subheader("Change or remove a target")
        picked = st.selectbox("Target", [t.name for t in targets], key="target_pick")
        current = next(t for t in targets if t.name == picked)
        new_settings = st.text_area("Settings (JSON)", json.dumps(current.settings, indent=1),
                                    key=f"target_edit_{current.id}")
        with st.container(horizontal=True, gap="small"):
            save = st.button("Save settings", key="target_save")
            drop = st.button(f"Remove {md_literal(picked)}", key="target_remove")
        if save or drop:
            with db() as s:
                done = run_action(*((update_target, s, user, picked, new_settings) if save else
                                    (remove_target, s, user, picked))) is not None
            if done:
                st.session_state["target_done"] = f"{'Saved' if save else 'Removed'} {md_literal(picked)}."
                _offer.clear()
                st.rerun()
    if message := st.session_state.pop("target_done", None):
        st.success(message)

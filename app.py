"""finetune-studio: routes with st.navigation and draws the shared frame (who is logged in, which project)."""
import streamlit as st

from core.errors import StudioError
from core.workspace import database_url, workspace_dir
from core.webui import current_project, current_user, db, logout, show_flash, visible_pages

st.set_page_config(page_title="finetune-studio", page_icon=":material/tune:", layout="wide")


@st.cache_resource(show_spinner="Preparing the workspace...")
def _workspace(folder: str, url: str):
    """Once per workspace and database: folders, migrations, first admin (password printed once), demo project."""
    from core.setup import init_workspace, start_app_upkeep

    res = init_workspace()
    start_app_upkeep()  # jobs are reconciled on a timer (unless `finetune-studio serve` already does it)
    if res.admin_password:
        print(f"First start: log in as '{res.admin_username}' with the one-time password: {res.admin_password}",
              flush=True)
    return res.workspace


try:
    workspace = _workspace(str(workspace_dir()), database_url())
except StudioError as err:
    st.error(str(err))
    st.stop()

user = current_user()
if user is None:
    page = st.navigation([st.Page("pages/login.py", title="Log in", icon=":material/login:")], position="hidden")
else:
    sections: dict[str, list] = {}
    for spec in visible_pages(user):
        sections.setdefault(spec.section, []).append(
            st.Page(spec.path, title=spec.title, icon=spec.icon, url_path=spec.url_path,
                    default=spec.path == "pages/home.py"))
    page = st.navigation(sections)
    with st.sidebar:
        from core.projects import list_projects

        with db() as s:
            projects = list_projects(s)
        project = current_project()
        if projects:
            ids = [p.id for p in projects]
            chosen = st.selectbox("Project", ids, index=ids.index(project.id),
                                  format_func=lambda i: next(p.name for p in projects if p.id == i))
            st.session_state["project_id"] = chosen
        st.caption(f"Signed in as **{user.username}** · {user.role}")
        st.caption(f"Workspace `{workspace}`")
        if st.button("Log out", icon=":material/logout:", key="logout"):
            logout()
            st.rerun()
page.run()
show_flash()  # after the page, so a confirmation made before its st.rerun() is shown once

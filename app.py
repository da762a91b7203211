"""finetune-studio: routes with st.navigation and draws the shared frame (who is logged in, which project).

Every page keeps its address whoever is looking: signed out, /annotate shows the log-in form and, once signed
in, the Annotate page itself; a page the role may not use is routed but not listed, and says so.
"""
from pathlib import Path

import streamlit as st

from ui.browser import sync_session_cookie
from core.errors import StudioError
from ui.notices import job_notices
from core.workspace import database_url, workspace_dir
from ui.frame import PAGES, current_project, current_user, db, logout, md_literal, show_flash, visible_pages

# A bundled icon: a Material or emoji page icon makes every browser fetch the favicon from a font/emoji CDN.
LIVE_PANEL_PAGES = {"train", "runs", "generate"}  # url paths of the pages that call show_job_notices themselves
FAVICON = str(Path(__file__).resolve().parent / "core" / "static" / "favicon.png")
st.set_page_config(page_title="finetune-studio", page_icon=FAVICON, layout="wide")


@st.cache_resource(show_spinner="Preparing the workspace...")
def _workspace(folder: str, url: str):
    """Once per workspace and database: folders, migrations, first admin (password printed once), demo project."""
    from core.startup import init_workspace, start_app_upkeep

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
    login_page = "pages/login.py"
    page = st.navigation([st.Page(login_page, title="Log in", icon=":material/login:", default=True)] + [
        st.Page(login_page, title="Log in", url_path=spec.url_path, visibility="hidden")
        for spec in PAGES if spec.path != "pages/home.py"], position="hidden")
else:
    sections: dict[str, list] = {}
    allowed = {spec.path for spec in visible_pages(user)}
    for spec in PAGES:
        sections.setdefault(spec.section, []).append(
            st.Page(spec.path, title=spec.title, icon=spec.icon, url_path=spec.url_path,
                    default=spec.path == "pages/home.py",
                    visibility="visible" if spec.path in allowed else "hidden"))
    page = st.navigation(sections, expanded=True)  # every page the role may use, not "View more" past 12
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
        st.caption(f"Signed in as **{md_literal(user.username)}** · {user.role}")
        st.caption(f"Workspace `{workspace}`")
        if st.button("Log out", icon=":material/logout:", key="logout"):
            logout()
            st.rerun()
        # A toast when a job of the project ends, on every page: the pages with a live panel (Train, Runs,
        # Generate) already poll and toast from it, so the frame polls only elsewhere.
        if project is not None and page.url_path not in LIVE_PANEL_PAGES:
            job_notices(user, project.id)
sync_session_cookie()  # before the page: a page may st.stop()
show_flash()  # confirmations made before an st.rerun(): shown even when the page then stops early
page.run()
show_flash()  # confirmations made by this run of the page

"""Live panels in a real browser, where only fragments redraw: the Train selector and a toast follow a run to
its end, Generate shows a finished job's systems without a reload, and the Train, Evaluate and Datasets
pages fit windows 1024 and 800 px wide."""
from __future__ import annotations

import time

import pytest
from sqlmodel import select

from tests.e2e.conftest import login, shot, wait_idle
from tests.fixtures_jobs import add_job, finish, live_process
from tests.fixtures_models import tiny_model_fixture  # noqa: F401 (the tiny_model fixture)

pytestmark = [pytest.mark.e2e, pytest.mark.timeout(600)]


def _admin_and_project(session):
    from storage.models import Project, User

    return (session.exec(select(User).where(User.role == "admin")).first(),
            session.exec(select(Project).order_by(Project.id)).first())


def go(page, title: str) -> None:
    page.get_by_role("link", name=title, exact=True).click()
    wait_idle(page)


def _wait_selected(page, label: str, text: str, timeout: float) -> None:
    """Wait until the selectbox labelled ``label`` shows ``text`` (its value lives in an input element)."""
    page.wait_for_function("""([label, text]) => [...document.querySelectorAll('[data-testid="stSelectbox"] input')]
        .some(i => i.getAttribute('aria-label') === label && i.value === text)""", arg=[label, text], timeout=timeout)


def test_train_selector_and_a_toast_follow_a_run_to_its_end(server, server_db, page):
    admin, project = _admin_and_project(server_db)
    with live_process() as proc:
        job = add_job(server_db, project, admin, name="e2e-watch", pid=proc.pid)
        login(page, server.url, *server.admin_credentials())
        go(page, "Train")
        _wait_selected(page, "Run", f"#{job.id} e2e-watch (running)", 120_000)  # drawn after the estimate
        shot(page, "live-1-train-running")
        finish(server_db, job, measured_peak_mb=2048.0)
        # No reload: the fragment redraws the selector and the panel, and the page's poll shows a toast.
        # The toast first: it is shown for a few seconds only.
        page.get_by_text(f"Run {job.id} finished.").wait_for(timeout=30_000)
        _wait_selected(page, "Run", f"#{job.id} e2e-watch (succeeded)", 30_000)
        page.get_by_text("Status: succeeded").wait_for()
        shot(page, "live-2-train-succeeded")


def test_a_toast_says_when_a_run_ends_on_a_page_without_a_live_panel(server, server_db, page):
    """The app frame polls on every other page: an engineer annotating hears that the run ended."""
    admin, project = _admin_and_project(server_db)
    with live_process() as proc:
        job = add_job(server_db, project, admin, name="e2e-elsewhere", pid=proc.pid)
        login(page, server.url, *server.admin_credentials())
        go(page, "Annotate")
        finish(server_db, job)
        page.get_by_text(f"Run {job.id} finished.").wait_for(timeout=30_000)
        shot(page, "live-3-toast-on-annotate")


def test_generate_shows_a_finished_jobs_systems_without_a_reload(server, server_db, page, tiny_model):
    from core.evaluate.evalsets import create_eval_set_from_file, list_eval_sets
    from storage.models import Job

    admin, project = _admin_and_project(server_db)
    create_eval_set_from_file(server_db, admin, project.id, "e2e-prompts",
                              '{"prompt": "Is my bill late?"}\n{"prompt": "How do I read my meter?"}\n', "p.jsonl")
    login(page, server.url, *server.admin_credentials())
    go(page, "Generate")
    systems = page.get_by_label("Systems", exact=True)  # only the base model (runs made by other tests have no adapter)
    systems.click()
    for _ in range(4):
        systems.press("Backspace")
    systems.type("Base model")
    # By name: the base model is also offered with the team's prompt and with retrieved documents (issue 24).
    page.get_by_role("option", name="Base model (no adapter)", exact=True).click()
    systems.press("Escape")
    wait_idle(page)
    page.get_by_label("Base model (optional)").fill(str(tiny_model))
    page.get_by_label("Max new tokens").fill("8")
    page.get_by_label("Max new tokens").press("Tab")
    wait_idle(page)
    page.get_by_role("button", name="Start generation").click()
    job_id = None
    deadline = time.time() + 120
    while job_id is None and time.time() < deadline:
        server_db.expire_all()
        job_id = server_db.exec(select(Job.id).where(Job.kind == "generate")).first()
        time.sleep(0.5)
    assert job_id is not None, "no generation job was started"
    page.get_by_text(f"Job {job_id}", exact=True).wait_for(timeout=60_000)
    shot(page, "live-3-generate-started")
    deadline = time.time() + 240
    while time.time() < deadline:
        server_db.expire_all()
        if server_db.get(Job, job_id).status not in ("queued", "running"):
            break
        time.sleep(1)
    assert server_db.get(Job, job_id).status == "succeeded", server_db.get(Job, job_id).error
    assert list_eval_sets(server_db, admin, project.id)[-1]["systems"] == ["base"]
    # The page redraws itself when the job ends: its table now lists the system, and nothing says "running".
    page.get_by_text(f"Generation job {job_id} finished.").wait_for(timeout=30_000)
    wait_idle(page)
    page.get_by_text("2 outputs").first.wait_for(timeout=15_000)
    page.wait_for_function("""() => document.querySelector('[data-testid="stDataFrame"]')
        .textContent.includes('base model')""", timeout=15_000)  # the grid's accessible cells
    assert "is running" not in page.inner_text("body")
    shot(page, "live-4-generate-finished")


def _scored_eval_set(session, admin, project) -> str:
    """An eval set scored by two reviewers (made once per server); returns its name."""
    from core.accounts import create_user
    from storage.models import EvalSet
    from tests.helpers import make_outputs, score_all

    name = "set-3-2"  # make_outputs names it after its prompts and runs
    if session.exec(select(EvalSet).where(EvalSet.name == name)).first() is None:
        es, _ = make_outputs(session, project, admin, n_prompts=3, runs=2)
        reviewers = [create_user(session, admin, f"e2e-rev{i}", "e2e-password-123", "reviewer") for i in (1, 2)]
        score_all(session, es, reviewers)
    return name


def _overflow(page) -> dict:
    """How far the page and its charts reach past the window's right edge (px; 0 = fits)."""
    return page.evaluate("""() => {
        const w = document.documentElement.clientWidth;
        const charts = [...document.querySelectorAll('[data-testid="stVegaLiteChart"], .vega-embed')]
            .map(e => Math.max(0, Math.ceil(e.getBoundingClientRect().right - w)));
        return {page: Math.max(0, document.documentElement.scrollWidth - w), charts: Math.max(0, ...charts),
                n_charts: charts.length};
    }""")


@pytest.mark.parametrize("width", [1024, 800])
def test_train_evaluate_and_datasets_pages_fit_narrow_windows(server, server_db, browser, width):
    admin, project = _admin_and_project(server_db)
    scored = _scored_eval_set(server_db, admin, project)
    ctx = browser.new_context(viewport={"width": width, "height": 900})
    page = ctx.new_page()
    page.set_default_timeout(30_000)
    try:
        login(page, server.url, *server.admin_credentials())
        for title in ("Import", "Datasets", "Train", "Runs", "Generate", "Compare", "Results"):
            go(page, title)
            if title == "Results":
                page.get_by_label("Eval set").click()
                page.get_by_role("option", name=scored).click()
                page.get_by_text("Automatic metrics against references").wait_for(timeout=120_000)
                wait_idle(page)
                page.wait_for_function("""() => document.querySelectorAll('[data-testid="stVegaLiteChart"] canvas,'
                    + ' [data-testid="stVegaLiteChart"] svg').length >= 4""", timeout=60_000)
            page.wait_for_timeout(2000)  # charts draw after the script run
            reach = _overflow(page)
            shot(page, f"narrow-{width}-{title.lower()}")
            assert reach["page"] <= 1 and reach["charts"] <= 1, (title, width, reach)
            if title == "Results":
                assert reach["n_charts"] >= 4
    finally:
        ctx.close()


def test_runs_table_is_not_cut_off_on_a_laptop_window(server, server_db, page):
    """At 1400 px every column of the Runs table is in view, with a DPO run's reward column too: no horizontal
    scrolling inside the grid."""
    from storage.models import DatasetVersion

    admin, project = _admin_and_project(server_db)
    version = server_db.exec(select(DatasetVersion).where(DatasetVersion.project_id == project.id)).first()
    for i in (1, 2):
        add_job(server_db, project, admin, name=f"lora-demo-v1-try{i}", status="succeeded",
                dataset_version_id=version.id, config={"method": "lora"}, measured_peak_mb=4700.0 + i,
                result={"metrics": {"train_loss": 1.234567, "eval_loss_last": 1.1, "global_step": 36}})
    add_job(server_db, project, admin, name="dpo-votes-from-2", status="succeeded",  # adds the reward column
            config={"method": "dpo"}, measured_peak_mb=4800.0,
            result={"metrics": {"train_loss": 0.69, "global_step": 12, "reward_accuracy_last": 0.75}})
    login(page, server.url, *server.admin_credentials())
    go(page, "Runs")
    page.get_by_text("demo-v1").first.wait_for(state="attached")
    page.wait_for_selector('[data-testid="stDataFrame"] .dvn-scroller')
    grid = page.evaluate("""() => { const s = document.querySelector('[data-testid="stDataFrame"] .dvn-scroller');
        return {scroll: s.scrollWidth, client: s.clientWidth}; }""")
    shot(page, "live-5-runs-table")
    assert grid["scroll"] <= grid["client"] + 1, grid
    assert page.get_by_text("Reward acc.").count() >= 1  # the DPO run's column is there

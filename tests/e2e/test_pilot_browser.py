"""A pilot in headless Chromium: two agents pilot the base model and a run (a tiny random adapter), one escalates;
a chat front end's feedback to serve-model --pilot lands in the run's pilot; Results shows the escalation rates with
their intervals; the escalated question is a draft in Annotate that says which pilot it came from."""
from __future__ import annotations

import os
import signal
import sqlite3
from datetime import datetime, timedelta, timezone
from pathlib import Path

import pytest
import requests

from tests.conftest import PASSWORD
from tests.e2e.conftest import grid_text, login, shot, wait_idle
from tests.fixtures_models import random_adapter, tiny_model_fixture  # noqa: F401 (the tiny_model fixture)
from tests.fixtures_serve import HELLO, WAIT_S, serve_model

pytestmark = pytest.mark.e2e
NOW = datetime.now(timezone.utc)


def _rate(k: int, n: int) -> str:
    from core.evaluate.stats import wilson

    w = wilson(k, n)
    return f"{w.value:.0%} ({w.lo:.0%}-{w.hi:.0%})"


def _setup(session, tiny_model, folder) -> dict:
    """Two agents, a run (a random adapter on the tiny model) and a pilot of each system, as an engineer makes."""
    from core.accounts import create_user, first_admin
    from core.projects import list_projects
    from core.ship.pilots import create_pilot
    from storage.models import Job, JobStatus

    admin, project = first_admin(session), list_projects(session)[0]
    for name in ("agent1", "agent2"):
        create_user(session, admin, name, PASSWORD, "agent")
    from transformers import AutoTokenizer

    random_adapter(str(tiny_model), folder, seed=3)
    AutoTokenizer.from_pretrained(tiny_model).save_pretrained(folder)  # a finished run keeps its tokenizer
    run = Job(project_id=project.id, kind="train", name="pilot-run", status=JobStatus.succeeded.value,
              run_dir=str(folder), created_by=admin.id)
    session.add(run)
    session.commit()
    window = {"starts_at": NOW - timedelta(days=1), "ends_at": NOW + timedelta(days=20)}
    base = create_pilot(session, admin, project.id, name="base pilot", system=f"base:{tiny_model}", **window)
    tuned = create_pilot(session, admin, project.id, name="run pilot", system=f"run:{run.id}", blind=True, **window)
    return {"run": run.id, "base": base.id, "tuned": tuned.id}


def _stop_serving_jobs(server) -> None:
    with sqlite3.connect(server.workspace / "studio.db") as conn:
        rows = conn.execute("SELECT pid FROM job WHERE kind = 'serve' AND status = 'running'").fetchall()
    for (pid,) in rows:
        try:
            os.killpg(pid, signal.SIGTERM)
        except (ProcessLookupError, PermissionError, TypeError):
            pass


def _exchanges(server, pilot_id: int) -> list[tuple]:
    with sqlite3.connect(server.workspace / "studio.db") as conn:
        return conn.execute("SELECT user_id, client, escalate, ratings, sent_example_id FROM pilotexchange "
                            "WHERE pilot_id = ? ORDER BY id", (pilot_id,)).fetchall()


def _serve_log(server) -> str:
    """The log of the newest serving job (what it said about recording), for a failure's message."""
    with sqlite3.connect(server.workspace / "studio.db") as conn:
        (run_dir,) = conn.execute("SELECT run_dir FROM job WHERE kind = 'serve' ORDER BY id DESC").fetchone()
    path = Path(run_dir) / "job.log"
    return "\n" + (path.read_text()[-3000:] if path.exists() else "(no log)")


def _front_end_feedback(server, ids: dict) -> None:
    """A chat front end: serve-model --pilot answers, then the agent's feedback goes to /v1/feedback."""
    proc, url, lines = serve_model(server.workspace, f"run:{ids['run']}", "--port", "0", "--idle-timeout", "600",
                                   "--pilot", str(ids["tuned"]))
    try:
        answer = requests.post(f"{url}/chat/completions", json={"messages": HELLO, "max_tokens": 8}, timeout=WAIT_S)
        assert answer.status_code == 200, answer.text
        fed = requests.post(f"{url}/feedback", json={"completion_id": answer.json()["id"], "escalate": False,
                                                     "ratings": {"accuracy": 4, "tone": 5}}, timeout=WAIT_S)
        assert fed.status_code == 200, fed.text + _serve_log(server)
    finally:
        proc.send_signal(signal.SIGINT)
        assert proc.wait(timeout=120) == 0, "".join(lines)


def _pilot_one(page, server, user: str, pilot: str, question: str, accuracy: str, escalate: str) -> None:
    login(page, server.url, user, PASSWORD)
    page.get_by_text("You take part in pilots").wait_for()  # an agent's Home
    page.get_by_role("link", name="Pilot", exact=True).click()
    page.wait_for_function("""() => [...document.querySelectorAll('h1')].some(h => h.innerText.trim() === 'Pilot')""")
    wait_idle(page)
    shot(page, f"pilot-{user}-start")
    choice = page.get_by_role("combobox", name="Pilot")
    if pilot not in choice.input_value():
        choice.click()
        page.get_by_role("option", name=pilot).click()
        wait_idle(page)
    box = page.get_by_placeholder("Ask as a customer would")
    box.fill(question)
    box.press("Enter")
    page.get_by_role("button", name="Save rating").wait_for(timeout=600_000)  # the endpoint starts, then answers
    wait_idle(page)
    shot(page, f"pilot-{user}-answered")
    page.get_by_role("radiogroup", name="Accuracy").get_by_text(accuracy, exact=True).click()
    page.get_by_role("radiogroup", name="Would you escalate this to a human?").get_by_text(escalate,
                                                                                          exact=True).click()
    page.get_by_role("button", name="Save rating").click()
    page.get_by_text(f"escalate: {escalate.lower()}").wait_for()
    wait_idle(page)
    page.get_by_role("button", name="Log out").click()
    page.get_by_label("Username", exact=True).wait_for()


def test_two_agents_pilot_a_base_and_a_run_and_results_show_the_escalations(server, server_db, browser, page,
                                                                            tiny_model, tmp_path):
    ids = _setup(server_db, tiny_model, tmp_path / "adapter")
    try:
        _front_end_feedback(server, ids)
        assert [(row[1], row[2]) for row in _exchanges(server, ids["tuned"])] == [("api client", 0)]

        _pilot_one(page, server, "agent1", "base pilot", "My bill doubled this month, why?", "2", "Yes")
        _pilot_one(page, server, "agent2", "run pilot (a hidden system (blind pilot))", "Can I pay monthly?", "4",
                   "No")
        assert [row[2] for row in _exchanges(server, ids["base"])] == [1]
        assert [row[2] for row in _exchanges(server, ids["tuned"])] == [0, 0]

        admin, admin_password = server.admin_credentials()
        login(page, server.url, admin, admin_password)
        page.get_by_role("link", name="Results", exact=True).click()
        page.get_by_text("Pilots: escalations and ratings by support agents").wait_for()
        page.wait_for_function("""rates => [...document.querySelectorAll('[data-testid="stDataFrame"]')]
            .some(d => rates.every(r => d.textContent.includes(r)))""", arg=[_rate(1, 1), _rate(0, 2)])
        wait_idle(page)
        grid = grid_text(page)
        assert _rate(1, 1) in grid and _rate(0, 2) in grid, grid
        assert "My bill doubled this month, why?" in grid  # the question that escalated
        page.get_by_role("button", name="Send escalations and corrections to annotation").click()
        page.get_by_text("1 of 1 escalated or corrected answers sent to annotation as drafts").wait_for()
        shot(page, "pilot-results")
        draft = _exchanges(server, ids["base"])[0][4]
        assert draft

        page.goto(f"{server.url}/annotate?example={draft}")
        page.get_by_text("From pilot base pilot").wait_for(timeout=60_000)
        wait_idle(page)
        shot(page, "pilot-draft-in-annotate")
        body = page.inner_text("body")
        assert "an agent would escalate it to a human" in body and "My bill doubled this month, why?" in body
    finally:
        _stop_serving_jobs(server)

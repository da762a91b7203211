"""Every page, as an admin, with hostile text in every field users fill (example text and tags, notes, reject
reasons, import file names, eval-set names, prompts and answers, run names, reviewers' comments, sent-back
drafts' origins, project names and descriptions): nothing runs, nothing is fetched from another host (no Markdown
image from a tag, no CDN favicon), no dialog opens."""
from __future__ import annotations

import json
from urllib.parse import urlparse

import pytest

from sqlmodel import select

from tests.e2e.conftest import cli, login, shot, wait_idle
from ui.frame import PAGES

pytestmark = pytest.mark.e2e

EVIL = "http://evil.example"
HOSTILE = [
    f"![t]({EVIL}/tag.png)",
    "<script>window.__pwned = 1</script>",
    '<img src=x onerror="window.__pwned = 1">',
    f"[click]({EVIL}/link) **bold** `code`",
]


def _hostile_records() -> list[dict]:
    out = []
    for i, text in enumerate(HOSTILE):
        out.append({"instruction": f"Question {i}: {text}", "output": f"Answer {i}, plain words here: {text}",
                    "tags": [text, f"tag-{i}"]})
    return out


def _plant_in_the_loop(session, eval_set_name: str) -> None:
    """Notes, reject reasons (one example rejected, one rejected and resubmitted: history and diff), a run with a
    hostile name, answers, a scored item with a hostile comment, a sent-back draft, and a hostile project."""
    from core.curate import curation as cur
    from core.evaluate import evalsets, review
    from core.projects import create_project
    from storage.models import EvalSet, Example, Job, JobStatus, Output, Project, User

    admin = session.exec(select(User).where(User.role == "admin")).first()
    project = session.exec(select(Project).order_by(Project.id)).first()
    imported = session.exec(select(Example.id).where(Example.project_id == project.id,
                                                     Example.status == "draft").order_by(Example.id)).all()
    for n, ex_id in enumerate(imported[:2]):
        ex = cur.get_example(session, ex_id)
        ex = cur.save_example(session, admin, ex.id, expected_version=ex.version, system=ex.system,
                              turns=ex.turns, input=ex.input, tags=ex.tags, note=f"Note {HOSTILE[n]}", submit=True)
        ex = cur.review_example(session, admin, ex.id, "reject", reason=f"Reason {HOSTILE[2]} {HOSTILE[0]}")
        if n == 1:  # fixed and resubmitted: Review data shows the earlier reason, the history and a diff
            turns = [dict(t) for t in ex.turns]
            turns[-1]["content"] += f" Fixed {HOSTILE[3]}"
            cur.save_example(session, admin, ex.id, expected_version=ex.version, system=ex.system, turns=turns,
                             input=ex.input, tags=ex.tags, note=ex.note, submit=True)
    es = session.exec(select(EvalSet).where(EvalSet.name == eval_set_name)).one()
    run = Job(project_id=project.id, kind="train", name=f"run {HOSTILE[0]} {HOSTILE[2]}",
              status=JobStatus.succeeded.value, run_dir="/nonexistent/hostile-run", created_by=admin.id)
    gen = Job(project_id=project.id, kind="generate", name="gen", status=JobStatus.succeeded.value, eval_set_id=es.id)
    session.add_all([run, gen])
    session.commit()
    for p in evalsets.eval_prompts(session, es.id):
        for system, text in (("base", f"Base says {HOSTILE[1]}"), (f"run:{run.id}", f"Run says {HOSTILE[2]}")):
            session.add(Output(prompt_id=p.id, system=system, job_id=gen.id, text=f"{text} {HOSTILE[0]}",
                               decoding={"mode": "greedy"}, n_new_tokens=7, seconds=0.1))
    session.commit()
    item = review.next_item(session, admin, es.id)
    review.submit_score(session, admin, es.id, item.prompt_id, item.pair,
                        scores={c: {"A": 4, "B": 2} for c in ("accuracy", "tone", "helpfulness")}, preference="A",
                        comment=f"Comment {HOSTILE[0]} {HOSTILE[2]}")
    review.send_back_to_annotation(session, admin, es.id, item.prompt_id, item.pair,
                                   comment=f"Send back {HOSTILE[2]} {HOSTILE[0]}", start="A")
    create_project(session, admin, f"Project {HOSTILE[0]} {HOSTILE[2]}", description=f"About {HOSTILE[3]}")


def test_every_page_renders_hostile_text_inert_and_fetches_nothing_off_host(server, server_db, page):
    imports = server.workspace / "imports"
    imports.mkdir(parents=True, exist_ok=True)
    data = imports / f'hostile {HOSTILE[2]}.jsonl'  # the file name is shown on Import's history
    data.write_text("".join(json.dumps(r) + "\n" for r in _hostile_records()), encoding="utf-8")
    cli(server, "import", str(data), "--format", "alpaca")
    prompts = imports / "prompts.jsonl"
    prompts.write_text("".join(json.dumps({"prompt": f"Prompt {t}", "reference": t}) + "\n" for t in HOSTILE),
                       encoding="utf-8")
    eval_set_name = f"set {HOSTILE[0]} {HOSTILE[2]}"
    cli(server, "evalsets", "--create", eval_set_name, "--from-file", str(prompts))
    _plant_in_the_loop(server_db, eval_set_name)

    requests: list[str] = []
    dialogs: list[str] = []
    page.on("request", lambda r: requests.append(r.url))
    page.on("dialog", lambda d: (dialogs.append(d.message), d.dismiss()))
    user, password = server.admin_credentials()
    login(page, server.url, user, password)
    where: dict[str, list[str]] = {}
    for spec in PAGES:
        before = len(requests)
        page.goto(f"{server.url}/{spec.url_path}")
        wait_idle(page)
        page.wait_for_timeout(500)
        shot(page, f"hostile-{spec.url_path}")
        assert page.evaluate("() => window.__pwned") is None, f"script ran on {spec.title}"
        where[spec.title] = [u for u in requests[before:] if urlparse(u).hostname not in ("127.0.0.1", "localhost")]
    off_host = sorted({u for u in requests if urlparse(u).hostname not in ("127.0.0.1", "localhost")
                       and urlparse(u).scheme in ("http", "https", "ws", "wss")})
    assert not off_host, {page: urls for page, urls in where.items() if urls}
    assert not dialogs, dialogs
    icon = page.evaluate("() => [...document.querySelectorAll('link[rel~=icon]')].map(l => l.href)")
    assert icon and all(h.startswith(server.url) for h in icon), icon  # the bundled icon, served by the app

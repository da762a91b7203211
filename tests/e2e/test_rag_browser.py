"""Fine-tune or RAG, in headless Chromium (issue 24): an engineer uploads a document on the Documents page, a
background job on the embedded model turns its chunk into a draft marked with its origin, the draft is submitted on
Annotate and approved on Review data, a version is frozen on Datasets; then an eval set from that version's test
split is generated for the base model with retrieved passages (+rag) beside a run, and Results shows the two side by
side with what an answer cost, and the passages each +rag answer was given."""
from __future__ import annotations

import re
import sqlite3

import pytest

from tests.e2e.conftest import grid_text, login, shot
from tests.e2e.steps import body, go, idle, pick, set_field, wait_text
from tests.fixtures_models import random_adapter, tiny_model_fixture  # noqa: F401 (the tiny_model fixture)

pytestmark = [pytest.mark.e2e, pytest.mark.slow, pytest.mark.timeout(1500)]
JOB_WAIT = 900_000  # a job on a loaded 2-core machine: a Python process, torch, a model, then its work
DOC_NAME = "appeals-and-refunds.md"  # sorts before the demo's fact sheet: the generation form's first document
DOC = """# Appeals and refunds

## Refunds of credit

When an account is in credit after a final bill, Brightwater refunds the balance by bank transfer within seven
working days. The payment reference is BW-REFUND followed by the account number.

## Appeals

A customer who disagrees with a back-bill can appeal in writing within 28 days; collection is paused meanwhile.
"""


def _add_run(server_db, tiny_model, folder) -> int:
    """A finished run on the tiny model (a random adapter), as an engineer's training job leaves it."""
    from transformers import AutoTokenizer

    from core.accounts import first_admin
    from core.projects import list_projects
    from storage.models import Job, JobStatus

    admin, project = first_admin(server_db), list_projects(server_db)[0]
    random_adapter(str(tiny_model), folder, seed=5)
    AutoTokenizer.from_pretrained(tiny_model).save_pretrained(folder)
    run = Job(project_id=project.id, kind="train", name="rag-run", status=JobStatus.succeeded.value,
              run_dir=str(folder), created_by=admin.id, config={"base_model": str(tiny_model)})
    server_db.add(run)
    server_db.commit()
    return run.id


def _outputs(server, system: str) -> list[tuple]:
    with sqlite3.connect(server.workspace / "studio.db") as conn:
        return conn.execute("SELECT prompt_tokens, context FROM output WHERE system = ?", (system,)).fetchall()


def test_a_document_becomes_a_draft_and_base_plus_rag_sits_beside_the_run(server, server_db, browser, page,
                                                                          tiny_model, tmp_path):
    admin, password = server.admin_credentials()
    login(page, server.url, admin, password)

    # 1. Upload the document: cut into its two sections.
    go(page, "Documents")
    source = tmp_path / DOC_NAME
    source.write_text(DOC, encoding="utf-8")
    page.locator('input[type="file"]').first.set_input_files(str(source))
    idle(page)
    page.get_by_role("button", name="Add", exact=True).click()
    wait_text(page, f"Added {DOC_NAME} (version 1, 2 chunks).")  # one chunk per section
    idle(page)

    # 2. Drafts from it, written by the embedded model (the base: no run exists yet).
    set_field(page, "Questions per chunk", "1")
    set_field(page, "At most chunks (0: all)", "1")
    set_field(page, "Longest answer (tokens)", "48")
    page.get_by_role("button", name="Generate drafts").click()
    made = page.get_by_text(re.compile(r"^[1-9]\d* draft\(s\) made from 1 chunk\(s\)"))
    made.wait_for(timeout=JOB_WAIT)
    idle(page)
    shot(page, "rag-01-drafts-made")

    # 3. The draft is in Annotate with its origin; submitted, then approved on Review data.
    go(page, "Annotate")
    heading = page.get_by_role("heading", name=re.compile(r"^Example #\d+ · draft$"))
    heading.wait_for()
    draft_id = int(re.search(r"#(\d+)", heading.inner_text()).group(1))
    idle(page)
    wait_text(page, f"Generated from {DOC_NAME}")
    page.keyboard.press("Control+Shift+Enter")
    page.get_by_text(f"Submitted #{draft_id} for review").wait_for()
    idle(page)
    go(page, "Review data")
    page.get_by_role("heading", name=f"Example #{draft_id}").wait_for()
    idle(page)
    page.keyboard.press("Alt+a")
    page.get_by_text(f"Approved #{draft_id}.").wait_for()
    idle(page)

    # 4. Freeze a version that holds it.
    go(page, "Datasets")
    set_field(page, "Name", "rag-v2")
    page.get_by_role("button", name="Freeze", exact=True).first.click()
    page.get_by_text(re.compile(r"^Froze rag-v2: \d+ train, \d+ validation, \d+ test\.$")).wait_for()
    idle(page)
    shot(page, "rag-02-frozen")

    # 5. A run exists; an eval set from rag-v2's test split; base+rag and the run generate side by side.
    run_id = _add_run(server_db, tiny_model, tmp_path / "run")
    go(page, "Generate")
    pick(page, "Dataset version", re.compile(r"^rag-v2 "))
    set_field(page, "Eval set name", "rag-eval")
    page.get_by_role("button", name="Create eval set").first.click()
    systems = page.locator('[data-testid="stMultiSelect"]').filter(has_text="Systems")
    systems.wait_for()  # drawn once the project has an eval set
    idle(page)
    systems.locator("input").first.click()
    page.keyboard.type("Base model (no adapter), with retrieved")  # the one option that matches
    page.keyboard.press("Enter")
    page.keyboard.press("Escape")
    idle(page)
    chosen = body(page)
    assert "with retrieved documents" in chosen and f"Run {run_id}: rag-run" in chosen, chosen
    set_field(page, "Max new tokens", "8")
    page.get_by_role("button", name="Start generation").click()
    wait_text(page, " new tokens in ", timeout=JOB_WAIT)  # the job's card once it succeeded
    idle(page)
    shot(page, "rag-03-generated")

    rag = _outputs(server, "base+rag")
    assert rag and all(tokens > 0 for tokens, _ in rag), rag[:3]
    assert any(context not in ("[]", "", None) for _, context in rag), "no +rag answer kept its passages"

    # 6. Results: base+RAG beside the run (their cost columns: tests/test_results_systems.py); the passages are
    # there for engineers.
    go(page, "Results")
    page.get_by_text("Systems side by side").first.wait_for()
    idle(page)
    grid = grid_text(page)
    assert "with retrieved documents" in grid and f"run {run_id}: rag-run".lower() in grid.lower(), grid
    assert "Passages given to the +RAG answers" in body(page)
    shot(page, "rag-04-results")

"""The curation loop in a real browser: import a file, annotate with the keyboard, submit, approve as a
reviewer, freeze a version and export it."""
import json
import os
import subprocess
import sys
import zipfile
from pathlib import Path

import pytest

from tests.e2e.conftest import login, logout, shot, wait_idle

pytestmark = pytest.mark.e2e
ROOT = Path(__file__).resolve().parents[2]
PASSWORD = "e2e-password-123"


def add_user(server, name: str, role: str) -> None:
    env = dict(os.environ, FINETUNE_STUDIO_HOME=str(server.workspace))
    env.pop("DATABASE_URL", None)
    subprocess.run([sys.executable, "-m", "core.cli", "users", "add", name, "--role", role, "--password", PASSWORD],
                   check=True, env=env, cwd=ROOT, capture_output=True, timeout=120)


def go(page, title: str) -> None:
    page.get_by_role("link", name=title, exact=True).click()
    wait_idle(page)


def test_import_annotate_review_freeze_export(server, page, tmp_path):
    add_user(server, "anna", "annotator")
    add_user(server, "rex", "reviewer")
    data = tmp_path / "new_questions.jsonl"
    data.write_text("\n".join(json.dumps(r) for r in [
        {"instruction": "How do I read my new smart meter display?", "input": "", "output": "Press button A."},
        {"instruction": "Can I get paper bills instead of email?", "input": "", "output": "Yes, ask us."},
        {"instruction": "broken line", "output": ""},
    ]) + "\n", encoding="utf-8")

    # An annotator imports the file: two good records, one rejected with its line number.
    login(page, server.url, "anna", PASSWORD)
    go(page, "Import")
    page.locator('input[type="file"]').set_input_files(str(data))
    page.get_by_role("button", name="Import", exact=True).wait_for()
    wait_idle(page)
    page.get_by_role("button", name="Import", exact=True).click()
    page.get_by_text("Report").wait_for()
    wait_idle(page)
    body = page.inner_text("body")
    assert "Imported" in body and "Rejected" in body
    assert "Imported\n\n2" in body and "Rejected\n\n1" in body, body
    shot(page, "c1-import-report")

    # ... annotates the first draft with the keyboard only, and submits it (Ctrl+Shift+Enter).
    go(page, "Annotate")
    response = page.get_by_label("Response", exact=True).first
    response.wait_for()
    assert "Press button A." in response.input_value()
    response.click()
    page.keyboard.press("Control+A")
    page.keyboard.type("Press the blue button once to cycle through the readings; the number marked 'IMP' is "
                       "what you send us.")
    # Straight from typing to the shortcut: the typed text is what gets submitted.
    page.keyboard.press("Control+Shift+Enter")
    page.get_by_text("Submitted #", exact=False).wait_for()
    wait_idle(page)
    shot(page, "c2-annotate-submitted")
    logout(page)

    # A reviewer approves it with the keyboard (Alt+A).
    login(page, server.url, "rex", PASSWORD)
    go(page, "Review data")
    page.get_by_text("cycle through the readings").wait_for()
    shot(page, "c3-review")
    page.keyboard.press("Alt+a")
    page.get_by_text("Nothing waiting for review.").wait_for()
    wait_idle(page)

    # ... freezes a version, which now holds the demo examples and the new one, and exports it.
    go(page, "Datasets")
    page.get_by_label("Name", exact=True).fill("e2e-v1")
    page.get_by_role("button", name="Freeze").click()
    page.get_by_text("Froze e2e-v1").wait_for()
    wait_idle(page)
    shot(page, "c4-frozen")
    page.get_by_role("button", name="Prepare export").click()
    download_button = page.get_by_test_id("stDownloadButton").get_by_role("button")
    download_button.wait_for()
    with page.expect_download() as info:
        download_button.click()
    exported = tmp_path / info.value.suggested_filename
    info.value.save_as(exported)
    with zipfile.ZipFile(exported) as zf:  # a file per split, with its dataset card
        assert {"train.json", "README.md", "dataset_info.json"} <= set(zf.namelist())
        text = "".join(zf.read(name).decode("utf-8") for name in zf.namelist())
    assert "cycle through the readings" in text
    shot(page, "c5-exported")

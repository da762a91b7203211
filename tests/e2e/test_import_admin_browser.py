"""Import and Admin in a real browser, as a new user tries them (issue 18): the import report belongs to the file
it was made for, is shown once and keeps its labels whole; an admin is asked before disabling a user, told it was
done, and resets a password in the browser."""
import json

import pytest

from tests.e2e.conftest import cli, login, logout, shot, wait_idle

pytestmark = pytest.mark.e2e
PASSWORD = "e2e-password-123"


def cut_metric_labels(page) -> list[str]:
    """Metric labels shown cut short (text wider than its box)."""
    return page.evaluate("""() => [...document.querySelectorAll('[data-testid=stMetricLabel]')]
        .filter(m => [m, ...m.querySelectorAll('*')].some(e => e.scrollWidth > e.clientWidth + 1))
        .map(m => m.innerText)""")


def main_text(page) -> str:
    return page.inner_text('[data-testid="stMain"]')


def choose(page, path) -> None:
    page.locator('input[type="file"]').set_input_files(str(path))
    page.get_by_role("button", name="Import", exact=True).wait_for()
    wait_idle(page)


def test_import_report_follows_the_file_is_shown_once_and_labels_fit(server, page, tmp_path):
    cli(server, "users", "add", "impann", "--role", "annotator", "--password", PASSWORD)
    first = tmp_path / "first_batch.jsonl"
    first.write_text("\n".join(json.dumps(r) for r in [
        {"instruction": "Where is the stopcock in a flat?", "input": "", "output": "Usually under the sink."},
        {"instruction": "How do I report a gas smell?", "input": "", "output": "Call the emergency line."},
        {"instruction": "broken line", "output": ""}]) + "\n", encoding="utf-8")
    second = tmp_path / "second_batch.jsonl"
    second.write_text(json.dumps({"instruction": "Can I pay my bill in a shop?", "input": "",
                                  "output": "Yes, at any PayPoint."}) + "\n", encoding="utf-8")
    page.set_viewport_size({"width": 1024, "height": 768})
    login(page, server.url, "impann", PASSWORD)
    page.get_by_role("link", name="Import", exact=True).click()
    wait_idle(page)

    choose(page, first)
    page.get_by_role("button", name="Import", exact=True).click()
    page.get_by_role("heading", name="Report").wait_for()
    wait_idle(page)
    shot(page, "i1-import-report-1024")
    assert main_text(page).count("Imported 2 of 3 records") == 1, main_text(page)
    assert cut_metric_labels(page) == []

    # Another file: the first file's report goes; importing it shows its own report, once.
    choose(page, second)
    assert "Imported 2 of 3 records" not in main_text(page)
    assert page.get_by_role("heading", name="Report").count() == 0
    page.get_by_role("button", name="Import", exact=True).click()
    page.get_by_text("Imported 1 of 1 records").first.wait_for()
    wait_idle(page)
    assert main_text(page).count("Imported 1 of 1 records") == 1, main_text(page)
    assert "Imported 2 of 3 records" not in main_text(page)


def test_admin_confirms_a_disable_and_resets_a_password_in_the_browser(server, page):
    cli(server, "users", "add", "olga", "--role", "reviewer", "--password", PASSWORD)
    admin, admin_password = server.admin_credentials()
    login(page, server.url, admin, admin_password)
    page.get_by_role("link", name="Admin", exact=True).click()
    page.get_by_role("heading", name="Change a user").wait_for()
    wait_idle(page)
    shot(page, "i2-admin")
    page.get_by_label("User", exact=True).first.click()
    page.get_by_role("option", name="olga", exact=True).click()
    wait_idle(page)
    page.get_by_role("button", name="Disable", exact=True).click()
    page.get_by_role("button", name="Yes, disable olga").click()
    page.get_by_text("Disabled olga: signed out of every browser").wait_for()
    wait_idle(page)
    page.get_by_role("button", name="Enable", exact=True).click()
    page.get_by_text("Enabled olga").wait_for()
    wait_idle(page)
    page.get_by_role("button", name="Reset password").click()
    page.get_by_role("button", name="Yes, reset olga's password").click()
    page.get_by_text("New password for olga, shown once").wait_for()
    wait_idle(page)
    shot(page, "i2-admin-password-reset")
    new_password = page.get_by_test_id("stCode").inner_text().strip()
    logout(page)
    login(page, server.url, "olga", new_password)

"""Train in a real browser at a laptop's sizes (issue 18): right after the click on Train the run is shown, queued,
in a live panel that is in view without scrolling; Cancel on a running run says at once that the run stops at
its next step."""
from __future__ import annotations

import re
import time

import pytest
from sqlmodel import select

from tests.e2e.conftest import ARTIFACTS, login, shot, wait_idle
from tests.fixtures_jobs import add_job, stubborn_process
from tests.fixtures_models import make_dataset_version, tiny_model_fixture  # noqa: F401 (the tiny_model fixture)

pytestmark = [pytest.mark.e2e, pytest.mark.timeout(600)]

SUMMARY = ".st-key-live-summary"  # the live panel's run selector, status, controls and figures


_BOX_JS = """(sel) => { const r = document.querySelector(sel).getBoundingClientRect();
        return {top: r.top, bottom: r.bottom, height: window.innerHeight,
                inside: r.top >= 0 && r.bottom <= window.innerHeight && r.height > 0}; }"""


def _wait_inside(page, selector: str) -> None:
    """Wait until the element's whole bounding box is inside the window; fail with where it is."""
    try:
        page.wait_for_function(f"(sel) => ({_BOX_JS})(sel).inside", arg=selector, timeout=15_000)
    except Exception:
        raise AssertionError(f"{selector} is not in view: {page.evaluate(_BOX_JS, selector)}") from None


_PANEL_JS = """() => {
        const find = (sel, text) => [...document.querySelectorAll(sel)].find(e => e.innerText.trim().startsWith(text));
        const run = document.querySelector('[data-testid="stSelectbox"] input[aria-label="Run"]');
        const parts = {run: run && run.closest('[data-testid="stSelectbox"]'),
                       status: find('[data-testid="stMarkdown"]', 'Status:'), cancel: find('button', 'Cancel')};
        const out = {window: window.innerHeight};
        for (const [name, e] of Object.entries(parts)) {
            const r = e ? e.getBoundingClientRect() : null;
            out[name] = r ? [Math.round(r.top), Math.round(r.bottom)] : null;
            out[name + '_in_view'] = !!r && r.top >= 0 && r.bottom <= window.innerHeight;
        }
        return out; }"""


def _panel_in_view(page) -> dict:
    """Where the live panel's run selector, its status line and its Cancel button are, against the window."""
    return page.evaluate(_PANEL_JS)


def _wait_in_view(page) -> None:
    """Wait (the page is still settling after the click) until the panel's run, status and Cancel are all in the
    window, with no scrolling by the test; fail with where they are when they never are."""
    try:
        page.wait_for_function(f"""() => {{ const w = ({_PANEL_JS})();
            return w.run_in_view && w.status_in_view && w.cancel_in_view; }}""", timeout=15_000)
    except Exception:
        raise AssertionError(f"the live panel is not in view: {_panel_in_view(page)}") from None


def _shots(page, name: str) -> None:
    """The whole page, and the window as the user sees it."""
    shot(page, name)
    page.screenshot(path=str(ARTIFACTS / f"{name}-window.png"))


def _pick_run(page, label: str) -> None:
    page.locator(SUMMARY).get_by_label("Run", exact=True).click()
    page.get_by_role("option", name=label).click()
    wait_idle(page)


@pytest.mark.parametrize("width,height", [(1400, 1000), (1024, 768)])
def test_the_run_is_in_view_at_once_and_cancel_says_so(server, server_db, browser, tiny_model, width, height):
    from storage.models import Job, Project, User

    admin = server_db.exec(select(User).where(User.role == "admin")).first()
    project = server_db.exec(select(Project).order_by(Project.id)).first()
    make_dataset_version(server_db, project, admin, n_train=4, n_validation=1, name=f"v-{width}")
    ctx = browser.new_context(viewport={"width": width, "height": height})
    page = ctx.new_page()
    page.set_default_timeout(30_000)
    # A run in the middle of a long step holds the machine's one slot: the new run waits in the queue.
    with stubborn_process() as proc:
        busy = add_job(server_db, project, admin, name=f"long-step-{width}", pid=proc.pid,
                       metrics=[{"step": 1, "total_steps": 50, "loss": 2.5}])
        try:
            login(page, server.url, *server.admin_credentials())
            page.get_by_role("link", name="Train", exact=True).click()
            wait_idle(page)
            page.get_by_text("New run").first.click()  # folded while a run is live
            page.get_by_text("Local model folder").click()
            wait_idle(page)
            page.get_by_label("Folder path").fill(str(tiny_model))
            page.get_by_label("Folder path").press("Tab")
            wait_idle(page)
            page.get_by_label("Run name (optional)").fill(f"e2e-queued-{width}")
            page.get_by_label("Run name (optional)").press("Tab")
            wait_idle(page)
            train = page.get_by_role("button", name=re.compile(r"^Train\b"))  # its name carries the shortcut
            page.wait_for_function("""() => [...document.querySelectorAll('button')]
                .some(b => b.innerText.trim().startsWith('Train') && !b.disabled)""", timeout=120_000)
            # As a user scrolls: just far enough that the button shows at the bottom of the window.
            train.evaluate("b => b.scrollIntoView({block: 'end'})")
            clicked = time.monotonic()
            train.click()
            page.get_by_text("Status: queued").wait_for(timeout=60_000)
            print(f"{width}x{height}: the queued run was shown {time.monotonic() - clicked:.1f} s after the click")
            wait_idle(page)
            _wait_in_view(page)
            _shots(page, f"train-1-queued-{width}")
            new = server_db.exec(select(Job).where(Job.name == f"e2e-queued-{width}")).one()
            shown = page.locator(SUMMARY).get_by_label("Run", exact=True).input_value()
            assert shown == f"#{new.id} e2e-queued-{width} (queued)"
            _wait_inside(page, SUMMARY)
            # Cancel on the running run: the panel says the run stops at its next step, in the same click.
            _pick_run(page, f"#{busy.id} long-step-{width} (running)")
            page.locator(f".st-key-cancel{busy.id} button").click()  # by its key: that run's Cancel, not a stale one
            page.locator(SUMMARY).get_by_text("Cancel requested — stopping at the next step").wait_for(timeout=15_000)
            page.locator(f".st-key-cancel{busy.id}").wait_for(state="detached", timeout=15_000)  # asked once
            server_db.refresh(busy)
            assert busy.status == "running" and busy.cancel_requested  # the process is still finishing its step
            _shots(page, f"train-2-cancel-requested-{width}")
            _wait_inside(page, SUMMARY)
        except Exception:
            shot(page, f"train-failed-{width}")
            raise
        finally:
            ctx.close()
            server_db.expire_all()
            queued = server_db.exec(select(Job).where(Job.name == f"e2e-queued-{width}")).first()
            if queued is not None and queued.status == "queued":
                queued.status = "canceled"  # never trains: this test is about what the page shows
                server_db.add(queued)
                server_db.commit()

"""Train and Runs pages, driven through Streamlit's AppTest as an engineer would use them."""
from __future__ import annotations

import json
from pathlib import Path

import pytest
from streamlit.testing.v1 import AppTest

from tests.fixtures_models import make_dataset_version, tiny_model_fixture  # noqa: F401 (the tiny_model fixture)
from tests.test_train import wait_for

ROOT = Path(__file__).resolve().parents[1]
pytestmark = pytest.mark.timeout(600)


def _page(name: str, user) -> AppTest:
    at = AppTest.from_file(str(ROOT / "pages" / name), default_timeout=60)
    at.session_state["user_id"] = user.id
    return at


def _text(at: AppTest) -> str:
    parts = []
    for kind in ("markdown", "caption", "error", "warning", "info", "success", "title", "subheader"):
        parts += [str(getattr(el, "value", "")) for el in getattr(at, kind)]
    return "\n".join(parts)


@pytest.mark.parametrize("name", ["train.py", "runs.py"])
def test_pages_refuse_roles_without_train(name, users, project):
    for role in ("reviewer", "annotator"):
        at = _page(name, users[role]).run()
        assert not at.exception
        assert "Your role cannot use this page." in [e.value for e in at.error]


def test_train_page_without_a_version_explains_how_to_freeze(users, project):
    at = _page("train.py", users["engineer"]).run()
    assert not at.exception, [e.value for e in at.exception]
    assert "freeze" in _text(at).lower() and "Datasets" in _text(at)
    assert "QLoRA" not in _text(at)  # no form without data


def test_engineer_launches_quick_preset_and_watches_it(session, users, project, tiny_model):
    from core.jobs.queue import cancel

    make_dataset_version(session, project, users["engineer"], n_train=6, n_validation=2)
    at = _page("train.py", users["engineer"]).run()
    assert not at.exception, [e.value for e in at.exception]
    text = _text(at)
    assert "CPU only" in text and "QLoRA on this CPU" not in text  # the note comes with the choice
    # The quick preset is the default, and its values fill the form.
    assert at.number_input(key="quick-batch").value == 4
    assert at.number_input(key="quick-len").value == 256
    at.radio(key="source").set_value("Local model folder").run()
    at.text_input(key="model_path").input(str(tiny_model)).run()
    at.number_input(key="quick-steps").set_value(2).run()
    assert "Estimated peak" in [m.label for m in at.metric]
    next(b for b in at.button if b.label == "Train").click().run()
    assert not at.exception, [e.value for e in at.exception]
    assert not at.error, [e.value for e in at.error]
    job_id = at.session_state["watch_job"]
    assert "Status:** running" in _text(at) or "Status:** queued" in _text(at)
    cfg = json.loads((Path(next(iter(_runs(session))).run_dir) / "config.json").read_text())
    assert cfg["preset"] == "quick" and cfg["max_steps"] == 2 and cfg["base_model"] == str(tiny_model)
    job = wait_for(session, job_id)
    if job.status == "running":  # pragma: no cover - wait_for returns only on a final status
        cancel(session, users["engineer"], job_id)
    assert job.status == "succeeded", job.error
    at.run()  # the live view now shows the finished run
    assert "Status:** succeeded" in _text(at)
    assert "Validation loss" in [m.label for m in at.metric]


def _runs(session):
    from core.jobs.queue import list_jobs

    return list_jobs(session, kind="train")


def test_runs_page_compares_two_runs(session, users, project, workspace):
    from storage.models import Job

    version = make_dataset_version(session, project, users["engineer"], n_train=4, n_validation=1)
    for i, lr in enumerate((2e-4, 5e-4), start=1):
        run_dir = workspace / "runs" / f"0000{i}-run"
        run_dir.mkdir(parents=True)
        (run_dir / "metrics.jsonl").write_text("".join(
            json.dumps({"step": s, "loss": 2.0 - 0.1 * s * i, "eval_loss": None}) + "\n" for s in range(1, 4)))
        (run_dir / "train.log").write_text(f"run {i} log line\n")
        session.add(Job(project_id=project.id, kind="train", module="core.train.worker", name=f"run{i}", status="succeeded",
                        run_dir=str(run_dir), dataset_version_id=version.id,
                        config={"method": "lora", "learning_rate": lr},
                        result={"metrics": {"train_loss": 1.5, "eval_loss_first": 2.5,
                                            "eval_loss_last": 2.0 - i / 10}}))
    session.commit()
    at = _page("runs.py", users["engineer"]).run()
    assert not at.exception, [e.value for e in at.exception]
    at.multiselect(key="compare_ids").set_value([1, 2]).run()
    assert not at.exception, [e.value for e in at.exception]
    diff = at.dataframe[1].value
    assert list(diff["setting"]) == ["learning_rate"]
    assert "Merge and export" in [b.label for b in at.button]
    assert any("log line" in c.value for c in at.code)

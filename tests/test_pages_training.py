"""Train and Runs pages, driven through Streamlit's AppTest as an engineer would use them."""
from __future__ import annotations

import json
from pathlib import Path

import pytest
from streamlit.testing.v1 import AppTest

from tests.fixtures_models import make_dataset_version
from core.jobs.queue import list_jobs
from tests.helpers import wait_for

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


@pytest.mark.slow
def test_engineer_launches_quick_preset_and_watches_it(session, users, project, tiny_model):
    make_dataset_version(session, project, users["engineer"], n_train=6, n_validation=2)
    at = _page("train.py", users["engineer"]).run()
    assert not at.exception, [e.value for e in at.exception]
    text = _text(at)
    assert "CPU only" in text and "QLoRA on this CPU" not in text  # the note comes with the choice
    # The quick preset is the default, and its values fill the form.
    assert at.number_input(key="quick-batch").value == 2
    assert at.number_input(key="quick-len").value == 256
    assert at.number_input(key="quick-maxtrain").value == 800  # the preset's sample reaches the launched config
    at.radio(key="source").set_value("Local model folder").run()
    at.text_input(key="model_path").input(str(tiny_model)).run()
    at.number_input(key="quick-steps").set_value(2).run()
    assert "Estimated peak" in [m.label for m in at.metric]
    next(b for b in at.button if b.label == "Train").click().run()
    assert not at.exception, [e.value for e in at.exception]
    assert not at.error, [e.value for e in at.error]
    job_id = at.selectbox(key="watch_select").value
    assert "Status:** running" in _text(at) or "Status:** queued" in _text(at)
    cfg = json.loads((Path(next(iter(_runs(session))).run_dir) / "config.json").read_text())
    assert cfg["preset"] == "quick" and cfg["max_steps"] == 2 and cfg["base_model"] == str(tiny_model)
    assert cfg["max_train_examples"] == 800 and cfg["max_validation_examples"] == 32
    job = wait_for(session, job_id)
    assert job.status == "succeeded", job.error
    at.run()  # the live view now shows the finished run
    assert "Status:** succeeded" in _text(at)
    assert "Validation loss" in [m.label for m in at.metric]


def _runs(session):
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
        session.add(Job(project_id=project.id, kind="train", module="core.train.train_job", name=f"run{i}",
                        status="succeeded",
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
    assert "Export" not in [b.label for b in at.button]  # these runs saved no model: nothing to export
    assert any("log line" in c.value for c in at.code)


@pytest.mark.slow
def test_runs_page_exports_a_merged_model_as_a_background_job(session, users, project, workspace, tiny_model):
    """"Export" queues a job instead of merging inside the button handler; the job writes a folder that
    transformers loads without peft and that answers like the adapter on its base."""
    import torch
    from peft import LoraConfig, get_peft_model
    from transformers import AutoModelForCausalLM, AutoTokenizer

    from core.train.config import TrainConfig
    from storage.models import Job

    run_dir = workspace / "runs" / "00001-lora"
    run_dir.mkdir(parents=True)
    torch.manual_seed(0)
    peft_model = get_peft_model(AutoModelForCausalLM.from_pretrained(tiny_model),
                                LoraConfig(r=4, lora_alpha=8, target_modules=["q_proj", "v_proj"],
                                           init_lora_weights=False))
    peft_model.save_pretrained(run_dir)
    AutoTokenizer.from_pretrained(tiny_model).save_pretrained(run_dir)
    (run_dir / "config.json").write_text(TrainConfig(base_model=str(tiny_model), dataset_version_id=1).to_json())
    session.add(Job(project_id=project.id, kind="train", module="core.train.train_job", name="lora", status="succeeded",
                    run_dir=str(run_dir), config={"method": "lora"}))
    session.commit()
    out = workspace / "exports" / "run-1"
    at = _page("runs.py", users["engineer"]).run()
    at.text_input[0].set_value(str(out))
    next(m for m in at.multiselect if m.label == "Formats").set_value(["merged"])
    next(c for c in at.checkbox if c.label == "Parity check").uncheck()
    next(b for b in at.button if b.label == "Export").click().run()
    assert not at.exception, [e.value for e in at.exception]
    export = next(j for j in list_jobs(session, kind="export"))
    assert export.status in ("queued", "running") and not out.exists()  # not done in the click
    export = wait_for(session, export.id)
    assert export.status == "succeeded", export.error
    merged = AutoModelForCausalLM.from_pretrained(out / "merged").eval()
    ids = torch.tensor([[1, 5, 9, 42, 7]])
    with torch.no_grad():
        torch.testing.assert_close(merged(ids).logits, peft_model.eval()(ids).logits, rtol=1e-4, atol=1e-4)
    at.run()
    assert any(c.value == str(out) for c in at.code)  # the folder as typed, inert (a code block)
    assert any(c.value == str(out / "merged") for c in at.code)
    assert (out / "merged" / "README.md").read_text().startswith("---\n")  # every export has its model card

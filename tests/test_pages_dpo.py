"""The DPO controls of the Train page, the preference section of Datasets and the DPO section of Results,
driven through AppTest as an engineer uses them."""
from __future__ import annotations

import json
from pathlib import Path

import pytest
from streamlit.testing.v1 import AppTest

from core.curate.preference_versions import import_preference_file
from storage.models import Job, JobStatus
from tests.helpers import make_outputs, score_all, wait_for

ROOT = Path(__file__).resolve().parents[1]
pytestmark = pytest.mark.timeout(600)
PAIRS = "\n".join(json.dumps({"prompt": f"Meter {i}?", "chosen": "Under the stairs.", "rejected": "No idea."})
                  for i in range(4)).encode()


def _page(name: str, user) -> AppTest:
    at = AppTest.from_file(str(ROOT / "pages" / name), default_timeout=60)
    at.session_state["user_id"] = user.id
    return at


def _sft_run(session, project, user, tiny_model, folder: Path) -> Job:
    """A succeeded LoRA run of the tiny model with a real (untrained) adapter in its folder."""
    from peft import LoraConfig, get_peft_model
    from transformers import AutoModelForCausalLM

    from core.train.config import TrainConfig

    model = get_peft_model(AutoModelForCausalLM.from_pretrained(tiny_model),
                           LoraConfig(r=4, target_modules="all-linear", task_type="CAUSAL_LM"))
    model.save_pretrained(folder)
    cfg = TrainConfig(base_model=str(tiny_model), dataset_version_id=1, lora_r=4)
    (folder / "config.json").write_text(cfg.to_json())
    job = Job(project_id=project.id, kind="train", name="sft-run", status=JobStatus.succeeded.value,
              run_dir=str(folder), config=cfg.to_dict(), created_by=user.id)
    session.add(job)
    session.commit()
    return job


@pytest.mark.slow
def test_train_form_launches_a_dpo_run_continuing_an_sft_run(session, users, project, tiny_model, tmp_path):
    eng = users["engineer"]
    prefs = import_preference_file(session, eng, project.id, "file prefs", PAIRS, "p.jsonl")
    sft = _sft_run(session, project, eng, tiny_model, tmp_path / "sft")
    at = _page("train.py", eng).run()  # no dataset version: a preference version is enough for DPO
    assert not at.exception, [e.value for e in at.exception]
    at.radio(key="quick-method").set_value("dpo").run()
    assert at.selectbox(key="prefs_version").value["id"] == prefs.id
    assert at.number_input(key="quick-lrdpo").value == 5e-5  # DPO's own default, not the SFT preset's
    at.selectbox(key="init_run").set_value(sft).run()
    at.number_input(key="dpo_beta").set_value(0.25).run()
    at.selectbox(key="dpo_loss").set_value("ipo").run()
    at.number_input(key="quick-steps").set_value(1).run()
    assert "Estimated peak" in [m.label for m in at.metric]
    next(b for b in at.button if b.label == "Train").click().run()
    assert not at.exception and not at.error, [e.value for e in at.error]
    job_id = at.selectbox(key="watch_select").value
    cfg = json.loads((Path(session.get(Job, job_id).run_dir) / "config.json").read_text())
    assert (cfg["method"], cfg["preference_version_id"], cfg["init_from_run"], cfg["dpo_beta"],
            cfg["dpo_loss_type"], cfg["base_model"], cfg["dataset_version_id"]) == \
        ("dpo", prefs.id, sft.id, 0.25, "ipo", str(tiny_model), 0)
    job = wait_for(session, job_id)
    assert job.status == JobStatus.succeeded.value, job.error
    at.run()  # the live panel charts the reward margin and accuracy beside the loss
    specs = [c.proto.spec for c in at.get("vega_lite_chart")]
    assert any("reward margin (chosen - rejected)" in spec for spec in specs) or \
        any("reward margin" in str(c.proto) for c in at.get("vega_lite_chart")), specs


def test_results_freezes_votes_and_shows_disagreement(session, users, project, reviewers):
    es, systems = make_outputs(session, project, users["engineer"], n_prompts=4, runs=1)
    score_all(session, es, reviewers[:2])
    at = _page("results.py", users["engineer"]).run()
    assert not at.exception, [e.value for e in at.exception]
    metrics = {m.label: m.value for m in at.metric}
    assert metrics["Pairs from votes"] == "4" and metrics["Even split (dropped)"] == "0"
    next(b for b in at.button if b.label == "Freeze preference version from these votes").click().run()
    assert not at.exception and not at.error, [e.value for e in at.error]
    assert any("Froze 4 pairs" in s.value for s in at.success)

    at = _page("dataset_versions.py", users["engineer"]).run()
    table = at.dataframe[-1].value
    assert list(table["pairs"]) == [4] and "4 pairs from 4 voted items" in table["from"][0]


@pytest.mark.slow
def test_train_form_refuses_dpo_pairs_that_repeat_another_eval_set_until_excluded(session, users, project, tiny_model,
                                                                                  tmp_path):
    from core.evaluate.evalsets import create_eval_set_from_file
    from core.jobs.queue import list_jobs
    from tests.fixtures_jobs import add_job, live_process

    eng = users["engineer"]
    import_preference_file(session, eng, project.id, "file prefs", PAIRS, "p.jsonl")
    create_eval_set_from_file(session, eng, project.id, "held out", json.dumps({"prompt": "meter 2?"}) + "\n",
                              "held.jsonl")
    with live_process() as proc:  # holds the one slot: the launched run waits in the queue instead of training
        add_job(session, project, eng, name="busy", pid=proc.pid)
        at = _page("train.py", eng).run()
        at.radio(key="quick-method").set_value("dpo").run()
        at.radio(key="source").set_value("Local model folder").run()
        at.text_input(key="model_path").input(str(tiny_model)).run()
        assert not at.exception, [e.value for e in at.exception]
        assert any("1 pair(s) of this preference version repeat an eval prompt" in w.value for w in at.warning)
        next(b for b in at.button if b.label == "Train").click().run()
        assert any("1 training pair(s) repeat an eval prompt" in e.value for e in at.error), \
            [e.value for e in at.error]
        at.button(key="exclude_leaked").click().run()
        assert not any("repeat an eval prompt" in w.value for w in at.warning)
        next(b for b in at.button if b.label == "Train").click().run()
        assert not at.error, [e.value for e in at.error]
    session.expire_all()
    launched = next(j for j in list_jobs(session, kind="train") if j.name != "busy")
    assert launched.config["method"] == "dpo" and len(launched.config["exclude_pair_ids"]) == 1

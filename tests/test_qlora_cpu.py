"""QLoRA on a CPU: bitsandbytes' NF4 Linear4bit layers run forward and backward there, so the QLoRA path is
exercised for real (two steps on the tiny model through the real worker), and the Train page offers it with a
note on speed instead of refusing it."""
from __future__ import annotations

from pathlib import Path

import pytest
from streamlit.testing.v1 import AppTest

from core.train.config import TrainConfig
from storage.models import JobStatus
from tests.fixtures_models import make_dataset_version
from tests.helpers import wait_for

ROOT = Path(__file__).resolve().parents[1]


@pytest.mark.slow
@pytest.mark.timeout(600)
def test_two_qlora_steps_on_the_cpu_through_the_worker(session, users, project, tiny_model):
    from core.train.hardware import detect
    from core.train.runs import launch

    if detect().kind == "cuda":
        pytest.skip("checks the CPU path")
    eng = users["engineer"]
    version = make_dataset_version(session, project, eng, n_train=4, n_validation=1)
    cfg = TrainConfig(base_model=str(tiny_model), dataset_version_id=version.id, method="qlora", max_steps=2,
                      max_length=96, per_device_batch_size=2)
    job = wait_for(session, launch(session, eng, project.id, cfg).id)
    assert job.status == JobStatus.succeeded.value, job.error
    run = Path(job.run_dir)
    log = (run / "train.log").read_text()
    assert "base weights in 4-bit NF4 (bitsandbytes), compute in fp32 on cpu" in log
    assert (run / "adapter_config.json").exists() and (run / "adapter_model.safetensors").exists()
    assert job.result["metrics"]["global_step"] == 2 and job.result["metrics"]["train_loss"] > 0


@pytest.mark.slow
def test_the_train_page_offers_qlora_on_a_cpu_with_a_speed_note(session, users, project):
    from core.train.hardware import detect

    if detect().kind == "cuda":
        pytest.skip("checks the CPU page")
    make_dataset_version(session, project, users["engineer"], n_train=4, n_validation=1)
    at = AppTest.from_file(str(ROOT / "pages/train.py"), default_timeout=60)
    at.session_state["user_id"] = users["engineer"].id
    at.session_state["project_id"] = project.id
    at.run()
    at.radio(key="quick-method").set_value("qlora").run()
    assert not at.exception
    notes = [c.value for c in at.caption]
    assert any("QLoRA on this CPU" in n and "slower than LoRA" in n for n in notes)
    assert not any("NVIDIA GPU" in n for n in notes)
    assert not at.warning  # no refusal from check_launch
    assert "Estimated peak" in [m.label for m in at.metric]

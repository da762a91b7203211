"""DPO training in process on a tiny random model: it keeps training the SFT run's adapter (the base weights do not
move), the saved adapter is that one adapter (generation loads it as base + run folder), and a run resumes from a
DPO checkpoint."""
from __future__ import annotations

import json
from pathlib import Path

import pytest

from core.jobs import rundir
from core.train.config import TrainConfig
from storage.models import Job, JobStatus

pytestmark = [pytest.mark.slow, pytest.mark.timeout(600)]
PAIRS = [{"prompt": [{"role": "user", "content": f"Where is meter {i}?"}],
          "chosen": [{"role": "assistant", "content": "Under the stairs, by the door."}],
          "rejected": [{"role": "assistant", "content": "I do not know."}]} for i in range(4)]


def _sft_adapter(session, project, user, tiny_model, folder: Path) -> Job:
    """A succeeded LoRA run whose adapter is not zero (so it differs from the base)."""
    import torch
    from peft import LoraConfig, get_peft_model
    from transformers import AutoModelForCausalLM

    torch.manual_seed(1)
    model = get_peft_model(AutoModelForCausalLM.from_pretrained(tiny_model),
                           LoraConfig(r=4, target_modules="all-linear", task_type="CAUSAL_LM"))
    with torch.no_grad():
        for name, p in model.named_parameters():
            if "lora_B" in name:
                p.normal_(0, 0.05)
    model.save_pretrained(folder)
    cfg = TrainConfig(base_model=str(tiny_model), dataset_version_id=1, lora_r=4)
    (folder / rundir.CONFIG).write_text(cfg.to_json())
    job = Job(project_id=project.id, kind="train", name="sft", status=JobStatus.succeeded.value, run_dir=str(folder),
              config=cfg.to_dict(), created_by=user.id)
    session.add(job)
    session.commit()
    return job


def _ctx(run_dir: Path, cfg: TrainConfig):
    from core.train import dpo
    from core.train.train_job import Context, _load_base

    ctx = Context(run_dir=run_dir, cfg=cfg)
    dpo.setup(ctx, PAIRS, 2048, _load_base)
    return ctx


def test_dpo_continues_the_sft_adapter_and_resumes(session, project, users, tiny_model, tmp_path):
    import torch
    from peft import PeftModel
    from safetensors.torch import load_file
    from transformers import AutoModelForCausalLM

    from core.train.train_job import fit, save

    sft = _sft_adapter(session, project, users["engineer"], tiny_model, tmp_path / "sft")
    cfg = TrainConfig(base_model=str(tiny_model), method="dpo", preference_version_id=1, init_from_run=sft.id,
                      max_steps=2, save_steps=1, max_length=64, per_device_batch_size=2, learning_rate=1e-2)
    first = tmp_path / "dpo"
    first.mkdir()
    ctx = _ctx(first, cfg)
    base_before = {n: p.detach().clone() for n, p in ctx.model.named_parameters() if "lora_" not in n}
    trainer = fit(ctx)
    save(ctx, trainer)
    after = dict(trainer.model.named_parameters())
    for name, old in base_before.items():  # only the adapter trained
        assert torch.equal(after[name].detach(), old), name
    assert not (first / "ref").exists()
    sft_weights = load_file(tmp_path / "sft" / "adapter_model.safetensors")
    dpo_weights = load_file(first / "adapter_model.safetensors")
    assert sft_weights.keys() == dpo_weights.keys()  # one adapter, the SFT run's, trained further
    assert any(not torch.equal(sft_weights[k], dpo_weights[k]) for k in sft_weights)

    # base + the run folder (as generation and export load a run) gives the trained policy
    ids = ctx.tokenizer.apply_chat_template(PAIRS[0]["prompt"], return_tensors="pt", return_dict=True)
    trainer.model.eval()
    with torch.no_grad():
        expected = trainer.model(**ids).logits
        got = PeftModel.from_pretrained(AutoModelForCausalLM.from_pretrained(tiny_model), first).eval()(**ids).logits
    torch.testing.assert_close(got, expected)

    # resume from the step-1 checkpoint: continues to step 2 with the metrics carried over
    ckpt = first / rundir.CHECKPOINTS / "checkpoint-1"
    assert (ckpt / rundir.COMPLETE_MARKER).exists()
    second = tmp_path / "resumed"
    second.mkdir()
    ctx2 = _ctx(second, cfg.with_overrides(resume_from=str(ckpt)))
    trainer2 = fit(ctx2)
    assert ctx2.start_step == 1 and trainer2.state.global_step == 2
    steps = [json.loads(ln)["step"] for ln in (second / rundir.METRICS).read_text().splitlines()]
    assert steps == [1, 2]


def test_a_dpo_job_cancels_with_its_adapter_and_a_checkpoint_and_resumes(session, project, users, tiny_model):
    """Through the job queue (a real worker process): Cancel stops a DPO run at its next step with the adapter and
    a complete checkpoint saved, and Resume queues a run that continues from that checkpoint."""
    import time

    from core.curate.preference_versions import freeze_preferences
    from core.jobs.queue import cancel, read_metrics
    from core.train.runs import launch, resume_run
    from tests.helpers import wait_for

    eng = users["engineer"]
    prefs = freeze_preferences(session, eng, project.id, "p", PAIRS, [{"kind": "file", "file": "t"}])
    cfg = TrainConfig(base_model=str(tiny_model), method="dpo", preference_version_id=prefs.id, max_steps=5000,
                      max_length=64, per_device_batch_size=2, save_steps=1000)
    job = launch(session, eng, project.id, cfg)
    deadline = time.time() + 300
    while not read_metrics(job) and time.time() < deadline:
        time.sleep(0.5)
        session.refresh(job)
    cancel(session, eng, job.id)
    done = wait_for(session, job.id)
    assert done.status == JobStatus.canceled.value, done.error
    folder = Path(done.run_dir)
    assert (folder / "adapter_model.safetensors").exists() and (folder / "result.json").exists()
    ckpt = rundir.last_complete_checkpoint(done.run_dir)
    assert ckpt is not None
    again = resume_run(session, eng, done.id)
    assert again.config["resume_from"] == str(ckpt) and again.config["method"] == "dpo"
    cancel(session, eng, again.id)
    wait_for(session, again.id)

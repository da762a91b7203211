"""Training: what an engineer sees in a run folder, and that the saved adapter is the model that was trained."""
from __future__ import annotations

import json
from pathlib import Path

import pytest

from core.train.config import TrainConfig
from tests.fixtures_models import DEMO_FILE, make_dataset_version
from tests.helpers import wait_for

pytestmark = pytest.mark.timeout(600)


def _records(n: int) -> list[dict]:
    lines = [json.loads(ln) for ln in DEMO_FILE.read_text(encoding="utf-8").splitlines() if ln.strip()]
    out = []
    for rec in lines[:n]:
        msgs = rec["messages"]
        out.append({"prompt": msgs[:-1], "completion": msgs[-1:]})
    return out


@pytest.mark.slow
def test_lora_trains_adapter_only_and_saved_adapter_gives_same_logits(tiny_model, tmp_path):
    import torch
    from peft import PeftModel
    from transformers import AutoModelForCausalLM

    from core.train.train_job import fit, save, setup

    cfg = TrainConfig(base_model=str(tiny_model), dataset_version_id=1, max_steps=4, max_length=96,
                      per_device_batch_size=2, learning_rate=1e-2, save_steps=100)
    ctx = setup(tmp_path, cfg, {"train": _records(8), "validation": _records(2)})
    before = {n: p.detach().clone() for n, p in ctx.model.named_parameters()}
    trainer = fit(ctx)
    after = dict(trainer.model.named_parameters())
    lora = [n for n in after if "lora_" in n]
    assert lora, "no LoRA parameters were created"
    assert any(not torch.equal(p.detach(), torch.zeros_like(p)) for n, p in after.items() if "lora_B" in n)
    for name, old in before.items():  # every base weight is exactly what it was before training
        peft_name = next(n for n in after if n.endswith(name.replace(".weight", ".base_layer.weight"))
                         or n.endswith(name))
        assert torch.equal(after[peft_name].detach().cpu(), old.cpu()), name

    save(ctx, trainer)
    ids = ctx.tokenizer.apply_chat_template(_records(1)[0]["prompt"], return_tensors="pt", return_dict=True)
    trainer.model.eval()
    with torch.no_grad():
        expected = trainer.model(**ids).logits
        base = AutoModelForCausalLM.from_pretrained(tiny_model)
        reloaded = PeftModel.from_pretrained(base, tmp_path).eval()
        got = reloaded(**ids).logits
    torch.testing.assert_close(got, expected)
    assert ctx.tokenizer.chat_template and (tmp_path / "chat_template.jinja").exists()


def test_precision_on_cpu_is_fp32(tiny_model, tmp_path):
    from core.train.train_job import setup

    cfg = TrainConfig(base_model=str(tiny_model), dataset_version_id=1, max_steps=1, max_length=128)
    ctx = setup(tmp_path, cfg, {"train": _records(2), "validation": []})  # prompts of ~70 tokens: answers fit
    assert ctx.precision == "fp32"
    assert ctx.sft_args.bf16 is False and ctx.sft_args.fp16 is False
    assert {p.dtype for p in ctx.model.parameters()} == {__import__("torch").float32}


def _sized(words: int) -> dict:
    return {"prompt": [{"role": "user", "content": "Tell me about my bill."}],
            "completion": [{"role": "assistant", "content": " ".join(["energy"] * words)}]}


def test_max_length_comes_from_the_data(tiny_model, tmp_path):
    """max_length is the 95th percentile of the examples' token lengths rounded up to 64: with 38 short
    examples and 2 long ones, exactly the 2 long ones are cut, and the project's cap wins over the data."""
    from core.train.train_job import setup

    cfg = TrainConfig(base_model=str(tiny_model), dataset_version_id=1, max_steps=1, max_length=None)
    records = [_sized(60 + i) for i in range(38)] + [_sized(400), _sized(500)]
    ctx = setup(tmp_path, cfg, {"train": records, "validation": []}, project_max_length=4096)
    assert ctx.max_length % 64 == 0 and ctx.max_length < 400
    assert ctx.dataset["n_truncated"] == 2 and ctx.dataset["longest"] > 400
    capped = setup(tmp_path, cfg, {"train": records, "validation": []}, project_max_length=64)
    assert capped.max_length == 64 and capped.dataset["n_truncated"] == 40


def test_examples_whose_prompt_fills_max_length_are_named_and_never_crash_the_run(tiny_model, tmp_path):
    """TRL drops an example whose prompt alone fills max_length (no answer token is left). A validation split of
    only such examples gives a run without validation loss (not an IndexError at the first evaluation); a train
    split of only such examples is refused with what to change."""
    from core.errors import InvalidInput
    from core.train.train_job import setup

    long_prompt = {"prompt": [{"role": "user", "content": "My bill " * 60}],
                   "completion": [{"role": "assistant", "content": "Call us."}]}
    short = _sized(5)
    cfg = TrainConfig(base_model=str(tiny_model), dataset_version_id=1, max_steps=1, max_length=64, packing="off")
    ctx = setup(tmp_path, cfg, {"train": [short, long_prompt], "validation": [long_prompt, long_prompt]})
    assert ctx.eval_ds is None and ctx.sft_args.eval_strategy == "no" and not ctx.sft_args.eval_on_start
    assert ctx.dataset["n_train_answer_cut"] == 1 and ctx.dataset["n_validation"] == 0
    kept = setup(tmp_path, cfg, {"train": [short], "validation": [short, long_prompt]})
    assert len(kept.eval_ds) == 2 and kept.dataset["n_validation_answer_cut"] == 1  # TRL leaves out the one
    with pytest.raises(InvalidInput, match="Every training example's prompt is 64 tokens or longer"):
        setup(tmp_path, cfg, {"train": [long_prompt], "validation": []})


@pytest.mark.slow
def test_a_quick_run_trains_on_a_seeded_sample_of_the_splits(tiny_model, tmp_path):
    from core.train.train_job import setup

    records = {"train": _records(12), "validation": _records(6)}
    cfg = TrainConfig(base_model=str(tiny_model), dataset_version_id=1, max_steps=1, max_length=128,
                      max_train_examples=5, max_validation_examples=2)
    ctx = setup(tmp_path, cfg, records)
    assert (len(ctx.train_ds), len(ctx.eval_ds)) == (5, 2)
    assert ctx.dataset["n_train_available"] == 12 and ctx.dataset["n_validation_available"] == 6
    again = setup(tmp_path, cfg, records)
    assert again.train_ds["prompt"] == ctx.train_ds["prompt"]  # the same seed draws the same sample
    other = setup(tmp_path, cfg.with_overrides(seed=7), records)
    assert other.train_ds["prompt"] != ctx.train_ds["prompt"]
    everything = setup(tmp_path, cfg.with_overrides(max_train_examples=0, max_validation_examples=50), records)
    assert (len(everything.train_ds), len(everything.eval_ds)) == (12, 6)


@pytest.mark.slow
def test_run_folder_holds_exactly_the_documented_files(workspace, session, users, project, tiny_model):
    from core.train.runs import launch

    version = make_dataset_version(session, project, users["engineer"], n_train=6, n_validation=2)
    cfg = TrainConfig(base_model=str(tiny_model), dataset_version_id=version.id, max_steps=4, max_length=96,
                      per_device_batch_size=2, save_steps=2)
    job = launch(session, users["engineer"], project.id, cfg)
    job = wait_for(session, job.id)
    assert job.status == "succeeded", job.error
    run = Path(job.run_dir)
    assert sorted(p.name for p in run.iterdir()) == sorted([
        "config.json", "result.json", "train.log", "metrics.jsonl", "tb", "checkpoints",
        "adapter_config.json", "adapter_model.safetensors", "tokenizer.json", "tokenizer_config.json",
        "chat_template.jinja"])
    assert list((run / "tb").glob("events.out.tfevents.*"))
    assert TrainConfig.from_json((run / "config.json").read_text()) == cfg
    ckpts = sorted((run / "checkpoints").glob("checkpoint-*"))
    assert [c.name for c in ckpts] == ["checkpoint-2", "checkpoint-4"]
    result = json.loads((run / "result.json").read_text())
    assert result["status"] == "succeeded"
    assert result["metrics"]["eval_loss_first"] is not None and result["metrics"]["eval_loss_last"] is not None
    assert result["dataset"]["content_hash"] == version.content_hash
    assert result["versions"]["trl"] and result["memory"]["measured_peak_mb"] > 0
    assert job.estimated_peak_mb and job.measured_peak_mb
    rows = [json.loads(ln) for ln in (run / "metrics.jsonl").read_text().splitlines()]
    train_rows = [r for r in rows if r["loss"] is not None]
    assert [r["step"] for r in train_rows] == [1, 2, 3, 4]
    assert all(r["total_steps"] == 4 and r["learning_rate"] is not None for r in train_rows)
    assert rows[0]["eval_loss"] is not None and rows[0]["step"] == 0  # the base model's validation loss


def test_incomplete_checkpoint_is_skipped(tmp_path):
    from core.jobs.rundir import COMPLETE_MARKER, last_complete_checkpoint

    for step, complete in ((5, True), (10, True), (15, False)):
        ckpt = tmp_path / "checkpoints" / f"checkpoint-{step}"
        ckpt.mkdir(parents=True)
        (ckpt / "adapter_model.safetensors").write_bytes(b"x")
        if complete:
            (ckpt / "trainer_state.json").write_text("{}")
            (ckpt / COMPLETE_MARKER).write_text(str(step))
    (tmp_path / "checkpoints" / "checkpoint-20").mkdir()  # killed before anything was written
    assert last_complete_checkpoint(tmp_path).name == "checkpoint-10"
    assert last_complete_checkpoint(tmp_path / "nothing-here") is None


def test_out_of_memory_is_named_with_advice():
    import torch

    from core.jobs.worker import is_oom
    from core.train.train_job import oom_advice

    assert is_oom(torch.OutOfMemoryError("CUDA out of memory. Tried to allocate 2.00 GiB"))
    assert is_oom(RuntimeError("CUDA out of memory"))
    assert not is_oom(ValueError("bad value"))
    advice = oom_advice(TrainConfig(per_device_batch_size=8), 1024)
    assert "Out of memory" in advice and "batch" in advice and "1024" in advice
    assert "gradient_checkpointing" in advice and "QLoRA" in advice


def test_packing_auto_pads_with_sdpa_and_packing_on_is_exact(tiny_model):
    import torch
    from transformers import AutoModelForCausalLM

    from core.train.sft import use_padding_free

    model = AutoModelForCausalLM.from_pretrained(tiny_model).eval()
    assert model.config._attn_implementation == "sdpa"
    assert use_padding_free(TrainConfig(packing="off"), model) is False
    assert use_padding_free(TrainConfig(packing="auto"), model) is False  # padded is faster with SDPA on a CPU
    assert use_padding_free(TrainConfig(packing="on"), model) is True
    # What packing="on" relies on with SDPA: two examples in one padding-free row give the same logits as apart.
    a, b = torch.randint(0, 1000, (1, 7)), torch.randint(0, 1000, (1, 5))
    with torch.no_grad():
        apart = torch.cat([model(input_ids=a).logits, model(input_ids=b).logits], dim=1)
        row = torch.cat([a, b], dim=1)
        positions = torch.cat([torch.arange(7), torch.arange(5)]).unsqueeze(0)
        packed = model(input_ids=row, position_ids=positions, use_cache=False).logits
    torch.testing.assert_close(packed, apart, atol=1e-5, rtol=1e-4)


@pytest.mark.slow
def test_lean_cpu_loss_equals_trl_loss_and_gradients(tiny_model, tmp_path):
    """The trainer's CPU loss (answer positions only) is TRL's loss: same value, same LoRA gradients."""
    import torch
    from trl import SFTTrainer

    from core.train.train_job import build_trainer, setup

    cfg = TrainConfig(base_model=str(tiny_model), dataset_version_id=1, max_steps=1, max_length=96,
                      per_device_batch_size=4, lora_dropout=0.0, save_steps=100)
    ctx = setup(tmp_path, cfg, {"train": _records(8), "validation": _records(2)})
    trainer = build_trainer(ctx)
    batch = trainer._prepare_inputs(next(iter(trainer.get_train_dataloader())))
    model = trainer.model
    model.train()
    assert trainer._lean_loss_applies(model, batch, False)
    assert (batch["labels"] == -100).any() and (batch["labels"] != -100).any()  # prompt masked, answer kept

    def loss_and_grads(compute):
        model.zero_grad()
        loss = compute(model, dict(batch))
        loss.backward()
        return loss.detach(), {n: p.grad.clone() for n, p in model.named_parameters() if p.grad is not None}

    lean, lean_grads = loss_and_grads(trainer.compute_loss)
    trl, trl_grads = loss_and_grads(lambda m, b: SFTTrainer.compute_loss(trainer, m, b))
    torch.testing.assert_close(lean, trl, rtol=1e-5, atol=1e-6)
    assert lean_grads.keys() == trl_grads.keys() and lean_grads
    for name in lean_grads:
        torch.testing.assert_close(lean_grads[name], trl_grads[name], rtol=1e-4, atol=1e-7)

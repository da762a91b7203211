"""Many processes on one machine: a run of procs_per_node 2 is real DDP (torchrun, gloo on this CPU), trains exactly
as one process on the same global batch and seed, and only rank 0 writes the database and the run folder; a cancel
reaches every rank, and a rank that dies fails the run with its reason."""
from __future__ import annotations

import json
import re
import signal
from pathlib import Path

import pytest

from core.train.config import TrainConfig
from tests.fixtures_models import make_dataset_version
from tests.helpers import wait_for, wait_until


def _cfg(tiny_model, version_id, **kw) -> TrainConfig:
    # lora_dropout 0: dropout draws differ between one batch of 4 and two batches of 2, the rest is deterministic
    values = dict(base_model=str(tiny_model), dataset_version_id=version_id, max_length=96, lora_dropout=0.0,
                  learning_rate=5e-3, warmup_ratio=0.0, lr_scheduler="constant", max_steps=4, save_steps=2)
    values.update(kw)
    return TrainConfig(**values)


def _losses(run_dir: str) -> dict[int, float]:
    rows = [json.loads(ln) for ln in (Path(run_dir) / "metrics.jsonl").read_text().splitlines() if ln.strip()]
    steps = [r["step"] for r in rows if r["loss"] is not None]
    assert len(steps) == len(set(steps)), f"a step was written twice (by two ranks?): {steps}"
    return {r["step"]: r["loss"] for r in rows if r["loss"] is not None}


def _tensors(run_dir: str) -> dict:
    from safetensors.torch import load_file

    return load_file(str(Path(run_dir) / "adapter_model.safetensors"))


def _files(folder: Path) -> set[str]:
    return {str(p.relative_to(folder)) for p in folder.rglob("*") if p.is_file() and "tb" not in p.parts}


@pytest.mark.slow
@pytest.mark.timeout(900)
def test_two_processes_train_as_one_and_only_rank_0_writes(session, users, project, tiny_model):
    from core.train.runs import launch

    eng = users["engineer"]
    # 16 examples: the length-grouped sampler then forms the same groups of 4 for batch 4 and for 2 x batch 2
    version = make_dataset_version(session, project, eng, n_train=16, n_validation=2)
    one = launch(session, eng, project.id, _cfg(tiny_model, version.id, per_device_batch_size=4), name="one")
    one = wait_for(session, one.id, timeout=600)
    assert one.status == "succeeded", one.error
    two = launch(session, eng, project.id, _cfg(tiny_model, version.id, per_device_batch_size=2, procs_per_node=2),
                 name="two")
    assert (two.slots, two.launcher) == (2, "torchrun")
    two = wait_for(session, two.id, timeout=600)
    assert two.status == "succeeded", two.error

    saved = json.loads((Path(two.run_dir) / "config.json").read_text())
    assert (saved["world_size"], saved["effective_batch_size"], saved["target"]) == (2, 4, "local")
    assert json.loads((Path(one.run_dir) / "config.json").read_text())["effective_batch_size"] == 4

    # The same global batch and seed: the same loss after every step, and the same adapter.
    ref, ddp = _losses(one.run_dir), _losses(two.run_dir)
    assert sorted(ddp) == sorted(ref) == [1, 2, 3, 4]
    for step in ref:
        assert ddp[step] == pytest.approx(ref[step], rel=1e-4), (step, ref, ddp)
    a, b = _tensors(one.run_dir), _tensors(two.run_dir)
    assert a.keys() == b.keys() and a
    for name in a:
        assert (a[name] - b[name]).abs().max().item() < 1e-4, name
    assert any(t.abs().sum() > 0 for n, t in b.items() if "lora_B" in n)  # it did learn

    # Both ranks trained (each names itself in the shared log); only rank 0 logged steps and wrote the folder.
    log = (Path(two.run_dir) / "train.log").read_text()
    assert re.search(r"rank 1: hardware: ", log) and re.search(r"rank 0: hardware: ", log)
    assert re.search(r"rank 0: step 4/4", log) and not re.search(r"rank 1: step \d", log)
    one_files, two_files = _files(Path(one.run_dir)), _files(Path(two.run_dir))
    rng = re.compile(r"checkpoints/checkpoint-\d+/rng_state(_\d)?\.pth")
    # The Trainer keeps one RNG state per rank in each checkpoint (rng_state_0/1.pth, for an exact resume); every
    # other file is the 1-process run's, written once.
    assert {f for f in one_files if not rng.fullmatch(f)} == {f for f in two_files if not rng.fullmatch(f)}
    assert {f for f in two_files if rng.fullmatch(f)} == {f"checkpoints/checkpoint-{s}/rng_state_{r}.pth"
                                                          for s in (2, 4) for r in (0, 1)}
    result = json.loads((Path(two.run_dir) / "result.json").read_text())
    assert result["status"] == "succeeded" and result["metrics"]["global_step"] == 4
    # Rank 1 had no database at all (core.train.distributed.NO_DATABASE): the run succeeding proves it never
    # needed one; the row is rank 0's and the launcher's.
    session.refresh(two)
    assert two.pid and two.result["status"] == "succeeded"


def _ranks(pid: int) -> dict[int, int]:
    """RANK -> pid of the torchrun workers under ``pid``."""
    import psutil

    out = {}
    for child in psutil.Process(pid).children(recursive=True):
        try:
            env = child.environ()
        except psutil.Error:
            continue
        if "RANK" in env and "core.train.train_job" in " ".join(child.cmdline()):
            out[int(env["RANK"])] = child.pid
    return out


@pytest.mark.slow
@pytest.mark.timeout(900)
def test_cancel_reaches_every_rank_and_a_dead_rank_fails_the_run(session, users, project, tiny_model):
    import psutil

    from core.jobs.queue import cancel
    from core.jobs.rundir import COMPLETE_MARKER
    from core.train.runs import launch

    eng = users["engineer"]
    version = make_dataset_version(session, project, eng, n_train=8, n_validation=2)
    cfg = _cfg(tiny_model, version.id, per_device_batch_size=2, procs_per_node=2, max_steps=400, save_steps=2)
    job = launch(session, eng, project.id, cfg, name="canceled")
    wait_until(lambda: len(_losses(job.run_dir)) >= 3 if (Path(job.run_dir) / "metrics.jsonl").exists() else False,
               300, "3 steps")
    ranks = _ranks(job.pid)
    assert sorted(ranks) == [0, 1]
    cancel(session, eng, job.id)
    job = wait_for(session, job.id, timeout=120)
    assert job.status == "canceled", job.error
    wait_until(lambda: not any(psutil.pid_exists(p) and psutil.Process(p).status() != psutil.STATUS_ZOMBIE
                               for p in ranks.values()), 60, "every rank to end")
    stopped = json.loads((Path(job.run_dir) / "result.json").read_text())["metrics"]["global_step"]
    assert (Path(job.run_dir) / "checkpoints" / f"checkpoint-{stopped}" / COMPLETE_MARKER).exists()
    assert (Path(job.run_dir) / "adapter_model.safetensors").exists()

    dead = launch(session, eng, project.id, cfg, name="rank-dies")
    wait_until(lambda: len(_losses(dead.run_dir)) >= 2 if (Path(dead.run_dir) / "metrics.jsonl").exists() else False,
               300, "2 steps")
    psutil.Process(_ranks(dead.pid)[1]).send_signal(signal.SIGKILL)  # a process of the run dies
    dead = wait_for(session, dead.id, timeout=180)
    assert dead.status == "failed", dead.error
    # torchrun stops rank 0 (a stop nobody asked for), or rank 0 loses its connection first: failed either way
    assert dead.error.startswith("Another process of this run failed") and "Resume continues" in dead.error, \
        dead.error
    wait_until(lambda: not _ranks_alive(dead.pid), 60, "torchrun and rank 0 to end")


def _ranks_alive(pid: int) -> bool:
    import psutil

    try:
        return bool(psutil.Process(pid).children(recursive=True))
    except psutil.Error:
        return False


def test_old_configs_and_the_launch_command():
    from core.jobs.queue import _argv
    from storage.models import Job

    old = TrainConfig().to_dict()
    for key in ("procs_per_node", "nodes", "target", "world_size", "effective_batch_size"):
        old.pop(key)
    assert TrainConfig.from_dict({**old, "num_gpus": 0, "launcher": "auto"}).procs_per_node == 1
    assert TrainConfig.from_dict({**old, "num_gpus": 4, "launcher": "accelerate"}).procs_per_node == 4
    assert TrainConfig.from_dict({**old, "num_gpus": 4, "launcher": "python"}).procs_per_node == 1
    cfg = TrainConfig(procs_per_node=3, per_device_batch_size=2, grad_accum=5)
    assert (cfg.world_size, cfg.effective_batch_size) == (3, 30)
    assert TrainConfig.from_json(cfg.to_json()) == cfg
    with pytest.raises(Exception, match="needs a cluster target"):
        TrainConfig(nodes=2)
    with pytest.raises(Exception, match="procs_per_node must be a whole number"):
        TrainConfig(procs_per_node=0)

    job = Job(module="core.train.train_job", run_dir="/r", launcher="torchrun", slots=2)
    argv = _argv(job, 2)
    assert argv[1:6] == ["-m", "torch.distributed.run", "--standalone", "--nproc_per_node", "2"]
    assert argv[6:] == ["-m", "core.train.train_job", "--run-dir", "/r"]
    assert _argv(job, 1)[1:] == ["-m", "core.train.train_job", "--run-dir", "/r"]


def test_command_line_processes_per_node(tmp_path):
    from core.cli.main import build_parser
    from core.cli.train import _settings
    from core.errors import StudioError

    def settings(*argv):
        return _settings(build_parser().parse_args(["train", "--version", "v1", *argv]))[0]

    assert settings("--procs-per-node", "2", "--nodes", "1") == {"procs_per_node": 2, "nodes": 1}
    assert settings("--set", "procs_per_node=3") == {"procs_per_node": 3}
    with pytest.raises(StudioError, match="--procs-per-node 2 and --set procs_per_node=3 disagree"):
        settings("--procs-per-node", "2", "--set", "procs_per_node=3")
    old = tmp_path / "config.json"  # an older run's config.json re-run with --config
    old.write_text(json.dumps({"num_gpus": 2, "launcher": "auto", "lora_r": 8}))
    assert settings("--config", str(old)) == {"lora_r": 8, "procs_per_node": 2}


def test_train_form_counts_every_process_in_the_effective_batch(session, users, project, tiny_model):
    from streamlit.testing.v1 import AppTest

    from core.hardware import detect

    if detect().cpu_cores < 2:
        pytest.skip("two processes need two CPU cores")
    make_dataset_version(session, project, users["engineer"], n_train=6, n_validation=2)
    at = AppTest.from_file(str(Path(__file__).resolve().parents[1] / "pages" / "train.py"), default_timeout=60)
    at.session_state["user_id"] = users["engineer"].id
    at.run()
    at.radio(key="source").set_value("Local model folder").run()
    at.text_input(key="model_path").input(str(tiny_model)).run()
    at.number_input(key="quick-accum").set_value(3).run()
    metric = next(m for m in at.metric if m.label == "Effective batch")
    assert metric.value == "6"  # batch 2 x accumulation 3 x 1 process
    at.number_input(key="quick-procs").set_value(2).run()
    assert not at.exception, [e.value for e in at.exception]
    assert next(m for m in at.metric if m.label == "Effective batch").value == "12"
    assert "Memory estimate per device" in [s.value for s in at.subheader]
    assert any("x 2 processes" in c.value for c in at.caption)  # CPU processes share the machine's memory

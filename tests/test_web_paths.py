"""The web's paths stay inside configured roots (issue 19, "Paths, one rule"): the Runs page's export folder stays
inside the export folders (FINETUNE_STUDIO_EXPORT_ROOTS, default <workspace>/exports) and the Train page's local
base-model folder inside the model folders (FINETUNE_STUDIO_MODEL_ROOTS, default <workspace>/models). A path
outside is refused with one message whether it exists or not, and nothing is written or queued. The command line
is trusted: its user is the OS user."""
from __future__ import annotations

import shutil
from pathlib import Path

import pytest
from streamlit.testing.v1 import AppTest

from core.errors import PermissionDenied
from core.jobs.queue import list_jobs
from core.train.config import TrainConfig
from storage.models import Job, JobStatus
from tests.fixtures_models import make_dataset_version
from tests.helpers import make_outputs

ROOT = Path(__file__).resolve().parents[1]


@pytest.fixture
def default_roots(workspace, monkeypatch):
    """The roots as a fresh install has them: <workspace>/exports and <workspace>/models."""
    monkeypatch.delenv("FINETUNE_STUDIO_EXPORT_ROOTS", raising=False)
    monkeypatch.delenv("FINETUNE_STUDIO_MODEL_ROOTS", raising=False)
    return workspace


def _finished_run(session, project, engineer, tmp_path) -> Job:
    """A succeeded LoRA run whose folder holds an adapter (what the export form needs to be shown)."""
    run_dir = tmp_path / "run-folder"
    run_dir.mkdir()
    (run_dir / "config.json").write_text(TrainConfig().to_json(), encoding="utf-8")
    for name in ("adapter_config.json", "adapter_model.safetensors"):
        (run_dir / name).write_text("{}", encoding="utf-8")
    job = Job(project_id=project.id, kind="train", name="lora-1", status=JobStatus.succeeded.value,
              run_dir=str(run_dir), created_by=engineer.id, config=TrainConfig().to_dict())
    session.add(job)
    session.commit()
    return job


def _outside(tmp_path) -> dict[str, Path]:
    """Three places outside the roots: an existing non-empty folder, an existing empty one, a missing one."""
    full, empty = tmp_path / "elsewhere" / "full", tmp_path / "elsewhere" / "empty"
    full.mkdir(parents=True)
    empty.mkdir()
    (full / "secret.txt").write_text("x", encoding="utf-8")
    return {"full": full, "empty": empty, "missing": tmp_path / "elsewhere" / "missing"}


def _runs_page(user, project) -> AppTest:
    at = AppTest.from_file(str(ROOT / "pages" / "runs.py"), default_timeout=60)
    at.session_state["user_id"] = user.id
    at.session_state["project_id"] = project.id
    return at.run()


def _export_on_the_page(at: AppTest, out: str) -> list[str]:
    box = next(t for t in at.text_input if t.label == "Export folder (new, empty)")
    box.input(out)
    at.checkbox[0].uncheck()  # no parity check: the export form alone
    next(b for b in at.button if b.label == "Export").click().run()
    assert not at.exception, [e.value for e in at.exception]
    return [e.value for e in at.error]


def test_the_runs_page_exports_only_inside_the_export_folders(session, users, project, default_roots, tmp_path):
    eng = users["engineer"]
    _finished_run(session, project, eng, tmp_path)
    outside = _outside(tmp_path)
    at = _runs_page(eng, project)
    said = {name: _export_on_the_page(at, str(path)) for name, path in outside.items()}
    said["dotdot"] = _export_on_the_page(at, str(default_roots / "exports" / ".." / ".." / "elsewhere" / "new"))
    messages = {tuple(m) for m in said.values()}
    assert len(messages) == 1, said  # no "exists" / "is not empty" / "does not exist" oracle
    (message,) = messages.pop()
    assert "export folders" in message and str(default_roots / "exports") in message
    assert "is not empty" not in message and "secret" not in message
    assert not outside["missing"].exists() and list(outside["empty"].iterdir()) == []
    assert not list_jobs(session, kind="export")  # nothing queued

    # A symbolic link inside the export folder that points outside is refused the same way.
    (default_roots / "exports").mkdir(exist_ok=True)
    (default_roots / "exports" / "link").symlink_to(outside["empty"])
    assert _export_on_the_page(at, str(default_roots / "exports" / "link" / "new")) == [message]


def test_launch_export_refuses_outside_the_roots_unless_called_from_the_cli(session, users, project, default_roots,
                                                                          tmp_path):
    from core.ship.deploy import launch_export

    eng = users["engineer"]
    run = _finished_run(session, project, eng, tmp_path)
    outside = _outside(tmp_path)
    refusals = set()
    for path in outside.values():
        with pytest.raises(PermissionDenied) as err:
            launch_export(session, eng, run.id, path, parity_check=False)
        refusals.add(str(err.value))
    assert len(refusals) == 1, refusals
    assert not outside["missing"].exists() and not list_jobs(session, kind="export")
    # Inside the export folder, a used folder may be named as such: it is the engineers' own place.
    used = default_roots / "exports" / "used"
    used.mkdir(parents=True)
    (used / "a").write_text("x", encoding="utf-8")
    with pytest.raises(Exception, match="is not empty"):
        launch_export(session, eng, run.id, used, parity_check=False)
    # The command line's user is the OS user: its --out is any folder the OS lets it write (here: refused only
    # because it is not empty, which the CLI may be told).
    with pytest.raises(Exception, match="is not empty"):
        launch_export(session, eng, run.id, outside["full"], parity_check=False, trusted_paths=True)


def _train_page(user, project) -> AppTest:
    at = AppTest.from_file(str(ROOT / "pages" / "train.py"), default_timeout=60)
    at.session_state["user_id"] = user.id
    at.session_state["project_id"] = project.id
    return at.run()


def _reason_for(at: AppTest, folder: str) -> tuple[list[str], bool]:
    """The warnings the Train page shows for ``folder`` as the local base model (the folder as typed shown as
    <typed>), and whether Train is enabled."""
    at.text_input(key="model_path").input(folder).run()
    assert not at.exception, [e.value for e in at.exception]
    train = next(b for b in at.button if b.label == "Train")
    return [w.value.replace(folder, "<typed>") for w in at.warning], not train.disabled


def test_the_train_page_reads_a_local_base_model_only_inside_the_model_folders(session, users, project,
                                                                              default_roots, tiny_model, tmp_path):
    eng = users["engineer"]
    make_dataset_version(session, project, eng, n_train=6, n_validation=2)
    outside = _outside(tmp_path)
    model_copy = tmp_path / "elsewhere" / "model"  # a real model folder, outside the model folders
    shutil.copytree(tiny_model, model_copy)
    at = _train_page(eng, project)
    at.radio(key="source").set_value("Local model folder").run()
    said = {name: _reason_for(at, str(path)) for name, path in {**outside, "model": model_copy}.items()}
    said["dotdot"] = _reason_for(at, str(default_roots / "models" / ".." / ".." / "elsewhere" / "model"))
    assert {enabled for _, enabled in said.values()} == {False}, said
    messages = {tuple(w) for w, _ in said.values()}
    assert len(messages) == 1, said  # no "no model folder" / "no config.json" / a memory estimate as the oracle
    (message,) = messages.pop()
    assert "model folders" in message and str(default_roots / "models") in message
    assert "Estimated peak" not in [m.label for m in at.metric]

    # Inside the model folders the same model is read, estimated and can be trained.
    inside = default_roots / "models" / "tiny"
    shutil.copytree(tiny_model, inside)
    warnings, enabled = _reason_for(at, str(inside))
    assert enabled and not warnings, warnings
    assert "Estimated peak" in [m.label for m in at.metric]


def test_launch_refuses_a_base_model_outside_the_model_folders_unless_called_from_the_cli(
        session, users, project, default_roots, tiny_model):
    from core.train.runs import check_launch, launch

    eng = users["engineer"]
    version = make_dataset_version(session, project, eng, n_train=6, n_validation=2)
    cfg = TrainConfig(base_model=str(tiny_model), dataset_version_id=version.id, max_steps=1)
    with pytest.raises(PermissionDenied, match="model folders"):
        launch(session, eng, project.id, cfg)
    assert not list_jobs(session, kind="train")
    assert check_launch(cfg, trusted_paths=True)["peak_mb"] > 0  # the CLI's --base-model: any readable folder


def test_generation_reads_a_typed_base_model_only_inside_the_model_folders(session, users, project, default_roots,
                                                                          tiny_model, tmp_path):
    """The Generate page's "Base model (optional)" follows the same rule as Train's (the class, not one page)."""
    from core.evaluate.generate import launch_generation

    eng = users["engineer"]
    es, _ = make_outputs(session, project, eng, n_prompts=1, runs=0)
    (tmp_path / "elsewhere").mkdir()
    before = len(list_jobs(session, kind="generate"))
    refusals = set()
    for folder in (tiny_model, tmp_path / "elsewhere" / "missing", tmp_path / "elsewhere"):
        with pytest.raises(PermissionDenied, match="model folders") as err:
            launch_generation(session, eng, es.id, ["base"], base_model=str(folder))
        refusals.add(str(err.value).replace(str(folder), "<typed>"))
    assert len(refusals) == 1, refusals
    assert len(list_jobs(session, kind="generate")) == before

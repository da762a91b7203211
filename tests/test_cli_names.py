"""Every CLI option that names a dataset version, eval set, run or project takes its name or its id (as the
user guide's `train --version demo-v1` does); a name two of them share is refused with what to give instead."""
from __future__ import annotations

import json

import pytest

from storage.models import Job, JobStatus
from tests.fixtures_models import make_dataset_version, tiny_model_fixture  # noqa: F401 (the tiny_model fixture)
from tests.helpers import cli

pytestmark = [pytest.mark.slow, pytest.mark.timeout(600)]


def test_versions_runs_eval_sets_and_projects_by_name(session, users, project, workspace, tiny_model):
    from core.projects import create_project

    make_dataset_version(session, project, users["engineer"], n_train=4, n_validation=1, name="v1")
    trained = cli(workspace, "train", "--version", "v1", "--base-model", str(tiny_model), "--set", "max_steps=1",
                  "--set", "max_length=96", "--name", "my-run", "--wait", "--json")
    assert trained.returncode == 0, trained.stderr
    run = json.loads(trained.stdout)
    assert run["status"] == "succeeded" and run["name"] == "my-run"

    shown = cli(workspace, "runs", "show", "my-run", "--json")
    assert shown.returncode == 0 and json.loads(shown.stdout)["id"] == run["id"]
    cancel = cli(workspace, "runs", "cancel", "my-run")
    assert cancel.returncode == 1 and "already finished" in cancel.stderr  # found by name, then refused

    (workspace / "prompts.jsonl").write_text(json.dumps({"prompt": "Meter?"}) + "\n")
    made = cli(workspace, "evalsets", "--project", project.name, "--create", "held-out", "--from-file",
               str(workspace / "prompts.jsonl"))
    assert made.returncode == 0, made.stderr
    generated = cli(workspace, "generate", "--eval-set", "held-out", "--systems", "base,run:my-run",
                    "--max-new-tokens", "4", "--no-perplexity", "--wait", "--json")
    assert generated.returncode == 0, generated.stderr
    assert json.loads(generated.stdout)["systems"] == f"base,run:{run['id']}"

    # The same names elsewhere: refused with what to give instead.
    other = create_project(session, users["admin"], "Second", "")
    make_dataset_version(session, other, users["engineer"], n_train=2, n_validation=1, name="v1")
    session.add(Job(project_id=other.id, kind="train", name="my-run", status=JobStatus.failed.value))
    session.commit()
    twice = cli(workspace, "train", "--version", "v1", "--set", "max_steps=1")
    assert twice.returncode == 1 and "Several projects have a dataset version named 'v1'" in twice.stderr
    assert "Several runs are named 'my-run'" in cli(workspace, "runs", "show", "my-run").stderr
    by_project = cli(workspace, "runs", "show", "my-run", "--project", project.name, "--json")
    assert by_project.returncode == 0 and json.loads(by_project.stdout)["id"] == run["id"]
    assert "No training run named 'nope'" in cli(workspace, "runs", "show", "nope").stderr

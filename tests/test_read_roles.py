"""Reads that reveal evaluation or training data check the role in core, like every write: an annotator lists
no eval sets and sees no systems, scores, runs or job logs, whether through a page or the CLI."""
from __future__ import annotations

import ast
import json
from pathlib import Path

import pytest

from core.errors import PermissionDenied
from storage.models import Job, JobStatus
from tests.helpers import full_scores, make_outputs

ROOT = Path(__file__).resolve().parents[1]


def _reads(session, es, run_id, project):
    from core.evaluate import evalsets, results, review, systems
    from core.jobs.queue import job_snapshot
    from core.ship import deploy
    from core.train import runs

    return {  # read -> least role that may use it
        "list_eval_sets": ("reviewer", lambda u: evalsets.list_eval_sets(session, u, project.id)),
        "my_scored_items": ("reviewer", lambda u: review.my_scored_items(session, u, es.id)),
        "score_table": ("engineer", lambda u: results.score_table(session, u, es.id)),
        "scores_csv": ("engineer", lambda u: results.scores_csv(session, u, es.id)),
        "dpo_pairs": ("engineer", lambda u: results.dpo_pairs(session, u, es.id)),
        "review_progress": ("engineer", lambda u: review.review_progress(session, u, es.id)),
        "results": ("engineer", lambda u: results.results(session, u, es.id, bootstrap_rounds=5)),
        "available_systems": ("engineer", lambda u: systems.available_systems(session, u, project.id)),
        "job_snapshot": ("engineer", lambda u: job_snapshot(session, u, run_id)),
        "runs_table": ("engineer", lambda u: runs.runs_table(session, u, project.id)),
        "compare_runs": ("engineer", lambda u: runs.compare_runs(session, u, [run_id, run_id])),
        "exports_of": ("engineer", lambda u: deploy.exports_of(session, u, run_id)),
    }


def test_every_read_of_evaluation_data_checks_the_role(session, users, project):
    from core.evaluate import review

    es, systems = make_outputs(session, project, users["engineer"], n_prompts=2, runs=1)
    item = review.next_item(session, users["reviewer"], es.id)
    review.submit_score(session, users["reviewer"], es.id, item.prompt_id, item.pair, scores=full_scores(3, 4),
                        preference="A")
    run_id = int(systems[1].split(":")[1])
    order = ["annotator", "reviewer", "engineer", "admin"]
    for _name, (least, read) in _reads(session, es, run_id, project).items():
        for role in order:
            if order.index(role) < order.index(least):
                with pytest.raises(PermissionDenied):
                    read(users[role])
            else:
                read(users[role])  # allowed: no error


def test_reviewers_list_eval_sets_without_the_systems(session, users, project):
    from core.evaluate.evalsets import list_eval_sets

    es, systems = make_outputs(session, project, users["engineer"], n_prompts=1, runs=1)
    (seen,) = list_eval_sets(session, users["reviewer"], project.id)
    assert (seen["name"], seen["n_systems"], seen["systems"]) == (es.name, 2, [])
    assert list_eval_sets(session, users["engineer"], project.id)[0]["systems"] == sorted(systems)


def test_job_lists_on_pages_hold_only_jobs_the_role_controls(session, users, project):
    from core.jobs.queue import list_jobs

    for kind, action in (("train", "train"), ("generate", "evaluate"), ("export", "train")):
        session.add(Job(project_id=project.id, kind=kind, action=action, name=kind, status=JobStatus.failed.value))
    session.commit()
    assert list_jobs(session, project.id, user=users["reviewer"]) == []
    assert len(list_jobs(session, project.id, user=users["engineer"])) == 3


@pytest.mark.slow
def test_the_cli_refuses_an_annotator_the_eval_sets(session, users, project, workspace):
    from tests.helpers import cli

    es, _ = make_outputs(session, project, users["engineer"], n_prompts=1, runs=1)
    denied = cli(workspace, "evalsets", "--user", "annotator1")
    assert denied.returncode == 1 and "may not score outputs" in denied.stderr and es.name not in denied.stdout
    listed = cli(workspace, "evalsets", "--user", "reviewer1", "--json")
    assert listed.returncode == 0 and json.loads(listed.stdout)[0]["systems"] == ""
    assert cli(workspace, "runs", "--user", "reviewer1").returncode == 1


UNCHECKED = {"eval_prompts", "latest_outputs", "scores_of", "generation_jobs", "review_items", "read_metrics",
             "log_tail", "finished_runs"}


def test_pages_and_cli_call_only_reads_that_check_the_role():
    """Building blocks that take no user are for core functions that checked the role already."""
    offenders = []
    for path in [*(ROOT / "pages").glob("*.py"), *(ROOT / "core" / "cli").glob("*.py")]:
        for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
            if isinstance(node, ast.ImportFrom) and node.module and node.module.startswith("core"):
                offenders += [f"{path.name}: {a.name}" for a in node.names if a.name in UNCHECKED]
    assert offenders == []

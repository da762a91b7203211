"""No leakage: a training example that repeats an eval prompt (exactly or nearly) is reported when its version is
frozen and refuses a launch until it is excluded; duplicates across splits are reported; examples that came from
an eval item stay out of training while their eval set compares systems, unless the engineer includes them."""
from __future__ import annotations

import json
from pathlib import Path

import pytest

from core.curate.leakage import find_leaks, freeze_checked, launch_leaks, split_leaks
from core.curate.datasets import split_of
from core.errors import InvalidInput
from core.evaluate.evalsets import eval_prompts
from core.jobs.queue import list_jobs
from core.train.config import TrainConfig
from core.train.settings import parse_set
from core.train.runs import launch
from core.train.train_job import training_records
from storage.models import Example
from tests.fixtures_jobs import add_job, live_process
from tests.helpers import (ALL_TRAIN, BIKE_SHOP, QUESTIONS, leak_eval_set, leak_example, make_outputs,
                           near_copy)

@pytest.fixture
def planted(session, users, project):
    """Ten approved examples and an eval set holding a near copy of example 3's question, an exact copy (other
    case and spacing) of example 5's, and two questions no example asks."""
    eng = users["engineer"]
    examples = [leak_example(session, project, eng, q) for q in QUESTIONS[:10]]
    es = leak_eval_set(session, project, eng, "held-out questions",
                   [QUESTIONS[10], near_copy(QUESTIONS[3]), f"\t{QUESTIONS[5].lower()} ", QUESTIONS[11]])
    return examples, es


def test_find_leaks_reports_planted_near_and_exact_duplicates_only(session, project, planted):
    examples, es = planted
    prompts = [{"key": ex.id, "messages": [{"role": "system", "content": BIKE_SHOP}, ex.turns[0]]} for ex in examples]
    leaks = find_leaks(session, project.id, prompts)
    positions = {p.id: p.position for p in eval_prompts(session, es.id)}
    got = {(leak["key"], positions[leak["eval_prompt_id"]], leak["kind"]) for leak in leaks}
    assert got == {(examples[3].id, 1, "near"), (examples[5].id, 2, "exact")}
    near = next(leak for leak in leaks if leak["kind"] == "near")
    assert 0.8 <= near["similarity"] < 1 and near["eval_set"] == "held-out questions" and near["eval_set_id"] == es.id
    assert find_leaks(session, project.id, prompts, ignore_eval_sets=[es.id]) == []


def test_planted_leak_is_reported_at_freeze_and_refuses_launch_until_excluded(session, users, project, planted,
                                                                               tiny_model):
    examples, es = planted
    eng = users["engineer"]
    report = freeze_checked(session, eng, project, "v1", fractions=ALL_TRAIN)
    version = report["version"]
    assert {(x["example_id"], x["kind"], x["split"]) for x in report["eval_leaks"]} == {
        (examples[3].id, "near", "train"), (examples[5].id, "exact", "train")}
    assert report["split_leaks"] == []  # everything is in train: nothing to repeat across splits

    cfg = TrainConfig(base_model=str(tiny_model), dataset_version_id=version.id, max_steps=2)
    with live_process() as proc:  # a running job holds the one slot: a launch that passes waits in the queue
        add_job(session, project, eng, name="busy", pid=proc.pid)
        with pytest.raises(InvalidInput) as refused:
            launch(session, eng, project.id, cfg)
        message = str(refused.value)
        assert f"example #{examples[3].id} repeats" in message and f"example #{examples[5].id} repeats" in message
        assert "--exclude-leaked" in message and "Exclude these 2 examples" in message
        assert [j.name for j in list_jobs(session, kind="train")] == ["busy"]  # nothing was queued

        with pytest.raises(InvalidInput):  # excluding one of the two is not enough
            launch(session, eng, project.id, cfg.with_overrides(exclude_example_ids=[examples[3].id]))
        job = launch(session, eng, project.id,
                     cfg.with_overrides(exclude_example_ids=[examples[3].id, examples[5].id]))
    assert job.status == "queued" and job.config["exclude_example_ids"] == [examples[3].id, examples[5].id]
    assert json.loads((Path(job.run_dir) / "config.json").read_text())["exclude_example_ids"] == job.config[
        "exclude_example_ids"]
    # The worker's data leaves them out.
    records, counts = training_records(session, TrainConfig.from_dict(job.config))
    trained = {r["example_id"] for r in records["train"]}
    assert trained == {ex.id for ex in examples} - {examples[3].id, examples[5].id}
    assert counts["n_excluded"] == 2


def test_near_copies_share_a_split_and_an_older_versions_cross_split_copies_are_reported(session, users, project):
    from sqlmodel import select

    from storage.models import DatasetVersionItem

    eng = users["engineer"]
    fractions = {"train": 0.6, "validation": 0.2, "test": 0.2}
    pairs = []
    for q in QUESTIONS:  # each question twice: as asked, and a near copy of it
        pairs.append((leak_example(session, project, eng, q), leak_example(session, project, eng, near_copy(q))))
    by_id = {ex.id: split_of(ex.id, 3, fractions) for pair in pairs for ex in pair}
    assert any(by_id[a.id] != by_id[b.id] for a, b in pairs), "the seed must split some pair by example id"
    report = freeze_checked(session, eng, project, "v1", fractions=fractions, seed=3)
    version = report["version"]
    items = {i.example_id: i for i in session.exec(select(DatasetVersionItem).where(
        DatasetVersionItem.version_id == version.id))}
    assert all(items[a.id].split == items[b.id].split for a, b in pairs)  # a copy never crosses into test
    assert {i.split for i in items.values()} == {"train", "validation", "test"}  # still a three-way split
    assert report["split_leaks"] == [] and report["eval_leaks"] == []

    # A version frozen before splits followed prompt groups can still hold copies across splits: reported.
    a, b = next((a, b) for a, b in pairs if items[a.id].split == "train")
    items[b.id].split = "test"
    session.add(items[b.id])
    session.commit()
    got = split_leaks(session, version.id)
    assert [(x["example_id"], x["split"], x["train_example_id"], x["kind"]) for x in got] == [
        (b.id, "test", a.id, "near")]
    assert 0.8 <= got[0]["similarity"] < 1


def _derived(session, project, user, es, position: int) -> Example:
    """An approved example made from an eval item, as a blind-review send-back records it."""
    prompt = eval_prompts(session, es.id)[position]
    return leak_example(session, project, user, prompt.messages[-1]["content"], answer="Fixed by an expert.",
                    source="review_feedback", origin={"kind": "blind_review", "eval_set_id": es.id,
                                                      "eval_set": es.name, "prompt_id": prompt.id})


def test_eval_derived_examples_left_out_while_their_eval_set_compares_systems(session, users, project, tiny_model):
    eng = users["engineer"]
    compared, _ = make_outputs(session, project, eng, n_prompts=4, runs=1)  # outputs of base and a run
    only_base = leak_eval_set(session, project, eng, "not compared yet", [QUESTIONS[11]])
    plain = [leak_example(session, project, eng, q) for q in QUESTIONS[:5]]
    from_compared = _derived(session, project, eng, compared, 2)
    version = freeze_checked(session, eng, project, "v1", fractions=ALL_TRAIN)["version"]
    cfg = TrainConfig(base_model=str(tiny_model), dataset_version_id=version.id)

    report = launch_leaks(session, version.id)
    assert report["leaks"] == [] and report["eval_derived_excluded"] == [from_compared.id]
    records, counts = training_records(session, cfg)
    assert {r["example_id"] for r in records["train"]} == {ex.id for ex in plain}
    assert counts["n_eval_derived_excluded"] == 1 and counts["n_excluded"] == 0

    included = cfg.with_overrides(include_eval_derived=True)
    report = launch_leaks(session, version.id, include_eval_derived=True)
    assert report["leaks"] == [] and report["eval_derived_excluded"] == []
    assert report["eval_derived_included"] == [from_compared.id]
    records, counts = training_records(session, included)
    assert {r["example_id"] for r in records["train"]} == {ex.id for ex in plain} | {from_compared.id}
    assert counts["n_eval_derived_excluded"] == 0

    # An eval set nobody compares on yet: its derived example is not left out by itself, so it is a leak.
    from_base_only = _derived(session, project, eng, only_base, 0)
    v2 = freeze_checked(session, eng, project, "v2", fractions=ALL_TRAIN)["version"]
    report = launch_leaks(session, v2.id)
    assert [(x["key"], x["eval_set_id"], x["kind"]) for x in report["leaks"]] == [
        (from_base_only.id, only_base.id, "exact")]
    assert report["eval_derived_excluded"] == [from_compared.id]


def test_exclusion_settings_are_validated_and_parsed():
    assert TrainConfig().exclude_example_ids == [] and TrainConfig().include_eval_derived is False
    assert parse_set(["exclude_example_ids=3, 5", "include_eval_derived=true"]) == {
        "exclude_example_ids": [3, 5], "include_eval_derived": True}
    for bad in (["3"], [0], [True], "3,5"):
        with pytest.raises(InvalidInput, match="exclude_example_ids must be a list of example ids"):
            TrainConfig(exclude_example_ids=bad)


@pytest.mark.slow
def test_a_run_records_what_it_left_out(session, users, project, tiny_model):
    """The worker drops the excluded and eval-derived examples before sampling and says so in result.json."""
    from tests.helpers import wait_for

    eng = users["engineer"]
    compared, _ = make_outputs(session, project, eng, n_prompts=4, runs=1)
    plain = [leak_example(session, project, eng, q) for q in QUESTIONS[:6]]
    _derived(session, project, eng, compared, 1)
    version = freeze_checked(session, eng, project, "v1", fractions=ALL_TRAIN)["version"]
    cfg = TrainConfig(base_model=str(tiny_model), dataset_version_id=version.id, max_length=96,
                      per_device_batch_size=2, max_steps=1, exclude_example_ids=[plain[0].id])
    job = wait_for(session, launch(session, eng, project.id, cfg).id)
    assert job.status == "succeeded", job.error
    dataset = json.loads((Path(job.run_dir) / "result.json").read_text())["dataset"]
    assert dataset["n_train_available"] == 5 and dataset["n_excluded"] == 1
    assert dataset["n_eval_derived_excluded"] == 1 and dataset["include_eval_derived"] is False
    log = (Path(job.run_dir) / "train.log").read_text()
    assert "1 example(s) that came from an eval item left out" in log

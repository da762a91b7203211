"""The preference loop end to end on a tiny random model, with real job processes: an SFT run and the base answer
an eval set, two reviewers vote blind, their votes become a preference version, a DPO run continues the SFT run's
adapter, and a generation job answers the same eval set with the DPO run, which Results then lists."""
from __future__ import annotations

import json
from pathlib import Path

import pytest
from sqlmodel import select

from core.train.config import TrainConfig
from storage.models import JobStatus, Output
from tests.fixtures_models import make_dataset_version
from tests.helpers import full_scores, wait_for

pytestmark = [pytest.mark.slow, pytest.mark.timeout(900)]


def _vote(session, es, reviewers, run_key):
    """Reviewer 1 prefers the SFT run everywhere; reviewer 2 agrees on the first prompts, says tie on one and
    prefers the base on the last (an even split of the two: that item gives no pair)."""
    from core.evaluate import review
    from core.evaluate.evalsets import eval_prompts

    prompts = sorted(p.id for p in eval_prompts(session, es.id))
    for i, rev in enumerate(reviewers):
        while (item := review.next_item(session, rev, es.id)) is not None:
            run_side = "A" if item._system_a == run_key else "B"
            base_side = "B" if run_side == "A" else "A"
            pref = run_side
            if i == 1 and item.prompt_id == prompts[-1]:
                pref = base_side
            elif i == 1 and item.prompt_id == prompts[-2]:
                pref = "tie"
            review.submit_score(session, rev, es.id, item.prompt_id, item.pair, scores=full_scores(4, 2),
                                preference=pref)


def test_votes_to_dpo_run_to_generation(session, users, project, reviewers, tiny_model, tmp_path):
    from core.evaluate.evalsets import create_eval_set_from_file
    from core.evaluate.generate import launch_generation
    from core.evaluate.pairs_from_votes import freeze_from_votes, generate_like_before, runs_to_generate
    from core.evaluate.results import results
    from core.ship.deploy import launch_export
    from core.train.runs import launch

    eng = users["engineer"]
    version = make_dataset_version(session, project, eng, n_train=6, n_validation=1)
    sft_cfg = TrainConfig(base_model=str(tiny_model), dataset_version_id=version.id, max_steps=2, max_length=96,
                          per_device_batch_size=2, learning_rate=1e-3)
    sft = wait_for(session, launch(session, eng, project.id, sft_cfg).id)
    assert sft.status == JobStatus.succeeded.value, sft.error

    prompts = "".join(json.dumps({"prompt": f"How do I read meter number {i}?"}) + "\n" for i in range(4))
    es = create_eval_set_from_file(session, eng, project.id, "before-after", prompts, "p.jsonl", reviewers_per_item=2)
    run_key = f"run:{sft.id}"
    gen = wait_for(session, launch_generation(session, eng, es.id, ["base", run_key], base_model=str(tiny_model),
                                              perplexity=False, decoding={"max_new_tokens": 6}).id)
    assert gen.status == JobStatus.succeeded.value, gen.error
    _vote(session, es, reviewers[:2], run_key)

    prefs = freeze_from_votes(session, eng, project.id, "from votes", eval_set_id=es.id)
    votes = prefs.sources[0]
    # 4 items: 2 agreed, 1 with a tie beside a preference (majority of one), 1 even split (dropped).
    assert (votes["items_voted"], votes["pairs"], votes["disagreements"], votes["even_split"]) == (4, 3, 1, 1)
    assert prefs.n_pairs == 3

    dpo_cfg = TrainConfig(base_model=str(tiny_model), method="dpo", preference_version_id=prefs.id,
                          init_from_run=sft.id, max_steps=3, max_length=96, per_device_batch_size=2,
                          learning_rate=1e-3, logging_steps=1)
    dpo = wait_for(session, launch(session, eng, project.id, dpo_cfg).id)
    assert dpo.status == JobStatus.succeeded.value, dpo.error + Path(dpo.run_dir, "train.log").read_text()[-3000:]
    folder = Path(dpo.run_dir)
    files = {p.name for p in folder.iterdir()}
    assert {"adapter_config.json", "adapter_model.safetensors", "config.json", "metrics.jsonl",
            "result.json", "train.log"} <= files
    assert not (folder / "ref").exists()  # TRL's frozen reference copy is not part of the run's adapter
    assert json.loads((folder / "config.json").read_text())["init_from_run"] == sft.id
    rows = [json.loads(ln) for ln in (folder / "metrics.jsonl").read_text().splitlines()]
    assert [r["step"] for r in rows if r.get("loss") is not None] == [1, 2, 3]
    assert all(isinstance(r.get("reward_margin"), float) and 0 <= r["reward_accuracy"] <= 1 for r in rows)
    # The reference is the SFT run's adapter (frozen), not the base: at the first step policy and reference are the
    # same model, so both implicit rewards are zero.
    assert abs(rows[0]["reward_chosen"]) < 1e-4 and abs(rows[0]["reward_rejected"]) < 1e-4, rows[0]
    sft_cfg_saved = json.loads((Path(sft.run_dir) / "adapter_config.json").read_text())
    assert json.loads((folder / "adapter_config.json").read_text())["r"] == sft_cfg_saved["r"]
    result = json.loads((folder / "result.json").read_text())
    assert result["status"] == "succeeded" and result["metrics"]["reward_margin_last"] is not None
    assert result["dataset"]["preference_version_id"] == prefs.id

    new_key = f"run:{dpo.id}"
    assert runs_to_generate(session, eng, es.id)[0]["system"] == new_key  # the one click on Results
    gen2 = wait_for(session, generate_like_before(session, eng, es.id, dpo.id).id)
    assert gen2.config["decoding"] == gen.config["decoding"] and gen2.config["perplexity"] is False
    assert gen2.status == JobStatus.succeeded.value, gen2.error
    outputs = session.exec(select(Output).where(Output.job_id == gen2.id)).all()
    assert len(outputs) == 4 and {o.system for o in outputs} == {new_key}
    listed = {row["system"] for row in results(session, eng, es.id)["systems"]}
    assert {"base", run_key, new_key} <= listed

    # Merge/export take the DPO run like an SFT run; parity prompts default to its preference version's prompts.
    out = tmp_path / "export"
    export = wait_for(session, launch_export(session, eng, dpo.id, out, formats=["adapter", "merged"],
                                             parity_max_new_tokens=8).id)
    assert export.status == JobStatus.succeeded.value, export.error
    parity = export.result["parity"]
    assert parity["prompts_from"] == "preference version's prompts"
    assert {k: v.get("summary") for k, v in parity["checks"].items() if k != "endpoint"} == {
        "merged": "identical 3/3", "adapter": "identical 3/3"}
    card = (out / "merged" / "README.md").read_text()
    assert "Preference version: `from votes`" in card and f"Continued from run {sft.id}'s adapter" in card

"""A DPO run's export says the system prompt it was trained with (issue 20): its preference pairs' system prompt,
else that of the SFT run it continued, and the chat template's default only when neither has one. The Modelfile's
SYSTEM and the card take it from the lineage (core.ship.export_job._recipes), so the lineage is what is checked, then
the Modelfile it gives."""
from __future__ import annotations

from tests.fixtures_models import make_dataset_version

PAIR_SYSTEM = "You answer billing questions for Harbour Gas, briefly."


def _prefs(session, project, user, system: str, name: str):
    from storage.models import PreferencePair, PreferenceVersion

    prefs = PreferenceVersion(project_id=project.id, name=name, content_hash="x", n_pairs=3,
                              created_by=user.id)
    session.add(prefs)
    session.commit()
    head = [{"role": "system", "content": system}] if system else []
    for i in range(3):
        session.add(PreferencePair(version_id=prefs.id, position=i,
                                   prompt=head + [{"role": "user", "content": f"Question {i}?"}],
                                   chosen=[{"role": "assistant", "content": "Yes."}],
                                   rejected=[{"role": "assistant", "content": "No."}]))
    session.commit()
    return prefs


def _run(session, project, user, name: str, config: dict, version=None):
    from storage.models import Job

    run = Job(project_id=project.id, kind="train", name=name, status="succeeded", created_by=user.id,
              dataset_version_id=version.id if version else None, config=config)
    session.add(run)
    session.commit()
    return run


def test_a_dpo_runs_system_prompt_is_its_pairs_else_its_sft_runs(session, users, project):
    from core.ship import ollama
    from core.ship.modelcard import lineage

    engineer = users["engineer"]
    version = make_dataset_version(session, project, engineer, n_train=4, n_validation=1)
    sft = _run(session, project, engineer, "sft", {"method": "lora"}, version)
    sft_system = lineage(session, sft)["system_prompt"]
    assert sft_system.startswith("You are")  # the demo conversations carry the Brightwater prompt
    dpo = {"method": "dpo", "init_from_run": sft.id}
    with_system = _run(session, project, engineer, "dpo-a", {
        **dpo, "preference_version_id": _prefs(session, project, engineer, PAIR_SYSTEM, "a").id})
    without = _run(session, project, engineer, "dpo-b", {
        **dpo, "preference_version_id": _prefs(session, project, engineer, "", "b").id})
    on_base = _run(session, project, engineer, "dpo-c", {
        "method": "dpo", "init_from_run": 0, "preference_version_id": _prefs(session, project, engineer, "", "c").id})
    assert lineage(session, with_system)["system_prompt"] == PAIR_SYSTEM
    assert lineage(session, without)["system_prompt"] == sft_system
    assert lineage(session, on_base)["system_prompt"] == ""  # none anywhere: the template's default applies
    text = ollama.modelfile(None, model_from="/models/merged", system=lineage(session, without)["system_prompt"])
    assert dict(ollama.parse_modelfile(text))["system"] == sft_system

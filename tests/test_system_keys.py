"""One grammar of system keys (core.systems) for evaluation and shipping: every kind parses and prints back,
each stage refuses the kinds it cannot use with a message that says what it takes, and the keys databases
already hold read back unchanged."""
from __future__ import annotations

import pytest
from sqlmodel import select

from core.errors import InvalidInput
from core.evaluate.review import pair_key, split_pair
from core.evaluate.systems import parse_system, parse_systems, system_labels
from core.systems import SystemKey, export_key, run_key
from storage.models import EvalPrompt, EvalSet, Job, Output, Score


@pytest.mark.parametrize("text, kind, ref, printed", [
    ("base", "base", None, "base"),
    ("base:", "base", None, "base"),
    ("base:/models/base", "base", "/models/base", "base:/models/base"),
    ("base:embedded:SmolLM2-135M-Instruct", "base", "embedded:SmolLM2-135M-Instruct",
     "base:embedded:SmolLM2-135M-Instruct"),
    ("base:org/model+v2", "base", "org/model+v2", "base:org/model+v2"),  # a "+" in a model name is no variant
    ("run:12", "run", 12, "run:12"),
    (" run:12 ", "run", 12, "run:12"),
    ("12", "run", 12, "run:12"),  # the short form of a run
    ("export:7", "export", 7, "export:7"),
])
def test_every_kind_parses_and_prints_back(text, kind, ref, printed):
    key = SystemKey.parse(text)
    assert (key.kind, key.ref, key.variant, str(key)) == (kind, ref, "", printed)
    assert SystemKey.parse(str(key)) == key
    assert key.job_id == (ref if kind in ("run", "export") else None)


@pytest.mark.parametrize("text", ["", "gpt-4", "run:", "run:abc", "run:-1", "run:²", "export:x", "run:3:4",
                                  "train:3", "run:3+unknown", "RUN:3"])
def test_a_bad_key_is_refused_with_every_form_named(text):
    with pytest.raises(InvalidInput, match=r"Unknown system .*'base', 'base:<model>', 'run:<run id>' or "
                                           r"'export:<export id>'"):
        SystemKey.parse(text)


def test_evaluation_takes_the_base_and_runs_only_and_says_so():
    assert parse_system("base") == ("base", None)
    assert parse_system("run:3") == parse_system("3") == ("run", 3)
    for text in ("export:3", "base:/models/base", "base:"):
        with pytest.raises(InvalidInput, match=r"Unknown system .*: use 'base' or 'run:<run id>'\.$"):
            parse_system(text)
    assert parse_systems("3, base,run:3,,run:4") == ["run:3", "base", "run:4"]


def test_keys_are_built_from_their_parts_and_refuse_nonsense():
    assert (run_key(5), export_key(6), str(SystemKey("base"))) == ("run:5", "export:6", "base")
    for kind, ref in (("train", 1), ("run", None), ("run", "5"), ("export", -1), ("base", "")):
        with pytest.raises(InvalidInput):
            SystemKey(kind, ref)
    with pytest.raises(InvalidInput, match="Unknown variant"):
        SystemKey("run", 1, "prompted")  # no variant is known until a stage adds one to core.systems.VARIANTS


def test_labels_name_each_kind_for_a_person():
    assert SystemKey.parse("base").label() == "Base model"
    assert SystemKey.parse("base").label("no adapter") == "Base model (no adapter)"
    assert SystemKey.parse("run:3").label("lora-v1") == "Run 3: lora-v1"
    assert SystemKey.parse("export:9").label("merged run 3") == "Export 9 (merged run 3)"


def test_keys_already_stored_read_back_unchanged(session, users, project):
    """Outputs, votes (their pair and sides) and job configs written before the shared grammar keep their text:
    each stored key parses, prints back the same, and the results page still names it."""
    run = Job(project_id=project.id, kind="train", name="lora-v1", status="succeeded")
    session.add(run)
    session.commit()
    es = EvalSet(project_id=project.id, name="held-out")
    session.add(es)
    session.commit()
    prompt = EvalPrompt(eval_set_id=es.id, messages=[{"role": "user", "content": "hi"}])
    session.add(prompt)
    session.commit()
    old = ["base", f"run:{run.id}"]
    gen = Job(project_id=project.id, kind="generate", name="gen", config={"systems": old})
    serve = Job(project_id=project.id, kind="serve", name="serve", config={"system": f"run:{run.id}"})
    session.add_all([Output(prompt_id=prompt.id, system=s, text="x") for s in old] + [gen, serve])
    session.add(Score(prompt_id=prompt.id, pair=pair_key(*old), reviewer_id=users["reviewer"].id,
                      system_a=old[1], system_b=old[0], scores={}, preference="A"))
    session.commit()

    stored = list(session.exec(select(Output.system)))
    score = session.exec(select(Score)).one()
    stored += [score.system_a, score.system_b, *split_pair(score.pair), *session.get(Job, gen.id).config["systems"],
               session.get(Job, serve.id).config["system"]]
    assert sorted(set(stored)) == sorted(old)
    assert all(str(SystemKey.parse(key)) == key for key in stored)
    assert parse_systems(stored) == old
    assert system_labels(session, old) == {"base": "base model", f"run:{run.id}": f"run {run.id}: lora-v1"}

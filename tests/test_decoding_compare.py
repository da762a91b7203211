"""Like with like: a new generation defaults to the decoding of the answers it will be compared with, and wherever
systems are compared (Results, Compare, the report, the Generate form) the decoding settings that differ are
named, from one comparison of the decodings stored with each system's outputs."""
from __future__ import annotations

from pathlib import Path

from sqlmodel import select

from core.evaluate import generate, review
from core.evaluate.results import report_markdown, results
from core.jobs import rundir
from storage.models import Output
from tests.fixtures_jobs import add_job, live_process
from tests.helpers import make_outputs, page, rendered_text

GREEDY_96 = {"mode": "greedy", "max_new_tokens": 96, "seed": 0}
GREEDY_256 = {"mode": "greedy", "max_new_tokens": 256, "seed": 0}


def _decode(session, es_id: int, by_system: dict[str, dict]) -> None:
    for out in session.exec(select(Output)).all():
        if out.system in by_system:
            out.decoding = by_system[out.system]
            session.add(out)
    session.commit()


def test_differences_name_only_the_settings_that_change_answers():
    from core.evaluate.generate_config import (Decoding, decoding_arguments, decoding_differences,
                                               describe_differences)

    sample = {"mode": "sample", "temperature": 0.7, "top_p": 0.9, "max_new_tokens": 96, "seed": 1}
    assert decoding_differences({"base": [GREEDY_96], "run:1": [GREEDY_96 | {"seed": 5}]}) == []  # greedy: no seed
    assert decoding_differences({"base": [GREEDY_96] * 3, "run:1": [GREEDY_256] * 3}) == [
        {"setting": "max new tokens", "values": {"base": [96], "run:1": [256]}}]
    assert [d["setting"] for d in decoding_differences({"base": [GREEDY_96], "run:1": [sample]})] == ["decoding"]
    hotter = sample | {"temperature": 1.2, "seed": 2}
    assert [d["setting"] for d in decoding_differences({"a": [sample], "b": [hotter]})] == ["temperature", "seed"]
    assert decoding_differences({"base": [GREEDY_96], "run:1": [{}]}) == []  # nothing known about run 1's
    assert decoding_differences({"base": [GREEDY_96, GREEDY_256], "run:1": [GREEDY_96]}) == [
        {"setting": "max new tokens", "values": {"base": [96, 256], "run:1": [96]}}]  # a system mixed in itself
    diffs = decoding_differences({"base": [GREEDY_96], "run:1": [GREEDY_256]})
    assert describe_differences(diffs, {"base": "base model", "run:1": "run 1: lora"}) == \
        "max new tokens: base model 96, run 1: lora 256"
    assert describe_differences(diffs) == "max new tokens: 96 and 256"  # blind: values only
    for stored in (GREEDY_96, sample):  # what is stored with an output gives back the same decoding
        assert Decoding(**decoding_arguments(stored)).stored() == stored


def test_a_new_runs_generation_uses_the_decoding_of_the_answers_it_joins(session, project, users):
    """The base answers were made with 96 new tokens by a job whose config does not say so (the CLI, an older
    version): "Generate on <eval set>" for a new run used the default 256."""
    from core.evaluate.pairs_from_votes import generate_like_before

    eng = users["engineer"]
    es, _ = make_outputs(session, project, eng, n_prompts=2, runs=1)
    _decode(session, es.id, {"base": GREEDY_96, "run:1": GREEDY_96})
    run = add_job(session, project, eng, kind="train", status="succeeded", name="new-run")
    Path(run.run_dir, rundir.ADAPTER_FILES[0]).write_text("{}", encoding="utf-8")
    with live_process() as busy:  # a running job holds the slot: the new job stays queued, nothing is started
        add_job(session, project, eng, kind="generate", status="running", pid=busy.pid, name="busy")
        job = generate_like_before(session, eng, es.id, run.id)
        assert job.status == "queued"
        assert job.config["decoding"]["max_new_tokens"] == 96 and not job.config["decoding"]["do_sample"]
        # ... and so does any launch that does not choose a decoding.
        job = generate.launch_generation(session, eng, es.id, ["base"])
        assert job.config["decoding"]["max_new_tokens"] == 96


def test_results_report_and_compare_say_which_settings_differ(session, project, users):
    eng, rev = users["engineer"], users["reviewer"]
    es, systems = make_outputs(session, project, eng, n_prompts=2, runs=1)
    _decode(session, es.id, {"base": GREEDY_96, systems[1]: GREEDY_256})
    at = page("compare.py", rev).run()
    warning = " ".join(w.value for w in at.warning)
    assert "different settings (max new tokens: 96 and 256)" in warning
    assert "secret-lora" not in rendered_text(at) and "base model" not in rendered_text(at)
    res = results(session, eng, es.id, bootstrap_rounds=10)
    run_id = systems[1].split(":")[1]
    assert res["decoding"]["text"] == f"max new tokens: base model 96, run {run_id}: secret-lora-0 256"
    assert "different decoding settings (max new tokens: base model 96" in report_markdown(res)
    assert review.next_item(session, rev, es.id).decoding_note == "max new tokens: 96 and 256"

    _decode(session, es.id, {systems[1]: GREEDY_96})  # like with like: nothing to say
    assert results(session, eng, es.id, bootstrap_rounds=10)["decoding"]["text"] == ""
    assert not page("compare.py", rev).run().warning


def test_generate_form_starts_from_the_eval_sets_decoding_and_warns_when_changed(session, project, users):
    eng = users["engineer"]
    es, systems = make_outputs(session, project, eng, n_prompts=2, runs=1)
    _decode(session, es.id, {"base": GREEDY_96, systems[1]: GREEDY_96})
    at = page("generate.py", eng).run()
    assert not at.exception, [e.value for e in at.exception]
    assert at.number_input(key="gen_max_new").value == 96
    assert not at.warning
    at.number_input(key="gen_max_new").set_value(256).run()
    assert any("these settings differ (max new tokens: 96 and 256)" in w.value for w in at.warning)

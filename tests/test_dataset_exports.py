"""Dataset exports load in the tools they are made for, as those tools load them: ``datasets.load_dataset`` finds
the version's train/validation/test splits with every system prompt and turn, and LLaMA-Factory's own loader and
converters (installed from PyPI without its dependencies) read the generated ``dataset_info.json`` entries without
dropping a system prompt or a turn."""
from __future__ import annotations

import importlib
import json
import subprocess
import sys
import types
import zipfile
from types import SimpleNamespace

import pytest

from core.curate.datasets import export, export_file, freeze_version, iter_version
from core.curate.formats import chat_messages, csv_cell_value
from core.projects import create_project
from storage.models import Example, ExampleStatus

SPLIT_FORMATS = ["alpaca_json", "alpaca_jsonl", "sharegpt", "chat_jsonl", "prompt_completion", "csv"]
LLAMAFACTORY_FORMATS = ["alpaca_json", "alpaca_jsonl", "sharegpt", "chat_jsonl"]
LLAMAFACTORY = "llamafactory==0.9.5"  # the newest release when this test was written; its loader is read as-is
SHAREGPT_ROLES = {"system": "system", "human": "user", "gpt": "assistant"}

SYSTEM = "You are a careful support assistant."
# Records a demo version does not have: no system prompt, another system prompt, Alpaca input, a three-turn chat.
VARIED = [
    {"system": "", "turns": [{"role": "user", "content": "Summarise this complaint"},
                             {"role": "assistant", "content": "Billed twice in May."}],
     "input": "I paid £40 twice in May.", "tags": [], "note": ""},
    {"system": "Answer in French.", "turns": [{"role": "user", "content": "Where is my meter?"},
                                              {"role": "assistant", "content": "Près de la porte d'entrée."}],
     "input": "", "tags": ["fr"], "note": "check"},
    {"system": SYSTEM, "turns": [{"role": "user", "content": "Hi, I'm moving house."},
                                 {"role": "assistant", "content": "When is the move?"},
                                 {"role": "user", "content": "Next Friday."},
                                 {"role": "assistant", "content": "Take a meter reading on the day."},
                                 {"role": "user", "content": "And the old flat?"},
                                 {"role": "assistant", "content": "Give us the new tenant's name."}],
     "input": "", "tags": ["moving"], "note": ""},
]


def _varied_version(session, users):
    """A version of 24 examples that mixes the record shapes of VARIED, split 50/25/25."""
    project = create_project(session, users["admin"], "Varied", "")
    for i in range(24):
        rec = VARIED[i % len(VARIED)]
        turns = [dict(t, content=f"{t['content']} ({i})") for t in rec["turns"]]
        session.add(Example(project_id=project.id, system=rec["system"], turns=turns, input=rec["input"],
                            tags=rec["tags"], note=rec["note"], content_hash=f"h{i}",
                            status=ExampleStatus.approved.value))
    session.commit()
    version = freeze_version(session, users["reviewer"], project, "varied-v1",
                             fractions={"train": 0.5, "validation": 0.25, "test": 0.25})
    return project, version


def _demo_version(session):
    from sqlmodel import select

    from storage.models import DatasetVersion, Project

    project = session.exec(select(Project)).first()
    return project, session.exec(select(DatasetVersion).where(DatasetVersion.project_id == project.id)).one()


def _expected(session, version) -> dict[str, list[list[dict]]]:
    """The version's examples as chat messages (what training sees), split by split, in example order."""
    out: dict[str, list] = {}
    for split, record in iter_version(session, version.id):
        out.setdefault(split, []).append(chat_messages(record))
    return out


def _messages(fmt: str, row: dict) -> list[dict]:
    """A row of an export, as loaded by ``datasets``, back to chat messages."""
    if fmt.startswith("alpaca"):
        msgs = [{"role": "system", "content": row["system"]}] if row["system"] else []
        for user, assistant in row["history"] or []:
            msgs += [{"role": "user", "content": user}, {"role": "assistant", "content": assistant}]
        user = row["instruction"] + (f"\n\n{row['input']}" if row["input"] else "")
        return msgs + [{"role": "user", "content": user}, {"role": "assistant", "content": row["output"]}]
    if fmt == "sharegpt":
        return [{"role": SHAREGPT_ROLES[m["from"]], "content": m["value"]} for m in row["conversations"]]
    if fmt == "chat_jsonl":
        return row["messages"]
    if fmt == "prompt_completion":
        return row["prompt"] + row["completion"]
    assert fmt == "csv"
    row = {k: csv_cell_value(v) if isinstance(v, str) else v for k, v in row.items()}
    msgs = [{"role": "system", "content": row["system"]}] if row["system"] else []
    if row["conversation"]:
        return msgs + json.loads(row["conversation"])
    user = row["instruction"] + (f"\n\n{row['input']}" if row["input"] else "")
    return msgs + [{"role": "user", "content": user}, {"role": "assistant", "content": row["output"]}]


def _load(out, tmp_path, fmt="chat_jsonl"):
    """``load_dataset`` on the export as a user would call it: the folder, or (an export of one file) the file."""
    from datasets import load_dataset

    if out.is_file():
        return load_dataset("csv" if fmt == "csv" else "json", data_files=str(out), cache_dir=str(tmp_path / "hf"))
    return load_dataset(str(out), cache_dir=str(tmp_path / "hf-cache"))


def _check_splits(fmt, loaded, expected, version):
    counts = {"train": version.n_train, "validation": version.n_validation, "test": version.n_test}
    assert {name: len(loaded[name]) for name in loaded} == {s: n for s, n in counts.items() if n}
    for split, rows in expected.items():
        got = [_messages(fmt, row) for row in loaded[split]]
        assert got == rows, f"{split}: the export's records differ from the version's"


@pytest.mark.parametrize("fmt", SPLIT_FORMATS)
def test_demo_export_loads_with_datasets_split_by_split(fmt, demo, session, users, tmp_path):
    project, version = _demo_version(session)
    assert version.n_test and version.n_validation
    out = export(session, users["admin"], project, fmt, tmp_path / "out", version_id=version.id)
    loaded = _load(out, tmp_path, fmt)
    expected = _expected(session, version)
    _check_splits(fmt, loaded, expected, version)
    systems = [m[0]["content"] for rows in expected.values() for m in rows]
    assert len(systems) == 1130 and all(s.startswith("You are Brightwater") for s in systems)


@pytest.mark.parametrize("fmt", SPLIT_FORMATS)
def test_varied_records_keep_system_prompt_input_and_turns(fmt, session, users, tmp_path):
    project, version = _varied_version(session, users)
    out = export(session, users["admin"], project, fmt, tmp_path / "out", version_id=version.id)
    _check_splits(fmt, _load(out, tmp_path, fmt), _expected(session, version), version)


def test_prompt_completion_export_is_what_a_training_run_reads(session, users, tmp_path):
    from trl.data_utils import is_conversational

    from core.curate.datasets import version_records

    project, version = _varied_version(session, users)
    loaded = _load(export(session, users["admin"], project, "prompt_completion", tmp_path / "out",
                          version_id=version.id), tmp_path, "prompt_completion")
    for split in loaded:
        trained = [{"prompt": r["prompt"], "completion": r["completion"]} for r in version_records(
            session, version.id, split)]
        assert [{"prompt": r["prompt"], "completion": r["completion"]} for r in loaded[split]] == trained
        assert all(is_conversational(row) for row in loaded[split])  # TRL's conversational prompt-completion


def test_the_download_is_one_zip_with_a_file_per_split_that_datasets_loads(session, users, tmp_path):
    project, version = _varied_version(session, users)
    path = export_file(session, users["admin"], project, "chat_jsonl", version_id=version.id)
    assert path.suffix == ".zip"
    with zipfile.ZipFile(path) as zf:
        names = set(zf.namelist())
        zf.extractall(tmp_path / "unzipped")
    assert {"train.jsonl", "validation.jsonl", "test.jsonl", "README.md", "dataset_info.json"} <= names
    _check_splits("chat_jsonl", _load(tmp_path / "unzipped", tmp_path), _expected(session, version), version)


# ---------------------------------------------------------------- LLaMA-Factory's own loader and converters


@pytest.fixture(scope="session")
def llamafactory(tmp_path_factory):
    """LLaMA-Factory's data loader (parser, converter, loader) from the PyPI release, installed without its
    dependencies. Its package __init__ pulls in multimodal plugins (torchaudio) this project does not have, so the
    packages are registered bare and only the data modules are imported, unchanged, from the installed files."""
    target = tmp_path_factory.mktemp("llamafactory")
    done = subprocess.run([sys.executable, "-m", "pip", "install", "--quiet", "--no-deps", "--no-compile",
                           "--target", str(target), LLAMAFACTORY], capture_output=True, text=True, timeout=600)
    assert done.returncode == 0, done.stderr[-2000:]
    saved = {k: v for k, v in sys.modules.items() if k == "llamafactory" or k.startswith("llamafactory.")}
    root = target / "llamafactory"
    for name, sub in (("llamafactory", root), ("llamafactory.extras", root / "extras"),
                      ("llamafactory.data", root / "data")):
        package = types.ModuleType(name)
        package.__path__ = [str(sub)]
        sys.modules[name] = package
    try:
        yield SimpleNamespace(parser=importlib.import_module("llamafactory.data.parser"),
                              loader=importlib.import_module("llamafactory.data.loader"))
    finally:
        for key in [k for k in sys.modules if k == "llamafactory" or k.startswith("llamafactory.")]:
            del sys.modules[key]
        sys.modules.update(saved)


def _llamafactory_splits(lf, folder, tmp_path) -> dict[str, list[list[dict]]]:
    """Each split as LLaMA-Factory trains on it: its dataset_info.json entry loaded by its own loader and aligned
    by its own converter, then written back as chat messages (system, prompt turns, response)."""
    info = json.loads((folder / "dataset_info.json").read_text(encoding="utf-8"))
    model_args = SimpleNamespace(cache_dir=str(tmp_path / "lf-cache"), hf_hub_token=None)
    data_args = SimpleNamespace(dataset_dir=str(folder), preprocessing_num_workers=None, streaming=False,
                                max_samples=None, overwrite_cache=True, media_dir=str(folder))
    training_args = SimpleNamespace(local_process_index=0, dataloader_num_workers=0)
    out = {}
    for attr in lf.parser.get_dataset_list(list(info), str(folder)):
        aligned = lf.loader._load_single_dataset(attr, model_args, data_args, training_args)
        out[attr.dataset_name.split(".")[0]] = [
            ([{"role": "system", "content": row["_system"]}] if row["_system"] else [])
            + row["_prompt"] + row["_response"] for row in aligned]
    return out


def _llamafactory_view(messages: list[dict], record_input: str) -> list[dict]:
    """LLaMA-Factory joins Alpaca's instruction and input with one newline (the project: a blank line)."""
    if not record_input:
        return messages
    msgs = [dict(m) for m in messages]
    user = msgs[-2]
    user["content"] = user["content"].removesuffix("\n\n" + record_input) + "\n" + record_input
    return msgs


@pytest.mark.parametrize("fmt", LLAMAFACTORY_FORMATS)
def test_llamafactory_keeps_every_system_prompt_and_turn_of_the_demo(fmt, llamafactory, demo, session, users,
                                                                     tmp_path):
    project, version = _demo_version(session)
    out = export(session, users["admin"], project, fmt, tmp_path / "out", version_id=version.id)
    got = _llamafactory_splits(llamafactory, out, tmp_path)
    expected = _expected(session, version)
    assert {s: len(r) for s, r in got.items()} == {s: len(r) for s, r in expected.items()}
    multi = sum(len(m) > 3 for rows in got.values() for m in rows)
    assert multi == 90, "multi-turn records lost turns"
    for split, rows in expected.items():
        assert got[split] == rows, split


@pytest.mark.parametrize("fmt", LLAMAFACTORY_FORMATS)
def test_llamafactory_keeps_varied_records(fmt, llamafactory, session, users, tmp_path):
    project, version = _varied_version(session, users)
    out = export(session, users["admin"], project, fmt, tmp_path / "out", version_id=version.id)
    got = _llamafactory_splits(llamafactory, out, tmp_path)
    expected: dict[str, list] = {}
    for split, record in iter_version(session, version.id):
        view = _llamafactory_view(chat_messages(record), record["input"]) if fmt.startswith("alpaca") else \
            chat_messages(record)
        expected.setdefault(split, []).append(view)
    assert got == expected


def test_cli_export_writes_the_split_folder_and_will_not_mix_with_an_old_one(workspace, session, users, tmp_path,
                                                                               capsys):
    from core.cli.main import main

    project, version = _varied_version(session, users)
    out = tmp_path / "export"
    args = ["export", "--version", version.name, "--project", project.name, "--format", "alpaca_jsonl",
            "--out", str(out)]
    assert main(args) == 0
    loaded = _load(out, tmp_path, "alpaca_jsonl")
    _check_splits("alpaca_jsonl", loaded, _expected(session, version), version)
    capsys.readouterr()
    # Again into the same folder: its split files would be loaded as the new export's, so it is refused.
    assert main(args) == 1
    assert "not an empty folder" in capsys.readouterr().err


def test_a_version_without_test_examples_exports_only_its_splits(session, users, tmp_path):
    project, _ = _varied_version(session, users)
    version = freeze_version(session, users["reviewer"], project, "all-train",
                             fractions={"train": 1.0, "validation": 0.0, "test": 0.0})
    out = export(session, users["admin"], project, "sharegpt", tmp_path / "out", version_id=version.id)
    assert sorted(p.name for p in out.iterdir()) == ["README.md", "dataset_info.json", "train.json"]
    assert list(json.loads((out / "dataset_info.json").read_text())) == ["train"]
    _check_splits("sharegpt", _load(out, tmp_path, "sharegpt"), _expected(session, version), version)

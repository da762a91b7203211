"""Dataset versions: immutable snapshots of approved examples, deterministic splits, stats and export.

A version copies each approved example into a DatasetVersionItem, so later edits never change what a
training run used. The split of an example depends only on (example id, seed): adding examples to a
later version never moves an old example to another split. The version's content hash covers every
item's text and split, so two versions with the same hash hold the same data.
"""
from __future__ import annotations

import hashlib
from collections import Counter
from pathlib import Path
from typing import Iterable, Iterator

from sqlalchemy import func, insert
from sqlmodel import Session, select

from core.accounts import require
from core.curate.dedup import record_hash
from core.errors import InvalidInput, NotFound
from core.curate.exporting import write_split_folder
from core.curate.formats import EXPORT_FORMATS, chat_messages, make_record, write_records
from core.curate.overlap import prompt_groups
from core.names import check_name, safe_file_name
from storage.models import (DatasetVersion, DatasetVersionItem, Example, ExampleStatus, ImportRecord, Project, User,
                            utcnow, visible_examples)

SPLITS = ("train", "validation", "test")
DEFAULT_FRACTIONS = {"train": 0.8, "validation": 0.1, "test": 0.1}
BATCH = 2000


def check_fractions(fractions: dict | None) -> dict:
    """Validate split fractions (non-negative, train > 0, summing to 1)."""
    fr = dict(DEFAULT_FRACTIONS if fractions is None else fractions)
    fr = {s: float(fr.get(s, 0.0)) for s in SPLITS}
    if any(v < 0 for v in fr.values()) or fr["train"] <= 0:
        raise InvalidInput("Split fractions must be non-negative and train must be above 0.")
    if abs(sum(fr.values()) - 1.0) > 1e-6:
        raise InvalidInput(f"Split fractions must add up to 1 (they add up to {sum(fr.values()):.3f}).")
    return fr


def split_of(example_id: int, seed: int, fractions: dict) -> str:
    """The split of an example: a uniform number from sha256(id, seed) placed on the cumulative fractions."""
    digest = hashlib.sha256(f"{seed}:{example_id}".encode()).digest()
    u = int.from_bytes(digest[:8], "big") / 2**64
    edge = 0.0
    for name in SPLITS:
        edge += fractions[name]
        if u < edge:
            return name
    return "train"


def _prompt_groups(session: Session, project_id: int) -> dict[int, int]:
    """Approved example id -> its prompt group (core.curate.overlap.prompt_groups): a version splits by group, so
    an example and another whose prompt repeats it (exactly or nearly) land in the same split and a test prompt
    is never one the model was trained on. An example without such copies keeps the split of its own id."""
    prompts: list[tuple[int, list[dict]]] = []
    last = 0
    while True:
        rows = session.exec(select(Example).where(
            Example.project_id == project_id, Example.status == ExampleStatus.approved.value, Example.id > last,
        ).order_by(Example.id).limit(BATCH)).all()
        if not rows:
            return prompt_groups(prompts)
        prompts += [(ex.id, chat_messages(_record(ex))[:-1]) for ex in rows]
        last = rows[-1].id


def freeze_version(session: Session, user: User, project: Project, name: str, *, fractions: dict | None = None,
                   seed: int = 0) -> DatasetVersion:
    """Freeze the project's approved examples into a new named version, split by prompt group (``_prompt_groups``)."""
    require(user, "freeze")
    name = check_name(name, "dataset version")
    if session.exec(select(DatasetVersion.id).where(DatasetVersion.project_id == project.id,
                                                    DatasetVersion.name == name)).first():
        raise InvalidInput(f"A version named {name!r} already exists in this project.")
    fr = check_fractions(fractions)
    n_approved = session.exec(select(func.count()).select_from(Example).where(
        Example.project_id == project.id, Example.status == ExampleStatus.approved.value)).one()
    if not n_approved:
        raise InvalidInput("No approved examples to freeze: approve some on the Review data page first.")
    version = DatasetVersion(project_id=project.id, name=name, content_hash="", seed=int(seed), split_fractions=fr,
                             created_by=user.id, created_at=utcnow())
    try:
        session.add(version)
        session.flush()
        group = _prompt_groups(session, project.id)
        counts: Counter[str] = Counter()
        h = hashlib.sha256()
        last = 0
        while True:
            rows = session.exec(select(Example).where(
                Example.project_id == project.id, Example.status == ExampleStatus.approved.value, Example.id > last,
            ).order_by(Example.id).limit(BATCH)).all()
            if not rows:
                break
            items = []
            for ex in rows:
                split = split_of(group.get(ex.id, ex.id), version.seed, fr)
                counts[split] += 1
                h.update(f"{ex.id}:{split}:{record_hash(_record(ex))}\n".encode())
                items.append({"version_id": version.id, "example_id": ex.id, "split": split, "system": ex.system,
                              "turns": ex.turns, "input": ex.input, "tags": ex.tags})
            session.execute(insert(DatasetVersionItem.__table__), items)  # type: ignore[attr-defined]
            last = rows[-1].id
        version.content_hash = h.hexdigest()
        version.n_train, version.n_validation, version.n_test = (counts[s] for s in SPLITS)
        session.add(version)
        session.commit()
    except BaseException:
        session.rollback()
        raise
    session.refresh(version)
    return version


def _record(row) -> dict:
    return make_record(row.system, row.turns, row.input, row.tags, getattr(row, "note", ""))


def list_versions(session: Session, project: Project) -> list[DatasetVersion]:
    return list(session.exec(select(DatasetVersion).where(DatasetVersion.project_id == project.id)
                             .order_by(DatasetVersion.id.desc())))


def get_version(session: Session, version: int | str, project: Project | None = None) -> DatasetVersion:
    """A version by id, or by name: within ``project``, or in any project when the name is unique."""
    if isinstance(version, int) or str(version).isdigit():
        found = session.get(DatasetVersion, int(version))
        if found is not None and (project is None or found.project_id == project.id):
            return found
    query = select(DatasetVersion).where(DatasetVersion.name == str(version))
    if project is not None:
        query = query.where(DatasetVersion.project_id == project.id)
    named = session.exec(query.limit(2)).all()
    if len(named) > 1:
        raise InvalidInput(f"Several projects have a dataset version named {str(version)!r}; name the project "
                           "(--project) or give the version's id.")
    if named:
        return named[0]
    raise NotFound(f"No dataset version {version!r}.")


def iter_version(session: Session, version_id: int, split: str | None = None) -> Iterator[tuple[str, dict]]:
    """(split, record) for every item of a version, in example order; keyset-paged so memory stays flat."""
    for row in _version_items(session, version_id, split):
        yield row.split, _record(row)


def _version_items(session: Session, version_id: int, split: str | None = None) -> Iterator[DatasetVersionItem]:
    last = 0
    while True:
        q = select(DatasetVersionItem).where(DatasetVersionItem.version_id == version_id,
                                             DatasetVersionItem.id > last)
        if split:
            q = q.where(DatasetVersionItem.split == split)
        rows = session.exec(q.order_by(DatasetVersionItem.id).limit(BATCH)).all()
        if not rows:
            return
        yield from rows
        last = rows[-1].id


def version_records(session: Session, version_id: int, split: str) -> list[dict]:
    """TRL conversational prompt/completion records of one split of a version.

    ``{"prompt": [system?, user, assistant, ..., user], "completion": [final assistant message]}``; the
    Alpaca input is merged into its user message; ``example_id`` names the example it was frozen from (an eval
    set keeps it, so a prompt can be traced to its test-split example). Training and evaluation read versions
    through this.
    """
    if split not in SPLITS:
        raise InvalidInput(f"Unknown split {split!r}; choose one of: {', '.join(SPLITS)}.")
    out = []
    for row in _version_items(session, version_id, split):
        msgs = chat_messages(_record(row))
        out.append({"prompt": msgs[:-1], "completion": msgs[-1:], "example_id": row.example_id})
    return out


# ---------------------------------------------------------------- stats


def stats(session: Session, project: Project, version_id: int | None = None) -> dict:
    """Counts by status, tag and annotator, token lengths, duplicates found, and examples per split.

    With ``version_id`` the counts cover that version's examples only: their current status, the tags frozen
    with them, who last edited them, their token lengths and the split sizes. Duplicate counts are the
    project's (they are found at import, before any version)."""
    from storage.models import User as U

    visible = (Example.project_id == project.id, visible_examples())
    names = dict(session.exec(select(U.id, U.username)).all())
    in_version = None
    if version_id is not None:
        in_version = select(DatasetVersionItem.example_id).where(DatasetVersionItem.version_id == version_id)
    scope = [*visible] + ([Example.id.in_(in_version)] if in_version is not None else [])
    by_status = dict(session.exec(select(Example.status, func.count()).where(*scope).group_by(Example.status)).all())
    by_annotator: Counter[int] = Counter()
    for uid, n in session.exec(select(Example.updated_by, func.count()).where(*scope)
                               .group_by(Example.updated_by)).all():
        by_annotator[names.get(uid, "unknown")] += n
    by_tag: Counter = Counter()
    token_lengths: list[int] = []
    if version_id is None:
        last = 0
        while True:
            rows = session.exec(select(Example.id, Example.tags, Example.token_count).where(
                *visible, Example.id > last).order_by(Example.id).limit(10_000)).all()
            if not rows:
                break
            for _, tags, n in rows:
                by_tag.update(tags or [])
                token_lengths.append(n)
            last = rows[-1][0]
    else:
        for item in _version_items(session, version_id):
            by_tag.update(item.tags or [])
        token_lengths = list(session.exec(select(Example.token_count).join(
            DatasetVersionItem, DatasetVersionItem.example_id == Example.id).where(
            DatasetVersionItem.version_id == version_id)).all())
    exact = session.exec(select(func.coalesce(func.sum(ImportRecord.n_duplicates), 0))
                         .where(ImportRecord.project_id == project.id)).one()
    near = session.exec(select(func.count()).select_from(Example).where(
        *visible, Example.near_duplicate_of.is_not(None))).one()
    out = {"by_status": by_status, "by_tag": dict(by_tag.most_common()), "by_annotator": dict(by_annotator),
           "token_lengths": token_lengths, "exact_duplicates_skipped": int(exact),
           "near_duplicates_flagged": int(near), "per_split": {}}
    if version_id is not None:
        out["per_split"] = dict(session.exec(select(DatasetVersionItem.split, func.count())
                                             .where(DatasetVersionItem.version_id == version_id)
                                             .group_by(DatasetVersionItem.split)).all())
    return out


def token_histogram(lengths: list[int], max_bins: int = 30) -> list[dict]:
    """Equal-width bins of token lengths, in numeric order: ``{"start", "end", "examples"}`` per bin (numpy's
    histogram edges, rounded to whole tokens)."""
    import numpy as np

    if not lengths:
        return []
    counts, edges = np.histogram(lengths, bins=min(max_bins, max(1, len(set(lengths)))))
    return [{"start": int(lo), "end": int(np.ceil(hi)), "examples": int(n)}
            for lo, hi, n in zip(edges[:-1], edges[1:], counts)]


# ---------------------------------------------------------------- export


def _selection(session: Session, project: Project, status: str | None, ids: Iterable[int] | None,
               split: str | None = None) -> Iterator[tuple[str, dict]]:
    """(split, record) for the project's examples by status / ids; the split is the default 80/10/10 one (seed 0),
    and with ``split`` only that split's examples come."""
    wanted = set(ids) if ids is not None else None
    last = 0
    while True:
        q = select(Example).where(Example.project_id == project.id, visible_examples(), Example.id > last)
        if status:
            q = q.where(Example.status == status)
        rows = session.exec(q.order_by(Example.id).limit(BATCH)).all()
        if not rows:
            return
        for ex in rows:
            ex_split = split_of(ex.id, 0, DEFAULT_FRACTIONS)
            if (wanted is None or ex.id in wanted) and split in (None, ex_split):
                yield ex_split, _record(ex)
        last = rows[-1].id


def export(session: Session, user: User, project: Project, fmt: str, out: str | Path, *,
           version_id: int | None = None, status: str | None = None, ids: Iterable[int] | None = None) -> Path:
    """Write a version (or a selection of the project's examples by status / ids) in ``fmt`` to the folder ``out``.

    Every format keeps the split: hf_disk is a DatasetDict folder with train/validation/test; the file formats
    (alpaca_json, alpaca_jsonl, sharegpt, chat_jsonl, prompt_completion, csv) write one file per split with a
    dataset card and LLaMA-Factory's dataset_info.json (core.curate.exporting). A selection uses the default
    80/10/10 split with seed 0.
    """
    require(user, "curate")
    if fmt not in EXPORT_FORMATS:
        raise InvalidInput(f"Unknown export format {fmt!r}; choose one of: {', '.join(EXPORT_FORMATS)}.")
    if status and status not in {s.value for s in ExampleStatus}:
        raise InvalidInput(f"Unknown status {status!r}.")
    if version_id is not None:
        get_version(session, version_id, project)

    def pairs(split: str | None = None) -> Iterator[tuple[str, dict]]:
        if version_id is not None:
            return iter_version(session, version_id, split)
        return _selection(session, project, status, ids, split)

    if fmt == "hf_disk":
        both = list(pairs())
        return write_records((r for _, r in both), fmt, out, splits=[s for s, _ in both])
    return write_split_folder(lambda split: (r for _, r in pairs(split)), fmt, out)


def export_name(project: Project, fmt: str, version: DatasetVersion | None = None) -> str:
    """``<project>-<version>-<format>.zip``: a safe file name of its own for every format (core.names)."""
    # Every export is a folder (a DatasetDict, or a file per split): it downloads zipped.
    return safe_file_name(f"{project.name}-{version.name if version else 'selection'}", f"-{fmt}.zip")


def export_file(session: Session, user: User, project: Project, fmt: str, *, version_id: int | None = None,
                status: str | None = None) -> Path:
    """Export into the workspace's exports folder, zipped so the folder downloads as one file."""
    import shutil
    import uuid

    from core.workspace import exports_dir

    version = get_version(session, version_id, project) if version_id is not None else None
    folder = exports_dir() / uuid.uuid4().hex[:12]
    target = folder / export_name(project, fmt, version)
    out = export(session, user, project, fmt, target.with_suffix(""), version_id=version_id, status=status)
    return Path(shutil.make_archive(str(out), "zip", root_dir=out))

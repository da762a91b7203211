"""The parity check: does an exported artifact answer like the run it came from?

"The exported model answers worse than during training" is nearly always a chat-template or generation-config
mismatch, not a weights problem. So after every export the eval set's prompts are answered greedily twice: by the
run, loaded as the generation job loads it (the adapter on its base through PEFT), and by the artifact loaded the
way a user loads it (merged: ``AutoModelForCausalLM`` without peft; adapter: the base plus
``PeftModel.from_pretrained``; endpoint: the OpenAI-compatible endpoint over HTTP). Greedy decoding in float32
makes the answers a function of the weights, the template and the generation config alone, so any difference is
a real difference. The verdict is "identical 6/6", or the first prompt that differs with both answers.
"""
from __future__ import annotations

import gc
from pathlib import Path

from sqlmodel import Session

from core.basemodel import resolve_model_path
from core.curate.datasets import version_records
from core.curate.preference_versions import preference_records
from core.errors import InvalidInput
from core.evaluate.evalsets import eval_prompts, get_eval_set
from core.evaluate.generate import generate_outputs
from core.evaluate.generate_config import Decoding
from core.ship import client
from core.ship.loading import pick_device
from core.ship.systems import Servable
from core.train.export import load_finetuned
from storage.models import Job

KINDS = ("merged", "adapter", "endpoint")
DECODING = Decoding(do_sample=False, max_new_tokens=256)
BATCH = 8


def parity_prompts(session: Session, run: Job, eval_set_id: int | None = None) -> tuple[str, list[list[dict]]]:
    """(where they come from, the conversations): the eval set's prompts, else the test split (or, without one,
    the validation split) of the run's dataset version, else (a DPO run) its preference version's prompts."""
    if eval_set_id:
        es = get_eval_set(session, eval_set_id)
        if es.project_id != run.project_id:
            raise InvalidInput(f"Eval set {eval_set_id} belongs to another project.")
        return f"eval set {es.name}", [list(p.messages) for p in eval_prompts(session, es.id)]
    pref_id = (run.config or {}).get("preference_version_id")
    if not run.dataset_version_id and pref_id:  # a DPO run: the prompts of the pairs it learned from
        return "preference version's prompts", [list(r["prompt"]) for r in preference_records(session, pref_id)]
    if not run.dataset_version_id:
        raise InvalidInput(f"Run {run.id} names no dataset version; choose an eval set for the parity check.")
    for split in ("test", "validation"):
        records = version_records(session, run.dataset_version_id, split)
        if records:
            return f"{split} split", [list(r["prompt"]) for r in records]
    raise InvalidInput(f"Run {run.id}'s dataset version has no test or validation examples; choose an eval set "
                       "for the parity check.")


def _answers(model, tokenizer, conversations, decoding: Decoding, device: str) -> list[str]:
    model.to(device).eval()
    out = generate_outputs(model, tokenizer, conversations, decoding, batch_size=BATCH)
    return [r["text"] if r else "" for r in out]


def _free(*objects) -> None:
    del objects
    gc.collect()


def run_answers(run_dir: str | Path, conversations, decoding: Decoding = DECODING, device: str | None = None):
    """The run's own greedy answers: its adapter on its base through PEFT (or its full model), in float32."""
    import torch

    model, tokenizer = load_finetuned(run_dir, dtype=torch.float32)
    answers = _answers(model, tokenizer, conversations, decoding, pick_device(device))
    _free(model)
    return answers


def artifact_answers(kind: str, folder: str | Path, conversations, decoding: Decoding = DECODING, *,
                     base_model: str | None = None, device: str | None = None) -> list[str]:
    """Greedy answers of an exported artifact, loaded the way a user loads it."""
    import torch
    from transformers import AutoModelForCausalLM, AutoTokenizer

    device = pick_device(device)
    folder = Path(folder)
    if kind == "endpoint":
        from core.ship.server import InProcess

        system = (Servable("export", "export", model_dir=str(folder)) if (folder / "config.json").is_file()
                  else Servable("export", "export", base_model=base_model, adapter_dir=str(folder)))
        with InProcess(system, device, dtype=torch.float32) as url:
            return [client.complete(url, None, list(c), decoding).text.strip() for c in conversations]
    tokenizer = AutoTokenizer.from_pretrained(folder)
    if kind == "merged":
        model = AutoModelForCausalLM.from_pretrained(folder, dtype=torch.float32)
    elif kind == "adapter":
        from peft import PeftModel

        base = AutoModelForCausalLM.from_pretrained(resolve_model_path(base_model), dtype=torch.float32)
        model = PeftModel.from_pretrained(base, folder)  # type: ignore[assignment]  # generates like the base
    else:
        raise InvalidInput(f"Unknown artifact {kind!r}; one of {', '.join(KINDS)}.")
    answers = _answers(model, tokenizer, conversations, decoding, device)
    _free(model)
    return answers


def _last_user(conversation: list[dict]) -> str:
    return next((m["content"] for m in reversed(conversation) if m["role"] == "user"), "")


def compare(conversations, reference: list[str], got: list[str]) -> dict:
    """The verdict: how many answers are identical, and the first prompt whose answers differ."""
    same = [a.strip() == b.strip() for a, b in zip(reference, got)]
    n, total = sum(same), len(same)
    verdict = {"identical": n, "total": total,
               "summary": f"identical {n}/{total}" if n == total else f"differs on {total - n} of {total}",
               "first_difference": None}
    if n < total:
        i = same.index(False)
        verdict["first_difference"] = {"index": i, "prompt": _last_user(conversations[i]),
                                       "run": reference[i], "export": got[i]}
    return verdict


def check(kind: str, folder: str | Path, conversations, reference: list[str], *, base_model: str | None = None,
          decoding: Decoding = DECODING, device: str | None = None) -> dict:
    """Answer ``conversations`` with the artifact and compare with the run's ``reference`` answers."""
    got = artifact_answers(kind, folder, conversations, decoding, base_model=base_model, device=device)
    return {**compare(conversations, reference, got), "answers": got}

"""``finetune-studio docs add | list | search | delete | prompt | generate | paraphrase``: a project's knowledge
documents, the team prompt of +prompt systems, and the drafts generated from them (or from a run's failures),
through the same core functions as the Documents page."""
from __future__ import annotations

from pathlib import Path

from core.cli.common import project_arg, wait_succeeded
from core.curate.documents import add_document, delete_document, list_documents, search
from core.errors import InvalidInput
from core.evaluate.augment import set_team_prompt
from core.evaluate.docdrafts import chunk_sources, failure_sources, launch_generated_drafts
from core.evaluate.evalsets import get_eval_set
from core.workspace import local_path
from storage.models import JobStatus


def cmd_docs_add(args, session, user):
    project = project_arg(session, args)
    out = []
    for name in args.files:
        doc = add_document(session, user, project, Path(name).name, local_path(name).read_bytes())
        out.append({"id": doc.id, "name": doc.name, "version": doc.version, "chunks": doc.n_chunks})
    return out


def cmd_docs_list(args, session, user):
    project = project_arg(session, args)
    return [{"id": d.id, "name": d.name, "version": d.version, "kind": d.kind, "chunks": d.n_chunks,
             "bytes": d.size_bytes} for d in list_documents(session, project)]


def cmd_docs_search(args, session, user):
    project = project_arg(session, args)
    return [{"passage": h.label, "section": h.heading, "score": round(h.score, 4), "text": h.text[:200]}
            for h in search(session, project, args.query, k=args.k)]


def cmd_docs_delete(args, session, user):
    project = project_arg(session, args)
    return {"deleted": args.name, "versions": delete_document(session, user, project, args.name)}


def cmd_docs_prompt(args, session, user):
    """`docs prompt`: show, or set, the team prompt of +prompt systems and the passages per question of +rag ones."""
    project = project_arg(session, args)
    text = local_path(args.file).read_text(encoding="utf-8") if args.file else args.set
    if text is not None or args.top_k is not None:
        project = set_team_prompt(session, user, project, team_prompt=text, rag_top_k=args.top_k)
    return {"project": project.name, "team_prompt": project.team_prompt, "rag_top_k": project.rag_top_k}


def _finish(args, session, job) -> dict:
    if args.wait:
        job = wait_succeeded(session, job, "Generated-drafts job")
    out = {"job": job.id, "status": job.status, "sources": len(job.config["sources"]), "run_dir": job.run_dir}
    if job.status == JobStatus.succeeded.value:
        out.update(drafts=job.result.get("drafts"), unparseable=job.result.get("unparseable"),
                   withheld=job.result.get("withheld"))
    return out


def cmd_docs_generate(args, session, user):
    project = project_arg(session, args)
    by_name = {d.name: d.id for d in list_documents(session, project)}
    names = args.documents or list(by_name)
    unknown = [n for n in names if n not in by_name]
    if unknown:
        raise InvalidInput(f"No document called {', '.join(unknown)} in this project (see `docs list`).")
    sources = chunk_sources(session, project, [by_name[n] for n in names], args.max_chunks)
    job = launch_generated_drafts(session, user, project.id, args.system, "documents", sources,
                                  per_source=args.per_chunk, base_model=args.base_model,
                                  decoding={"max_new_tokens": args.max_new_tokens}, batch_size=args.batch_size)
    return _finish(args, session, job)


def cmd_docs_paraphrase(args, session, user):
    project = project_arg(session, args)
    es = get_eval_set(session, args.eval_set, project.id)
    sources = failure_sources(session, user, es.id, args.run, rule=args.rule)
    job = launch_generated_drafts(session, user, project.id, args.system, "paraphrases", sources,
                                  per_source=args.per_prompt, base_model=args.base_model,
                                  decoding={"max_new_tokens": args.max_new_tokens}, batch_size=args.batch_size)
    return _finish(args, session, job)


def _job_args(p) -> None:
    p.add_argument("--system", default="base", help="the model that writes: base or run:N (default base)")
    p.add_argument("--base-model", help="the model behind base (default: the embedded model)")
    p.add_argument("--max-new-tokens", type=int, default=160)
    p.add_argument("--batch-size", type=int, default=8)
    p.add_argument("--project", help="project name or id (default: the first)")
    p.add_argument("--wait", action="store_true", help="wait for the job, printing progress to stderr")


def register(sub, common) -> None:
    """Add `docs` to the finetune-studio command line."""
    docs = sub.add_parser("docs", parents=[common], help="knowledge documents: add, list, search, delete, "
                                                     "prompt, generate")
    dsub = docs.add_subparsers(dest="docs_cmd", required=True)
    p = dsub.add_parser("add", parents=[common], help="add documents (Markdown, text, HTML, PDF); a known name "
                                                      "becomes its next version")
    p.add_argument("files", nargs="+")
    p.add_argument("--project", help="project name or id (default: the first)")
    p.set_defaults(fn=cmd_docs_add)
    p = dsub.add_parser("list", parents=[common], help="list the current documents")
    p.add_argument("--project", help="project name or id (default: the first)")
    p.set_defaults(fn=cmd_docs_list)
    p = dsub.add_parser("search", parents=[common], help="the passages that best match a question")
    p.add_argument("query")
    p.add_argument("-k", type=int, default=5, help="passages to show (default 5)")
    p.add_argument("--project", help="project name or id (default: the first)")
    p.set_defaults(fn=cmd_docs_search)
    p = dsub.add_parser("delete", parents=[common], help="take a document out of the list and of search")
    p.add_argument("name")
    p.add_argument("--project", help="project name or id (default: the first)")
    p.set_defaults(fn=cmd_docs_delete)
    p = dsub.add_parser("prompt", parents=[common], help="the team prompt of +prompt systems and the passages per "
                                                         "question of +rag systems: show, or set")
    text = p.add_mutually_exclusive_group()
    text.add_argument("--set", metavar="TEXT", help="the team prompt (\"\" for none)")
    text.add_argument("--file", help="read the team prompt from this file (e.g. the fact sheet)")
    p.add_argument("--top-k", type=int, help="passages a +rag system gets per question (1 to 20)")
    p.add_argument("--project", help="project name or id (default: the first)")
    p.set_defaults(fn=cmd_docs_prompt)
    p = dsub.add_parser("generate", parents=[common], help="drafts from documents: questions per chunk, answered "
                                                           "from the chunk")
    p.add_argument("documents", nargs="*", help="document names (default: all current documents)")
    p.add_argument("--per-chunk", type=int, default=2, help="questions per chunk (default 2)")
    p.add_argument("--max-chunks", type=int, default=0, help="at most this many chunks (default: all)")
    _job_args(p)
    p.set_defaults(fn=cmd_docs_generate)
    p = dsub.add_parser("paraphrase", parents=[common], help="drafts that reword the prompts a run failed on")
    p.add_argument("--eval-set", required=True, help="eval set name or id")
    p.add_argument("--run", required=True, help="the run whose failures to paraphrase: run:N")
    p.add_argument("--rule", default="lost_to_base", choices=["lost_to_base", "low_score", "either"])
    p.add_argument("--per-prompt", type=int, default=3, help="paraphrases per failing prompt (default 3)")
    _job_args(p)
    p.set_defaults(fn=cmd_docs_paraphrase)

"""The house's shape holds: each layer imports only downward, no import cycles (module-level or inside
functions alike), storage imports nothing from core, nothing under core/ or storage/ imports Streamlit (the UI lives
in ui/ and pages/), and no Python file grows past one idea's size."""
from __future__ import annotations

import ast
import os
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
SOURCES = ["core", "storage", "ui", "pages", "app.py", "asgi.py", "tools"]
# Lower number = lower layer. A module may import its own layer or lower ones, never higher. The stages are ordered
# as the loop runs (a later stage may use an earlier one: ship -> evaluate -> train -> curate), never backwards.
LAYERS = [
    (0, "storage"),
    (1, "core.errors"), (1, "core.workspace"), (1, "core.locks"), (1, "core.accounts"), (1, "core.projects"),
    (1, "core.basemodel"), (1, "core.configs"),
    (1, "core.sessions"), (1, "core.throttle"), (1, "core.names"), (1, "core.systems"),
    (2, "core.jobs"),
    (3, "core.curate"),
    (4, "core.train"),
    (5, "core.evaluate"),
    (6, "core.ship"),
    (7, "ui"),  # the Streamlit frame, browser helpers and widgets every page shares: above all of core
    (8, "core.cli"), (8, "core.startup"), (8, "pages"), (8, "app"), (8, "asgi"),
    (8, "tools"),  # offline generators beside the installed packages (tools/demogen writes core/curate/data)
]
NAMES = {0: "storage", 1: "shared base", 2: "jobs", 3: "curate", 4: "train", 5: "evaluate", 6: "ship", 7: "ui",
         8: "pages/cli/start-up/tools"}
# Streamlit belongs to the pages and to ui/; worker processes and the CLI import core and must not pull it in.
NO_STREAMLIT = ["core", "storage"]


def module_name(path: Path) -> str:
    rel = path.relative_to(ROOT).with_suffix("")
    parts = list(rel.parts)
    if parts[-1] == "__init__":
        parts.pop()
    return ".".join(parts)


def project_modules() -> dict[str, Path]:
    out = {}
    for src in SOURCES:
        path = ROOT / src
        files = [path] if path.is_file() else sorted(path.rglob("*.py"))
        for f in files:
            if "migrations" in f.parts:
                continue  # Alembic scripts run inside Alembic, not as part of the import graph
            out[module_name(f)] = f
    return out


def imports_of(path: Path, name: str, known: set[str]) -> set[str]:
    """Project modules imported anywhere in the file (module level and inside functions)."""
    tree = ast.parse(path.read_text(encoding="utf-8"), filename=str(path))
    package = name if path.name == "__init__.py" else name.rpartition(".")[0]
    found: set[str] = set()

    def add(target: str) -> None:
        while target and target not in known:
            target = target.rpartition(".")[0]
        if target and target != name:
            found.add(target)

    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            for alias in node.names:
                add(alias.name)
        elif isinstance(node, ast.ImportFrom):
            base = node.module or ""
            if node.level:
                parts = package.split(".")
                base = ".".join(parts[: len(parts) - node.level + 1] + ([base] if base else []))
            for alias in node.names:
                full = f"{base}.{alias.name}"
                add(full if full in known else base)
    return found


def graph() -> dict[str, set[str]]:
    mods = project_modules()
    known = set(mods)
    return {name: imports_of(path, name, known) for name, path in mods.items()}


def layer(module: str) -> int:
    best = None
    for rank, prefix in LAYERS:
        if module == prefix or module.startswith(prefix + "."):
            if best is None or len(prefix) > len(best[1]):
                best = (rank, prefix)
    assert best is not None, f"{module} belongs to no layer: add it to LAYERS in {__file__}"
    return best[0]


def test_every_module_belongs_to_a_layer_and_imports_only_downward():
    upward = []
    for module, targets in graph().items():
        for target in targets:
            if layer(target) > layer(module):
                upward.append(f"{module} ({NAMES[layer(module)]}) imports {target} ({NAMES[layer(target)]})")
    assert not upward, "imports against the layers:\n" + "\n".join(sorted(upward))


def test_storage_imports_nothing_from_core():
    bad = [f"{m} imports {t}" for m, ts in graph().items() if m.startswith("storage") for t in ts
           if t.startswith("core")]
    assert not bad, bad


def test_core_imports_nothing_from_ui():
    """The CLI and start-up sit above the stages but beside ui/, not above it: a job process or a command
    must not load Streamlit through ui."""
    bad = [f"{m} imports {t}" for m, ts in graph().items() if m.startswith(("core", "storage")) for t in ts
           if t == "ui" or t.startswith("ui.")]
    assert not bad, bad


def test_installed_packages_import_nothing_from_tools():
    """tools/ is not installed (pyproject's packages are core, storage and ui): an import of it from those would
    work in a checkout and fail in an installed studio."""
    bad = [f"{m} imports {t}" for m, ts in graph().items() if m.startswith(("core", "storage", "ui")) for t in ts
           if t == "tools" or t.startswith("tools.")]
    assert not bad, bad


def streamlit_imports(path: Path) -> list[int]:
    """Lines of the file that import streamlit (module level or inside functions)."""
    tree = ast.parse(path.read_text(encoding="utf-8"), filename=str(path))
    lines = []
    for node in ast.walk(tree):
        names = [a.name for a in node.names] if isinstance(node, ast.Import) else \
            [node.module or ""] if isinstance(node, ast.ImportFrom) and not node.level else []
        if any(n == "streamlit" or n.startswith("streamlit.") for n in names):
            lines.append(node.lineno)
    return lines


def test_nothing_under_core_or_storage_imports_streamlit():
    found = {str(p.relative_to(ROOT)): lines for src in NO_STREAMLIT for p in sorted((ROOT / src).rglob("*.py"))
             if (lines := streamlit_imports(p))}
    assert not found, f"move these to ui/ (streamlit imported at lines): {found}"


def test_the_streamlit_check_sees_every_form_of_import(tmp_path):
    f = tmp_path / "mod.py"
    f.write_text("import os\ndef later():\n    from streamlit.runtime import exists\nimport streamlit as st\n"
                 "from streamlit_lib import x\n", encoding="utf-8")
    assert sorted(streamlit_imports(f)) == [3, 4]  # not streamlit_lib: another package


def test_no_import_cycles():
    g = graph()
    cycles, state, stack = [], {}, []

    def visit(node: str) -> None:
        state[node] = "open"
        stack.append(node)
        for nxt in sorted(g.get(node, ())):
            if state.get(nxt) == "open":
                cycles.append(" -> ".join(stack[stack.index(nxt):] + [nxt]))
            elif nxt not in state:
                visit(nxt)
        stack.pop()
        state[node] = "done"

    for node in sorted(g):
        if node not in state:
            visit(node)
    assert not cycles, "import cycles:\n" + "\n".join(cycles)


def test_the_checker_sees_function_level_imports_and_cycles(tmp_path):
    """The graph must count an import inside a function: that is how cycles used to hide."""
    f = tmp_path / "mod.py"
    f.write_text("def later():\n    from core.jobs.queue import submit\n", encoding="utf-8")
    assert imports_of(f, "core.fake", {"core.jobs.queue", "core.jobs"}) == {"core.jobs.queue"}
    assert layer("core.jobs.queue") < layer("core.train.runs") < layer("ui.frame") < layer("pages.train")


def test_no_python_file_holds_more_than_one_ideas_worth_of_lines():
    # No exception, tests and tools included: a long idea becomes a package of modules (core/curate/formats/,
    # storage/models/).
    limit = 450
    files = []
    for folder, dirs, names in os.walk(ROOT):
        dirs[:] = [d for d in dirs if not d.startswith(".") and d not in {"workspace", "artifacts", "__pycache__"}
                   and not d.endswith(".egg-info")]
        files += [Path(folder, n) for n in names if n.endswith(".py")]
    long = {str(p.relative_to(ROOT)): n for p in files
            if (n := len(p.read_text(encoding="utf-8").splitlines())) > limit}
    assert not long, f"split these by idea (over {limit} lines): {long}"


def test_no_page_shadows_an_installed_module():
    # Streamlit runs a page with its folder on sys.path: pages/datasets.py once hid Hugging Face's `datasets`
    # (the DPO export on Results failed with "cannot import name 'Dataset' from 'datasets'").
    from importlib.metadata import packages_distributions

    installed = set(packages_distributions()) | set(sys.stdlib_module_names)
    scripts = [p.stem for p in (ROOT / "pages").glob("*.py")] + ["app", "asgi"]
    clashes = sorted(name for name in scripts if name in installed)
    assert not clashes, f"rename these pages/scripts: an import of the same name would load them: {clashes}"

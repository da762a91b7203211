"""Names users give things (projects, dataset versions, runs, eval sets, users) never reach Streamlit's Markdown
unescaped: a project called ``![p](http://evil.example/p.png)`` made every reader's browser fetch that URL. This
scans every page for a Markdown-rendering call whose text holds a name not passed through ``md_literal``; and
checks that admin guidelines, Markdown by design, lose their images."""
from __future__ import annotations

import ast
from pathlib import Path

from core.projects import inert_markdown

ROOT = Path(__file__).resolve().parents[1]
# Streamlit calls whose text (or label) is rendered as Markdown.
MARKDOWN_CALLS = {"markdown", "caption", "title", "header", "subheader", "write", "info", "warning", "success",
                  "error", "toast", "expander", "button", "popover", "metric", "radio", "checkbox", "toggle",
                  "text_input", "text_area", "number_input", "selectbox", "multiselect", "download_button",
                  "page_link", "tabs", "form_submit_button", "link_button", "status", "pills", "segmented_control"}
NAME_FIELDS = {"name", "username", "title"}
ESCAPES = {"md_literal", "inert_markdown"}


def _names_in(node: ast.AST) -> list[str]:
    """Name fields (``x.name``, ``x["username"]``) inside ``node`` that no escaping call wraps."""
    found = []
    if isinstance(node, ast.Call) and getattr(node.func, "id", getattr(node.func, "attr", None)) in ESCAPES:
        return []
    if isinstance(node, ast.Attribute) and node.attr in NAME_FIELDS:
        found.append(ast.unparse(node))
    if isinstance(node, ast.Subscript) and isinstance(node.slice, ast.Constant) and node.slice.value in NAME_FIELDS:
        found.append(ast.unparse(node))
    if isinstance(node, ast.Lambda):  # format_func: option labels are plain text, not Markdown
        return []
    for child in ast.iter_child_nodes(node):
        found += _names_in(child)
    return found


def _markdown_text_args(call: ast.Call) -> list[ast.AST]:
    """The arguments of a Markdown-rendering call that are rendered: the first positional one and ``label``/``body``
    (options, keys, help, file names and values are not)."""
    args = call.args[:1] + [k.value for k in call.keywords if k.arg in ("label", "body")]
    return args


def test_no_page_renders_a_user_given_name_as_markdown():
    offenders = []
    for path in sorted([*ROOT.joinpath("pages").glob("*.py"), *ROOT.joinpath("ui").glob("*.py"), ROOT / "app.py"]):
        tree = ast.parse(path.read_text(encoding="utf-8"))
        for node in ast.walk(tree):
            if isinstance(node, ast.Call) and getattr(node.func, "attr", None) in MARKDOWN_CALLS:
                for arg in _markdown_text_args(node):
                    for name in _names_in(arg):
                        offenders.append(f"{path.relative_to(ROOT)}:{node.lineno}: {name}")
    assert not offenders, "user-given names rendered as Markdown (wrap them in md_literal):\n" + "\n".join(offenders)


def test_guidelines_keep_their_markdown_but_no_image():
    text = ("**Be kind.** See [the policy](https://example.com/policy).\n\n![diagram](http://evil.example/d.png)\n\n"
            '![titled](http://evil.example/t.png "Title") ![ref][logo] ![a ![b](http://evil.example/b.png)](v)\n\n'
            "[logo]: http://evil.example/r.png")
    out = inert_markdown(text)
    assert "**Be kind.**" in out and "[the policy](https://example.com/policy)" in out
    assert "diagram" in out and "titled" in out and "ref" in out
    assert "![" not in out, out

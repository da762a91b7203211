"""Ollama: a Modelfile whose TEMPLATE and stop PARAMETERs come from the model's own chat template.

Ollama renders prompts with a Go template, not the Jinja chat template transformers uses; a hand-copied or
default TEMPLATE is the usual reason an Ollama import "answers worse than during training". So the template is
read off the model's own chat template: it is rendered on marker messages, the text around each role's content
is taken as that role's prefix and suffix, and the Go template is built from them. The result is checked by
rendering a few conversations both ways; a template that prefixes and suffixes cannot express is reported, not
hidden.
"""
from __future__ import annotations

import json
import re
from dataclasses import dataclass, field
from pathlib import Path

MARK = {"system": "\u2063SYS\u2063", "user": "\u2063USR\u2063", "assistant": "\u2063AST\u2063",
        "user2": "\u2063US2\u2063"}


@dataclass
class ChatFormat:
    """The text around each role's content, read off a chat template."""

    start: str = ""
    """Emitted once before the first message (a BOS token the template writes itself)."""
    prefix: dict = field(default_factory=dict)
    suffix: dict = field(default_factory=dict)
    default_system: str | None = None
    """The system message the template inserts when a conversation has none."""
    stops: list[str] = field(default_factory=list)
    mismatches: list[str] = field(default_factory=list)
    """Conversations whose rendering differs between the Jinja and the derived Go template."""


def _between(text: str, a: str, b: str) -> str:
    if a not in text or b not in text[text.index(a):]:
        raise ValueError("the chat template does not write every message as it came (it merges or drops roles)")
    i = text.index(a) + len(a)
    return text[i:text.index(b, i)]


def _strip_suffix(text: str, suffix: str) -> str:
    if suffix and not text.endswith(suffix):
        raise ValueError(f"{text!r} does not end with {suffix!r}")
    return text[:len(text) - len(suffix)] if suffix else text


def read_format(tokenizer) -> ChatFormat:
    """Prefixes, suffixes, default system message and stop strings of ``tokenizer``'s chat template."""
    def render(messages, gen):
        return tokenizer.apply_chat_template(messages, tokenize=False, add_generation_prompt=gen)

    s, u, a, u2 = (MARK[k] for k in ("system", "user", "assistant", "user2"))
    conv = [{"role": "system", "content": s}, {"role": "user", "content": u}, {"role": "assistant", "content": a},
            {"role": "user", "content": u2}]
    with_gen, without_gen = render(conv, True), render(conv, False)
    if any(m not in with_gen for m in (s, u, a, u2)):
        raise ValueError("the chat template does not write every message as it came (it merges or drops roles)")
    fmt = ChatFormat()
    asst_prefix = with_gen[len(without_gen):] if with_gen.startswith(without_gen) else ""
    closed = render(conv[:3], False)
    fmt.suffix["assistant"] = closed[closed.index(a) + len(a):]
    a_to_u = _between(with_gen, a, u2)
    if not a_to_u.startswith(fmt.suffix["assistant"]):
        raise ValueError("the chat template writes an answer differently inside a conversation and at its end")
    fmt.prefix["user"] = a_to_u[len(fmt.suffix["assistant"]):]
    fmt.suffix["user"] = with_gen[with_gen.index(u2) + len(u2):len(with_gen) - len(asst_prefix)]
    fmt.prefix["assistant"] = asst_prefix
    fmt.suffix["system"] = _strip_suffix(_between(with_gen, s, u), fmt.prefix["user"])
    head = with_gen[:with_gen.index(s)]
    bos = tokenizer.bos_token or ""
    # A BOS the template writes once (not again before each user turn) starts the whole prompt.
    fmt.start = bos if bos and head.startswith(bos) and not fmt.prefix["user"].startswith(bos) else ""
    fmt.prefix["system"] = head[len(fmt.start):]
    alone = render([{"role": "user", "content": u}], False)
    before_user = alone[:alone.index(u)]
    if before_user != fmt.start + fmt.prefix["user"] and before_user.startswith(fmt.start + fmt.prefix["system"]):
        fmt.default_system = _strip_suffix(_strip_suffix(before_user, fmt.prefix["user"]), fmt.suffix["system"])[
            len(fmt.start + fmt.prefix["system"]):]
    specials = [t for t in getattr(tokenizer, "all_special_tokens", []) if t]
    stops = [fmt.suffix["assistant"].strip(), tokenizer.eos_token or ""]
    stops += [t for t in specials if t in fmt.prefix["user"] and t != fmt.start]
    fmt.stops = [x for x in dict.fromkeys(stops) if x]
    fmt.mismatches = _check(tokenizer, fmt)
    return fmt


def go_template(fmt: ChatFormat) -> str:
    """The Ollama (Go) TEMPLATE: each message wrapped in its role's prefix and suffix, then the answer's prefix."""
    parts = [fmt.start, "{{ range .Messages }}"]
    for i, role in enumerate(("system", "user", "assistant")):
        parts.append(f'{{{{ {"if" if i == 0 else "else if"} eq .Role "{role}" }}}}'
                     f'{fmt.prefix[role]}{{{{ .Content }}}}{fmt.suffix[role]}')
    parts.append("{{ end }}{{ end }}" + fmt.prefix["assistant"])
    text = "".join(parts)
    for piece in [fmt.start, *fmt.prefix.values(), *fmt.suffix.values()]:
        if "{{" in piece:
            raise ValueError("the chat template's text cannot be written into an Ollama TEMPLATE")
    return text


def _render_like_ollama(fmt: ChatFormat, messages: list[dict]) -> str:
    if fmt.default_system is not None and not any(m["role"] == "system" for m in messages):
        messages = [{"role": "system", "content": fmt.default_system}] + messages  # Ollama's SYSTEM line
    body = "".join(fmt.prefix[m["role"]] + m["content"] + fmt.suffix[m["role"]] for m in messages)
    return fmt.start + body + fmt.prefix["assistant"]


def _check(tokenizer, fmt: ChatFormat) -> list[str]:
    samples = [
        [{"role": "user", "content": "My bill doubled, why?"}],
        [{"role": "system", "content": "Be brief."}, {"role": "user", "content": "Hi"},
         {"role": "assistant", "content": "Hello! How can I help?"}, {"role": "user", "content": "Read my meter."}],
    ]
    out = []
    for messages in samples:
        want = tokenizer.apply_chat_template(messages, tokenize=False, add_generation_prompt=True)
        if _render_like_ollama(fmt, messages) != want:
            out.append(json.dumps(messages))
    return out


def modelfile_value(text: str | Path, style: str = "bare") -> str:
    """``text`` written as one Modelfile argument that Ollama reads back exactly: bare when it can be (``style``
    "bare"), else in double quotes, else in triple quotes ("block" tries those first). Ollama's parser has no
    escapes: a value is cut at the first line break after which the text so far is a complete quoted string, and
    drops characters that are not printable. So every candidate is parsed back (``parse_modelfile``) and the first
    that gives ``text`` is taken; ValueError when none does (a path with a line break right after a quote)."""
    text = str(text)
    quoted = ['"' + text + '"', '"""' + text + '"""']
    candidates = {"bare": [text] + quoted, "quoted": quoted, "block": quoted[::-1]}[style]
    for value in candidates:
        try:
            if parse_modelfile(f"SYSTEM {value}\n") == [("system", text)]:
                return value
        except ValueError:
            continue
    raise ValueError(f"{text!r} cannot be written into an Ollama Modelfile (its parser has no escapes); rename it")


def _unquote(text: str) -> tuple[str, bool]:
    if text.startswith('"""'):
        return (text[3:-3], True) if len(text) >= 6 and text.endswith('"""') else ("", False)
    if text.startswith('"'):
        return (text[1:-1], True) if len(text) >= 2 and text.endswith('"') else ("", False)
    return text, True


def parse_modelfile(text: str) -> list[tuple[str, str]]:
    """(command, argument) for each command of a Modelfile, read as Ollama's parser reads it (ollama
    parser/parser.go ParseFile: a value ends at a line break once it is a complete quoted string, quotes are
    removed, characters that are not printable are dropped); "from" is named "model" as there. ValueError for
    what Ollama refuses."""
    commands, name, state, buf = [], "", "nil", []
    for ch in text + "\n":
        if state == "comment":
            state = "nil" if ch in "\r\n" else state
        elif state == "nil":
            if ch == "#":
                state = "comment"
            elif ch not in " \t\r\n":
                state, buf = "name", [ch]
        elif state == "name":
            if ch.isascii() and ch.isalpha():
                buf.append(ch)
            elif ch in " \t":
                name, buf = "".join(buf).lower(), []
                state = "parameter" if name == "parameter" else "value"
            else:
                raise ValueError(f"not a Modelfile command: {''.join(buf) + ch!r}")
        elif state == "parameter":  # PARAMETER <name> <value>: the command is named by the parameter
            if ch.isascii() and (ch.isalnum() or ch == "_"):
                buf.append(ch)
            elif ch in " \t":
                name, state, buf = "".join(buf), "value", []
            else:
                raise ValueError(f"not a parameter name: {''.join(buf) + ch!r}")
        elif ch in " \t\r\n":  # state == "value"
            value, ok = _unquote("".join(buf).strip())
            if ok and ch in "\r\n":
                commands.append(("model" if name == "from" else name, value))
                state, buf = "nil", []
            else:
                buf.append(ch)
        elif ch.isprintable():
            buf.append(ch)
    if state not in ("nil", "comment"):
        raise ValueError("the Modelfile ends inside a value")
    return commands


def modelfile(fmt: ChatFormat | None, *, model_from: str | Path, adapter: str | Path | None = None,
              system: str | None = None) -> str:
    """A Modelfile: FROM a merged safetensors folder (or a base folder with ADAPTER), TEMPLATE, SYSTEM, and one stop
    PARAMETER per stop string. SYSTEM is ``system``, the system prompt the model was trained with, else the
    template's default one. Without ``fmt`` (a chat template prefixes and suffixes cannot express) there is no
    TEMPLATE and no stop: Ollama detects both from the model's own chat template when it imports the folder.
    Every value goes through ``modelfile_value``: a folder named with a line break, quotes or triple quotes stays
    one value."""
    lines = ["# Written by finetune-studio from the model's own chat template." if fmt is not None else
             "# Written by finetune-studio; no TEMPLATE: Ollama detects it from the model's chat template.",
             f"FROM {modelfile_value(model_from)}"]
    if adapter:
        lines.append(f"ADAPTER {modelfile_value(adapter)}")
    if fmt is not None:
        lines.append(f"TEMPLATE {modelfile_value(go_template(fmt), 'block')}")
    system = system or (fmt.default_system if fmt is not None else None)
    if system is not None:
        lines.append(f"SYSTEM {modelfile_value(system, 'block')}")
    lines += [f"PARAMETER stop {modelfile_value(stop, 'quoted')}" for stop in (fmt.stops if fmt else [])]
    return "\n".join(lines) + "\n"


def derived_format(tokenizer) -> tuple[ChatFormat | None, str]:
    """(the chat format, "") when a TEMPLATE can be derived from ``tokenizer``'s chat template, else (None, why)."""
    try:
        fmt = read_format(tokenizer)
        go_template(fmt)
    except ValueError as err:
        return None, str(err)
    except Exception as err:  # noqa: BLE001 - jinja's TemplateError: the template refuses the sample conversation
        return None, f"the chat template refuses a system, user, assistant, user conversation ({err})"
    return fmt, ""


def model_name(text: str) -> str:
    """An Ollama model name: lower-case letters, digits, dots, dashes and underscores."""
    return re.sub(r"[^a-z0-9._-]+", "-", text.lower()).strip("-.")[:80] or "model"


def create_command(name: str, path: str | Path) -> str:
    """``ollama create NAME -f MODELFILE`` as a shell command line (core.ship.vllm.command_line quotes it)."""
    from core.ship.vllm import command_line

    return command_line(["ollama", "create", model_name(name), "-f", str(path)])

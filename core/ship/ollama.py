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
import shlex
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
        if "{{" in piece or '"""' in piece:
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


def _quote(text: str) -> str:
    return '"""' + text + '"""'


def modelfile(fmt: ChatFormat, *, model_from: str | Path, adapter: str | Path | None = None) -> str:
    """A Modelfile: FROM a merged safetensors folder (or a base folder with ADAPTER), TEMPLATE, SYSTEM when the
    template has a default one, and one stop PARAMETER per stop string."""
    lines = ["# Written by finetune-studio from the model's own chat template.", f"FROM {model_from}"]
    if adapter:
        lines.append(f"ADAPTER {adapter}")
    lines.append(f"TEMPLATE {_quote(go_template(fmt))}")
    if fmt.default_system is not None:
        lines.append(f"SYSTEM {_quote(fmt.default_system)}")
    lines += [f"PARAMETER stop {json.dumps(stop, ensure_ascii=False)}" for stop in fmt.stops]
    return "\n".join(lines) + "\n"


def model_name(text: str) -> str:
    """An Ollama model name: lower-case letters, digits, dots, dashes and underscores."""
    return re.sub(r"[^a-z0-9._-]+", "-", text.lower()).strip("-.")[:80] or "model"


def create_command(name: str, path: str | Path) -> str:
    return f"ollama create {shlex.quote(model_name(name))} -f {shlex.quote(str(path))}"

"""Every value written into a Modelfile, a vLLM command line or a model card is escaped for that format: hostile
export folders, model names and lineage names (line breaks, quotes, triple quotes, HTML) stay one value."""
from __future__ import annotations

import shlex

import pytest
from huggingface_hub import ModelCard
from markdown_it import MarkdownIt

from core.ship import ollama, vllm
from core.ship.modelcard import card_text

HOSTILE_DIRS = ["/exports/a\nFROM /evil/model", '/exports/"quoted" dir', '/exports/x"""y', "/exports/ lead ",
                "/exports/<img src=x onerror=alert(1)>", '/exports/end"\nnext', "/exports/tab\there",
                '/exports/"""', "/exports/'single'\n\n# comment"]


def _fmt(**changes) -> ollama.ChatFormat:
    fmt = ollama.ChatFormat(prefix={"system": "<|im_start|>system\n", "user": "<|im_start|>user\n",
                                    "assistant": "<|im_start|>assistant\n"},
                            suffix={"system": "<|im_end|>\n", "user": "<|im_end|>\n", "assistant": "<|im_end|>\n"},
                            default_system="You are helpful.", stops=["<|im_end|>"])
    for key, value in changes.items():
        setattr(fmt, key, value)
    return fmt


@pytest.mark.parametrize("folder", HOSTILE_DIRS)
def test_a_modelfile_has_one_from_whatever_the_export_folder_is_named(folder):
    text = ollama.modelfile(_fmt(), model_from=f"{folder}/merged")
    commands = ollama.parse_modelfile(text)
    assert [name for name, _ in commands] == ["model", "template", "system", "stop"]
    assert commands[0] == ("model", f"{folder}/merged")

    with_adapter = ollama.parse_modelfile(ollama.modelfile(_fmt(), model_from=folder, adapter=f"{folder}/adapter"))
    assert [c for c in with_adapter if c[0] in ("model", "adapter")] == [("model", folder),
                                                                         ("adapter", f"{folder}/adapter")]


def test_system_prompts_and_stop_strings_with_quotes_read_back_exactly():
    system, stops = 'Say """hi""" and "bye"\nthen stop.', ['say "x"', "<|eot|>", 'a"""b', "two\nlines"]
    commands = ollama.parse_modelfile(ollama.modelfile(_fmt(default_system=system, stops=stops),
                                                       model_from="/m"))
    assert ("system", system) in commands
    assert [v for k, v in commands if k == "stop"] == stops


def test_a_value_ollama_cannot_read_back_is_refused_not_mangled():
    with pytest.raises(ValueError, match="cannot be written into an Ollama Modelfile"):
        ollama.modelfile(_fmt(), model_from='/x"\nFROM /y"""\nz"')


def test_the_parser_reads_ollama_modelfiles_as_ollama_does():
    text = ('# c\nFROM /a b\nPARAMETER stop "<|im_end|>"\nSYSTEM """multi\nline"""\nTEMPLATE "{{ .Prompt }}"\n'
            'PARAMETER temperature 0\n')
    assert ollama.parse_modelfile(text) == [("model", "/a b"), ("stop", "<|im_end|>"), ("system", "multi\nline"),
                                            ("template", "{{ .Prompt }}"), ("temperature", "0")]


@pytest.mark.parametrize("folder", HOSTILE_DIRS + ["/ex/it's; rm -rf ~", "/ex/$(touch pwned)`id`"])
def test_vllm_and_ollama_commands_split_back_to_the_intended_argv(folder):
    name = "model\n--evil 'x'"
    cmd = vllm.adapter_command(f"{folder}/base", name, f"{folder}/adapter", 12, chat_template=f"{folder}/t.jinja")
    assert shlex.split(cmd) == ["vllm", "serve", f"{folder}/base", "--enable-lora", "--lora-modules",
                                f"{name}={folder}/adapter", "--max-lora-rank", "16", "--chat-template",
                                f"{folder}/t.jinja"]
    assert shlex.split(vllm.merged_command(f"{folder}/merged", name)) == [
        "vllm", "serve", f"{folder}/merged", "--served-model-name", name]
    assert shlex.split(ollama.create_command(name, f"{folder}/ollama/Modelfile")) == [
        "ollama", "create", ollama.model_name(name), "-f", f"{folder}/ollama/Modelfile"]


def _info(hostile: str) -> dict:
    return {"project": f"Proj {hostile}", "run": {"id": 3, "name": f"run {hostile}"},
            "config": {"base_model": f"/models/{hostile}`x``", "method": "lora", "lora_r": 16},
            "license": "", "intended_use": f"Use it.\n# Not a heading {hostile}",
            "losses": {"train": 1.0, "validation_first": 2.0, "validation_last": 1.5, "steps": 4},
            "dataset": {"name": f"data {hostile}", "hash": "abc", "train": 3, "validation": 1, "test": 1,
                        "annotators": 1, "reviewers": 1},
            "evaluation": {"eval_set": {"name": f"set {hostile}", "prompts": 2}, "system": "run:3",
                           "rubric_means": {f"crit | {hostile}": {"run:3": 4.0, "base": 3.0}},
                           "rouge_l": {"run:3": 0.5, "base": 0.25}}}


@pytest.mark.parametrize("hostile", ["<img src=x onerror=alert(1)>", "<script>alert(1)</script>\n# H1\n---\nx: y",
                                     '"""\n```\n<b onmouseover=alert(1)>b</b>', "[link](javascript:alert(1))"])
def test_a_model_card_shows_hostile_names_as_text_never_as_html(hostile):
    text = card_text(_info(hostile), library_name="peft", what="A LoRA adapter",
                     parity={"checks": {"merged": {"error": f"failed {hostile}"}},
                             "prompts_from": f"eval set {hostile}",
                             "prompts_available": 2, "prompts": [[{"role": "user", "content": "Hi"}]]})
    card = ModelCard(text)
    assert card.data.datasets == [f"data {hostile}"]  # the YAML front matter keeps the name as it is
    html = MarkdownIt("commonmark", {"html": True}).enable("table").render(card.text)
    for tag in ("<img", "<script", "<b ", "<a href"):
        assert tag not in html, html
    assert html.count("<h1>") == 1  # a line break in a name starts no heading
    assert html.count("<table>") == 1 and html.count("<tr>") == 2  # a "|" in a criterion makes no new cell
    assert "&lt;" in html or "[link]" in html
    assert '"learning_rate"' not in html and "lora_r" in html  # the config's JSON block is still one block

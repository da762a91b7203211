"""The training settings a person types: ``--set key=value`` pairs and ``--config FILE`` (a run's config.json),
checked against TrainConfig's fields and typed as HfArgumentParser reads them, before TrainConfig.from_dict
validates the whole config. Used by the command line (core/cli/train.py) and bench scripts."""
from __future__ import annotations

import difflib
import json
import re
import typing
from pathlib import Path
from typing import Any

from core.errors import InvalidInput
from core.train.config import TrainConfig, legacy_settings


# str fields that hold a comma-separated list: a config file may give them as a JSON list of strings.
COMMA_LISTS = ("target_modules",)
# Settings the launcher fills in: a config file or --set that carried one would resume an unrelated checkpoint.
LAUNCHER_ONLY = {"resume_from": "`finetune-studio runs resume RUN` continues a run from its checkpoint"}


def parse_set(pairs: list[str]) -> dict[str, Any]:
    """``["lora_r=8", "packing=off"]`` -> typed overrides (the CLI's --set), parsed by transformers'
    HfArgumentParser built from TrainConfig's fields; refused in one line (InvalidInput) when a key is unknown or a
    value does not fit its field's type. Lists are comma-separated; none/null/auto clears an optional number;
    on/off is a boolean."""
    values: dict[str, Any] = {}
    for pair in pairs or []:
        if "=" not in pair:
            raise InvalidInput(f"--set needs key=value (got {pair!r}).")
        key, raw = (p.strip() for p in pair.split("=", 1))
        values[key] = raw
    return typed_settings(values, "--set")


def config_file_settings(path: str | Path) -> dict[str, Any]:
    """The settings of a run's config.json (or any JSON object of TrainConfig fields), typed like --set; what
    ``finetune-studio train --config`` re-runs (the CLI builds the run's TrainConfig from them with
    ``TrainConfig.from_dict``, after --set). Refused in one line when the file is missing, not JSON, carries an
    unknown key or a value of the wrong JSON type (a comma-list field, ``target_modules``, also takes a JSON list
    of strings). JSON values are already typed and are taken as they are; only a string given for a number, flag
    or list is read as --set reads it. A resumed run's ``resume_from`` is left out: a re-run starts at step 0
    (`finetune-studio runs resume` continues a run)."""
    path = Path(path).expanduser()
    try:
        data = json.loads(path.read_text(encoding="utf-8"))
    except OSError as err:
        raise InvalidInput(f"Cannot read the config file {path}: {err.strerror or err}.") from None
    except ValueError as err:
        raise InvalidInput(f"{path} is not a JSON file: {err}.") from None
    if not isinstance(data, dict):
        raise InvalidInput(f"{path} must hold a JSON object of training settings (a run's config.json).")
    data.pop("resume_from", None)
    data = legacy_settings(data)
    source = str(path)
    known = _checked_keys(data, source)
    typed, as_text = {}, {}
    for key, value in data.items():
        value = _json_typed(key, known[key], value, source)
        if isinstance(value, str) and known[key] is not str:
            as_text[key] = value
        else:
            typed[key] = value
    typed.update(typed_settings(as_text, source) if as_text else {})
    return {key: typed[key] for key in data}


def _checked_keys(values: dict[str, Any], source: str) -> dict[str, Any]:
    """TrainConfig's field types, once ``values`` has no unknown key and no launcher-only setting; ``source``
    ("--set" or a file) starts each refusal."""
    known = typing.get_type_hints(TrainConfig)  # not fields' .type: HfArgumentParser rewrites those in place
    unknown = [key for key in values if key not in known]
    if unknown:
        close = difflib.get_close_matches(unknown[0], known, n=1)
        raise InvalidInput(f"{source}: unknown training setting {unknown[0]!r}"
                           + (f" (did you mean {close[0]!r}?)" if close else "") + "; the settings are the "
                           "TrainConfig fields (core/train/config.py).")
    for key, value in values.items():
        if key in LAUNCHER_ONLY and value not in ("", None):
            raise InvalidInput(f"{source}: {key} is set by the launcher, not by hand; {LAUNCHER_ONLY[key]}.")
    return known


def typed_settings(values: dict[str, str], source: str) -> dict[str, Any]:
    """``values`` (strings, as --set gives them) checked and converted by TrainConfig's HfArgumentParser;
    ``source`` ("--set" or a file) starts each refusal."""
    known = _checked_keys(values, source)
    argv: list[str] = []
    out: dict[str, Any] = {}
    for key, text in values.items():
        kind = known[key]
        optional = type(None) in typing.get_args(kind)
        if optional and text.strip().lower() in ("none", "null", "auto"):
            out[key] = None
        elif typing.get_origin(kind) is list:
            items = [v.strip() for v in text.split(",") if v.strip()]
            if items:
                argv += [f"--{key}", *items]
            else:
                out[key] = []
        elif kind is bool:
            argv += [f"--{key}", {"on": "true", "off": "false"}.get(text.strip().lower(), text.strip())]
        else:
            argv += [f"--{key}", text]
    parsed = vars(_settings_parser(source).parse_args(argv))
    return {key: out[key] if key in out else parsed[key] for key in values}


def _json_kind(value) -> str:
    if value is None or isinstance(value, bool):
        return json.dumps(value)
    return {str: "a string", int: "a number", float: "a number", list: "a list", dict: "an object"}[type(value)]


def _json_typed(key: str, kind, value, source: str):
    """A JSON value (a config file's) as its field takes it: a list of strings joined for a comma-list field, a
    whole number as a float for a float field, a value of another JSON type refused in one line (a string is
    left for --set's parsing)."""
    if isinstance(value, str) or value is None and type(None) in typing.get_args(kind):
        return value
    if key in COMMA_LISTS and isinstance(value, list) and all(isinstance(v, str) for v in value):
        return ",".join(v.strip() for v in value)
    base = list if typing.get_origin(kind) is list else next(k for k in (str, bool, int, float)
                                                              if k is kind or k in typing.get_args(kind))
    whole = lambda v: type(v) is int  # noqa: E731 - bool is an int to Python, not to a config file
    if not {str: False, list: isinstance(value, list) and all(map(whole, value)), bool: isinstance(value, bool),
            int: whole(value), float: type(value) in (int, float)}[base]:
        want = ("a string or a list of strings" if key in COMMA_LISTS else
                {str: "a string", bool: "true or false", int: "a whole number", float: "a number"}.get(
                    base, "a list of whole numbers"))
        raise InvalidInput(f"{source}: {key} must be {want}, not {_json_kind(value)}.")
    return float(value) if base is float else value


def _settings_parser(source: str):
    from transformers import HfArgumentParser

    class Parser(HfArgumentParser):
        def error(self, message):  # argparse would print its usage and exit; the CLI prints one line instead
            message = re.sub(r"argument --(\w+)(/--[\w-]+)?", r"\1", message).rstrip(".")
            raise InvalidInput(f"{source}: {message}.")

    return Parser(TrainConfig)  # type: ignore[arg-type]  # a dataclass; transformers' protocol misses it

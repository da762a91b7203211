"""The generation job's one configuration: decoding settings (stored with every output) and the job's
config.json, filled by the Generate form and the CLI and read by the generation process."""
from __future__ import annotations

from dataclasses import dataclass, field

from core.configs import strict_from_dict
from core.errors import InvalidInput


@dataclass
class Decoding:
    """How outputs are decoded; stored with every output."""

    do_sample: bool = False
    """False: greedy (deterministic). True: sampling with temperature and top-p."""
    temperature: float = 0.7
    """Sampling temperature (only when do_sample); lower is more conservative."""
    top_p: float = 0.9
    """Nucleus sampling: keep the smallest set of tokens whose probability reaches top_p (only when do_sample)."""
    max_new_tokens: int = 256
    """Longest answer in tokens."""
    seed: int = 0
    """Random seed, set before each batch so sampled runs can be repeated."""

    def __post_init__(self):
        self.do_sample = bool(self.do_sample)
        try:
            self.temperature, self.top_p = float(self.temperature), float(self.top_p)
            self.max_new_tokens, self.seed = int(self.max_new_tokens), int(self.seed)
        except (TypeError, ValueError):
            raise InvalidInput("Decoding settings must be numbers.") from None
        if not 1 <= self.max_new_tokens <= 8192:
            raise InvalidInput("Max new tokens must be between 1 and 8192.")
        if self.do_sample and not 0 < self.temperature <= 5:
            raise InvalidInput("Temperature must be above 0 and at most 5.")
        if self.do_sample and not 0 < self.top_p <= 1:
            raise InvalidInput("Top-p must be above 0 and at most 1.")

    def stored(self) -> dict:
        """What is stored with each output (no sampling knobs for greedy, where they play no part)."""
        if not self.do_sample:
            return {"mode": "greedy", "max_new_tokens": self.max_new_tokens, "seed": self.seed}
        return {"mode": "sample", "temperature": self.temperature, "top_p": self.top_p,
                "max_new_tokens": self.max_new_tokens, "seed": self.seed}


def describe_decoding(stored: dict) -> str:
    """A stored decoding (``Decoding.stored()``) in words: "greedy, up to 256 new tokens" or "sampling at
    temperature 0.7, top-p 0.9, seed 0, up to 256 new tokens"."""
    stored = stored or {}
    limit = f"up to {stored.get('max_new_tokens', '?')} new tokens"
    if stored.get("mode") == "sample" or stored.get("do_sample"):
        return (f"sampling at temperature {stored.get('temperature')}, top-p {stored.get('top_p')}, "
                f"seed {stored.get('seed', 0)}, {limit}")
    return f"greedy, {limit}"


def decoding_arguments(stored: dict) -> dict:
    """A stored decoding (``Decoding.stored()``) back as ``Decoding``'s arguments (what it does not say keeps
    ``Decoding``'s default)."""
    stored = stored or {}
    out = {"do_sample": stored.get("mode") == "sample" or bool(stored.get("do_sample"))}
    out.update({k: stored[k] for k in ("temperature", "top_p", "max_new_tokens", "seed") if k in stored})
    return out


# The settings that change answers, in the order they are reported, and their names in words.
SETTING_WORDS = {"mode": "decoding", "max_new_tokens": "max new tokens", "temperature": "temperature",
                 "top_p": "top-p", "seed": "seed"}


def _settings(stored: dict) -> dict:
    """The settings of one stored decoding that shape its answers: greedy ignores temperature, top-p and seed."""
    if not stored:
        return {}  # made before decodings were stored: nothing known to compare
    sample = stored.get("mode") == "sample" or bool(stored.get("do_sample"))
    out = {"mode": "sampling" if sample else "greedy"}
    for key in ("max_new_tokens",) + (("temperature", "top_p", "seed") if sample else ()):
        if key in stored:
            out[key] = stored[key]
    return out


def _order(value) -> tuple:
    """Numbers in numeric order, before words."""
    number = isinstance(value, (int, float)) and not isinstance(value, bool)
    return (not number, value if number else str(value))


def decoding_differences(by_system: dict[str, list[dict]]) -> list[dict]:
    """Which decoding settings differ between systems, from the decodings stored with each system's outputs.

    ``by_system`` maps a system to the stored decodings of its outputs (one per output, repeats allowed). Returns
    one row per setting that differs, ``{"setting": words, "values": {system: [value, ...]}}`` (a system whose own
    outputs disagree lists several values). A setting a system's outputs do not record is left out of the
    comparison, and so is a sampling knob when any system decodes greedily (the mode already differs then)."""
    per_system = {system: [_settings(d) for d in decodings] for system, decodings in by_system.items()}
    per_system = {system: [s for s in rows if s] for system, rows in per_system.items()}
    per_system = {system: rows for system, rows in per_system.items() if rows}
    if len(per_system) < 2:
        return []
    out = []
    for key, words in SETTING_WORDS.items():
        if not all(key in row for rows in per_system.values() for row in rows):
            continue
        values = {system: sorted({row[key] for row in rows}, key=_order) for system, rows in per_system.items()}
        if len({v for vs in values.values() for v in vs}) > 1:
            out.append({"setting": words, "values": values})
    return out


def describe_differences(differences: list[dict], labels: dict[str, str] | None = None) -> str:
    """Differences in words: "max new tokens: base model 96, run 3: lora 256". Without ``labels`` (the blind
    review) the systems are not named: "max new tokens: 96 and 256"."""
    parts = []
    for row in differences:
        values = row["values"]
        if labels is None:
            shown = sorted({v for vs in values.values() for v in vs}, key=_order)
            parts.append(f"{row['setting']}: {' and '.join(str(v) for v in shown)}")
        else:
            parts.append(f"{row['setting']}: " + ", ".join(f"{labels.get(system, system)} "
                                                           + " / ".join(str(v) for v in vs)
                                                           for system, vs in values.items()))
    return "; ".join(parts)


@dataclass
class GenerateConfig:
    """A generation job's config.json."""

    eval_set_id: int
    systems: list[str]
    """"base" and/or "run:<job id>", in the order they are generated."""
    run_bases: dict[str, str | None] = field(default_factory=dict)
    """system -> the base model the run was trained from (runs with different bases load separately)."""
    base_model: str | None = None
    """The model behind "base" (default: the runs' base, else the embedded model)."""
    decoding: Decoding = field(default_factory=Decoding)
    batch_size: int = 8
    """Prompts generated together; larger is faster until memory runs out."""
    perplexity: bool = True
    """Also compute each system's perplexity on the eval set's reference answers."""

    def __post_init__(self):
        if isinstance(self.decoding, dict):
            self.decoding = Decoding(**self.decoding)
        if not 1 <= int(self.batch_size) <= 256:
            raise InvalidInput("Batch size must be between 1 and 256.")
        self.batch_size = int(self.batch_size)

    @classmethod
    def from_dict(cls, data: dict) -> "GenerateConfig":
        """From a config.json dict; an unknown key is refused (a typo must not silently become a default)."""
        return strict_from_dict(cls, data, "generation")

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

"""The one training configuration: filled by the Train form and the CLI, read by the trainer from config.json.

Every field is documented where it is declared; ``__post_init__`` refuses values that cannot work with a
clear message (core.errors.InvalidInput), so a bad value is caught before a run folder is created.
Fields left as ``None`` / ``"auto"`` are decided from the data and the hardware by ``resolve_*`` helpers.
"""
from __future__ import annotations

import json
import math
from dataclasses import asdict, dataclass, field, replace
from typing import Any

from core.basemodel import EMBEDDED
from core.configs import strict_from_dict
from core.errors import InvalidInput

METHODS = ("lora", "qlora", "full", "dpo")
PRECISIONS = ("auto", "fp32", "bf16", "fp16")
SCHEDULERS = ("linear", "cosine", "constant", "constant_with_warmup")
DERIVED = ("world_size", "effective_batch_size")  # figures config.json shows beside the settings, never read back
DEFAULT_LR = {"lora": 2e-4, "qlora": 2e-4, "full": 2e-5, "dpo": 5e-5}
# TRL DPOTrainer loss types the studio offers: each needs no setting beyond beta (see dpo_loss_type).
DPO_LOSS_TYPES = ("sigmoid", "ipo", "hinge", "apo_zero", "apo_down")


@dataclass
class TrainConfig:
    """Hyperparameters of one fine-tuning run (see each field's comment)."""

    # -- what to train on
    dataset_version_id: int = 0
    """Frozen dataset version whose train split is learned and whose validation split is evaluated."""
    base_model: str = EMBEDDED
    """The embedded model id, a local Hugging Face model folder, or a hub id (only when online)."""

    # -- method
    method: str = "lora"
    """"lora" (PEFT adapters), "qlora" (LoRA on a 4-bit NF4 base: a quarter of the memory for the base weights;
    on a CPU it trains slower than LoRA), "full" (all weights) or "dpo" (preference training with TRL's DPOTrainer
    on a preference version: a LoRA adapter, new on the base or continuing a finished run's adapter)."""
    lora_r: int = 16
    """LoRA rank: size of the low-rank update; higher learns more and costs more memory."""
    lora_alpha: int | None = None
    """LoRA scaling numerator; None means 2 * lora_r (the common rule of thumb)."""
    lora_dropout: float = 0.05
    """Dropout on the LoRA branch, a light regulariser for small datasets."""
    target_modules: str = "all-linear"
    """Which layers get adapters: "all-linear" or a comma-separated list of module names (e.g. "q_proj,v_proj")."""

    # -- preference training (method "dpo")
    preference_version_id: int = 0
    """Frozen preference version (prompt, chosen, rejected pairs) a DPO run learns from; built on the Datasets or
    Results page from reviewers' votes and/or an imported preference file."""
    init_from_run: int = 0
    """A succeeded LoRA/QLoRA run (job id) of the same base whose adapter DPO keeps training, so the DPO run's
    adapter holds SFT and DPO together (its LoRA settings are that run's); 0 starts a new LoRA adapter on the base."""
    dpo_beta: float = 0.1
    """How far DPO may move from the reference model (the starting point): higher stays closer. 0.1 is the DPO
    paper's and TRL's default; 0.01-0.5 is the usual range."""
    dpo_loss_type: str = "sigmoid"
    """TRL's DPO loss: "sigmoid" (the DPO paper), "ipo" (IPO: less prone to overfitting small preference sets),
    "hinge" (SLiC), "apo_zero" / "apo_down" (anchored: when chosen answers are better / worse than the model's)."""

    # -- optimisation
    learning_rate: float | None = None
    """Peak learning rate; None means 2e-4 for LoRA/QLoRA, 2e-5 for full fine-tuning and 5e-5 for DPO."""
    num_epochs: float = 3.0
    """Passes over the train split (ignored when max_steps > 0)."""
    max_train_examples: int = 0
    """Train on a random sample of this many examples of the train split (drawn with ``seed``); 0 uses them all.
    On a big dataset a quick run learns most of what a full pass would, in a fraction of the time."""
    max_validation_examples: int = 0
    """Compute the validation loss on a random sample of this many validation examples (drawn with ``seed``);
    0 uses them all. Each evaluation costs a forward pass over them, which a quick CPU run notices."""
    max_steps: int = -1
    """Stop after this many optimizer steps; -1 trains for num_epochs."""
    per_device_batch_size: int = 4
    """Examples per forward pass on each device."""
    grad_accum: int = 1
    """Forward passes accumulated per optimizer step (effective batch = batch * grad_accum * devices)."""
    max_length: int | None = None
    """Longest tokenised example; None picks the 95th percentile of the data, rounded up to 64, capped by the
    project's max length. Longer examples are truncated."""
    warmup_ratio: float = 0.05
    """Fraction of the steps spent ramping the learning rate up from 0."""
    weight_decay: float = 0.0
    """AdamW weight decay."""
    lr_scheduler: str = "cosine"
    """Learning-rate schedule after warm-up: linear, cosine, constant or constant_with_warmup."""
    max_grad_norm: float = 1.0
    """Gradient clipping threshold."""
    seed: int = 42
    """Random seed for initialisation and data order (same seed + data -> same run)."""

    # -- evaluation, logging, checkpoints
    eval_steps: int = 0
    """Evaluate on the validation split every N steps; 0 evaluates once per epoch."""
    logging_steps: int = 1
    """Write a metrics line every N steps."""
    save_steps: int = 0
    """Write a resumable checkpoint every N steps; 0 saves once per epoch. Only the last 2 are kept."""

    # -- memory and speed
    gradient_checkpointing: bool = False
    """Recompute activations in the backward pass: much less memory, about 30% slower."""
    packing: str = "auto"
    """"auto", "on" or "off": pack whole examples into padding-free rows, so no compute goes to padding.
    "auto" packs only with FlashAttention (cheap and exact there); elsewhere batches are padded and grouped by
    length. "on" also works with SDPA/eager (exact, but slower on a CPU)."""
    precision: str = "auto"
    """"auto" (bf16 on GPUs that support it, fp16 on older GPUs, fp32 on CPU), "fp32", "bf16" or "fp16"."""

    # -- where and on how many processes (data parallel: each process trains on its share of every batch)
    target: str = "local"
    """Where the run's processes run: "local" is this machine (the server's job queue), any other name a compute
    target an admin registered (a Ray or Slurm cluster, core.jobs.targets)."""
    nodes: int = 1
    """Machines the run spans; more than 1 only on a cluster target (this machine is one node)."""
    procs_per_node: int = 1
    """Processes per machine, started by torchrun and trained as one with DDP: one per GPU on a GPU machine (its
    GPUs are taken from the free ones), CPU processes on a machine without GPUs. 1 runs a single process."""

    # -- leakage (core.curate.leakage)
    exclude_example_ids: list[int] = field(default_factory=list)
    """Examples (by id) left out of the train and validation data, e.g. the ones that repeat an eval prompt: a
    launch is refused while a training example repeats one, unless it is excluded here."""
    exclude_pair_ids: list[int] = field(default_factory=list)
    """DPO: preference pairs (by id) left out, e.g. the ones whose prompt repeats a prompt of an eval set other than
    the ones the pairs were voted on: a DPO launch is refused while a pair repeats one, unless it is excluded here."""
    include_eval_derived: bool = False
    """Train on examples that came from an eval item (sent back from review, or a failure routed to annotation)
    even while that eval set is used for comparison. Off: they are left out, so the eval set stays a fair test."""

    # -- set by the launcher, not the form
    resume_from: str = ""
    """Checkpoint folder to continue from (set by Resume; empty for a fresh run)."""
    preset: str = "custom"
    """Name of the preset this config started from (informational)."""

    def __post_init__(self) -> None:
        names = self.target_modules
        if isinstance(names, (list, tuple)) and names and all(isinstance(n, str) for n in names):
            self.target_modules = ",".join(n.strip() for n in names)  # the comma list a list of names means
        problems = list(self._problems())
        if problems:
            raise InvalidInput("Invalid training settings: " + "; ".join(problems) + ".")

    def _problems(self):
        if self.method not in METHODS:
            yield f"method must be one of {', '.join(METHODS)} (got {self.method!r})"
        if not isinstance(self.dataset_version_id, int) or self.dataset_version_id < 0:
            yield "dataset_version_id must be a dataset version id"
        yield from self._dpo_problems()
        if not str(self.base_model or "").strip():
            yield "base_model is empty"
        if self.lora_r < 1 or self.lora_r > 1024:
            yield f"lora_r must be between 1 and 1024 (got {self.lora_r})"
        if self.lora_alpha is not None and self.lora_alpha <= 0:
            yield "lora_alpha must be positive"
        if not 0 <= self.lora_dropout < 1:
            yield "lora_dropout must be in [0, 1)"
        if not isinstance(self.target_modules, str):
            yield 'target_modules must be "all-linear" or module names (comma-separated, or a list of strings)'
        elif not self.target_modules.strip():
            yield "target_modules is empty"
        if self.learning_rate is not None and not (0 < self.learning_rate < 1):
            yield f"learning_rate must be between 0 and 1 (got {self.learning_rate})"
        if not isinstance(self.max_train_examples, int) or self.max_train_examples < 0:
            yield "max_train_examples must be 0 (all) or a positive number of examples"
        if not isinstance(self.max_validation_examples, int) or self.max_validation_examples < 0:
            yield "max_validation_examples must be 0 (all) or a positive number of examples"
        if self.max_steps <= 0 and self.max_steps != -1:
            yield "max_steps must be -1 (use epochs) or a positive number"
        if self.max_steps == -1 and not (0 < self.num_epochs <= 1000):
            yield "num_epochs must be between 0 and 1000"
        if self.per_device_batch_size < 1 or self.per_device_batch_size > 4096:
            yield "per_device_batch_size must be at least 1"
        if self.grad_accum < 1:
            yield "grad_accum must be at least 1"
        if self.max_length is not None and not (16 <= self.max_length <= 131072):
            yield f"max_length must be between 16 and 131072 tokens (got {self.max_length})"
        if not 0 <= self.warmup_ratio < 1:
            yield "warmup_ratio must be in [0, 1)"
        if self.weight_decay < 0:
            yield "weight_decay cannot be negative"
        if self.lr_scheduler not in SCHEDULERS:
            yield f"lr_scheduler must be one of {', '.join(SCHEDULERS)}"
        if self.max_grad_norm <= 0:
            yield "max_grad_norm must be positive"
        for name in ("eval_steps", "save_steps"):
            if getattr(self, name) < 0:
                yield f"{name} cannot be negative"
        if self.logging_steps < 1:
            yield "logging_steps must be at least 1"
        if self.packing not in ("auto", "on", "off"):
            yield "packing must be auto, on or off"
        if self.precision not in PRECISIONS:
            yield f"precision must be one of {', '.join(PRECISIONS)}"
        if not isinstance(self.target, str) or not self.target.strip():
            yield "target must name a compute target (\"local\" is this machine)"
        if type(self.nodes) is not int or not 1 <= self.nodes <= 4096:
            yield f"nodes must be a whole number from 1 to 4096 (got {self.nodes!r})"
        elif self.nodes > 1 and self.target == "local":
            yield f"nodes={self.nodes} needs a cluster target: this machine (target local) is one node"
        if type(self.procs_per_node) is not int or not 1 <= self.procs_per_node <= 1024:
            yield f"procs_per_node must be a whole number from 1 to 1024 (got {self.procs_per_node!r})"
        ids = self.exclude_example_ids
        if not isinstance(ids, list) or any(type(i) is not int or i < 1 for i in ids):
            yield "exclude_example_ids must be a list of example ids (positive whole numbers)"
        ids = self.exclude_pair_ids
        if not isinstance(ids, list) or any(type(i) is not int or i < 1 for i in ids):
            yield "exclude_pair_ids must be a list of preference pair ids (positive whole numbers)"
        if not isinstance(self.include_eval_derived, bool):
            yield "include_eval_derived must be true or false"

    def _dpo_problems(self):
        for name in ("preference_version_id", "init_from_run"):
            if not isinstance(getattr(self, name), int) or getattr(self, name) < 0:
                yield f"{name} must be 0 or an id"
        if self.method == "dpo":
            if not self.preference_version_id:
                yield "method dpo needs a preference version (preference_version_id): freeze one from reviewers' " \
                      "votes or import a preference file first"
            if not 0 < self.dpo_beta <= 10:
                yield f"dpo_beta must be above 0 and at most 10 (got {self.dpo_beta})"
            if self.dpo_loss_type not in DPO_LOSS_TYPES:
                yield f"dpo_loss_type must be one of {', '.join(DPO_LOSS_TYPES)} (got {self.dpo_loss_type!r})"
        elif self.preference_version_id or self.init_from_run:
            yield "preference_version_id and init_from_run are for method dpo only"

    # -- derived values
    @property
    def effective_lr(self) -> float:
        return self.learning_rate if self.learning_rate is not None else DEFAULT_LR[self.method]

    @property
    def world_size(self) -> int:
        """How many processes train together: nodes x procs_per_node."""
        return self.nodes * self.procs_per_node

    @property
    def effective_batch_size(self) -> int:
        """Examples per optimizer step, every process counted: batch x grad_accum x world_size."""
        return self.per_device_batch_size * self.grad_accum * self.world_size

    @property
    def effective_alpha(self) -> int:
        return self.lora_alpha if self.lora_alpha is not None else 2 * self.lora_r

    def target_modules_value(self) -> str | list[str]:
        """What peft's LoraConfig takes: the string "all-linear" or a list of names."""
        text = str(self.target_modules).strip()
        if text == "all-linear":
            return text
        return [t.strip() for t in text.split(",") if t.strip()]

    # -- (de)serialisation
    def to_dict(self) -> dict[str, Any]:
        """The settings, with the DERIVED figures (world_size, effective_batch_size) beside them."""
        return {**asdict(self), "world_size": self.world_size, "effective_batch_size": self.effective_batch_size}

    def to_json(self) -> str:
        return json.dumps(self.to_dict(), indent=2, sort_keys=True)

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> "TrainConfig":
        return strict_from_dict(cls, legacy_settings(data), "training")

    @classmethod
    def from_json(cls, text: str) -> "TrainConfig":
        return cls.from_dict(json.loads(text))

    def with_overrides(self, **changes) -> "TrainConfig":
        """A copy with ``changes`` applied (validated again)."""
        return replace(self, **changes)


def legacy_settings(data: dict[str, Any]) -> dict[str, Any]:
    """``data`` less the DERIVED figures; an older config.json's ``num_gpus`` and ``launcher`` ("auto"/"accelerate":
    one process per GPU, a path that never ran) read as procs_per_node = num_gpus > 1 unless launcher "python"."""
    out = {k: v for k, v in data.items() if k not in (*DERIVED, "num_gpus", "launcher")}
    gpus = data.get("num_gpus")
    if "procs_per_node" not in out and type(gpus) is int and gpus > 1 and data.get("launcher") != "python":
        out["procs_per_node"] = gpus
    return out


def field_docs() -> dict[str, str]:
    """Field name -> its documentation (the string under each field), for form help texts and the CLI."""
    import ast
    import inspect

    tree = ast.parse(inspect.getsource(TrainConfig))
    cls = tree.body[0]
    assert isinstance(cls, ast.ClassDef)
    body = cls.body
    docs: dict[str, str] = {}
    for node, nxt in zip(body, body[1:]):
        if (isinstance(node, ast.AnnAssign) and isinstance(node.target, ast.Name) and isinstance(nxt, ast.Expr)
                and isinstance(nxt.value, ast.Constant)):
            docs[node.target.id] = " ".join(str(nxt.value.value).split())
    return docs


# Presets. "quick" is the default: on the demo (~900 train examples) it must finish in under 10 minutes on 2 CPU
# cores, model load included, and teach the embedded model the fact sheet. Chosen from measured runs (see
# docs/PERFORMANCE.md, "Issue 11"): one pass over a seeded sample of 800 examples in batches of 2 at a high LoRA
# learning rate on every linear layer; the number of distinct examples seen mattered most.
PRESETS: dict[str, dict[str, Any]] = {
    "quick": dict(method="lora", lora_r=16, target_modules="all-linear", num_epochs=1, learning_rate=1e-3,
                  per_device_batch_size=2, grad_accum=1, max_length=256, warmup_ratio=0.05, lr_scheduler="cosine",
                  max_train_examples=800, max_validation_examples=32),
    "balanced": dict(method="lora", lora_r=16, num_epochs=3, learning_rate=2e-4, per_device_batch_size=8,
                     grad_accum=2, max_length=None, warmup_ratio=0.05, lr_scheduler="cosine"),
    "thorough": dict(method="lora", lora_r=32, num_epochs=5, learning_rate=1e-4, per_device_batch_size=8,
                     grad_accum=4, max_length=None, warmup_ratio=0.1, lr_scheduler="cosine", weight_decay=0.01,
                     gradient_checkpointing=True),
}
PRESET_HELP = {
    "quick": "Under 10 minutes on a laptop CPU with the embedded model: one pass over 800 sampled examples, LoRA "
             "r=16 on every linear layer at learning rate 1e-3, batches of 2, length 256.",
    "balanced": "Length from the data, larger effective batch (16); a good first GPU run.",
    "thorough": "LoRA r=32, 5 epochs, lower learning rate, gradient checkpointing: for bigger data on a GPU.",
}


def preset_config(name: str = "quick", **overrides) -> TrainConfig:
    """A TrainConfig from preset ``name`` with ``overrides`` applied."""
    if name not in PRESETS:
        raise InvalidInput(f"Unknown preset {name!r}; choose one of: {', '.join(PRESETS)}.")
    values = {**PRESETS[name], "preset": name, **overrides}
    return TrainConfig.from_dict(values)


def auto_max_length(token_lengths: list[int], cap: int) -> int:
    """95th percentile of the examples' token lengths, rounded up to a multiple of 64, within [64, cap]."""
    if not token_lengths:
        return min(512, cap)
    ordered = sorted(token_lengths)
    p95 = ordered[min(len(ordered) - 1, math.ceil(0.95 * len(ordered)) - 1)]
    return max(64, min(cap, int(math.ceil(p95 / 64.0) * 64)))

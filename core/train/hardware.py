"""What this machine can train on, and how much memory a run will need before it starts.

The estimate uses only the model's config (parameters counted on the model built on the meta device, without
memory or weights), so it works before any weights are loaded. Its per-token terms come from the model's shapes,
its CPU overhead is fitted to measured peaks (bench/memory_estimate.py prints both); every run records the
estimate beside the measured peak so the numbers can be checked against reality.
"""
from __future__ import annotations

import os
from pathlib import Path
from dataclasses import asdict, dataclass, field

MB = 1024 * 1024


@dataclass
class Hardware:
    """A snapshot of the training devices."""

    kind: str  # "cuda" | "cpu"
    gpus: list[dict] = field(default_factory=list)  # [{"index", "name", "total_mb", "free_mb", "bf16"}]
    cpu_cores: int = 1
    ram_total_mb: float = 0.0
    ram_available_mb: float = 0.0

    @property
    def gpu_count(self) -> int:
        return len(self.gpus)

    @property
    def bf16(self) -> bool:
        return bool(self.gpus) and all(g.get("bf16") for g in self.gpus)

    @property
    def free_mb(self) -> float:
        """Memory a run can use on one device: the smallest GPU's free memory, or available RAM."""
        if self.gpus:
            return min(g["free_mb"] for g in self.gpus)
        return self.ram_available_mb

    def describe(self) -> str:
        if self.gpus:
            return ", ".join(f"GPU {g['index']}: {g['name']} ({g['free_mb'] / 1024:.1f} of "
                             f"{g['total_mb'] / 1024:.1f} GiB free)" for g in self.gpus)
        return (f"CPU only: {self.cpu_cores} cores, {self.ram_available_mb / 1024:.1f} of "
                f"{self.ram_total_mb / 1024:.1f} GiB RAM available")

    def to_dict(self) -> dict:
        return asdict(self)


def detect() -> Hardware:
    """GPUs with their free memory (torch.cuda.mem_get_info), else CPU cores and available RAM (psutil)."""
    import psutil

    vm = psutil.virtual_memory()
    cores = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else (os.cpu_count() or 1)
    hw = Hardware(kind="cpu", cpu_cores=cores, ram_total_mb=vm.total / MB, ram_available_mb=vm.available / MB)
    if not Path("/proc/driver/nvidia/gpus").is_dir() and not os.environ.get("FINETUNE_STUDIO_PROBE_CUDA"):
        return hw  # no NVIDIA driver: skip importing torch, so pages that show this stay fast
    try:
        import torch
    except ImportError:  # pragma: no cover - torch is a dependency
        return hw
    if torch.cuda.is_available():
        hw.kind = "cuda"
        for i in range(torch.cuda.device_count()):
            free, total = torch.cuda.mem_get_info(i)
            hw.gpus.append({"index": i, "name": torch.cuda.get_device_name(i), "total_mb": total / MB,
                            "free_mb": free / MB, "bf16": bool(torch.cuda.is_bf16_supported())})
    return hw


def resolve_precision(precision: str, hw: Hardware | None = None) -> str:
    """"auto" -> bf16 on GPUs that support it, fp16 on older GPUs, fp32 on CPU. Half precision on a CPU is
    refused by the caller (it is slower there and TRL's bf16 default must never leak onto a CPU)."""
    hw = hw or detect()
    if precision != "auto":
        return precision
    if hw.kind == "cuda":
        return "bf16" if hw.bf16 else "fp16"
    return "fp32"


def param_counts(config, target_modules: str | list[str] = "all-linear") -> dict:
    """Parameter counts of the model ``config`` describes, read from the model itself: transformers builds it on
    the meta device (shapes only, no memory, no weights), so every architecture (GQA, QK norms, biases, GPT-2's
    Conv1D, untied or tied embeddings) counts exactly.

    Returns total (tied weights once), the embedding share, the LoRA parameters per rank unit on
    ``target_modules`` and the dimensions the activation estimate uses (layers, hidden, intermediate, vocab, heads).
    LoRA follows PEFT's rule (tests/test_config_roundtrip.py compares it with PEFT): r * (d_in + d_out) on each
    targeted linear or Conv1D layer; "all-linear" is every one but the output head. PEFT itself is not imported
    here: its import costs seconds, on a page.
    """
    import torch
    from transformers import AutoModelForCausalLM
    from transformers.pytorch_utils import Conv1D

    with torch.device("meta"):
        model = AutoModelForCausalLM.from_config(config)
    total = sum(p.numel() for p in model.parameters())
    embed = model.get_input_embeddings().weight.numel()
    head = model.get_output_embeddings()
    names = None if target_modules == "all-linear" else \
        [target_modules] if isinstance(target_modules, str) else list(target_modules)
    lora_per_rank = sum(sum(module.weight.shape) for name, module in model.named_modules()
                        if isinstance(module, (torch.nn.Linear, Conv1D)) and module is not head
                        and (names is None or any(name == t or name.endswith("." + t) for t in names)))
    cfg = config.get_text_config() if hasattr(config, "get_text_config") else config
    h = cfg.hidden_size
    return {"total": total, "embedding": embed, "layers": cfg.num_hidden_layers, "hidden": h,
            "intermediate": getattr(cfg, "intermediate_size", None) or getattr(cfg, "n_inner", None) or 4 * h,
            "vocab": cfg.vocab_size, "lora_per_rank": lora_per_rank, "heads": cfg.num_attention_heads}


def estimate_peak_memory(model_config_or_name, method: str, batch: int, max_length: int,
                         gradient_checkpointing: bool = False, precision: str = "fp32", lora_r: int = 16,
                         device: str | None = None, target_modules: str | list[str] = "all-linear") -> dict:
    """Peak training memory in MB: weights + gradients + AdamW states of trainable parameters + activations
    (with the logits) + the framework's own overhead; every part in whole MB, and ``peak_mb`` is their sum.

    ``model_config_or_name`` is a transformers config or a model name for core.basemodel.load_config.
    QLoRA weights count ~0.5 byte per parameter; LoRA trains only the adapter parameters. ``device`` ("cuda" or
    "cpu") defaults to a GPU for half precision or QLoRA, else a CPU.
    """
    config = model_config_or_name
    if isinstance(config, str):
        from core.basemodel import load_config

        config = load_config(config)
    counts = param_counts(config, target_modules)
    total = counts["total"]
    half = precision in ("bf16", "fp16")
    weight_bytes = 0.5 if method == "qlora" else (2 if half else 4)
    weights = total * weight_bytes
    trainable = total if method == "full" else counts["lora_per_rank"] * lora_r
    # Trainable parameters: fp32 master weights (for adapters) or grads, plus AdamW's two fp32 moments.
    grads = trainable * 4
    optimizer = trainable * 8
    if method != "full":
        weights += trainable * 4
    act_bytes = 2 if half else 4
    tokens = batch * max_length
    h, inter, layers = counts["hidden"], counts["intermediate"], counts["layers"]
    # Per token and layer, a decoder keeps roughly 16*h + 3*inter values for the backward pass
    # (inputs of each linear, norms, attention output, MLP gates); checkpointing keeps only the layer input.
    per_layer = (2 * h) if gradient_checkpointing else (16 * h + 3 * inter)
    activations = tokens * layers * per_layer * act_bytes
    if gradient_checkpointing:
        activations += tokens * (16 * h + 3 * inter) * act_bytes  # one layer recomputed at a time
    # Logits in fp32 (forward + their gradient) dominate for small models with big vocabularies.
    logits = tokens * counts["vocab"] * 4 * 2
    on_gpu = device == "cuda" if device else (half or method == "qlora")
    # On a CPU, attention materialises each layer's scores and probabilities (batch x heads x length^2) and keeps
    # them for the backward pass; a GPU's fused SDPA/FlashAttention kernels do not. Quadratic in the length: at
    # batch 4 x 512 on the embedded model they are ~2.2 GB of the 7.8 GB measured (bench/memory_estimate.py).
    attention = 0 if on_gpu else \
        batch * counts["heads"] * max_length ** 2 * 2 * act_bytes * (1 if gradient_checkpointing else layers)
    # Framework and allocator slack: on a GPU the CUDA context and caching allocator; on a CPU the rest of the
    # process's RSS (torch, transformers, TRL, datasets and the allocator's free lists), ~1.1 GB: fitted with
    # bench/memory_estimate.py on the embedded model (measured 2,880 and 2,997 MB peak RSS in two runs at batch
    # 2 x 256, the quick preset, and 7,837 MB at batch 4 x 512; estimated 2,960 and 7,856).
    overhead = (600 if method == "qlora" else 300) * MB if on_gpu else 1100 * MB
    # Whole MB per part, and the peak is their sum, so the breakdown a page prints adds up to the total shown.
    parts = {"weights_mb": weights, "gradients_mb": grads, "optimizer_mb": optimizer,
             "activations_mb": activations + attention + logits, "overhead_mb": overhead}
    parts = {key: int(round(value / MB)) for key, value in parts.items()}
    return {"peak_mb": sum(parts.values()), **parts, "params": total, "trainable_params": trainable}


ESTIMATE_PARTS = (("weights_mb", "weights"), ("gradients_mb", "gradients"), ("optimizer_mb", "optimizer states"),
                  ("activations_mb", "activations and logits"), ("overhead_mb", "framework overhead"))


def estimate_breakdown(est: dict) -> list[tuple[str, int]]:
    """The estimate's parts as (label, MB), in the order they are added; they sum to ``est["peak_mb"]``."""
    return [(label, int(est.get(key, 0))) for key, label in ESTIMATE_PARTS]


def estimate_sum_text(est: dict) -> str:
    """The breakdown as one line that visibly adds up: "weights 540 MB + ... = 4,587 MB (4.48 GiB)"."""
    parts = " + ".join(f"{label} {mb:,} MB" for label, mb in estimate_breakdown(est))
    return f"{parts} = {int(est['peak_mb']):,} MB ({est['peak_mb'] / 1024:.2f} GiB)"


def measured_peak_mb() -> float:
    """This process's peak memory so far: torch.cuda.max_memory_allocated on a GPU, else peak RSS."""
    try:
        import torch

        if torch.cuda.is_available() and torch.cuda.is_initialized():
            return round(torch.cuda.max_memory_allocated() / MB, 1)
    except ImportError:  # pragma: no cover
        pass
    import resource

    return round(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024, 1)  # Linux reports KiB

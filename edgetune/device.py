"""What the training machine offers: bf16 on the CPU, physical cores, memory for activations.

Every choice comes with the reason the training log prints ("bf16: the CPU has AVX512-BF16 ...").
"""
from __future__ import annotations

import math
import os
from dataclasses import dataclass
from pathlib import Path

import edgetune.threads as threads_mod

CPU_BF16_FLAGS = ("amx_bf16", "avx512_bf16")


def cpu_flags() -> set[str]:
    try:
        text = Path("/proc/cpuinfo").read_text()
    except OSError:
        return set()
    for line in text.splitlines():
        if line.startswith("flags"):
            return set(line.split(":", 1)[1].split())
    return set()


def cpu_bf16() -> tuple[bool, str]:
    """(usable, why): the CPU reports AVX512-BF16 or AMX-BF16 and torch's oneDNN kernels accept bf16."""
    import torch

    flags = [f for f in CPU_BF16_FLAGS if f in cpu_flags()]
    if not flags:
        return False, "fp32: the CPU has no AVX512-BF16 or AMX-BF16"
    if not torch.ops.mkldnn._is_mkldnn_bf16_supported():
        return False, f"fp32: the CPU reports {', '.join(flags)} but torch's oneDNN does not use bf16"
    return True, f"bf16 autocast, fp32 LoRA weights: the CPU has {'/'.join(f.upper().replace('_', '-') for f in flags)}"


# bf16 autocast casts every weight and activation it multiplies; below this width the casts and
# oneDNN's per-shape kernels cost more than the bf16 units save. Measured on the 2-core AMX VM,
# 2026-11-29, scripts/bench/train.py idle: the demo model (hidden 128) trained at 0.92x the fp32 seed
# recipe in bf16 with 1.65x its peak RSS; Gemma 3 270M (hidden 640) at 3.84x with 0.82x.
BF16_MIN_HIDDEN = 512


def bf16_pays(config, why: str) -> tuple[bool, str]:
    """(use bf16, why) for a model the CPU could train in bf16: only where its layers are wide enough."""
    hidden = getattr(config.get_text_config(), "hidden_size", None) or 0
    if hidden < BF16_MIN_HIDDEN:
        return False, (f"fp32: the CPU has bf16 units, but this model's layers (hidden {hidden}) are too narrow for "
                       f"bf16 autocast to pay (it needs {BF16_MIN_HIDDEN} or more)")
    return True, why


def free_memory_bytes(device: str) -> int:
    import torch

    if device == "cuda":
        return torch.cuda.mem_get_info()[0]
    try:
        for line in Path("/proc/meminfo").read_text().splitlines():
            if line.startswith("MemAvailable:"):
                return int(line.split()[1]) * 1024
    except OSError:
        pass
    return 0


def activation_bytes(config, batch_size: int, seq_len: int, dtype_bytes: int) -> int:
    """Activations kept for backward without checkpointing, per micro-batch: about 34 values per hidden
    unit per layer plus 5 per attention score (Korthikanti et al. 2022, no sequence parallelism)."""
    c = config.get_text_config()
    layers, hidden = c.num_hidden_layers, c.hidden_size
    heads = c.num_attention_heads
    per_layer = batch_size * seq_len * hidden * 34 * dtype_bytes / 2 + 5 * heads * batch_size * seq_len ** 2 * dtype_bytes / 2
    return int(layers * per_layer)


def gradient_checkpointing(setting: str, config, batch_size: int, seq_len: int, dtype_bytes: int,
                           device: str) -> tuple[bool, str]:
    """auto: off when the activations take under a quarter of the free memory (recomputing them costs
    about a third more compute), on otherwise."""
    if setting != "auto":
        on = setting == "true"
        return on, f"gradient checkpointing {'on' if on else 'off'} (train.gradient_checkpointing: {setting})"
    need, free = activation_bytes(config, batch_size, seq_len, dtype_bytes), free_memory_bytes(device)
    where = "free GPU memory" if device == "cuda" else "available RAM"
    if free and need < free / 4:
        return False, (f"gradient checkpointing off: activations ~{need / 2**30:.2f} GiB fit in "
                       f"{free / 2**30:.1f} GiB {where}")
    return True, f"gradient checkpointing on: activations ~{need / 2**30:.2f} GiB against {free / 2**30:.1f} GiB {where}"


def matmul_gflops(dtype: str, device: str, m: int, k: int, n: int, seconds: float = 1.0) -> float:
    """This machine's rate (GFLOP/s) for an (m x k) @ (k x n) matmul in torch at `dtype` (fp32 | bf16 |
    fp16), on torch's current thread count."""
    import time

    import torch

    torch_dtype = {"fp32": torch.float32, "bf16": torch.bfloat16, "fp16": torch.float16}[dtype]
    a = torch.randn(m, k, device=device).to(torch_dtype)
    b = torch.randn(k, n, device=device).to(torch_dtype)
    for _ in range(3):
        a @ b
    sync = torch.cuda.synchronize if device == "cuda" else (lambda: None)
    sync()
    done, t0 = 0, time.perf_counter()
    while time.perf_counter() - t0 < seconds:
        a @ b
        done += 1
    sync()
    return 2 * m * k * n * done / (time.perf_counter() - t0) / 1e9


def matmul_peak_gflops(dtype: str, device: str = "cpu", n: int = 1024, seconds: float = 1.0) -> float:
    """The dense n^3 matmul rate: the roof that training throughput is measured against."""
    return matmul_gflops(dtype, device, n, n, n, seconds)


def lora_flops_per_token(config, seq_len: int, loss_share: float = 1.0) -> float:
    """Matmul FLOPs per trained token of LoRA training: forward (2 per weight) and the backward's input
    gradients (2 more; the frozen base needs no weight gradients), attention scores, and the output head
    at the share of positions that carry loss. LoRA's own small matmuls are left out."""
    c = config.get_text_config()
    h, layers, vocab = c.hidden_size, c.num_hidden_layers, c.vocab_size
    total = 0
    for i in range(layers):
        # transformers 5's heterogeneous configs (Gemma 4: other head sizes on full-attention layers)
        # refuse a global read of per-layer keys; each layer's own config has them
        lc = c.per_layer_config[i] if getattr(c, "per_layer_config", None) is not None else c
        heads, kv = lc.num_attention_heads, getattr(lc, "num_key_value_heads", None) or lc.num_attention_heads
        hd = getattr(lc, "head_dim", None) or h // heads
        per_layer = h * heads * hd * 2 + h * kv * hd * 2 + 3 * h * lc.intermediate_size
        attention = 2 * heads * hd * seq_len  # QK^T and AV, causal: half of seq_len x 2
        total += per_layer + attention
    return 4 * total + 4 * vocab * h * loss_share


def cpu_threads(override: int = 0) -> threads_mod.Choice:
    """The torch thread count for training on the CPU and why: `override` (the recipe's threads) when
    set, else OMP_NUM_THREADS when set, else one per physical core that other processes leave free
    (edgetune.threads)."""
    if override:
        c = threads_mod.choose(override, f"threads: {override}")
    elif os.environ.get("OMP_NUM_THREADS", "").isdigit() and int(os.environ["OMP_NUM_THREADS"]) > 0:
        c = threads_mod.choose(int(os.environ["OMP_NUM_THREADS"]), "OMP_NUM_THREADS")
    else:
        c = threads_mod.choose()
    return c


# Share of the measured matmul rate (at the model's own MLP shape) that the model's matmuls reach inside
# LoRA training (thin LoRA matmuls, the output head at a few rows, backward's transposed shapes), and
# the CPU's other cost in elementwise ops on a (tokens x hidden) activation per decoder layer, forward
# and backward (norms, activations, residuals, rotary, LoRA dropout and scaling, casts, attention
# softmax, the optimizer's share, each op's dispatch). CPU: fitted to scripts/bench/train.py on the idle
# 2-core VM (AVX512-BF16, no AMX), 2026-12-06: Gemma 3 270M bf16 (matmul-bound there) and the demo model
# fp32 (dispatch-bound); torch's profiler put the matmuls at ~45-60% of the rate measured alone. On a CPU
# whose matmul units are fast (AMX) the elementwise part dominates. CUDA: not measured (no GPU here);
# a guess, shown as an estimate like the CPU's, and there the whole of the estimate.
TRAINING_EFFICIENCY = {"cpu": 0.6, "cuda": 0.25}
ELEMENTWISE_OPS_PER_LAYER = 1000
# Passes over the output head's fp32 logits per loss position (cast, softmax, entropy, argmax, backward).
HEAD_PASSES = 8


@dataclass
class Estimate:
    """Expected training throughput before a run: the model's matmul FLOPs per trained token at this
    machine's matmul rate (measured at the model's layer shape) times TRAINING_EFFICIENCY, plus on the
    CPU the time of its elementwise work (one elementwise op measured at the micro-batch's shape)."""
    device: str
    dtype: str
    why: str  # why this dtype
    threads: str
    matmul_gflops: float  # measured here, at the model's MLP shape and the batch's token count
    flops_per_token: float  # lora_flops_per_token for the batch shape
    seq_len: int
    batch_size: int
    elementwise_s_per_token: float = 0.0  # CPU: elementwise work per trained token, measured here

    @property
    def matmul_s_per_token(self) -> float:
        return self.flops_per_token / (self.matmul_gflops * 1e9 * TRAINING_EFFICIENCY[self.device])

    @property
    def tokens_per_s(self) -> float:
        return 1 / (self.matmul_s_per_token + self.elementwise_s_per_token)

    def line(self) -> str:
        line = (f"expected ~{_round(self.tokens_per_s):,} trained tokens/s (an estimate: {self.dtype} matmul "
                f"measured here at {self.matmul_gflops:.0f} GFLOP/s x {TRAINING_EFFICIENCY[self.device] * 100:g}% "
                f"typical efficiency / {self.flops_per_token / 1e6:.1f} MFLOP per token")
        if self.elementwise_s_per_token:
            share = self.elementwise_s_per_token / (self.matmul_s_per_token + self.elementwise_s_per_token)
            line += f"; {share:.0%} of the time in elementwise work, measured here"
        return line + ")"


def _round(x: float) -> int:
    """Two significant digits: the estimate is not more precise than that."""
    if x < 10:
        return max(1, round(x))
    digits = int(math.floor(math.log10(x))) - 1
    return int(round(x, -digits))


def estimate_throughput(config, device: str, dtype: str, why: str, batch_size: int, seq_len: int,
                        loss_share: float = 1.0, seconds: float = 0.3, n_threads: int = 0) -> Estimate:
    """Measure this machine's matmul rate at the model's MLP shape (batch x seq tokens, hidden ->
    intermediate) for `seconds`, with the threads training will use, and turn it into tokens/s."""
    import torch

    c = config.get_text_config()
    m = max(1, min(batch_size * seq_len, 4096))  # beyond a few thousand rows the rate no longer grows
    threads = torch.cuda.get_device_name() if device == "cuda" else ""
    if device == "cpu":
        choice = cpu_threads(n_threads)
        threads = choice.reason
        before = torch.get_num_threads()
        torch.set_num_threads(choice.threads)
    try:
        rate = matmul_gflops(dtype, device, m, c.hidden_size, c.intermediate_size, seconds)
        elementwise = elementwise_s_per_token(config, dtype, m, loss_share, seconds / 3) if device == "cpu" else 0.0
    finally:
        if device == "cpu":
            torch.set_num_threads(before)
    return Estimate(device, dtype, why, threads, rate, lora_flops_per_token(config, seq_len, loss_share),
                    seq_len, batch_size, elementwise)


def elementwise_seconds(dtype: str, rows: int, width: int, seconds: float = 0.1) -> float:
    """Seconds of one elementwise op on the CPU (a product of two rows x width tensors at `dtype` into a
    new one, as autograd's ops allocate theirs): per-op dispatch for small shapes, memory traffic for large."""
    import time

    import torch

    torch_dtype = {"fp32": torch.float32, "bf16": torch.bfloat16, "fp16": torch.float16}[dtype]
    a, b = torch.randn(rows, width).to(torch_dtype), torch.randn(rows, width).to(torch_dtype)
    for _ in range(3):
        a * b
    done, t0 = 0, time.perf_counter()
    while time.perf_counter() - t0 < seconds:
        a * b
        done += 1
    return (time.perf_counter() - t0) / done


def elementwise_s_per_token(config, dtype: str, tokens: int, loss_share: float, seconds: float = 0.1) -> float:
    """The CPU's elementwise work per trained token: ELEMENTWISE_OPS_PER_LAYER ops on the micro-batch's
    (tokens x hidden) activation per layer, and HEAD_PASSES over the fp32 logits of each loss position."""
    c = config.get_text_config()
    layer_op = elementwise_seconds(dtype, tokens, c.hidden_size, seconds)
    logits = elementwise_seconds("fp32", 16, c.vocab_size, seconds) / 16  # one loss position's row
    return (ELEMENTWISE_OPS_PER_LAYER * c.num_hidden_layers * layer_op / tokens
            + HEAD_PASSES * loss_share * logits)

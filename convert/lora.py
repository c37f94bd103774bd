"""PEFT LoRA adapter -> GGUF LoRA adapter (llama.cpp's format), to load beside the base GGUF.

Each targeted weight W gets two tensors, `<gguf name>.lora_a` (r x in) and `.lora_b` (out x r);
llama.cpp adds (alpha / r) * B @ A at run time. A mixture-of-experts layer's stacked expert tensors
(ffn_*_exps) get stacked pairs, A (experts x r x in) and B (experts x out x r), which llama.cpp
applies to the experts each token is routed to. Per-module scales (rank_pattern, alpha_pattern,
rsLoRA) are folded into B so one global alpha serves every module. Architecture quirks that act on
a weight's output rows (llama's q/k RoPE permutation) are applied to B, those on its input columns
(Qwen3.5's value-head order in out_proj) to A.
"""
from __future__ import annotations

from pathlib import Path

import gguf
import numpy as np

from edgetune.convert.lora_deltas import LoraDeltas
from edgetune.errors import EdgetuneError
from edgetune.events import Callback, Event, ignore
from edgetune.fsutil import atomic_path

from .arch import Arch
from .hf_to_gguf import closing_on_error, direct_type, encode, load_arch, nbytes, target_type
from .model_folder import ModelFolder
from .writer import Writer


def convert_lora_to_gguf(adapter_dir, base_dir, out_path, outtype: str = "f16", on_event: Callback = ignore) -> Path:
    """Write the PEFT adapter `adapter_dir`, trained on `base_dir`, as a GGUF LoRA adapter at `out_path`."""
    direct_type(outtype)  # a clear error before any work
    deltas = LoraDeltas(adapter_dir)
    where = Path(adapter_dir)
    check_supported(deltas, where)
    folder = ModelFolder(base_dir)
    arch = load_arch(folder)
    alpha = float(deltas.config.get("lora_alpha", 8))
    match_base(deltas, folder, arch, where)
    plan = lora_pairs(deltas, folder, arch, alpha)
    if not plan:
        raise EdgetuneError(f"{where}: the adapter has no LoRA weights")
    on_event(Event("convert", "start", f"{where.name} -> {Path(out_path).name} (LoRA, {len(plan)} pairs)",
                   total=len(plan)))

    w = Writer(None, arch.arch_name)
    w.add_type(gguf.GGUFType.ADAPTER)
    w.add_name(where.name)
    w.add_string(gguf.Keys.Adapter.TYPE, "lora")
    w.add_float32(gguf.Keys.Adapter.LORA_ALPHA, alpha)
    tensors = []
    for gguf_name, a, b in plan:
        for suffix, t in (("lora_a", a), ("lora_b", b)):
            data = t.contiguous().numpy()
            qtype = target_type(gguf_name, data.shape, outtype)
            w.add_tensor_info(f"{gguf_name}.{suffix}", data.shape, np.dtype(np.float32), nbytes(data.shape, qtype),
                              raw_dtype=qtype)
            tensors.append((data, qtype))
    out_path = Path(out_path)
    with atomic_path(out_path) as tmp, closing_on_error(w):
        w.write_header_to_file(tmp)
        w.write_kv_data_to_file()
        w.write_ti_data_to_file()
        for i, (data, qtype) in enumerate(tensors):
            w.write_tensor_data(encode(data, qtype))
            on_event(Event("convert", "progress", step=i // 2 + 1, total=len(plan)))
        w.close()
    on_event(Event("convert", "done", f"{out_path}: {out_path.stat().st_size / 2**20:.2f} MiB",
                   data={"path": str(out_path), "bytes": out_path.stat().st_size}))
    return out_path


def check_supported(deltas: LoraDeltas, where: Path) -> None:
    """What a GGUF LoRA adapter cannot hold: embedding adapters, whole modules, Conv1D layouts."""
    embedding = [n for n, e in deltas.pairs.items() if e["kind"] == "embedding"]
    if embedding:
        raise EdgetuneError(f"{where}: target module {embedding[0].rsplit('.', 2)[-2]} (an embedding) is not "
                            "supported in a GGUF LoRA adapter; use the merged mode")
    if deltas.full:
        raise EdgetuneError(f"{where}: modules_to_save ({', '.join(sorted(deltas.full))[:80]}) cannot go in a GGUF "
                            "LoRA adapter; use the merged mode")
    if deltas.fan_in_fan_out:
        raise EdgetuneError(f"{where}: fan_in_fan_out adapters (GPT-2 Conv1D) are not supported")


def match_base(deltas: LoraDeltas, folder: ModelFolder, arch: Arch, where: Path) -> None:
    """The adapter's names made the base's, and every pair checked against the base weight it adapts."""
    deltas.align_names(set(folder.names()))
    for hf_name in sorted(deltas.pairs):
        if hf_name not in folder.names():
            raise EdgetuneError(f"{where}: {hf_name} has no base weight in {folder.path} (adapter made for another base? "
                                f"it names {deltas.base_model!r})")
        if arch.gguf_name(hf_name) is None:
            raise EdgetuneError(f"{where}: {hf_name} has no GGUF tensor in {arch.arch_name}")
        a, b = deltas.pairs[hf_name]["A"], deltas.pairs[hf_name]["B"]
        out_dim, in_dim = folder.shape(hf_name)
        r = a.shape[0]
        if tuple(a.shape) != (r, in_dim) or tuple(b.shape) != (out_dim, r):
            raise EdgetuneError(f"{where}: LoRA shapes A{tuple(a.shape)} B{tuple(b.shape)} for {hf_name} do not fit "
                                f"the base weight {(out_dim, in_dim)} (adapter made for another base?)")
    deltas.check_experts_fit({n: folder.shape(n) for n in folder.names()})


def lora_pairs(deltas: LoraDeltas, folder: ModelFolder, arch: Arch, alpha: float) -> list[tuple]:
    """(GGUF tensor name, A, B) for each adapted GGUF tensor, B scaled so that llama.cpp's alpha / r
    gives this module's scale: A (r, in) and B (out, r), or, for llama.cpp's stacked experts, one
    slot per expert: A (experts, r, in), B (experts, out, r)."""
    import torch

    plain: dict[str, tuple] = {}
    stacked: dict[str, list] = {}
    for hf_name in [n for n in folder.names() if deltas.touches(n)]:
        shape = folder.shape(hf_name)
        found = deltas.factors(hf_name, shape)
        if found is None:
            continue
        a, b, scale = found
        a = arch.lora_a_modify(hf_name, a.to(torch.float32))
        b = arch.lora_b_modify(hf_name, b.to(torch.float32) * scale)
        for part in arch.parts(hf_name, shape):
            b_part = b if part.rows is None else b[..., part.rows, :]
            if part.expert is None:
                plain[part.gguf_name] = (a, b_part)
            else:
                stacked.setdefault(part.gguf_name, [None] * part.experts)[part.expert] = (a, b_part)
    plan = []
    for gguf_name, (a, b) in plain.items():
        r = a.shape[-2]  # llama.cpp scales by alpha / r: B carries the rest of this module's scale
        plan.append((gguf_name, a, b * (r / alpha)))
    for gguf_name, slots in stacked.items():
        plan.append((gguf_name, *stack_experts(slots, alpha)))
    return plan


def stack_experts(slots: list, alpha: float) -> tuple:
    """The experts' (A, B) pairs as one stacked pair. One rank for the whole stack (llama.cpp reads it
    from B): a smaller expert is zero-padded, an expert the adapter leaves alone is all zeros."""
    import torch

    r = max(a.shape[0] for a, _b in filter(None, slots))
    in_dim = next(a.shape[1] for a, _b in filter(None, slots))
    out_dim = next(b.shape[0] for _a, b in filter(None, slots))
    a_stack, b_stack = torch.zeros(len(slots), r, in_dim), torch.zeros(len(slots), out_dim, r)
    for j, slot in enumerate(slots):
        if slot is not None:
            a_stack[j, :slot[0].shape[0]], b_stack[j, :, :slot[1].shape[1]] = slot
    return a_stack, b_stack * (r / alpha)

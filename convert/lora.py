"""PEFT LoRA adapter -> GGUF LoRA adapter (llama.cpp's format), to load beside the base GGUF.

Each targeted weight W gets two tensors, `<gguf name>.lora_a` (r x in) and `.lora_b` (out x r);
llama.cpp adds (alpha / r) * B @ A at run time. Per-module scales (rank_pattern, alpha_pattern,
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

from .hf_to_gguf import _encode, _nbytes, _target_type, closing_on_error, direct_type, load_arch
from .model_folder import ModelFolder


def convert_lora_to_gguf(adapter_dir, base_dir, out_path, outtype: str = "f16", on_event: Callback = ignore) -> Path:
    import torch


    direct_type(outtype)  # a clear error before any work
    deltas = LoraDeltas(adapter_dir)
    where = Path(adapter_dir)
    embedding = [n for n, e in deltas.pairs.items() if e["kind"] == "embedding"]
    if embedding:
        raise EdgetuneError(f"{where}: target module {embedding[0].rsplit('.', 2)[-2]} (an embedding) is not "
                            "supported in a GGUF LoRA adapter; use the merged mode")
    if deltas.full:
        raise EdgetuneError(f"{where}: modules_to_save ({', '.join(sorted(deltas.full))[:80]}) cannot go in a GGUF "
                            "LoRA adapter; use the merged mode")
    if deltas.fan_in_fan_out:
        raise EdgetuneError(f"{where}: fan_in_fan_out adapters (GPT-2 Conv1D) are not supported")
    folder = ModelFolder(base_dir)
    arch = load_arch(folder)
    alpha = float(deltas.config.get("lora_alpha", 8))

    deltas.align_names(set(folder.names()))
    plan = []
    for hf_name in sorted(deltas.pairs):
        if hf_name not in folder.names():
            raise EdgetuneError(f"{where}: {hf_name} has no base weight in {folder.path} (adapter made for another base? "
                                f"it names {deltas.base_model!r})")
        gguf_name = arch.gguf_name(hf_name)
        if gguf_name is None:
            raise EdgetuneError(f"{where}: {hf_name} has no GGUF tensor in {arch.arch_name}")
        a, b = deltas.pairs[hf_name]["A"], deltas.pairs[hf_name]["B"]
        out_dim, in_dim = folder.shape(hf_name)
        r = a.shape[0]
        if tuple(a.shape) != (r, in_dim) or tuple(b.shape) != (out_dim, r):
            raise EdgetuneError(f"{where}: LoRA shapes A{tuple(a.shape)} B{tuple(b.shape)} for {hf_name} do not fit "
                                f"the base weight {(out_dim, in_dim)} (adapter made for another base?)")
        plan.append((hf_name, gguf_name, r))
    if not plan:
        raise EdgetuneError(f"{where}: the adapter has no LoRA weights")
    on_event(Event("convert", "start", f"{where.name} -> {Path(out_path).name} (LoRA, {len(plan)} pairs)",
                   total=len(plan)))

    w = gguf.GGUFWriter(None, arch.arch_name)
    w.add_type(gguf.GGUFType.ADAPTER)
    w.add_name(where.name)
    w.add_string(gguf.Keys.Adapter.TYPE, "lora")
    w.add_float32(gguf.Keys.Adapter.LORA_ALPHA, alpha)
    tensors = []
    for hf_name, gguf_name, r in plan:
        e = deltas.pairs[hf_name]
        # llama.cpp scales by alpha / r: fold this module's own scale into B.
        b = e["B"].to(torch.float32) * (deltas.scale(hf_name) * r / alpha)
        b = arch.lora_b_modify(hf_name, b)
        a = arch.lora_a_modify(hf_name, e["A"].to(torch.float32))
        for suffix, t in (("lora_a", a), ("lora_b", b)):
            data = t.numpy()
            qtype = _target_type(gguf_name, data.shape, outtype)
            w.add_tensor_info(f"{gguf_name}.{suffix}", data.shape, np.dtype(np.float32), _nbytes(data.shape, qtype),
                              raw_dtype=qtype)
            tensors.append((data, qtype))
    out_path = Path(out_path)
    with atomic_path(out_path) as tmp, closing_on_error(w):
        w.write_header_to_file(tmp)
        w.write_kv_data_to_file()
        w.write_ti_data_to_file()
        for i, (data, qtype) in enumerate(tensors):
            w.write_tensor_data(_encode(data, qtype))
            on_event(Event("convert", "progress", step=i // 2 + 1, total=len(plan)))
        w.close()
    on_event(Event("convert", "done", f"{out_path}: {out_path.stat().st_size / 2**20:.2f} MiB",
                   data={"path": str(out_path), "bytes": out_path.stat().st_size}))
    return out_path

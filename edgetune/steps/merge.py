"""Merge a PEFT LoRA adapter into the 16/32-bit base weights, one safetensors shard at a time.

The base is always read from its original safetensors files (never the 4-bit copy used for
QLoRA training: merging into dequantized NF4 weights costs perplexity). Each delta is computed in
fp32 as scale * B @ A and added before casting back to the base dtype. Tensors are read and
written one at a time: peak memory is about the largest tensor plus the adapter.

`LoraDeltas` is the same arithmetic as a per-tensor function, so the GGUF converter can apply it
while streaming (the batch tool's single-pass merge) with bit-identical results.
"""
from __future__ import annotations

import json
import shutil
import struct
from pathlib import Path

from edgetune.convert.lora_deltas import LoraDeltas
from edgetune.convert.model_folder import SAFETENSORS_DTYPES, read_header, read_tensors, safetensors_files
from edgetune.errors import EdgetuneError
from edgetune.events import Callback, Event, ignore
from edgetune.fsutil import atomic_dir
from edgetune.inputs.hub import is_hub_id, resolve_model_id

COPY_FILES = ("config.json", "generation_config.json", "tokenizer.json", "tokenizer_config.json",
              "special_tokens_map.json", "tokenizer.model", "chat_template.jinja", "chat_template.json",
              "vocab.json", "merges.txt", "added_tokens.json")
def base_folder(base: str) -> Path:
    """A local folder for `base` (a hub id: its cached snapshot, or downloaded now)."""
    path = Path(base)
    if path.is_dir():
        return path
    if is_hub_id(base):
        return resolve_model_id(base)
    raise EdgetuneError(f"{base}: no such base model folder (or hub id org/name)")


def tensor_names(folder: Path) -> set[str]:
    """Every tensor name in the folder's safetensors shards (reads headers only)."""
    from safetensors import safe_open

    names: set[str] = set()
    for shard in safetensors_files(folder):
        try:
            with safe_open(str(shard), framework="pt") as f:
                names |= set(f.keys())
        except Exception as e:
            raise EdgetuneError(f"{shard}: unreadable safetensors ({str(e).splitlines()[0]})") from None
    return names


def merge(base: str, adapter_dir: str | Path, out_dir: str | Path, on_event: Callback = ignore) -> Path:
    """Write base + adapter as a new HF folder at `out_dir` (built beside it, then renamed)."""
    base_dir = base_folder(base)
    deltas = LoraDeltas(adapter_dir)
    out_dir = Path(out_dir)
    shards = safetensors_files(base_dir)
    names = tensor_names(base_dir)
    total = len(names)
    deltas.check_complete(names)
    deltas.check_experts_fit({n: tuple(e["shape"]) for shard in shards for n, e in read_header(shard)[0].items()
                              if n != "__metadata__"})
    on_event(Event("merge", "start", f"merging {len(deltas.pairs)} LoRA pairs into {base_dir}", total=total))
    with atomic_dir(out_dir) as tmp:
        _write_merged(shards, deltas, tmp, total, on_event)
        for name in COPY_FILES + tuple(p.name for p in base_dir.glob("*.safetensors.index.json")):
            src = base_dir / name
            if src.is_file():
                shutil.copy2(src, tmp / name)
        # Files saved with the adapter win: training sets the pad token, chat template and stop ids.
        for name in COPY_FILES[1:]:
            src = Path(adapter_dir) / name
            if src.is_file():
                shutil.copy2(src, tmp / name)
    on_event(Event("merge", "done", f"merged model: {out_dir}", data={"pairs": len(deltas.pairs)}))
    return out_dir


def _write_merged(shards: list[Path], deltas: LoraDeltas, out: Path, total: int, on_event: Callback) -> None:
    """Each base shard with the adapter's deltas added, written tensor by tensor: the header is
    known before any data (a merge keeps every name and dtype, and every shape but a
    modules_to_save replacement's), so one tensor is in memory at a time, whatever the shard size
    (a mixture-of-experts shard holds thousands)."""
    import torch

    done = 0
    for shard in shards:
        base_header, _start = read_header(shard)
        names = sorted(k for k in base_header if k != "__metadata__")
        header: dict = {}
        offset = 0
        for name in names:
            entry = base_header[name]
            shape = list(deltas.full[name].shape) if name in deltas.full else entry["shape"]
            size = (entry["data_offsets"][1] - entry["data_offsets"][0]) if name not in deltas.full else \
                deltas.full[name].to(getattr(torch, SAFETENSORS_DTYPES[entry["dtype"]])).nbytes
            header[name] = {"dtype": entry["dtype"], "shape": shape, "data_offsets": [offset, offset + size]}
            offset += size
        header["__metadata__"] = {**(base_header.get("__metadata__") or {}), "format": "pt"}
        blob = json.dumps(header, separators=(",", ":")).encode()
        blob += b" " * (-len(blob) % 8)  # data starts 8-byte aligned, as safetensors writes it
        try:
            with open(out / shard.name, "wb") as dst:
                dst.write(struct.pack("<Q", len(blob)) + blob)
                for name, tensor in read_tensors(shard, names):
                    merged = deltas.apply(name, tensor).contiguous()
                    if list(merged.shape) != header[name]["shape"]:
                        raise EdgetuneError(f"{shard}: merged {name} is {tuple(merged.shape)}, not "
                                            f"{tuple(header[name]['shape'])}")
                    dst.write(memoryview(merged.reshape(-1).view(torch.uint8).numpy()))
                    done += 1
        except OSError as e:
            raise EdgetuneError(f"{out / shard.name}: cannot write the merged shard ({e.strerror or e})") from None
        on_event(Event("merge", "progress", shard.name, step=done, total=total))

"""HF model folder -> GGUF (F32, F16, BF16 or Q8_0), streaming one tensor at a time.

Two passes over the safetensors: the first only reads headers (names, shapes) to write the GGUF
header and tensor index; the second reads, transforms and writes each tensor's data in the same
order. Peak memory is about the largest tensor, whatever the model size. The file is written
beside its final path and renamed only when complete.
"""
from __future__ import annotations

import contextlib
from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable, Iterator

import gguf
import numpy as np

from edgetune.errors import EdgetuneError
from edgetune.events import Callback, Event, ignore
from edgetune.fsutil import atomic_path

from .arch import ARCHITECTURES, Arch
from .arch.base import Part
from .filetypes import DIRECT_TYPES, FileType
from .model_folder import ModelFolder
from .tokenizer import add_tokenizer, check_tokenizer
from .writer import Writer

SUPPORTED_ARCHITECTURES = {name: gguf.MODEL_ARCH_NAMES[cls.gguf_arch] for name, cls in ARCHITECTURES.items()}

TensorTransform = Callable[[str, "torch.Tensor"], "torch.Tensor"]  # noqa: F821


def load_arch(folder: ModelFolder) -> Arch:
    name = folder.architecture
    cls = ARCHITECTURES.get(name)
    if cls is None:
        raise EdgetuneError(f"{folder.path}/config.json: architecture '{name}' is not supported: edgetune cannot "
                            f"convert it to GGUF (supported: {supported_list()})")
    return cls(folder.text_config(), str(folder.path))


def supported_list() -> str:
    return ", ".join(f"{name} ({arch})" for name, arch in sorted(SUPPORTED_ARCHITECTURES.items()))


def check_convertible(model_dir) -> Arch:
    """Whether `model_dir` will convert, decided from its config and tokenizer alone (no weights
    read): architecture, hyperparameters llama.cpp can express, tokenizer kind and pre-tokenizer.
    Run before training, so an unconvertible base fails in seconds, not after the adapter is made."""
    folder = ModelFolder(model_dir)
    arch = load_arch(folder)
    arch.add_hparams(Writer(None, arch.arch_name))  # in memory: raises what conversion would
    check_tokenizer(folder.path)
    return arch


def tensor_name_map(model_dir) -> Callable[[str], str | None]:
    """HF tensor name -> GGUF tensor name for this model (None: not written)."""
    return load_arch(ModelFolder(model_dir)).gguf_name


def input_order(model_dir) -> Callable[[str, np.ndarray], np.ndarray]:
    """(HF weight name, one value per input column) -> the values in the GGUF's column order: the
    converter reorders some matrices' inputs (Qwen3.5's out_proj by value head), and an importance
    matrix must follow."""
    import torch
    arch = load_arch(ModelFolder(model_dir))
    return lambda hf_name, values: arch.lora_a_modify(hf_name, torch.from_numpy(values)[None])[0].numpy()


def needs_qk_permute(model_dir) -> bool:
    """True when the GGUF stores q/k rows in another order than HF (llama's RoPE layout): a LoRA
    adapter's B matrices for q_proj/k_proj then need `load_arch(...).lora_b_modify`."""
    arch = load_arch(ModelFolder(model_dir))
    return arch.permutes_rows("model.layers.0.self_attn.q_proj.weight")


def direct_type(outtype: str) -> FileType:
    """The registry entry of an outtype this converter writes itself (f32, f16, bf16, q8_0)."""
    t = DIRECT_TYPES.get(str(outtype).upper())
    if t is None:
        raise EdgetuneError(f"outtype {outtype!r} is not one of {', '.join(d.outtype for d in DIRECT_TYPES.values())}")
    return t


def _add_metadata(w: gguf.GGUFWriter, key: str, value) -> None:
    """One extra general.* KV, keeping its JSON type (bool, int, float, string, list of strings)."""
    if not key.startswith("general."):
        raise EdgetuneError(f"metadata key {key!r}: only general.* keys may be added")
    if isinstance(value, bool):
        w.add_bool(key, value)
    elif isinstance(value, int):
        w.add_int64(key, value) if abs(value) >= 2**31 else w.add_int32(key, value)
    elif isinstance(value, float):
        w.add_float32(key, value)
    elif isinstance(value, (list, tuple)):
        w.add_array(key, [str(v) for v in value])
    elif value is not None:
        w.add_string(key, str(value))


def target_type(name: str, shape: tuple[int, ...], outtype: str) -> gguf.GGMLQuantizationType:
    """The ggml type a tensor is written as for the file type `outtype`."""
    if len(shape) < 2:
        return gguf.GGMLQuantizationType.F32  # norms and biases stay F32, as llama.cpp expects
    qtype = direct_type(outtype).direct
    if qtype == gguf.GGMLQuantizationType.Q8_0 and shape[-1] % gguf.GGML_QUANT_SIZES[qtype][0]:
        return gguf.GGMLQuantizationType.F16  # rows not a multiple of the block size
    return qtype


def encode(data: np.ndarray, qtype: gguf.GGMLQuantizationType) -> np.ndarray:
    """An array as the GGUF bytes of `qtype` (F32, F16, or a type gguf-py quantizes)."""
    if qtype == gguf.GGMLQuantizationType.F32:
        return data.astype(np.float32, copy=False)
    if qtype == gguf.GGMLQuantizationType.F16:
        return data.astype(np.float16)
    return gguf.quants.quantize(data.astype(np.float32, copy=False), qtype)


CHUNK_ELEMENTS = 1 << 22  # elements converted at a time: bounds the fp32 temporaries of big tensors


@contextlib.contextmanager
def closing_on_error(w: gguf.GGUFWriter):
    """Close the writer's file if writing fails, so the temp file's space is freed when it is
    deleted (an open file on a full disk keeps its blocks)."""
    try:
        yield
    except BaseException:
        for f in w.fout or []:
            try:
                f.close()
            except OSError:
                pass
        raise


def encode_tensor(tensor, qtype: gguf.GGMLQuantizationType) -> np.ndarray:
    """A torch tensor as the GGUF bytes of `qtype`, converted in row chunks so the fp32 copy of a
    large embedding never exists whole."""
    import torch
    if tensor.dim() < 2 or tensor.numel() <= CHUNK_ELEMENTS:
        return encode(tensor.to(torch.float32).numpy(), qtype)
    rows = max(1, CHUNK_ELEMENTS // int(np.prod(tensor.shape[1:])))
    out = None
    for start in range(0, tensor.shape[0], rows):
        part = encode(tensor[start:start + rows].to(torch.float32).numpy(), qtype)
        if out is None:
            out = np.empty((tensor.shape[0], *part.shape[1:]), dtype=part.dtype)
        out[start:start + len(part)] = part
    return out


def nbytes(shape: tuple[int, ...], qtype: gguf.GGMLQuantizationType) -> int:
    """Bytes of a tensor of `shape` stored as `qtype`."""
    block, type_size = gguf.GGML_QUANT_SIZES[qtype]
    n = int(np.prod(shape))
    return n // block * type_size


@dataclass
class Planned:
    """One GGUF tensor as pass 1 plans it."""

    name: str
    shape: tuple[int, ...]
    qtype: gguf.GGMLQuantizationType
    unfilled: set  # experts (None for a plain tensor) whose data has not been routed to it yet


@dataclass
class TensorPlan:
    """Pass 1's result: the GGUF's tensors in index order, and where each HF tensor's data goes."""

    tensors: list[Planned] = field(default_factory=list)
    routes: dict[str, list[tuple[int, Part]]] = field(default_factory=dict)  # hf name -> (index, part)
    left_out: dict[str, int] = field(default_factory=dict)  # what a multimodal checkpoint holds beside its text model


def convert_hf_to_gguf(model_dir, out_path, outtype: str = "f16", on_event: Callback = ignore,
                       tensor_transform: TensorTransform | None = None, metadata: dict | None = None,
                       tokenizer=None) -> Path:
    """Write `model_dir` as a GGUF at `out_path`; `tensor_transform(hf_name, tensor)` may change
    any weight first (the batch tool adds LoRA deltas there). `tokenizer`: the folder's own, as
    AutoTokenizer loads it, when the caller has it already (Gemma's takes seconds to load)."""
    file_type = direct_type(outtype)
    folder = ModelFolder(model_dir)
    arch = load_arch(folder)
    out_path = Path(out_path)
    plan = plan_tensors(folder, arch, outtype)
    extra = arch.extra_tensors()  # written after the checkpoint's own tensors, always F32
    n_vocab = vocab_size(folder, plan)
    total = len(plan.tensors) + len(extra)
    on_event(Event("convert", "start", f"{folder.path} -> {out_path.name} ({arch.arch_name}, {outtype}, "
                   f"{total} tensors)", total=total))
    if plan.left_out:
        on_event(Event("convert", "log", f"{folder.path}: text model only; left out "
                       + ", ".join(f"the {what} ({n} tensors)" for what, n in plan.left_out.items()),
                       data={"left_out": plan.left_out}))

    w = Writer(None, arch.arch_name)
    add_header(w, folder, arch, file_type, n_vocab, metadata, tokenizer)
    for t in plan.tensors:
        w.add_tensor_info(t.name, t.shape, np.dtype(np.float32), nbytes(t.shape, t.qtype), raw_dtype=t.qtype)
    for gguf_name, data in extra.items():
        w.add_tensor_info(gguf_name, data.shape, data.dtype, data.nbytes, raw_dtype=gguf.GGMLQuantizationType.F32)
    with atomic_path(out_path) as tmp, closing_on_error(w):
        w.write_header_to_file(tmp)
        w.write_kv_data_to_file()
        w.write_ti_data_to_file()
        for i, data in tensors_in_order(folder, arch, plan, tensor_transform):
            w.write_tensor_data(data)
            del data  # written: not held while the next tensor is read
            on_event(Event("convert", "progress", plan.tensors[i].name, step=i + 1, total=total))
        for i, (gguf_name, data) in enumerate(extra.items(), len(plan.tensors) + 1):
            w.write_tensor_data(data)
            on_event(Event("convert", "progress", gguf_name, step=i, total=total))
        w.close()
    size = out_path.stat().st_size
    on_event(Event("convert", "done", f"{out_path}: {size / 2**20:.1f} MiB", data={"path": str(out_path), "bytes": size}))
    return out_path


def plan_tensors(folder: ModelFolder, arch: Arch, outtype: str) -> TensorPlan:
    """Pass 1: names, shapes and types from the safetensors headers only. A GGUF tensor may be
    built from several HF tensors (one per expert) and an HF tensor may feed several (fused ones)."""
    plan = TensorPlan()
    index: dict[str, int] = {}  # gguf name -> its place in plan.tensors
    for hf_name in folder.names():
        if arch.left_out(hf_name):
            plan.left_out[arch.left_out(hf_name)] = plan.left_out.get(arch.left_out(hf_name), 0) + 1
        if arch.dropped(hf_name):
            continue
        shape = arch.gguf_shape(hf_name, folder.shape(hf_name))
        parts = arch.parts(hf_name, shape)
        if not parts:
            raise EdgetuneError(f"{folder.shard_of(hf_name)}: tensor '{hf_name}' has no GGUF name for "
                                f"{arch.arch_name} (a {folder.architecture} this converter does not know?)")
        for part in parts:
            part_shape = shape if part.rows is None else (*shape[:-2], len(range(shape[-2])[part.rows]), shape[-1])
            gguf_shape = (part.experts, *part_shape) if part.experts else part_shape
            if part.gguf_name not in index:
                index[part.gguf_name] = len(plan.tensors)
                qtype = (gguf.GGMLQuantizationType.F32 if arch.keeps_f32(part.gguf_name)
                         else target_type(part.gguf_name, gguf_shape, outtype))
                plan.tensors.append(Planned(part.gguf_name, gguf_shape, qtype,
                                            set(range(part.experts)) if part.experts else {None}))
            planned = plan.tensors[index[part.gguf_name]]
            if planned.shape != gguf_shape or part.expert not in planned.unfilled:
                raise EdgetuneError(f"{folder.shard_of(hf_name)}: tensor '{hf_name}' {shape} does not fit "
                                    f"{part.gguf_name} {planned.shape} (another expert's shape, or written twice)")
            planned.unfilled.discard(part.expert)
            plan.routes.setdefault(hf_name, []).append((index[part.gguf_name], part))
    for planned in plan.tensors:
        if planned.unfilled:
            raise EdgetuneError(f"{folder.path}: {planned.name} is missing experts {sorted(planned.unfilled)[:8]} "
                                "(an incomplete checkpoint?)")
    return plan


def vocab_size(folder: ModelFolder, plan: TensorPlan) -> int:
    """Rows of the token embedding: the tokenizer is written (padded) to this many tokens."""
    embedding = [t.shape for t in plan.tensors if t.name == "token_embd.weight"]
    if not embedding:
        raise EdgetuneError(f"{folder.path}: no token embedding tensor (model.embed_tokens.weight) in the safetensors")
    return embedding[0][0]


def add_header(w: gguf.GGUFWriter, folder: ModelFolder, arch: Arch, file_type: FileType, n_vocab: int,
               metadata: dict | None, tokenizer=None) -> None:
    """The GGUF's key-values: name and extra general.* metadata, hyperparameters, file type, tokenizer."""
    w.add_type(gguf.GGUFType.MODEL)
    metadata = dict(metadata or {})
    w.add_name(str(metadata.pop("general.name", None) or folder.path.name))
    for key, value in metadata.items():
        _add_metadata(w, key, value)
    arch.add_hparams(w)
    w.add_file_type(int(file_type.ftype))
    w.add_quantization_version(gguf.GGML_QUANT_VERSION)
    add_tokenizer(w, folder.path, n_vocab, tokenizer)


def tensors_in_order(folder: ModelFolder, arch: Arch, plan: TensorPlan,
                     tensor_transform: TensorTransform | None = None) -> Iterator[tuple[int, np.ndarray]]:
    """Pass 2: (index, encoded data) of each planned tensor, in the order of the index. A stacked
    tensor is filled expert by expert in its encoded form, so at most one layer's experts are held
    at a time."""
    import torch

    pending: dict[int, np.ndarray] = {}
    stacks: dict[int, tuple[np.ndarray, set[int]]] = {}  # plan index -> (encoded stack, experts still to come)
    next_index = 0
    for hf_name, tensor in folder.tensors():
        if hf_name not in plan.routes:
            continue
        if tensor_transform is not None:
            tensor = tensor_transform(hf_name, tensor)
        # Matrices are only permuted (exact in any dtype); 1-D tensors get arithmetic (gemma's +1).
        tensor = arch.modify(hf_name, tensor if tensor.dim() >= 2 else tensor.to(torch.float32))
        for i, part in plan.routes[hf_name]:
            data = encode_tensor(tensor if part.rows is None else tensor[..., part.rows, :], plan.tensors[i].qtype)
            if part.expert is None:
                pending[i] = data
                continue
            stack, missing = stacks.get(i) or (np.empty((part.experts, *data.shape), data.dtype),
                                               set(range(part.experts)))
            stack[part.expert] = data
            missing.discard(part.expert)
            if missing:
                stacks[i] = (stack, missing)
            else:
                stacks.pop(i, None)
                pending[i] = stack
        del tensor
        while next_index in pending:  # shards may list tensors in another order than the index
            yield next_index, pending.pop(next_index)
            next_index += 1

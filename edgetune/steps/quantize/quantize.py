"""Quantize an F16/BF16/F32 GGUF with llama.cpp's own quantizer (through llama-cpp-python's C API).

K-quants (Q4_K_M, ...) only exist in llama.cpp, so we call it rather than re-implement it.
llama_model_quantize leaves a partial file when it fails: we write to a temp path and rename on rc 0.
"""
from __future__ import annotations

import contextlib
import ctypes
import re
import time
from collections import Counter
from pathlib import Path

import gguf

from edgetune.convert.filetypes import FileType, file_type
from edgetune.errors import EdgetuneError
from edgetune.events import Callback, Event, ignore
from edgetune.fsutil import atomic_path
from edgetune.inputs.gguf_io import bits_per_weight, check_gguf_file, summary
from edgetune.logs import llama_lines
from edgetune.steps.quantize import imatrix as imatrix_mod


def quantize(src: str | Path, dst: str | Path, qtype: str, threads: int = 0, on_event: Callback = ignore,
             imatrix: str | Path | None = None, token_embedding_type: str | None = None,
             output_tensor_type: str | None = None, tensor_types: dict[str, str] | None = None,
             pure: bool = False) -> dict:
    """Quantize `src` to `dst` as `qtype`, weighting the error by `imatrix` (an imatrix GGUF) when
    given; `token_embedding_type` / `output_tensor_type` (ggml type names such as Q8_0, Q4_0) override
    what llama.cpp picks for those two tensors; `tensor_types` ({exact tensor name: ggml type}) sets
    single tensors; `pure` gives every other quantizable tensor the file type's own tensor type
    (no per-layer mix). Returns {path, type, bytes, bits_per_weight, seconds}."""
    import llama_cpp

    ft = file_type(qtype)
    src, dst = Path(src), Path(dst)
    if ft.needs_imatrix and imatrix is None:
        raise EdgetuneError(f"quant type {ft.name} needs an importance matrix (computed from the training data "
                            "by `edgetune run`); none was given, so nothing was quantized")
    check_gguf_file(src)
    if token_embedding_type or output_tensor_type or tensor_types:
        check_types_fit(src, _requested(token_embedding_type, output_tensor_type, tensor_types))
    on_event(Event("quantize", "start", f"{src.name} -> {ft.name}" + (" (importance matrix)" if imatrix else "")))
    t0 = time.time()
    # llama.cpp logs a line per tensor, and a warning per tensor whose rows its type cannot take:
    # collected, and summed up in one event line instead of tens of lines on the terminal.
    log: list[str] = []
    with atomic_path(dst) as tmp, _params(ft, threads, imatrix, token_embedding_type, output_tensor_type,
                                          tensor_types, pure) as params, llama_lines(log):
        rc = llama_cpp.llama_model_quantize(str(src).encode(), str(tmp).encode(), params)
        if rc != 0:
            last = next((x.strip() for x in reversed(log) if x.strip()), "")
            raise EdgetuneError(f"{src}: llama.cpp could not quantize it to {ft.name} (rc {rc}; "
                                + (f"llama.cpp: {last})" if last else "is it already quantized, or not a GGUF model?)"))
    fallbacks = fell_back(log)
    if fallbacks and not (tensor_types or pure):  # a mix plans its fallbacks itself
        kinds = ", ".join(f"{n} to {t}" for t, n in sorted(Counter(fallbacks.values()).items()))
        on_event(Event("quantize", "log", f"{ft.name}: {len(fallbacks)} tensors whose row length is no multiple "
                       f"of the type's block took another type ({kinds}), as llama.cpp does"))
    info = {"path": str(dst), "type": ft.name, "bytes": dst.stat().st_size,
            "bits_per_weight": bits_per_weight(dst), "seconds": round(time.time() - t0, 2),
            "imatrix": str(imatrix) if imatrix else None,
            "token_embedding_type": token_embedding_type, "output_tensor_type": output_tensor_type}
    on_event(Event("quantize", "done", f"{dst.name}: {info['bytes'] / 2**20:.1f} MiB, "
                   f"{info['bits_per_weight']:.2f} bits/weight", data=info))
    return info


# Tensor types offered when one does not fit, widest first.
TENSOR_TYPES = ("Q8_0", "Q6_K", "Q5_K", "Q5_1", "Q5_0", "Q4_K", "Q4_1", "Q4_0", "IQ4_NL", "IQ4_XS", "Q3_K", "Q2_K")
OVERRIDDEN = ("token_embd.weight", "output.weight")  # what token_embedding_type / output_tensor_type set


def misfit(tensor: str, width: int, type_name: str) -> str | None:
    """Why ggml type `type_name` cannot hold `tensor`, whose rows are `width` values long (llama.cpp
    aborts the whole process on such a request); None when it fits."""
    block = gguf.GGML_QUANT_SIZES[gguf.GGMLQuantizationType[type_name.upper()]][0]
    if width % block == 0:
        return None
    fits = [t for t in TENSOR_TYPES if width % gguf.GGML_QUANT_SIZES[gguf.GGMLQuantizationType[t]][0] == 0]
    return (f"{tensor} has rows of {width} values and {type_name.upper()} needs a multiple of {block}; "
            f"types that fit: {', '.join(fits) or 'F16, F32'}")


def row_widths(src: str | Path) -> dict[str, int]:
    """{tensor name: row length} of a GGUF's tensors (GGUF lists the row length first)."""
    return summary(src).widths


def check_types_fit(src: str | Path, types: dict[str, str | None], widths: dict[str, int] | None = None) -> None:
    """Refuse, in one line, a tensor type that a tensor's rows cannot take ({tensor name: type};
    None or "default" is llama.cpp's own choice), before llama.cpp is asked and aborts."""
    widths = widths if widths is not None else row_widths(src)
    for tensor, type_name in types.items():
        if type_name in (None, "", "default", "auto") or tensor not in widths:
            continue
        why = misfit(tensor, widths[tensor], type_name)
        if why:
            raise EdgetuneError(f"{Path(src).name}: {why}")


def _requested(token_embedding_type, output_tensor_type, tensor_types) -> dict[str, str | None]:
    """{tensor name: type asked for}, after checking the two named types are ggml types at all."""
    ggml_type(token_embedding_type, "token_embedding_type")
    ggml_type(output_tensor_type, "output_tensor_type")
    asked = dict(tensor_types or {})
    asked.setdefault(OVERRIDDEN[0], token_embedding_type)
    asked.setdefault(OVERRIDDEN[1], output_tensor_type)
    if token_embedding_type:
        asked[OVERRIDDEN[0]] = token_embedding_type  # the two named types win over tensor_types, as in llama.cpp
    if output_tensor_type:
        asked[OVERRIDDEN[1]] = output_tensor_type
    return asked


FALLBACK = re.compile(r"(\S+)\s+- ncols .*?-> falling back to\s+(\w+)")


def fell_back(log: list[str]) -> dict[str, str]:
    """{tensor name: the type it got instead} from llama.cpp's quantize log ("... -> falling back to q4_0")."""
    return {m[1]: m[2].upper() for m in FALLBACK.finditer("".join(log))}


class Sizer:
    """File sizes as llama.cpp's dry run predicts them (nothing is written), for many types of one
    source: the source is validated, its header read and the importance matrix loaded once."""

    def __init__(self, src: str | Path, imatrix: str | Path | None = None):
        self.src = Path(src)
        read = summary(self.src)
        self.header = read.data_offset  # llama.cpp reports tensor bytes; the header comes on top
        self.widths = read.widths  # rows a type must divide
        self.imatrix = imatrix_mod.read(imatrix) if imatrix is not None else None
        self.imatrix_name = Path(imatrix).name if imatrix is not None else ""

    def size(self, qtype: str, token_embedding_type: str | None = None, output_tensor_type: str | None = None) -> int:
        import llama_cpp

        ft = file_type(qtype)
        if token_embedding_type or output_tensor_type:  # llama.cpp would abort the process on a misfit
            check_types_fit(self.src, _requested(token_embedding_type, output_tensor_type, None), self.widths)
        lines: list[str] = []
        with _params(ft, 0, self.imatrix, token_embedding_type, output_tensor_type,
                     imatrix_name=self.imatrix_name) as params, llama_lines(lines):
            params.dry_run = True
            rc = llama_cpp.llama_model_quantize(str(self.src).encode(), b"/dev/null", params)
        match = re.search(r"quant size\s*=\s*([0-9.]+) MiB", "".join(lines))
        if rc != 0 or not match:
            raise EdgetuneError(f"{self.src}: llama.cpp's dry run for {ft.name} failed (rc {rc})")
        return int(float(match.group(1)) * 2**20) + self.header


def predicted_size(src: str | Path, qtype: str, imatrix: str | Path | None = None,
                   token_embedding_type: str | None = None, output_tensor_type: str | None = None) -> int:
    """The file size llama.cpp's dry run predicts for one type, in bytes."""
    return Sizer(src, imatrix).size(qtype, token_embedding_type, output_tensor_type)


def ggml_type(name: str | None, where: str) -> int | None:
    """A ggml tensor type id by name (Q8_0, Q4_0, F16, ...), or None for llama.cpp's own choice."""
    if name in (None, "", "auto"):
        return None
    try:
        return int(gguf.GGMLQuantizationType[str(name).upper()])
    except KeyError:
        raise EdgetuneError(f"{where}: {name!r} is not a ggml tensor type "
                            f"(e.g. {', '.join(t.name for t in list(gguf.GGMLQuantizationType)[:9])})") from None


@contextlib.contextmanager
def _params(ft: FileType, threads: int, imatrix, token_embedding_type, output_tensor_type,
            tensor_types: dict[str, str] | None = None, pure: bool = False, imatrix_name: str = ""):
    """llama_model_quantize_params with the importance matrix (a path, or an Imatrix already read and
    its file name) and the quantize.imatrix.* metadata llama-quantize writes, and per-tensor types;
    the ctypes arrays they point into live until the block ends."""
    import llama_cpp
    import llama_cpp._logger

    llama_cpp._logger.set_verbose(False)  # llama.cpp would print every tensor onto the terminal
    params = llama_cpp.llama_model_quantize_default_params()
    params.ftype = int(ft.ftype)
    params.nthread = threads
    params.allow_requantize = False
    params.pure = pure
    for attr, value, where in (("token_embedding_type", token_embedding_type, "token_embedding_type"),
                               ("output_tensor_type", output_tensor_type, "output_tensor_type")):
        type_id = ggml_type(value, where)
        if type_id is not None:
            setattr(params, attr, type_id)
    keep = []
    if tensor_types:
        overrides = _tensor_overrides(tensor_types)
        keep.append(overrides)
        params.tt_overrides = overrides
    if imatrix is not None:
        im = imatrix if isinstance(imatrix, imatrix_mod.Imatrix) else imatrix_mod.read(imatrix)
        imatrix_name = imatrix_name or Path(imatrix).name
        data = im.mean_squares()
        entries = (llama_cpp.llama_model_imatrix_data * (len(data) + 1))()
        for i, (name, values) in enumerate(sorted(data.items())):
            name_b = name.encode()
            keep += [name_b, values]
            entries[i].name = name_b
            entries[i].data = values.ctypes.data_as(ctypes.POINTER(ctypes.c_float))
            entries[i].size = values.size
        entries[len(data)].name = None  # the array ends at a NULL name
        overrides = _kv_overrides([
            ("quantize.imatrix.file", imatrix_name),
            ("quantize.imatrix.dataset", im.datasets[0] if im.datasets else ""),
            ("quantize.imatrix.entries_count", len(data)),
            ("quantize.imatrix.chunks_count", im.chunk_count)])
        keep += [entries, overrides]
        params.imatrix = entries
        params.kv_overrides = overrides
    yield params
    del keep


def _tensor_overrides(tensor_types: dict[str, str]):
    """A llama_model_tensor_override array ending with {NULL, GGML_TYPE_COUNT}. llama.cpp matches
    each pattern with std::regex_search on the tensor name and takes the first that matches, so
    every name is anchored and escaped: blk.1.attn_q.weight must not also match blk.11.attn_q.weight.
    (token_embedding_type / output_tensor_type, when set, win over these for those two tensors.)"""
    import llama_cpp

    arr = (llama_cpp.llama_model_tensor_override * (len(tensor_types) + 1))()
    for o, (name, type_name) in zip(arr, sorted(tensor_types.items())):
        type_id = ggml_type(type_name, f"tensor type of {name}")
        if type_id is None:
            raise EdgetuneError(f"tensor type of {name}: give a ggml type, not {type_name!r}")
        o.pattern = f"^{re.escape(name)}$".encode()
        o.type = type_id
    arr[len(tensor_types)].pattern = None
    arr[len(tensor_types)].type = llama_cpp.GGML_TYPE_COUNT
    return arr


def _kv_overrides(items: list[tuple[str, str | int]]):
    """A llama_model_kv_override array ending with an empty key (llama.cpp's terminator)."""
    import llama_cpp

    arr = (llama_cpp.llama_model_kv_override * (len(items) + 1))()
    for o, (key, value) in zip(arr, items):
        o.key = key.encode()[:127]
        if isinstance(value, int):
            o.tag = llama_cpp.LLAMA_KV_OVERRIDE_TYPE_INT
            o.value.val_i64 = value
        else:
            o.tag = llama_cpp.LLAMA_KV_OVERRIDE_TYPE_STR
            o.value.val_str = str(value).encode()[:127]
    arr[len(items)].key = b""
    return arr



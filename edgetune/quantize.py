"""Quantize an F16/BF16/F32 GGUF with llama.cpp's own quantizer (through llama-cpp-python's C API).

K-quants (Q4_K_M, ...) only exist in llama.cpp, so we call it rather than re-implement it.
llama_model_quantize leaves a partial file when it fails: we write to a temp path and rename on rc 0.
"""
from __future__ import annotations

import time
from pathlib import Path

from edgetune.errors import EdgetuneError
from edgetune.events import Callback, Event, ignore
from edgetune.fsutil import atomic_path

# llama_ftype values (llama.h); names as llama-quantize spells them.
FTYPES = {
    "F32": 0, "F16": 1, "Q4_0": 2, "Q4_1": 3, "Q8_0": 7, "Q5_0": 8, "Q5_1": 9, "Q2_K": 10, "Q3_K_S": 11,
    "Q3_K_M": 12, "Q3_K_L": 13, "Q4_K_S": 14, "Q4_K_M": 15, "Q5_K_S": 16, "Q5_K_M": 17, "Q6_K": 18,
    "IQ4_NL": 25, "IQ4_XS": 30, "BF16": 32,
}


def quantize(src: str | Path, dst: str | Path, qtype: str, threads: int = 0,
             on_event: Callback = ignore) -> dict:
    """Quantize `src` to `dst` as `qtype`; return {path, type, bytes, bits_per_weight, seconds}."""
    import llama_cpp
    import llama_cpp._logger

    llama_cpp._logger.set_verbose(False)  # llama.cpp would print every tensor onto the terminal
    qtype = qtype.upper()
    if qtype not in FTYPES:
        raise EdgetuneError(f"quant type {qtype!r} is not one of {', '.join(FTYPES)}")
    src, dst = Path(src), Path(dst)
    check_gguf_file(src)
    on_event(Event("quantize", "start", f"{src.name} -> {qtype}"))
    params = llama_cpp.llama_model_quantize_default_params()
    params.ftype = FTYPES[qtype]
    params.nthread = threads
    params.allow_requantize = False
    t0 = time.time()
    with atomic_path(dst) as tmp:
        rc = llama_cpp.llama_model_quantize(str(src).encode(), str(tmp).encode(), params)
        if rc != 0:
            raise EdgetuneError(f"{src}: llama.cpp could not quantize it to {qtype} (rc {rc}; "
                                "is it already quantized, or not a GGUF model?)")
    info = {"path": str(dst), "type": qtype, "bytes": dst.stat().st_size,
            "bits_per_weight": bits_per_weight(dst), "seconds": round(time.time() - t0, 2)}
    on_event(Event("quantize", "done", f"{dst.name}: {info['bytes'] / 2**20:.1f} MiB, "
                   f"{info['bits_per_weight']:.2f} bits/weight", data=info))
    return info


def check_gguf_file(path: Path) -> None:
    """A clear error for what llama.cpp would only crash or print on."""
    if not path.is_file():
        raise EdgetuneError(f"{path}: GGUF file not found")
    with open(path, "rb") as f:
        head = f.read(8)
    if head[:4] != b"GGUF":
        raise EdgetuneError(f"{path}: not a GGUF file (bad magic {head[:4]!r})")
    version = int.from_bytes(head[4:8], "little")
    if version not in (2, 3):
        raise EdgetuneError(f"{path}: GGUF version {version} is not supported (2 or 3)")
    try:
        import gguf
        gguf.GGUFReader(str(path), "r")
    except Exception as e:
        raise EdgetuneError(f"{path}: truncated or corrupt GGUF ({str(e).splitlines()[0][:120]})") from None


def bits_per_weight(path: str | Path) -> float:
    """Bits per parameter over the file's tensors (what llama.cpp reports as BPW)."""
    import gguf

    reader = gguf.GGUFReader(str(path), "r")
    n_params = sum(int(t.n_elements) for t in reader.tensors)
    n_bytes = sum(int(t.n_bytes) for t in reader.tensors)
    return 8 * n_bytes / max(n_params, 1)

"""Reading GGUF files we did not just write: a clear one-line error for a file llama.cpp would
crash or only print on, and the figures the report shows (bits per weight, header size)."""
from __future__ import annotations

from pathlib import Path

import gguf

from edgetune.errors import EdgetuneError


def header_bytes(path: Path) -> int:
    """Bytes before the tensor data: the header, metadata and tensor index."""
    reader = gguf.GGUFReader(str(path), "r")
    return int(reader.data_offset)


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
        gguf.GGUFReader(str(path), "r")
    except Exception as e:
        raise EdgetuneError(f"{path}: truncated or corrupt GGUF ({str(e).splitlines()[0][:120]})") from None


def bits_per_weight(path: str | Path) -> float:
    """Bits per parameter over the file's tensors (what llama.cpp reports as BPW)."""
    reader = gguf.GGUFReader(str(path), "r")
    n_params = sum(int(t.n_elements) for t in reader.tensors)
    n_bytes = sum(int(t.n_bytes) for t in reader.tensors)
    return 8 * n_bytes / max(n_params, 1)

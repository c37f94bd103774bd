"""Reading GGUF files we did not just write: a clear one-line error for a file llama.cpp would
crash or only print on, and the figures the report shows (bits per weight, header size).

gguf.GGUFReader parses every metadata array in Python, which takes seconds for a 262k-token
vocabulary; a run reads the same files many times (validate, size, load, measure), so each file
is read once per process and its figures kept while its size and modification time stay the same.
"""
from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import gguf

from edgetune.errors import EdgetuneError


@dataclass(frozen=True)
class GGUFSummary:
    data_offset: int  # bytes before the tensor data: header, metadata, tensor index
    n_params: int
    n_bytes: int  # of tensor data
    widths: dict[str, int]  # row length of every tensor (GGUF lists it first)


_read: dict[tuple, GGUFSummary] = {}


def summary(path: str | Path) -> GGUFSummary:
    """The file's figures, read once while it is unchanged; a clear error for what is not a GGUF
    llama.cpp could load."""
    path = Path(path)
    if not path.is_file():
        raise EdgetuneError(f"{path}: GGUF file not found")
    stat = path.stat()
    key = (str(path.resolve()), stat.st_size, stat.st_mtime_ns)
    if key in _read:
        return _read[key]
    with open(path, "rb") as f:
        head = f.read(8)
    if head[:4] != b"GGUF":
        raise EdgetuneError(f"{path}: not a GGUF file (bad magic {head[:4]!r})")
    version = int.from_bytes(head[4:8], "little")
    if version not in (2, 3):
        raise EdgetuneError(f"{path}: GGUF version {version} is not supported (2 or 3)")
    try:
        reader = gguf.GGUFReader(str(path), "r")
    except Exception as e:
        raise EdgetuneError(f"{path}: truncated or corrupt GGUF ({str(e).splitlines()[0][:120]})") from None
    _read[key] = GGUFSummary(int(reader.data_offset), sum(int(t.n_elements) for t in reader.tensors),
                             sum(int(t.n_bytes) for t in reader.tensors),
                             {t.name: int(t.shape[0]) for t in reader.tensors})
    return _read[key]


def check_gguf_file(path: Path) -> None:
    """A clear error for what llama.cpp would only crash or print on."""
    summary(path)


def header_bytes(path: Path) -> int:
    """Bytes before the tensor data: the header, metadata and tensor index."""
    return summary(path).data_offset


def bits_per_weight(path: str | Path) -> float:
    """Bits per parameter over the file's tensors (what llama.cpp reports as BPW)."""
    s = summary(path)
    return 8 * s.n_bytes / max(s.n_params, 1)

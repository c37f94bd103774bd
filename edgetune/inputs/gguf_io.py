"""Reading GGUF files we did not just write: a clear one-line error for a file llama.cpp would
crash or only print on, and the figures the report shows (bits per weight, header size).

Only the header is walked (metadata skipped, the tensor index read), with the gguf library's own
types and block sizes: gguf.GGUFReader builds an array per metadata element, 10.5 s for Gemma 3's
262k-token vocabulary against 0.1 s here, and a run reads every file it writes. A file's figures are
kept while its size and modification time stay the same.
"""
from __future__ import annotations

import mmap
import struct
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
    file_type: int | None = None  # general.file_type: the llama_ftype the file was written as


_read: dict[tuple, GGUFSummary] = {}


def summary(path: str | Path) -> GGUFSummary:
    """The file's figures, read once while it is unchanged; a clear error for what is not a GGUF
    llama.cpp could load."""
    path = Path(path)
    if not path.is_file():
        raise EdgetuneError(f"{path}: GGUF file not found")
    key = (str(path.resolve()), stamp(path))
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
            with mmap.mmap(f.fileno(), 0, access=mmap.ACCESS_READ) as buf:
                _read[key] = _walk(buf, path.stat().st_size)
        except (struct.error, ValueError, KeyError, IndexError, UnicodeDecodeError, OverflowError) as e:
            raise EdgetuneError(f"{path}: truncated or corrupt GGUF ({str(e).splitlines()[0][:120]})") from None
    return _read[key]


_SCALAR = {gguf.GGUFValueType.UINT8: 1, gguf.GGUFValueType.INT8: 1, gguf.GGUFValueType.BOOL: 1,
           gguf.GGUFValueType.UINT16: 2, gguf.GGUFValueType.INT16: 2, gguf.GGUFValueType.UINT32: 4,
           gguf.GGUFValueType.INT32: 4, gguf.GGUFValueType.FLOAT32: 4, gguf.GGUFValueType.UINT64: 8,
           gguf.GGUFValueType.INT64: 8, gguf.GGUFValueType.FLOAT64: 8}


def _walk(buf, size: int) -> GGUFSummary:
    """The header of a GGUF in `buf`: metadata skipped (its alignment kept), the tensor index read."""
    u32, u64 = struct.Struct("<I"), struct.Struct("<Q")
    n_tensors, n_kv = struct.unpack_from("<QQ", buf, 8)
    pos, alignment, file_type = 24, gguf.GGUF_DEFAULT_ALIGNMENT, None

    def string(pos: int) -> int:  # the position after a string
        end = pos + 8 + u64.unpack_from(buf, pos)[0]
        if end > size:
            raise ValueError(f"a string at byte {pos} runs past the end of the file")
        return end

    def value(pos: int, kind: int) -> int:  # the position after a value of `kind`
        kind = gguf.GGUFValueType(kind)
        if kind in _SCALAR:
            return pos + _SCALAR[kind]
        if kind == gguf.GGUFValueType.STRING:
            return string(pos)
        item, count = u32.unpack_from(buf, pos)[0], u64.unpack_from(buf, pos + 4)[0]
        pos += 12
        if gguf.GGUFValueType(item) in _SCALAR:
            end = pos + count * _SCALAR[gguf.GGUFValueType(item)]
            if end > size:
                raise ValueError(f"an array at byte {pos} runs past the end of the file")
            return end
        if item == gguf.GGUFValueType.STRING:  # a vocabulary: skipped in a tight loop (262k strings in Gemma 3)
            unpack = u64.unpack_from
            for _ in range(count):
                pos += 8 + unpack(buf, pos)[0]
            if pos > size:
                raise ValueError(f"a string array ending at byte {pos} runs past the end of the file")
            return pos
        for _ in range(count):  # nested arrays
            pos = value(pos, item)
        return pos

    for _ in range(n_kv):
        end = string(pos)
        name, kind = bytes(buf[pos + 8: end]), u32.unpack_from(buf, end)[0]
        if name == b"general.alignment":
            alignment = u32.unpack_from(buf, end + 4)[0]
        elif name == b"general.file_type" and kind == gguf.GGUFValueType.UINT32:
            file_type = u32.unpack_from(buf, end + 4)[0]
        pos = value(end + 4, kind)
    n_params = n_bytes = 0
    widths, ends = {}, []
    for _ in range(n_tensors):
        end = string(pos)
        name = bytes(buf[pos + 8: end]).decode("utf-8")
        n_dims = u32.unpack_from(buf, end)[0]
        dims = struct.unpack_from(f"<{n_dims}Q", buf, end + 4)
        kind, offset = struct.unpack_from("<IQ", buf, end + 4 + 8 * n_dims)
        block, type_size = gguf.GGML_QUANT_SIZES[gguf.GGMLQuantizationType(kind)]
        n = 1
        for d in dims:
            n *= d
        widths[name] = int(dims[0])
        n_params += n
        n_bytes += n // block * type_size
        ends.append(offset + n // block * type_size)
        pos = end + 4 + 8 * n_dims + 12
    data_offset = -(-pos // alignment) * alignment
    if data_offset + max(ends, default=0) > size:
        raise ValueError(f"tensor data ends at byte {data_offset + max(ends)} of a {size}-byte file")
    return GGUFSummary(data_offset, n_params, n_bytes, widths, file_type)


def stamp(path: str | Path) -> str:
    """The file's size and modification time: what says it is the file a record was made from."""
    st = Path(path).stat()
    return f"{st.st_size}:{st.st_mtime_ns}"


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

"""An HF model folder, read lazily: its config and its tensors one at a time from safetensors."""
from __future__ import annotations

import json
import struct
from pathlib import Path
from typing import Iterator

from edgetune.errors import EdgetuneError

# safetensors dtype -> torch dtype name
SAFETENSORS_DTYPES = {"F64": "float64", "F32": "float32", "F16": "float16", "BF16": "bfloat16", "I64": "int64",
                      "I32": "int32", "I16": "int16", "I8": "int8", "U8": "uint8", "BOOL": "bool",
                      "F8_E4M3": "float8_e4m3fn", "F8_E5M2": "float8_e5m2"}


def read_config(path: Path) -> dict:
    """config.json of an HF model folder, or one line saying why there is none."""
    config_path = path / "config.json"
    if not config_path.is_file():
        raise EdgetuneError(f"{path}: no config.json (not a Hugging Face model folder)")
    try:
        return json.loads(config_path.read_text(encoding="utf-8"))
    except (json.JSONDecodeError, UnicodeDecodeError) as e:
        raise EdgetuneError(f"{config_path}: not valid JSON ({e})") from None


def safetensors_files(path: Path) -> list[Path]:
    """The folder's safetensors shards; pickle-only or empty folders are refused."""
    shards = sorted(path.glob("*.safetensors"))
    if not shards:
        if any(path.glob("*.bin")) or any(path.glob("*.pt")):
            raise EdgetuneError(f"{path}: only pickle weights (*.bin); edgetune loads safetensors only "
                                "(pickle files can run code when loaded)")
        raise EdgetuneError(f"{path}: no *.safetensors weights")
    index = path / "model.safetensors.index.json"
    if index.is_file():  # a sharded model: every shard there (a stopped download leaves some out)
        try:
            named = set(json.loads(index.read_text(encoding="utf-8"))["weight_map"].values())
        except (json.JSONDecodeError, UnicodeDecodeError, KeyError, AttributeError, TypeError):
            raise EdgetuneError(f"{index}: not a valid safetensors index (no 'weight_map')") from None
        missing = sorted(s for s in named if not (path / s).is_file())
        if missing:
            raise EdgetuneError(f"{path}: {len(missing)} of {len(named)} weight shards missing, e.g. {missing[0]} "
                                "(an interrupted download? run again with a network to resume it)")
    return shards


class ModelFolder:
    def __init__(self, path: str | Path):
        self.path = Path(path)
        self.config = read_config(self.path)
        self.shards = safetensors_files(self.path)
        self._index: dict[str, Path] = {}
        self._shapes: dict[str, tuple[int, ...]] = {}
        from safetensors import safe_open
        for shard in self.shards:
            try:
                with safe_open(str(shard), framework="pt") as f:
                    for name in f.keys():
                        self._index[name] = shard
                        self._shapes[name] = tuple(f.get_slice(name).get_shape())
            except Exception as e:
                raise EdgetuneError(f"{shard}: unreadable safetensors ({str(e).splitlines()[0]})") from None

    @property
    def architecture(self) -> str:
        archs = self.config.get("architectures") or []
        if not archs:
            raise EdgetuneError(f"{self.path}/config.json: no 'architectures' field")
        return archs[0]

    def text_config(self) -> dict:
        """The language model's own settings (multimodal configs nest them under text_config)."""
        return {**self.config, **(self.config.get("text_config") or {})}

    def names(self) -> list[str]:
        return list(self._index)

    def shard_of(self, name: str) -> Path:
        return self._index[name]

    def shape(self, name: str) -> tuple[int, ...]:
        return self._shapes[name]

    def tensors(self) -> Iterator[tuple[str, "torch.Tensor"]]:  # noqa: F821
        """(name, tensor) one at a time, shard by shard, in the order of `names`."""
        for shard in self.shards:
            yield from read_tensors(shard, [n for n, s in self._index.items() if s == shard])


def read_header(shard: Path) -> tuple[dict, int]:
    """A safetensors file's header (name -> dtype, shape, data_offsets; and __metadata__) and
    where its data starts."""
    try:
        with open(shard, "rb") as f:
            size = struct.unpack("<Q", f.read(8))[0]
            return json.loads(f.read(size)), 8 + size
    except (OSError, struct.error, json.JSONDecodeError, UnicodeDecodeError) as e:
        raise EdgetuneError(f"{shard}: unreadable safetensors ({e})") from None


def read_tensors(shard: Path, names: list[str] | None = None) -> Iterator[tuple[str, "torch.Tensor"]]:  # noqa: F821
    """(name, tensor) for the shard's tensors (all, in name order, or `names`), each read with
    plain file reads into memory of its own. Not memory-mapped: a mapped shard's pages count in the
    process's RSS until the file is closed, so a shard of thousands of experts would stay resident."""
    import torch
    header, start = read_header(shard)
    with open(shard, "rb") as f:
        for name in names if names is not None else sorted(k for k in header if k != "__metadata__"):
            entry = header[name]
            begin, end = entry["data_offsets"]
            dtype = getattr(torch, SAFETENSORS_DTYPES.get(entry["dtype"], ""), None)
            if dtype is None:
                raise EdgetuneError(f"{shard}: tensor {name} has dtype {entry['dtype']}, which edgetune does not read")
            data = bytearray(end - begin)
            f.seek(start + begin)
            if f.readinto(data) != len(data):
                raise EdgetuneError(f"{shard}: cannot read tensor {name} (the file is truncated)")
            tensor = torch.frombuffer(data, dtype=dtype) if data else torch.empty(0, dtype=dtype)
            yield name, tensor.reshape(entry["shape"])

"""An HF model folder, read lazily: its config and its tensors one at a time from safetensors."""
from __future__ import annotations

import json
from pathlib import Path
from typing import Iterator

from edgetune.errors import EdgetuneError


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
        """(name, tensor) one at a time, shard by shard; a shard is opened once."""
        from safetensors import safe_open
        for shard in self.shards:
            with safe_open(str(shard), framework="pt") as f:
                for name in f.keys():
                    try:
                        yield name, f.get_tensor(name)
                    except Exception as e:
                        raise EdgetuneError(f"{shard}: cannot read tensor {name} ({str(e).splitlines()[0]})") from None

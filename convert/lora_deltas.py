"""A PEFT LoRA adapter read as weight updates: delta W = scale * B @ A per base tensor name.

The one place that knows PEFT's adapter layout (module names, per-module ranks and alphas, rsLoRA,
fan-in/fan-out, modules_to_save, LoRA on mixture-of-experts parameters). Merging (edgetune.merge),
the streaming batch merge and the GGUF LoRA export (edgetune.convert.lora) all read adapters
through it.

Experts: transformers 5 holds a layer's experts as 3-D parameters (`mlp.experts.gate_up_proj`
[experts, 2 x width, hidden], gate rows then up rows; `mlp.experts.down_proj` [experts, hidden,
width]); PEFT adapts them through `target_parameters` with one A (experts x r, in) and one B
(out, r x experts) per parameter, saved as `mlp.experts[.base_layer].lora_A.weight` (nested
wrappers, one per parameter). Checkpoints on disk hold the experts one by one
(`mlp.experts.E.gate_proj.weight`) or fused as in memory; `factors` gives each expert's (or the
fused tensor's) share of the update, whichever the base holds.
"""
from __future__ import annotations

import json
import re
from pathlib import Path

from edgetune.convert.arch.base import text_name
from edgetune.errors import EdgetuneError

_PREFIX = "base_model.model."
# One expert's projection in a per-expert checkpoint, and the fused tensors of one in transformers 5's layout.
PER_EXPERT = re.compile(r"(.+\.experts)\.(\d+)\.(gate_proj|up_proj|down_proj)\.weight")
FUSED_EXPERTS = re.compile(r"(.+\.experts)\.(gate_up_proj|down_proj)(?:\.weight)?")


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
        # experts module -> {wrapper depth -> {"A", "B"}}: LoRA on its 3-D parameters (target_parameters)
        self.expert_pairs: dict[str, dict[str, dict]] = {}
        owners = [t.rpartition(".")[0] for t in c.get("target_parameters") or []]
        for key, tensor in tensors.items():
            name = key[len(_PREFIX):] if key.startswith(_PREFIX) else key
            m = re.fullmatch(r"(.+?)((?:\.base_layer)*)\.lora_(A|B)(?:\.[^.]+)?\.weight", name)
            if m and owners and any(m.group(1) == o or m.group(1).endswith("." + o)
                                    or (not o and m.group(1).endswith(".experts")) for o in owners):
                self.expert_pairs.setdefault(m.group(1), {}).setdefault(m.group(2), {})[m.group(3)] = tensor
                continue
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
        for name, entry in [*self.pairs.items(), *((f"{m}{d}", e) for m, ds in self.expert_pairs.items()
                                                   for d, e in ds.items())]:
            if "A" not in entry or "B" not in entry:
                raise EdgetuneError(f"{weights}: {name} has lora_A or lora_B missing")
        for module, depths in self.expert_pairs.items():
            r = _pattern_value(c.get("rank_pattern") or {}, module, c.get("r", 8))
            for entry in depths.values():
                a, b = entry["A"], entry["B"]
                if a.dim() != 2 or b.dim() != 2 or a.shape[0] % r or b.shape[1] != a.shape[0]:
                    raise EdgetuneError(f"{weights}: LoRA on {module}'s parameters: shapes A{tuple(a.shape)} "
                                        f"B{tuple(b.shape)} are not r={r} per expert")
                entry["experts"] = a.shape[0] // r
        self.applied: set[str] = set()

    def scale(self, base_name: str) -> float:
        module = base_name[: -len(".weight")]
        c = self.config
        r = _pattern_value(c.get("rank_pattern") or {}, module, c.get("r", 8))
        alpha = _pattern_value(c.get("alpha_pattern") or {}, module, c.get("lora_alpha", 8))
        return alpha / (r ** 0.5) if c.get("use_rslora") else alpha / r

    def delta(self, base_name: str, shape: tuple[int, ...] | None = None):
        """fp32 weight update for `base_name`, shaped like the base weight (its `shape` is needed
        for an expert's share of LoRA on a fused experts parameter)."""
        import torch
        if base_name not in self.pairs:
            a, b, scale = self.factors(base_name, shape)
            return (b.to(torch.float32) @ a.to(torch.float32)) * scale
        e = self.pairs[base_name]
        a, b = e["A"].to(torch.float32), e["B"].to(torch.float32)
        d = (b @ a) * self.scale(base_name)
        if e["kind"] == "embedding" or self.fan_in_fan_out:
            d = d.T
        return d

    def expert_module(self, base_name: str) -> str | None:
        """The experts module whose adapted parameters cover this base tensor, if any."""
        m = PER_EXPERT.fullmatch(base_name) or FUSED_EXPERTS.fullmatch(base_name)
        return m.group(1) if m and m.group(1) in self.expert_pairs else None

    def touches(self, base_name: str) -> bool:
        return base_name in self.pairs or base_name in self.full or self.expert_module(base_name) is not None

    def factors(self, base_name: str, shape: tuple[int, ...]):
        """(A, B, scale) with delta = scale * B @ A in the frame of the base tensor `base_name` of
        `shape`: A (r, in) and B (out, r) for a 2-D tensor (a linear layer's, or one expert's),
        A (experts, r, in) and B (experts, out, r) for a fused experts tensor. None: not adapted."""
        if base_name in self.pairs:
            e = self.pairs[base_name]
            if e["kind"] == "embedding" or self.fan_in_fan_out:
                return None  # no (out, in) factors: callers use `delta`
            return e["A"], e["B"], self.scale(base_name)
        module = self.expert_module(base_name)
        if module is None:
            return None
        m = PER_EXPERT.fullmatch(base_name)
        out, in_ = shape[-2:]
        fused_out = 2 * out if m and m.group(3) in ("gate_proj", "up_proj") else out
        # Which parameter a wrapper adapts is told by its shapes: gate_up (2 x width, hidden), down (hidden, width).
        found = [e for e in self.expert_pairs[module].values() if e["B"].shape[0] == fused_out and e["A"].shape[1] == in_]
        if not found:
            return None
        e = found[0]
        e["used"] = True
        n, r = e["experts"], e["A"].shape[0] // e["experts"]
        a = e["A"].reshape(n, r, in_)  # PEFT: A rows are expert-major
        b = e["B"].reshape(fused_out, r, n).permute(2, 0, 1)  # B columns are expert-minor
        scale = self.scale(module + ".weight")
        if m is None:
            if len(shape) != 3 or shape[0] != n:
                raise EdgetuneError(f"{self.dir}: LoRA on {module} has {n} experts; {base_name} is {tuple(shape)}")
            return a, b, scale
        j = int(m.group(2))
        if j >= n:
            raise EdgetuneError(f"{self.dir}: LoRA on {module} has {n} experts; the base has {base_name}")
        rows = slice(out, 2 * out) if m.group(3) == "up_proj" else slice(0, out)
        return a[j], b[j][rows], scale

    def apply(self, name: str, tensor):
        """The base tensor with this adapter merged in (unchanged if the adapter does not touch it)."""
        import torch
        if name in self.full:
            self.applied.add(name)
            tensor = self.full[name].to(tensor.dtype)
        if name not in self.pairs:
            if self.expert_module(name) is None or self.factors(name, tuple(tensor.shape)) is None:
                return tensor
            self.applied.add(name)
            return (tensor.to(torch.float32) + self.delta(name, tuple(tensor.shape))).to(tensor.dtype)
        d = self.delta(name)
        if tuple(d.shape) != tuple(tensor.shape):
            raise EdgetuneError(f"{self.dir}: adapter shape {tuple(d.shape)} for {name} does not match the base "
                                f"weight {tuple(tensor.shape)} (adapter made for another base?)")
        self.applied.add(name)
        return (tensor.to(torch.float32) + d).to(tensor.dtype)

    def check_experts_fit(self, shapes: dict[str, tuple[int, ...]]) -> None:
        """Every LoRA pair on expert parameters fits some expert tensor of the base (name -> shape),
        so none is silently left out of a merge or an export."""
        for name, shape in shapes.items():
            if self.expert_module(name) is not None:
                self.factors(name, shape)
        for module, depths in self.expert_pairs.items():
            for entry in depths.values():
                if not entry.pop("used", False):
                    raise EdgetuneError(f"{self.dir}: LoRA on {module} (A{tuple(entry['A'].shape)}, "
                                        f"B{tuple(entry['B'].shape)}) fits no expert weight of the base (adapter made "
                                        f"for another base? it names {self.base_model!r})")

    def align_names(self, base_names: set[str]) -> None:
        """PEFT names modules as they are in memory; transformers 5 saves multimodal checkpoints in
        the older layout (model.language_model.X in memory is language_model.model.X on disk).
        Re-key each update to the base tensor that holds the same text-model weight."""

        on_disk = {text_name(n): n for n in base_names}
        experts_on_disk = {text_name(m.group(1)): m.group(1) for n in base_names
                           if (m := PER_EXPERT.fullmatch(n) or FUSED_EXPERTS.fullmatch(n))}
        for name in [n for n in self.expert_pairs if n not in experts_on_disk.values()]:
            if experts_on_disk.get(text_name(name)) is not None:
                self.expert_pairs[experts_on_disk[text_name(name)]] = self.expert_pairs.pop(name)
        for table in (self.pairs, self.full):
            for name in [n for n in table if n not in base_names and on_disk.get(text_name(n)) is not None]:
                table[on_disk[text_name(name)]] = table.pop(name)

    def check_complete(self, base_names: set[str]) -> None:
        self.align_names(base_names)
        missing = sorted((set(self.pairs) | set(self.full)) - base_names)
        missing += sorted(f"{m} (experts)" for m in self.expert_pairs
                          if not any(self.expert_module(n) == m for n in base_names))
        if missing:
            raise EdgetuneError(f"{self.dir}: {len(missing)} adapter tensors have no base weight, e.g. {missing[0]} "
                                f"(adapter made for another base? it names {self.base_model!r})")


def _pattern_value(patterns: dict, module: str, default):
    for key, value in patterns.items():
        if module == key or module.endswith("." + key) or re.fullmatch(key, module):
            return value
    return default


